"""The one exception type of the data package.

Every problem with user data (missing folders, wrong layout, corrupt files, images too small for the
crop) is raised as :class:`DataError` with ONE line that names the offending path or config key and
the fix, before training starts wherever possible.
"""

from __future__ import annotations

#: how torch's DataLoader starts the text of an exception it re-raises from a worker process
_WORKER_PREFIX = "Caught DataError in DataLoader worker"


class DataError(ValueError):
    """Bad dataset input: the message names the path (or config key) and how to fix it.

    A DataError raised in a DataLoader worker reaches the main process re-created by torch as
    ``DataError(<worker traceback text>)`` (torch/utils/data/_utils/__init__.py, ``ExceptionWrapper.reraise``);
    the constructor keeps only the original one-line message, the traceback's last line.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(_original_line(message))


def _original_line(message: str) -> str:
    if not isinstance(message, str) or not message.startswith(_WORKER_PREFIX):
        return message
    last = message.rstrip().splitlines()[-1]
    _, sep, original = last.partition("DataError: ")
    return original if sep else last
