"""Checkpoints: the whole training state, written atomically, read without unpickling code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (``format: i2i-checkpoint``):
every network, optimizer, step, epoch, RNG states, best metrics and the resolved config (``last.pt``,
``best_<metric>.pt``). Epoch snapshots (``epoch_XXXX.pt``) keep, by default, only what inference reads
(:func:`inference_state`): a fraction of the size, enough for ``i2i-test`` and ``i2i export``, not for a resume.
It is written to a
temporary file in the same directory, fsynced and renamed over the target, so a crash at any moment leaves
the previous file intact. It is read with ``torch.load(weights_only=True)``: a file carrying a pickled
object (code) is refused.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "i2i-checkpoint"

#: top-level keys of an inference-only snapshot: what ``build.load_generator`` reads (``i2i-test``, ``i2i export``)
INFERENCE_KEYS = ("format", "step", "epoch", "G", "cfg")
#: keys only a full training state holds; a resume needs every one
TRAINING_KEYS = ("D", "method", "opt_G", "opt_D", "rng")
#: ``ckpt/epoch_XXXX.pt``
_EPOCH_SNAPSHOT = re.compile(r"epoch_(\d+)\.pt")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file and the fix."""


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror}) — check the run directory's "
                              "permissions and free space") from e
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint gets the usual permissions
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror}) — check the run directory's "
                              "permissions and free space; the previous checkpoint is untouched") from e
    except RuntimeError as e:
        Path(tmp).unlink(missing_ok=True)
        reason = _write_failure(e)
        if reason is None:
            raise
        raise CheckpointError(f"{path}: cannot write checkpoint ({reason}) — check the run directory's "
                              "permissions and free space; the previous checkpoint is untouched") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_failure(err: RuntimeError) -> str | None:
    """The reason of a failed write inside ``torch.save``, or None for a RuntimeError of another kind.

    torch's zip writer calls the file's ``write`` and, when that raises (a full disk), reports a RuntimeError
    (``unexpected pos ...`` or ``PytorchStreamWriter failed writing file ...``) with the OSError as its context.
    """
    context = err.__context__
    if isinstance(context, OSError) and context.strerror:
        return context.strerror
    text = str(err)
    if "unexpected pos" in text or "PytorchStreamWriter" in text or "file write failed" in text:
        return f"the write failed: {text.splitlines()[0].strip()}"
    return None


def remove_stale_temps(directory: str | Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed :func:`atomic_torch_save` left in ``directory``.

    They are never read (resume loads ``last.pt``); removing them only frees disk space. Call it when no other
    process writes checkpoints into ``directory``.
    """
    directory = Path(directory)
    stale = sorted(directory.glob(".*.tmp")) if directory.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def mismatch_line(err: Exception) -> str:
    """The informative line of a ``load_state_dict`` error (``size mismatch for model.1.weight: ...``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__).rstrip(".")


def config_diff(saved: dict, current: dict, sections=("generator", "discriminator", "method", "feedback")) -> list[str]:
    """``section.key: saved -> current`` for the architecture sections where two resolved configs differ."""
    out = []
    for section in sections:
        a, b = saved.get(section) or {}, current.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{section}.{key}: {a.get(key)!r} in the checkpoint, {b.get(key)!r} now")
    return out


#: leading bytes of files torch.load can read: a zip archive (torch.save since 1.6, TorchScript) or a pickle of
#: protocol >= 2 (the legacy format)
_TORCH_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x80")

#: leading bytes of files that get passed as checkpoints by mistake -> what they are
_OTHER_MAGIC = (
    (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"BM", "a BMP image"),
    (b"RIFF", "a RIFF file (WebP image, WAV, AVI)"), (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"),
    (b"\x93NUMPY", "a NumPy .npy array"), (b"\x89HDF", "an HDF5 file"), (b"7z\xbc\xaf", "a 7-Zip archive"),
)

#: the fix named for any file that is not a checkpoint
_CHECKPOINT_FIX = ("give a file written by torch.save: a run's ckpt/*.pt (or the run dir) or a published "
                   "latest_net_G.pth")


def _first_line(err: Exception, limit: int = 160) -> str:
    """The first sentence of an error's first line (torch's reader errors go on for several sentences)."""
    lines = str(err).strip().splitlines()
    line = lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__
    return line if len(line) <= limit else line[:limit] + "..."


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def not_torch_file(head: bytes) -> str | None:
    """What a file whose first bytes are ``head`` looks like, when torch.load cannot read it at all.

    Returns:
        ``None`` for a zip archive or a pickle (what ``torch.save`` writes), else e.g. ``"it looks like a JPEG
        image"`` or ``"the file is empty"``.
    """
    if head.startswith(_TORCH_MAGIC):
        return None
    if not head:
        return "the file is empty"
    for magic, what in _OTHER_MAGIC:
        if head.startswith(magic):
            return f"it looks like {what}"
    if _looks_like_text(head):
        return "it is a text file, perhaps the HTML page of a failed download" if head.lstrip()[:1] == b"<" \
            else "it is a text file"
    return "it is neither a zip archive nor a pickle"


def _is_refused_pickle(err: pickle.UnpicklingError) -> bool:
    """Whether torch's weights-only unpickler stopped at a Python object (as opposed to damaged pickle data)."""
    text = str(err)
    return not any(s in text for s in ("Unsupported operand", "invalid load key", "truncated"))


def safe_load(path: str | Path, map_location="cpu"):
    """Load a checkpoint or weights file without executing code (``weights_only=True``).

    Raises:
        CheckpointError: one line naming the file: missing; not a PyTorch file at all (an image, empty, text, ...,
            told apart by its first bytes); refused because it holds pickled Python objects; damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file — check the path (a run dir holds ckpt/last.pt)")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror}) — check the file's permissions") from e
    what = not_torch_file(head)
    if what is not None:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({what}) — {_CHECKPOINT_FIX}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if not _is_refused_pickle(e):
            raise CheckpointError(f"{path}: not a readable checkpoint (damaged pickle data) — the file may be "
                                  f"truncated; {_CHECKPOINT_FIX}") from e
        raise CheckpointError(f"{path}: refused — the file contains pickled Python objects, which could run code; "
                              "only plain tensors/state_dicts are loaded "
                              "(re-save it with torch.save(state_dict))") from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(e)}) — the file may be "
                              "truncated or not a PyTorch file") from e


def capture_rng() -> dict:
    """RNG states of Python, NumPy, torch CPU and CUDA as plain containers."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], npst[1].numpy().astype(np.uint32), npst[2], npst[3], npst[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def inference_state(state: dict, method: dict | None = None, with_D: bool = False) -> dict:
    """What inference needs of a full training state: generator weights, config, step and epoch.

    A feedback run also keeps the method's inference state (``Method.inference_state_dict``: the transfer block,
    and what its test-time placeholder map comes from) and, for one-sided methods, ``D``.

    Args:
        state: a full state (:meth:`i2i.engine.checkpointing.Checkpointer.state_dict`).
        method: the method's inference state; kept as ``method`` when not empty.
        with_D: with a ``method`` entry, also keep ``D`` (the placeholder map may come from the discriminator).

    Returns:
        A new dict with the keys :data:`INFERENCE_KEYS` (plus ``method`` and maybe ``D`` for feedback runs); the
        tensors are shared with ``state`` and ``method``.
    """
    out = {key: state[key] for key in INFERENCE_KEYS}
    if method:
        out["method"] = dict(method)
        if with_D:
            out["D"] = state["D"]
    return out


def check_training_state(state: dict, path: str | Path) -> None:
    """Raise one :class:`CheckpointError` line when ``state`` lacks what a resume needs (an inference snapshot)."""
    if all(key in state for key in TRAINING_KEYS):
        return
    raise CheckpointError(f"{path}: an inference-only snapshot (generator weights, no optimizer or RNG state) holds "
                          "no training state — resume from <run>/ckpt/last.pt (resume=auto) or from an epoch "
                          "snapshot written with train.epoch_snapshots=full")


def prune_epoch_snapshots(directory: str | Path, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` ``epoch_XXXX.pt`` files of ``directory`` (``None``: keep all).

    Only epoch snapshots are touched (never ``last.pt`` or ``best_*.pt``); newest means the highest epoch number.

    Returns:
        The files deleted, oldest first.
    """
    directory = Path(directory)
    if keep is None or not directory.is_dir():
        return []
    snapshots = sorted((int(m.group(1)), p) for p in directory.iterdir()
                       if (m := _EPOCH_SNAPSHOT.fullmatch(p.name)) and p.is_file())
    old = [p for _, p in snapshots[:max(len(snapshots) - keep, 0)]]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def is_checkpoint(obj) -> bool:
    """True for a dict written by :mod:`i2i.engine.checkpointing` (as opposed to a bare state_dict)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT
