"""The generator of a run or checkpoint as a standalone file: TorchScript, ONNX or a published ``latest_net_G.pth``.

* ``torchscript`` — ``torch.jit.trace`` of the generator (``torch.jit.load`` runs it without i2i). The ResNet
  generator has no size-dependent Python branches, so the traced graph takes any batch and any H, W that are
  multiples of 4 (checked by the tests at two sizes). The file carries ``i2i.json`` (``_extra_files``).
* ``onnx`` — the TorchScript-based exporter (``dynamo=False``; the ``torch.export`` one needs ``onnxscript``),
  input ``image`` and output ``translated``, both ``[batch, C, height, width]`` with all three axes dynamic;
  the same JSON in the model's ``metadata_props`` (key ``i2i``). Needs the ``onnx`` package.
* ``published`` — the generator's state_dict, which has the published ResnetGenerator keys
  (:mod:`i2i.compat.published`), saved as a plain tensor dict: the published CUT code and ``i2i-test`` load it.

Inputs are float32 in [-1, 1] with the generator's input channels. Runs trained with attention feedback are
refused: their test-time input is built by the feedback transfer block, which a bare generator does not contain.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

from i2i.build import ConfigError, feedback_enabled, load_generator
from i2i.compat.published import infer_generator_kwargs
from i2i.engine.state import CheckpointError

FORMATS = ("torchscript", "onnx", "published")
SUFFIXES = {"torchscript": ".ts", "onnx": ".onnx", "published": ".pth"}
INPUT_NAME, OUTPUT_NAME = "image", "translated"
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}
#: side of the example input that tracing runs (the traced graph does not depend on it)
EXAMPLE_SIZE = 64
#: (batch, H, W) at which :func:`max_abs_difference` compares the written file with the generator
CHECK_SHAPES = ((1, 64, 64), (2, 64, 96))
#: the oldest ONNX opset written (dynamic Pad and Slice inputs)
MIN_OPSET = 11


def check_format(fmt) -> str:
    """``fmt`` if it is an export format, else a :class:`ConfigError` naming ``format``."""
    if fmt is None or fmt == "???":
        raise ConfigError("format: missing — use format=torchscript, format=onnx or format=published")
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not an export format — use torchscript, onnx or published")
    return fmt


def check_exportable(info: dict) -> None:
    """Refuse a run trained with attention feedback (one line naming the checkpoint and what to use instead)."""
    cfg = info.get("cfg")
    if cfg and feedback_enabled(cfg):
        injection = cfg["feedback"]["injection"]
        raise CheckpointError(
            f"{info['path']}: trained with attention feedback (feedback.injection={injection}), whose test-time "
            "generator input is built by the feedback transfer block, which an exported generator does not "
            f"contain — translate with i2i-test ckpt={info['path']}")


def default_out(ckpt: str | Path, fmt: str, which: str = "last.pt", source: str = "i2i") -> Path:
    """Where ``i2i export`` writes when ``out`` is not given.

    A run dir or ``<run>/ckpt/<file>`` -> ``<run>/export/``, any other file -> ``<its folder>/export/``; the name
    is ``G.ts`` / ``G.onnx`` / ``latest_net_G.pth`` for ``last.pt``, ``G_<stem>.ts`` / ``<stem>_net_G.pth`` for
    another i2i checkpoint (``best_fid.pt``, ``epoch_0010.pt``), and ``<stem>.ts`` / ``<stem>.onnx`` /
    ``<stem>.pth`` for a published file (``latest_net_G.pth`` -> ``export/latest_net_G.onnx``).
    """
    path = Path(ckpt)
    if path.is_dir():
        base, stem = path, Path(which).stem
    else:
        base, stem = (path.parent.parent if path.parent.name == "ckpt" else path.parent), path.stem
    if source == "published":
        name = stem
    elif fmt == "published":
        name = f"{'latest' if stem == 'last' else stem}_net_G"
    else:
        name = "G" if stem == "last" else f"G_{stem}"
    return base / "export" / f"{name}{SUFFIXES[fmt]}"


def resolve_out(out, ckpt: str | Path, fmt: str, which: str, info: dict) -> Path:
    """The file to write: ``out`` (a directory gets the default name) or :func:`default_out`."""
    default = default_out(ckpt, fmt, which, info["source"])
    if out in (None, ""):
        path = default
    else:
        path = Path(out)
        if path.is_dir() or str(out).endswith(("/", os.sep)):
            path = path / default.name
    if path.resolve() == Path(info["path"]).resolve():
        raise ConfigError(f"out={out}: is the checkpoint being exported — choose another file or directory")
    return path


def metadata(G: torch.nn.Module, info: dict, fmt: str) -> dict:
    """What the exported file is: its input, the generator's architecture and the checkpoint it came from."""
    in_nc, out_nc = _channels(G)
    meta = {"format": fmt, "source": info["source"], "checkpoint": info["path"],
            "input": f"[B, {in_nc}, H, W] float32 in [-1, 1], H and W multiples of 4",
            "output": f"[B, {out_nc}, H, W] float32 in [-1, 1]",
            "generator": dict(getattr(G, "config", {}))}
    for key in ("step", "epoch"):
        if key in info:
            meta[key] = info[key]
    return meta


def _channels(G: torch.nn.Module) -> tuple[int, int]:
    convs = [m for m in G.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[0].in_channels, convs[-1].out_channels


def _example(G: torch.nn.Module, batch: int = 1, h: int = EXAMPLE_SIZE, w: int = EXAMPLE_SIZE,
             seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, _channels(G)[0], h, w, generator=gen) * 2 - 1


def _atomic(path: Path, write) -> Path:
    """``write(tmp)`` then rename onto ``path`` (an interrupted export leaves no half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise ConfigError(f"out={path}: cannot write ({e.strerror or e}) — choose a writable file or directory "
                          "with out=<path>") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def export_torchscript(G: torch.nn.Module, path: Path, meta: dict | None = None) -> Path:
    """Trace ``G`` (dynamic batch, H, W) and save it with ``i2i.json`` as an extra file."""
    with warnings.catch_warnings(), torch.no_grad():
        # torch.jit's deprecation notice, and TracerWarnings from instance norm's size check (not a graph branch)
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(G, _example(G))
    extra = {"i2i.json": json.dumps(meta or {})}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            torch.jit.save(traced, str(tmp), _extra_files=extra)

    return _atomic(path, write)


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ConfigError("format=onnx needs the onnx package — pip install onnx (or pip install -e '.[export]'), "
                          "or export format=torchscript") from None
    return onnx


def _max_opset() -> int:
    """The newest opset the TorchScript-based exporter of this torch writes."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):
        return 17


def check_opset(opset) -> int:
    """``opset`` as an int the exporter supports, else a :class:`ConfigError` naming ``opset``."""
    newest = _max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"opset={opset!r} cannot be written — use an opset from {MIN_OPSET} to {newest} "
                          "(default 17)")
    return opset


def export_onnx(G: torch.nn.Module, path: Path, meta: dict | None = None, opset: int = 17) -> Path:
    """ONNX graph of ``G`` with dynamic batch, height and width; ``meta`` as ``metadata_props['i2i']``."""
    onnx = _import_onnx()
    opset = check_opset(opset)

    def write(tmp: Path) -> None:
        axes = {INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES}
        with warnings.catch_warnings():
            # the legacy exporter's deprecation notice, TracerWarnings and instance-norm train-mode notes
            warnings.simplefilter("ignore")
            torch.onnx.export(G, (_example(G),), str(tmp), dynamo=False, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True)
        model = onnx.load(str(tmp))
        model.doc_string = (meta or {}).get("input", "")
        entry = model.metadata_props.add()
        entry.key, entry.value = "i2i", json.dumps(meta or {})
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))

    return _atomic(path, write)


def export_published(G: torch.nn.Module, path: Path) -> Path:
    """``G``'s state_dict as a plain tensor dict with the published ResnetGenerator keys (``latest_net_G.pth``)."""
    state = OrderedDict((k, v.detach().cpu().clone()) for k, v in G.state_dict().items())
    try:
        kwargs = infer_generator_kwargs(state)
    except ValueError as e:
        raise ConfigError(f"format=published: {e} — export format=torchscript or onnx instead") from None
    if kwargs["n_downsampling"] != 2:
        raise ConfigError(f"format=published: the generator has n_downsampling={kwargs['n_downsampling']} and the "
                          "published ResnetGenerator always has 2 — export format=torchscript or onnx instead")
    return _atomic(path, lambda tmp: torch.save(state, tmp))


def export_generator(G: torch.nn.Module, fmt: str, path: Path, meta: dict | None = None, opset: int = 17) -> Path:
    """Write ``G`` (eval mode) in ``fmt`` to ``path``."""
    G = G.eval()
    if check_format(fmt) == "torchscript":
        return export_torchscript(G, path, meta)
    if fmt == "onnx":
        return export_onnx(G, path, meta, opset)
    return export_published(G, path)


def load_exported(path: str | Path, fmt: str):
    """A callable ``f(x: Tensor) -> Tensor`` that runs the exported file (ONNX: onnxruntime on the CPU)."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            module = torch.jit.load(str(path), map_location="cpu").eval()
        return lambda x: module(x)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
    G, _ = load_generator(path)
    return lambda x: G(x)


def max_abs_difference(path: str | Path, fmt: str, G: torch.nn.Module,
                       shapes=CHECK_SHAPES) -> list[tuple[tuple[int, int, int], float]]:
    """``[((batch, H, W), max |exported(x) - G(x)|), ...]`` on random inputs of each shape."""
    run = load_exported(path, fmt)
    out = []
    with torch.no_grad():
        for i, (b, h, w) in enumerate(shapes):
            x = _example(G, b, h, w, seed=i + 1)
            out.append(((b, h, w), float((run(x) - G.eval()(x)).abs().max())))
    return out


def run_export(cfg: dict) -> Path:
    """``i2i export``: load ``cfg['ckpt']``, write it in ``cfg['format']``, optionally check the file.

    Args:
        cfg: the keys of configs/export.yaml as a plain dict (``???`` marks a missing value).

    Returns:
        The written file.
    """
    fmt = check_format(cfg.get("format"))
    if cfg.get("ckpt") in (None, "", "???"):
        raise ConfigError("ckpt: missing — give ckpt=<run dir | i2i checkpoint | latest_net_G.pth>")
    which = cfg.get("which") or "last.pt"
    if fmt == "onnx":  # before loading anything
        _import_onnx()
        check_opset(cfg.get("opset", 17))
    G, info = load_generator(cfg["ckpt"], which)
    check_exportable(info)
    path = resolve_out(cfg.get("out"), cfg["ckpt"], fmt, which, info)
    meta = metadata(G, info, fmt)
    export_generator(G, fmt, path, meta, cfg.get("opset", 17))
    print(path)
    print(f"i2i export: {fmt}; input {meta['input']}", file=sys.stderr)
    if cfg.get("check", True):
        if fmt == "onnx" and not _has_onnxruntime():
            print("i2i export: check skipped (onnxruntime is not installed: pip install onnxruntime)",
                  file=sys.stderr)
        else:
            diffs = ", ".join(f"{d:.2e} at {b}x{h}x{w}" for (b, h, w), d in max_abs_difference(path, fmt, G))
            print(f"i2i export: max |exported - generator| = {diffs} (batch x H x W)", file=sys.stderr)
    return path


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
