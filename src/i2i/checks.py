"""What the inference commands (i2i-test, i2i-compare) check before any work, beyond the types and ranges of
their keys (:data:`i2i.schema.TEST`, :data:`i2i.schema.COMPARE`): output paths, the images to translate and
their channels against the checkpoint. Each problem is one :class:`~i2i.errors.ConfigError` line.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from i2i.errors import UNWRITABLE_ERRNOS, ConfigError, write_errors


def check_output_dir(path: str | Path, key: str, value: Any = None) -> None:
    """Raise one :class:`ConfigError` line naming ``key`` when ``path`` (or a parent of it) is an existing file.

    Args:
        path: the directory the command will write into.
        key: the config key that chose it.
        value: the key's value, when it is not ``path`` itself (``out=<dir>/m.json``).
    """
    from i2i.metrics.cache import file_in_the_way

    blocker = file_in_the_way(path)
    if blocker is not None:
        raise ConfigError(f"{key}={path if value is None else value}: {blocker} is a file, not a directory — choose "
                          f"another {key} (or move the file away)")


def output_errors(out_dir: str | Path, key: str = "out_dir"):
    """Turn an OSError of a full or unwritable output directory (or a file in the way: EEXIST) into one
    :class:`~i2i.errors.RunDirError` line naming ``key``."""
    return write_errors(out_dir, f"free disk space or fix the permissions of {out_dir}, or choose another {key}; "
                        "files written before are kept", UNWRITABLE_ERRNOS | {errno.EEXIST})


def run_dataset(run_data: Mapping[str, Any] | None, ckpt: str) -> dict:
    """The dataset a checkpoint was trained on, for i2i-test without ``data.root`` (its test split is translated).

    Args:
        run_data: the ``data`` config stored in an i2i checkpoint (``None`` for a published ``latest_net_G.pth``).
        ckpt: the checkpoint file, for the message.

    Raises:
        ConfigError: the checkpoint stores no dataset.
    """
    if not run_data or run_data.get("root") in (None, "???"):
        raise ConfigError(f"data.root: not set, and {ckpt} stores no dataset — give data=<dataset> (its test split) "
                          "or data=folder data.root=<folder of images>")
    data = {key: value for key, value in run_data.items() if key != "kind"}  # checkpoints written before _target_
    return {"_target_": "i2i.data.unaligned.UnpairedDataset", **data}


def check_test_channels(channels: int | None, expected: int, ckpt: str) -> int:
    """The channels to load images with: ``channels`` (``data.channels``) when it fits the checkpoint, else one line.

    Args:
        channels: ``data.channels`` (``None``: use the checkpoint's).
        expected: the image channels the generator was trained on.
        ckpt: the checkpoint file, for the message.
    """
    if channels is None:
        return expected
    if channels != expected:
        raise ConfigError(f"data.channels={channels}: {ckpt} was trained on {expected}-channel images — set "
                          f"data.channels={expected} (with data=folder: leave data.channels unset)")
    return channels
