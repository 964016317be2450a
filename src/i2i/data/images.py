"""Image files: discovery, decoding with explicit channel conversion, tensor conversion.

The published CUT loader does ``Image.open(path).convert('RGB')`` whatever ``input_nc`` is
(taesungp/contrastive-unpaired-translation, data/unaligned_dataset.py; that repository's issues #57, #158, #173),
and PIL's own ``convert`` clips 16-bit
images at 255 instead of scaling them. Here the number of channels is a parameter and every mode
conversion is spelled out in :func:`load_image`.

Tensors follow the published ``ToTensor`` + ``Normalize((0.5,)*C, (0.5,)*C)``: values in [-1, 1].
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from i2i.data.errors import DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File extensions treated as images (compared case-insensitively)."""

SUPPORTED_CHANNELS = (1, 3, 4)
_TARGET_MODE = {1: "L", 3: "RGB", 4: "RGBA"}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

PathLike = str | os.PathLike


def is_image_file(path: PathLike) -> bool:
    """Whether ``path`` has one of :data:`IMG_EXTENSIONS` (case-insensitive)."""
    return str(path).lower().endswith(IMG_EXTENSIONS)


def list_images(directory: PathLike, max_size: int | None = None) -> list[str]:
    """Image files under ``directory``, found recursively, sorted, optionally capped.

    Hidden files and folders (names starting with '.') are skipped. A symlink to a folder is followed once, and
    only when its target lies inside ``directory`` (resolved): a loop (``trainA/self -> .``, ``trainA/up -> ..``)
    or a link to another domain adds no file twice and nothing from outside (a warning names the link). Symlinked
    files are kept wherever they point. The published ``make_dataset`` caps before sorting; here the list is
    sorted first, so the cap keeps the same files on every file system.

    Args:
        directory: folder to search.
        max_size: keep at most this many paths (``None``: all).

    Returns:
        Sorted list of path strings.
    """
    top = os.path.realpath(directory)
    seen, found, pending = {top}, [], [os.fspath(directory)]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # unreadable folder: as os.walk, skipped
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():  # follows symlinks
                real = os.path.realpath(entry.path)
                if real in seen:
                    continue
                if entry.is_symlink() and os.path.commonpath([top, real]) != top:
                    warnings.warn(f"{entry.path}: symlink to {real}, outside {directory} — not followed (link the "
                                  "files, or move them into the domain folder)", stacklevel=2)
                    continue
                seen.add(real)
                pending.append(entry.path)
            elif is_image_file(entry.name):
                found.append(entry.path)
    found.sort()
    return found if max_size is None else found[: max(0, int(max_size))]


def check_channels(channels: int) -> int:
    """Return ``channels`` if supported, else raise a one-line :class:`DataError`."""
    if channels not in SUPPORTED_CHANNELS:
        raise DataError(
            f"data.channels={channels}: unsupported number of channels — use 1 (grayscale), 3 (RGB) or 4 (RGBA)"
        )
    return channels


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """Map a single-channel 16/32-bit integer or float image to 8-bit 'L' by its true range.

    - 'I;16*' (uint16): ``round(v / 257)`` (65535 -> 255).
    - 'I' (int32): Pillow stores 16-bit PNG/TIFF data this way too, so values within [0, 65535] are
      treated as 16-bit (``/ 257``); otherwise negative values are clipped to 0 and the full positive
      int32 range [0, 2**31 - 1] is mapped to [0, 255].
    - 'F' (float32): maximum <= 1 -> [0, 1] data (``* 255``); maximum <= 255 -> already 8-bit scale;
      maximum <= 65535 -> 16-bit scale (``/ 257``); anything larger is min-max normalised. Values are
      clipped to [0, 255] after scaling.
    """
    arr = np.asarray(img)
    if img.mode in _SIXTEEN_BIT_MODES:
        out = arr.astype(np.float64) / 257.0
    elif img.mode == "I":
        arr = arr.astype(np.float64)
        lo, hi = (arr.min(), arr.max()) if arr.size else (0.0, 0.0)
        out = arr / 257.0 if lo >= 0 and hi <= 65535 else np.clip(arr, 0, None) * (255.0 / (2**31 - 1))
    else:  # 'F'
        arr = np.nan_to_num(arr.astype(np.float64))
        hi = arr.max() if arr.size else 0.0
        if hi <= 1.0:
            out = arr * 255.0
        elif hi <= 255.0:
            out = arr
        elif hi <= 65535.0:
            out = arr / 257.0
        else:
            lo = arr.min()
            out = (arr - lo) * (255.0 / (hi - lo))
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))  # uint8 [H, W] -> 'L'


def convert_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert a decoded PIL image to the mode for ``channels`` (see :func:`load_image`)."""
    target = _TARGET_MODE[check_channels(channels)]
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        img = _scale_to_8bit(img)  # -> 'L'
    elif img.mode in ("P", "PA"):
        # Palette images may carry transparency in the palette: expand it first.
        img = img.convert("RGBA")
    elif img.mode == "CMYK" and target != "RGBA":
        img = img.convert("RGB")
    if img.mode != target:
        img = img.convert(target)
    return img


def _decode_error(path: PathLike, reason: str) -> DataError:
    return DataError(f"{path}: cannot decode image ({reason}) — remove or replace the file")


def load_image(path: PathLike, channels: int = 3) -> Image.Image:
    """Decode an image file and convert it explicitly to ``channels`` channels.

    Conversions (the first frame of multi-frame files is used; EXIF orientation is NOT applied, as in
    the published code):

    - ``channels=3`` -> 'RGB':
        - 'L', 'LA', '1': gray replicated to R=G=B ('LA': alpha dropped).
        - 'P', 'PA': palette expanded (through RGBA), alpha dropped.
        - 'RGBA': alpha DROPPED — the colour values are kept as stored; compositing on a white (or
          any) background is NOT done.
        - 'CMYK': PIL's naive conversion without colour management
          (R = (255 - C)(255 - K) / 255, likewise G, B; embedded ICC profiles are ignored).
        - 'I;16*' (16-bit), 'I' (32-bit int), 'F' (float): scaled to 8 bits by their true range
          (16-bit: ``v / 257``; see :func:`_scale_to_8bit`), then replicated to RGB. (PIL's own
          ``convert`` would clip them at 255.)
    - ``channels=1`` -> 'L': colour images use PIL's ITU-R 601-2 luma
      (L = 0.299 R + 0.587 G + 0.114 B); alpha dropped; 16/32-bit/float scaled as above.
    - ``channels=4`` -> 'RGBA': images without alpha get alpha = 255.

    Args:
        path: image file.
        channels: 1, 3 or 4.

    Returns:
        A loaded PIL image in mode 'L', 'RGB' or 'RGBA'.

    Raises:
        DataError: missing, corrupt, truncated or non-image file (one line: path and fix), or an
            unsupported ``channels``.
    """
    check_channels(channels)
    try:
        with Image.open(path) as img:
            img.load()
            return convert_mode(img, channels)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found — fix data.root or remove the stale path") from None
    except UnidentifiedImageError:
        raise _decode_error(path, "not an image file") from None
    except Image.DecompressionBombError as err:
        raise _decode_error(path, f"too large: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = "truncated?" if "truncated" in str(err) else f"truncated? {type(err).__name__}: {err}"
        raise _decode_error(path, reason) from None


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> float32 tensor [C, H, W] in [-1, 1] (published ToTensor + Normalize(0.5, 0.5))."""
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    if arr.ndim == 2:
        arr = arr[:, :, None]  # [H, W] -> [H, W, 1]
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()  # [C, H, W] in [0, 255]
    return (x / 255.0 - 0.5) / 0.5


def to_pil(x: torch.Tensor) -> Image.Image:
    """Inverse of :func:`to_tensor`: [C, H, W] (C in 1, 3, 4) in [-1, 1] -> 8-bit PIL image."""
    x = x.detach().float().cpu().clamp(-1, 1)
    arr = ((x + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()  # [H, W, C]
    check_channels(arr.shape[2])
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)  # 'L', 'RGB' or 'RGBA'

