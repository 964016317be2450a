"""Errors caused by the user's input or environment, shared by every layer.

Each carries ONE line that names the config key or file and the fix; the CLI prints it as
``i2i: error: <message>`` and exits with status 2 (``I2I_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


class RunDirError(RuntimeError):
    """The run directory cannot be written (permissions, full disk, in use); the message names the path and the fix."""


#: OSError numbers that mean "this path cannot be written" (no permission, full disk or quota, read-only, a file where
#: a folder should be)
UNWRITABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOTDIR})


@contextlib.contextmanager
def write_errors(where: str | Path, fix: str, errnos: frozenset[int] = UNWRITABLE_ERRNOS) -> Iterator[None]:
    """Turn an OSError with one of ``errnos`` into one :class:`RunDirError` line: the path, the reason, ``fix``."""
    try:
        yield
    except OSError as e:
        if e.errno not in errnos:
            raise
        raise RunDirError(f"{e.filename or where}: cannot write ({e.strerror}) — {fix}") from None
