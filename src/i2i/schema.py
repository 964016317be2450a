"""Types and ranges of the config keys of every command, checked in one pass before any work.

A schema maps a dotted key (or an ``fnmatch`` pattern such as ``method.lambda_*``) to a :class:`Spec`.
:func:`check` walks the resolved config once and raises one :class:`~i2i.errors.ConfigError` line for the first
value that does not fit, naming the key, the value given, what it must be and a working value, and listing the
other bad keys: ``train.batch_size=abc: must be an integer >= 1 — set e.g. train.batch_size=1``. Keys a config
does not have are not checked (a generator without ``ngf`` is fine), so one schema serves every method, network
and dataset; a component's own arguments are checked by its constructor.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from i2i.errors import ConfigError


@dataclass(frozen=True)
class Spec:
    """What one key accepts.

    Attributes:
        test: ``f(value) -> bool`` for a non-null value.
        want: what the value must be, completing "must be ..." (``an integer >= 1``).
        example: a working value, shown in the fix.
        nullable: ``null`` is also accepted.
    """

    test: Callable[[Any], bool]
    want: str
    example: str
    nullable: bool = False

    def accepts(self, value) -> bool:
        return (value is None and self.nullable) or (value is not None and self.test(value))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _null(want: str, null: bool) -> str:
    return f"null or {want}" if null else want


def Int(low: int | None = None, null: bool = False, example: str | None = None) -> Spec:
    """An integer, at least ``low`` (``true``/``false`` and ``1.5`` are not integers)."""
    want = "an integer" + (f" >= {low}" if low is not None else "")
    return Spec(lambda v: _is_int(v) and (low is None or v >= low), _null(want, null),
                example or str(max(low or 0, 1) if low else 0), null)


def Float(low: float | None = None, high: float | None = None, open_low: bool = False, null: bool = False,
          example: str = "1.0") -> Spec:
    """A number in ``[low, high]`` (``(low, high]`` with ``open_low``; NaN fits no range)."""
    def test(v) -> bool:
        if not _is_number(v) or v != v:
            return False
        return (low is None or (v > low if open_low else v >= low)) and (high is None or v <= high)

    parts = [f"> {low}" if open_low else f">= {low}"] if low is not None else []
    parts += [f"<= {high}"] if high is not None else []
    return Spec(test, _null("a number" + (" " + " and ".join(parts) if parts else ""), null), example, null)


def Bool(example: str = "true") -> Spec:
    return Spec(lambda v: isinstance(v, bool), "true or false", example)


def Str(null: bool = False, example: str = "<text>") -> Spec:
    return Spec(lambda v: isinstance(v, str) and v not in ("", "???"), _null("a non-empty string", null), example,
                null)


def Choice(*choices, null: bool = False) -> Spec:
    """One of ``choices`` (compared with their types: ``3`` is not ``"3"``, ``true`` is not ``1``)."""
    def test(v) -> bool:
        return any(type(v) is type(c) and v == c for c in choices)

    return Spec(test, _null("one of " + ", ".join(map(str, choices)), null), "null" if null else str(choices[0]), null)


def BoolOr(*words) -> Spec:
    """true, false, or one of the strings ``words`` (``auto``)."""
    return Spec(lambda v: isinstance(v, bool) or v in words, "true, false or " + " or ".join(words), words[0])


def Subset(*choices, empty: bool = True, example: str = "[]") -> Spec:
    """A list of distinct entries of ``choices`` (``[]`` only with ``empty``)."""
    def test(v) -> bool:
        return (isinstance(v, list) and (empty or len(v) > 0) and len(set(map(str, v))) == len(v)
                and all(isinstance(x, str) and x in choices for x in v))

    want = f"a list of distinct entries of {', '.join(choices)}" + (" (or [])" if empty else "")
    return Spec(test, want, example)


def Pair(low: float, high: float) -> Spec:
    """Two numbers in ``[low, high)`` (Adam's betas)."""
    return Spec(lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(x) and low <= x < high for x in v),
                f"two numbers in [{low}, {high})", "[0.5,0.999]")


def Folder(null: bool = False, example: str = "<folder of images>") -> Spec:
    """An existing directory (``???``, the placeholder of a value not given, is refused)."""
    return Spec(lambda v: isinstance(v, str) and v != "???" and Path(v).expanduser().is_dir(),
                _null("an existing folder of images", null), example, null)


#: ``meta`` builds shapes without memory (the FLOP counter, the no-host-sync audit)
DEVICE = Spec(lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|meta|cuda(:\d+)?", v) is not None,
              "auto, cpu, cuda or cuda:<index>", "auto")
METRICS = ("fid", "kid", "swd", "pr")  # i2i.metrics.evaluate.METRICS (kept import-free here)
EXTRACTORS = ("inception", "mock")

#: ``train`` (configs/train.yaml and the groups it composes)
TRAIN = {
    "seed": Int(0),
    "device": DEVICE,
    "name": Str(example="my_run"),
    "resume": Str(null=True, example="auto"),
    "resume_allow_changes": Bool(),
    "train.n_epochs": Int(0, example="200"),
    "train.n_epochs_decay": Int(0, example="200"),
    "train.warmup_epochs": Int(0),
    "train.batch_size": Int(1),
    "train.max_steps": Int(1, null=True, example="null"),
    "train.num_workers": Int(0, example="4"),
    "train.log_every": Int(0, example="100"),
    "train.sample_every": Int(0, example="1000"),
    "train.ckpt_every": Int(0, example="5000"),
    "train.save_epoch_every": Int(0, example="5"),
    "train.epoch_snapshots": Choice("inference", "full"),
    "train.keep_last_epochs": Int(1, null=True, example="null"),
    "train.amp": Choice("auto", "bf16", "fp16", "none"),
    "train.channels_last": Bool(),
    "train.compile": Choice("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "train.cuda_graphs": Bool(),
    "train.prefetch_factor": Int(1, null=True, example="4"),
    "train.deterministic": Bool(),
    "train.on_nonfinite": Choice("raise", "skip"),
    "train.max_skip_fraction": Float(0.0, 1.0, open_low=True, example="0.5"),
    "train.tensorboard": Bool(),
    "eval.metrics": Subset(*METRICS, example="[fid,kid]"),
    "eval.every_epochs": Int(0, null=True, example="5"),
    "eval.num_images": Int(1, null=True, example="null"),
    "eval.fused_kid": Bool(),
    "eval.weights": Str(null=True, example="null"),
    "eval.feature_batch_size": Int(1, example="50"),
    "eval.extractor": Choice(*EXTRACTORS),
    "optim.lr_g": Float(0.0, open_low=True, example="2e-4"),
    "optim.lr_d": Float(0.0, open_low=True, example="2e-4"),
    "optim.lr_f": Float(0.0, open_low=True, example="2e-4"),
    "optim.betas": Pair(0.0, 1.0),
    "optim.fused": BoolOr("auto"),
    "data.channels": Choice(1, 3, 4),
    "data.load_size": Int(1, example="286"),
    "data.crop_size": Int(1, example="256"),
    "data.direction": Choice("AtoB", "BtoA"),
    "data.preprocess": Choice("resize_and_crop", "crop", "scale_width_and_crop", "none"),
    "data.flip": Bool(),
    "data.serial_batches": Bool(),
    "data.max_dataset_size": Int(1, null=True, example="null"),
    "data.no_crop_after_epoch": Int(0, null=True, example="null"),
    "data.on_error": Choice("raise", "skip"),
    "generator.input_nc": Int(1, example="3"),
    "generator.output_nc": Int(1, example="3"),
    "generator.ngf": Int(1, example="64"),
    "generator.n_blocks": Int(0, example="9"),
    "generator.n_downsampling": Choice(0, 1, 2),  # the loader makes training images multiples of 4
    "generator.init_gain": Float(0.0, open_low=True, example="0.02"),
    "discriminator.input_nc": Int(1, example="3"),
    "discriminator.ndf": Int(1, example="64"),
    "discriminator.n_layers": Int(1, example="3"),
    "discriminator.init_gain": Float(0.0, open_low=True, example="0.02"),
    "method.lambda_*": Float(0.0),  # the weights of loss terms
    "method.num_patches": Int(1, example="256"),
    "method.tau": Float(0.0, open_low=True, example="0.07"),
}


#: ``i2i-test`` (configs/test.yaml)
TEST = {
    "ckpt": Str(example="checkpoints/<run>"),
    "which": Str(example="last.pt"),
    "device": DEVICE,
    "batch_size": Int(1),
    "num_images": Int(1, null=True, example="null"),
    "size_multiple": Int(1, example="4"),
    "resize": Int(1, null=True, example="256 (or resize=null: keep the size)"),
    "seed": Int(0),
    "feedback_placeholder": Choice("ones", "discriminator", null=True),
    "metrics": Subset(*METRICS, example="[fid,kid]"),
    "fused_kid": Bool(),
    "extractor": Choice(*EXTRACTORS),
}

#: ``i2i-compare`` (configs/compare.yaml)
COMPARE = {
    "real": Folder(example="<folder of target-domain images>"),
    "fake": Folder(example="<folder of generated images>"),
    "real2": Folder(null=True, example="null"),
    "metrics": Subset(*METRICS, empty=False, example="[fid,kid]"),
    "device": DEVICE,
    "use_cache": Bool(),
    "extractor": Choice(*EXTRACTORS),
    "batch_size": Int(1, example="50"),
    "num_workers": Int(0, example="2"),
    "num_threads": Int(1, null=True, example="null"),
    "kid_subsets": Int(1, example="100"),
    "kid_subset_size": Int(2, example="1000"),
    "swd_resolution": Int(16, example="256"),
    "pr_k": Int(1, example="3"),
    "seed": Int(0),
}


def _spec(key: str, schema: dict[str, Spec]) -> Spec | None:
    if key in schema:
        return schema[key]
    return next((s for pattern, s in schema.items() if "*" in pattern and fnmatch.fnmatchcase(key, pattern)), None)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def show(value) -> str:
    """A value as it is written on the command line (``abc``, ``[fid,is]``, ``null``)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(show, value)) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) and not value else str(value)


def problems(values: dict, schema: dict[str, Spec]) -> list[tuple[str, Any, Spec]]:
    """(key, value, spec) of every key of ``values`` (a resolved, nested dict) that ``schema`` rejects, in order."""
    out = []
    for key, value in _flatten(values).items():
        spec = _spec(key, schema)
        if spec is not None and not spec.accepts(value):
            out.append((key, value, spec))
    return out


def check(values: dict, schema: dict[str, Spec]) -> None:
    """Raise one :class:`ConfigError` line for the first key ``schema`` rejects, listing the other bad keys."""
    bad = problems(values, schema)
    if bad:
        key, value, spec = bad[0]
        more = f" (also bad: {', '.join(k for k, _, _ in bad[1:])})" if len(bad) > 1 else ""
        raise ConfigError(f"{key}={show(value)}: must be {spec.want} — set e.g. {key}={spec.example}{more}")
