"""Up-front dataset checks with one-line, actionable errors.

The published loader silently builds an empty dataset from a wrong ``--dataroot`` and fails later
with "num_samples should be a positive integer value, but got num_samples=0" (CUT #89). Here the
layout ``<root>/{train,test}{A,B}/`` and the image files are checked before any work starts, and
each error names the path and the fix.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from i2i.data.errors import DataError
from i2i.data.images import IMG_EXTENSIONS, check_channels, is_image_file, list_images

_PHASE_FALLBACK = {"test": "val"}  # published CUT: testA/testB fall back to valA/valB
_SUPPORTED_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F",
                    "I;16", "I;16L", "I;16B", "I;16N"}
_EXT_HINT = "/".join(e[1:] for e in IMG_EXTENSIONS)


def domain_dir(root: str | os.PathLike, phase: str, domain: str) -> Path:
    """``<root>/<phase><domain>``, or ``<root>/val<domain>`` for a missing test folder (published)."""
    path = Path(root) / f"{phase}{domain}"
    fallback = _PHASE_FALLBACK.get(phase)
    if not path.is_dir() and fallback and (Path(root) / f"{fallback}{domain}").is_dir():
        return Path(root) / f"{fallback}{domain}"
    return path


def _layout_hint(root: Path, missing: Path) -> tuple[str, str]:
    """Guess what is wrong with a root that lacks ``missing``: (what, fix)."""
    name = missing.name
    nested = sorted(p.parent for p in root.glob(f"*/{name}") if p.is_dir())
    if nested:
        return f"{missing}: not found, but {nested[0] / name} exists", f"set data.root={nested[0]}"
    if any(is_image_file(p) for p in root.iterdir() if p.is_file()):
        return (
            f"{root}: images lie directly in data.root, no {name}/",
            f"put domain A in {root / name[:-1]}A/ and domain B in {root / name[:-1]}B/ "
            f"(or use data=folder for single-folder inference)",
        )
    phase = name[:-1]
    if (root / phase).is_dir():
        return (
            f"{missing}: not found; {root / phase}/ looks like a <phase>/<class>/ layout (AFHQ)",
            f"run datasets/prepare_afhq_cat2dog.sh or move the classes to {phase}A/ and {phase}B/",
        )
    return (
        f"{missing}: not found",
        "data.root must contain trainA/, trainB/, testA/, testB/ "
        "(see datasets/README.md; download with: bash scripts/download_dataset.sh <name>)",
    )


def _check_domain_dir(root: Path, path: Path, role: str) -> None:
    if not path.is_dir():
        what, fix = _layout_hint(root, path)
        raise DataError(f"{what}{role} — {fix}")
    if not list_images(path):
        others = sorted({p.suffix.lower() for p in path.rglob("*") if p.is_file()})
        found = f" (found only {', '.join(others)} files)" if others else ""
        raise DataError(f"{path}: no images ({_EXT_HINT}) found{found}{role} — add images or fix data.root")


def check_unpaired_root(
    root: str | os.PathLike,
    phases: Sequence[str] = ("train",),
    direction: str = "AtoB",
    domains: Sequence[str] = ("A", "B"),
) -> dict[str, tuple[Path, Path]]:
    """Check the unpaired layout ``<root>/<phase>A``, ``<root>/<phase>B`` (test falls back to val).

    Args:
        root: dataset root (``data.root``).
        phases: phases whose folders must exist and hold images.
        direction: 'AtoB' or 'BtoA' (only used to name source/target in messages).
        domains: which of 'A', 'B' are required (inference needs only the source domain).

    Returns:
        ``{phase: (dir_A, dir_B)}`` in folder terms (not swapped by ``direction``).

    Raises:
        DataError: missing root, wrong layout (images directly in root, nested ``<root>/<name>/trainA``,
            AFHQ-style ``train/<class>``), missing or empty domain folder. One line with the fix.
    """
    if direction not in ("AtoB", "BtoA"):
        raise DataError(f"data.direction={direction!r}: unknown — use AtoB or BtoA")
    rootp = Path(root)
    if not rootp.exists():
        raise DataError(
            f"{rootp}: dataset root not found — set data.root to a folder with trainA/ and trainB/ "
            f"(download: bash scripts/download_dataset.sh <name>; see datasets/README.md)"
        )
    if not rootp.is_dir():
        raise DataError(f"{rootp}: data.root is a file, not a folder — set data.root to the dataset folder")
    source = "A" if direction == "AtoB" else "B"
    out = {}
    for phase in phases:
        dirs = {d: domain_dir(rootp, phase, d) for d in ("A", "B")}
        for d in domains:
            role = f" [{'source' if d == source else 'target'} domain, direction={direction}]"
            _check_domain_dir(rootp, dirs[d], role)
        out[phase] = (dirs["A"], dirs["B"])
    return out


def _probe(path: str, channels: int, min_size: int | None, min_size_fix: str) -> str | None:
    """Return the one-line problem with ``path`` or None (the file is decoded completely)."""
    try:
        with Image.open(path) as img:
            mode, (w, h) = img.mode, img.size
            img.load()  # the whole body: a truncated JPEG or PNG fails here, not in the middle of training
    except FileNotFoundError:
        return f"{path}: file not found — fix data.root or remove the stale path"
    except UnidentifiedImageError:
        return f"{path}: cannot decode image (not an image file) — remove or replace the file"
    except Exception as err:  # PIL raises many types for corrupt files
        return f"{path}: cannot decode image (corrupt? {type(err).__name__}: {err}) — remove or replace the file"
    if mode not in _SUPPORTED_MODES:
        return (f"{path}: image mode {mode!r} cannot be converted to {channels} channel(s) — re-save the file as RGB "
                "or L")
    if min_size and (w < min_size or h < min_size):
        return f"{path}: {w}x{h} image is smaller than {min_size} — {min_size_fix}"
    return None


#: from this many files on, the check shows a progress bar
PROGRESS_FROM = 500


def find_bad_images(
    paths: Iterable[str | os.PathLike],
    channels: int = 3,
    min_size: int | None = None,
    min_size_fix: str = "use data.preprocess=resize_and_crop or a smaller data.crop_size",
    threads: int | None = None,
) -> list[str]:
    """One-line problems (corrupt, truncated, non-image, unsupported mode, too small) of all ``paths``, in order.

    Every file is decoded completely, by ``threads`` threads (default: up to 8; Pillow decodes without holding
    the GIL), with a progress bar on stderr from :data:`PROGRESS_FROM` files on.
    """
    check_channels(channels)
    paths = [os.fspath(p) for p in paths]
    threads = threads or min(8, os.cpu_count() or 1)
    bar = tqdm(total=len(paths), desc="checking images", unit="img", disable=len(paths) < PROGRESS_FROM,
               dynamic_ncols=True, leave=False)
    with bar, ThreadPoolExecutor(max_workers=threads) as pool:
        problems = []
        for problem in pool.map(lambda p: _probe(p, channels, min_size, min_size_fix), paths):
            problems.append(problem)
            bar.update(1)
    return [p for p in problems if p is not None]


def check_images(
    paths: Iterable[str | os.PathLike],
    channels: int = 3,
    min_size: int | None = None,
    min_size_fix: str = "use data.preprocess=resize_and_crop or a smaller data.crop_size",
    on_error: str = "raise",
) -> list[str]:
    """Check image files up front; raise on (or, with ``on_error='warn'``, warn about) the FIRST bad one.

    Args:
        paths: image files.
        channels: target channels (1, 3 or 4).
        min_size: minimum height and width (``None``: no check).
        min_size_fix: the fix named in the too-small message.
        on_error: 'raise' -> :class:`DataError` naming the first bad file (and how many more there
            are); 'warn' -> one ``warnings.warn`` line instead.

    Returns:
        The list of problems (empty when all files are fine).
    """
    problems = find_bad_images(paths, channels, min_size, min_size_fix)
    if problems:
        more = f" (and {len(problems) - 1} more bad files)" if len(problems) > 1 else ""
        if on_error == "raise":
            raise DataError(problems[0] + more)
        warnings.warn(problems[0] + more, stacklevel=2)
    return problems
