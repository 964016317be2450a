"""What the inference commands (i2i-test, i2i-compare) check before any work.

One table per command maps a key of its config (configs/test.yaml, configs/compare.yaml) to an :class:`Option`
(accepted types, a predicate and a hint); :func:`check_options` checks them all in one pass before anything heavy
is loaded, and the first bad key becomes one :class:`~i2i.build.ConfigError` line:
``batch_size=0: must be a whole number >= 1 — set e.g. batch_size=1``. The other helpers check output paths, pick
the images to translate and match their channels to the checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from i2i.build import ConfigError, RunDirError
from i2i.metrics.evaluate import METRICS

EXTRACTORS = ("inception", "mock")


@dataclass(frozen=True)
class Option:
    """What one key accepts.

    Attributes:
        types: accepted Python types (``bool`` is never taken for ``int``; ``type(None)`` allows null).
        ok: predicate on a (non-null) value of those types.
        hint: what the value must be, completing "must be ...".
        example: a working value, shown in the fix.
    """

    types: tuple[type, ...]
    ok: Callable[[Any], bool]
    hint: str
    example: str

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) and bool not in self.types:
            return False
        return isinstance(value, self.types) and (value is None or self.ok(value))


class BadOption(NamedTuple):
    """A failed check: the key, its value and the option it broke."""

    key: str
    value: Any
    option: Option

    def message(self) -> str:
        return (f"{self.key}={_show(self.value)}: must be {self.option.hint} — set e.g. "
                f"{self.key}={self.option.example}")


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(_show, value)) + "]"
    return "null" if value is None else repr(value) if isinstance(value, str) and not value else str(value)


def _is_device(name: str) -> bool:
    import torch

    if name == "auto":
        return True
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True


def whole(low: int, optional: bool = False, example: str = "1") -> Option:
    """An integer >= ``low`` (or null with ``optional``)."""
    types = (int, type(None)) if optional else (int,)
    hint = f"{'null or ' if optional else ''}a whole number >= {low}"
    return Option(types, lambda v: v >= low, hint, example)


def choice(values: tuple, optional: bool = False, example: str | None = None) -> Option:
    """One of ``values`` (or null with ``optional``)."""
    types = (str, type(None)) if optional else (str,)
    hint = ("null or " if optional else "") + "one of " + ", ".join(values)
    return Option(types, lambda v: v in values, hint, example or values[0])


def metric_list(allow_empty: bool) -> Option:
    """A list of metric names (possibly empty for i2i-test, where [] means no metrics)."""
    return Option((list, tuple), lambda v: (allow_empty or len(v) > 0) and all(m in METRICS for m in v),
                  f"a {'' if allow_empty else 'non-empty '}list of {', '.join(METRICS)}", "[fid,kid]")


def required(example: str) -> Option:
    """A value that must be given (Hydra's ``???`` placeholder left in place is refused)."""
    return Option((str, int, float), lambda v: v != "???", "given", example)


def folder(example: str, optional: bool = False) -> Option:
    """An existing directory (or null with ``optional``); ``???`` (not given) is refused."""
    types = (str, type(None)) if optional else (str,)
    return Option(types, lambda v: v != "???" and Path(v).expanduser().is_dir(),
                  f"{'null or ' if optional else ''}an existing folder of images", example)


DEVICE = Option((str,), _is_device, "auto, cpu, cuda or cuda:<index>", "auto")
FLAG = Option((bool,), lambda v: True, "true or false", "true")
ANY_INT = Option((int,), lambda v: True, "a whole number", "0")

#: i2i-test (configs/test.yaml)
TEST_OPTIONS: dict[str, Option] = {
    "ckpt": required("checkpoints/<run>"),
    "which": Option((str,), lambda v: bool(v), "a checkpoint file name in <run>/ckpt/", "last.pt"),
    "device": DEVICE,
    "batch_size": whole(1),
    "num_images": whole(1, optional=True, example="null"),
    "size_multiple": whole(1, example="4"),
    "resize": whole(1, optional=True, example="256 (or resize=null: keep the size)"),
    "seed": ANY_INT,
    "feedback_placeholder": choice(("ones", "discriminator"), optional=True, example="null"),
    "metrics": metric_list(allow_empty=True),
    "fused_kid": FLAG,
    "extractor": choice(EXTRACTORS),
}

#: i2i-compare (configs/compare.yaml)
COMPARE_OPTIONS: dict[str, Option] = {
    "real": folder("<folder of target-domain images>"),
    "fake": folder("<folder of generated images>"),
    "real2": folder("null", optional=True),
    "metrics": metric_list(allow_empty=False),
    "device": DEVICE,
    "use_cache": FLAG,
    "extractor": choice(EXTRACTORS),
    "batch_size": whole(1, example="50"),
    "num_workers": whole(0, example="2"),
    "num_threads": whole(1, optional=True, example="null"),
    "kid_subsets": whole(1, example="100"),
    "kid_subset_size": whole(2, example="1000"),
    "swd_resolution": whole(16, example="256"),
    "pr_k": whole(1, example="3"),
    "seed": ANY_INT,
}


def find_bad_options(cfg: Mapping[str, Any], options: Mapping[str, Option]) -> list[BadOption]:
    """Every key of ``options`` whose value in ``cfg`` (a plain, resolved dict) it does not accept, in order."""
    return [BadOption(key, cfg.get(key), opt) for key, opt in options.items() if not opt.accepts(cfg.get(key))]


def check_options(cfg: Mapping[str, Any], options: Mapping[str, Option]) -> None:
    """Raise one :class:`ConfigError` line for the first bad key (naming the other bad keys, if any)."""
    bad = find_bad_options(cfg, options)
    if bad:
        others = [b.key for b in bad[1:]]
        more = f" (also bad: {', '.join(others)})" if others else ""
        raise ConfigError(bad[0].message() + more)


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


#: OSError numbers that mean "this output cannot be written"
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOTDIR, errno.EEXIST}


@contextlib.contextmanager
def output_errors(out_dir: str | Path, key: str = "out_dir"):
    """Turn an OSError of a full or unwritable output directory into one :class:`RunDirError` line naming ``key``."""
    try:
        yield
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        raise RunDirError(f"{e.filename or out_dir}: cannot write ({e.strerror}) — free disk space or fix the "
                          f"permissions of {out_dir}, or choose another {key}; files written before are kept") from None


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
    return {**run_data, "kind": "unpaired"}


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
