"""The published CUT training transform, made explicit and parametric.

Published ``base_dataset.get_transform`` (taesungp/contrastive-unpaired-translation, data/base_dataset.py), in order:

1. resize (``resize_and_crop``: square ``[load_size, load_size]``, BICUBIC, aspect ratio not kept;
   ``scale_width_and_crop``: width ``load_size``, height ``max(load_size * h / w, crop_size)``),
2. random crop ``crop_size`` (skipped for ``none``),
3. ``__make_power_2(base=4)``: resize so H and W are multiples of 4 (always appended in CUT; a
   no-op whenever the crop size is a multiple of 4),
4. random horizontal flip with p = 0.5 (unless ``flip=False``),
5. ToTensor + Normalize(0.5, 0.5) -> [-1, 1].

Differences from the published code, on purpose: randomness comes from a ``random.Random`` passed
in (never the global RNG), and the parameters actually applied are returned. The published
"gta2cityscapes" half-height special case is not reproduced.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import torch
from PIL import Image

from i2i.data.errors import DataError
from i2i.data.images import to_tensor

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width_and_crop", "none")


@dataclass(frozen=True)
class TransformParams:
    """What the transform did: crop offset in the resized image, resized size, horizontal flip.

    For ``none`` the offset is (0, 0) and the size is the final (multiple-of-4) size.
    """

    top: int
    left: int
    load_h: int
    load_w: int
    flipped: bool

    def as_tensor(self) -> torch.Tensor:
        """LongTensor [5] = (top, left, load_h, load_w, flipped)."""
        return torch.tensor([self.top, self.left, self.load_h, self.load_w, int(self.flipped)], dtype=torch.long)


def check_preprocess(preprocess: str, load_size: int, crop_size: int) -> None:
    """Raise a one-line :class:`DataError` for an unknown mode or inconsistent sizes."""
    if preprocess not in PREPROCESS_MODES:
        raise DataError(f"data.preprocess={preprocess!r}: unknown mode — use one of {', '.join(PREPROCESS_MODES)}")
    if crop_size < 1 or load_size < 1:
        raise DataError(f"data.load_size={load_size}, data.crop_size={crop_size}: sizes must be positive")
    if preprocess in ("resize_and_crop", "scale_width_and_crop") and load_size < crop_size:
        raise DataError(
            f"data.load_size={load_size} < data.crop_size={crop_size}: the crop would not fit — "
            f"set data.load_size >= data.crop_size"
        )


def make_multiple(img: Image.Image, base: int = 4) -> Image.Image:
    """Published ``__make_power_2``: resize (BICUBIC) so H and W are multiples of ``base``.

    Uses ``round(size / base) * base`` (at least ``base``); returns ``img`` unchanged if already a
    multiple.
    """
    ow, oh = img.size
    w, h = max(base, int(round(ow / base) * base)), max(base, int(round(oh / base) * base))
    return img if (w, h) == (ow, oh) else img.resize((w, h), Image.BICUBIC)


def _resize(img: Image.Image, preprocess: str, load_size: int, crop_size: int) -> Image.Image:
    """Step 1: the mode's resize (no-op for ``crop``)."""
    if preprocess == "resize_and_crop":
        return img.resize((load_size, load_size), Image.BICUBIC)
    if preprocess == "scale_width_and_crop":  # published __scale_width
        ow, oh = img.size
        if ow == load_size and oh >= crop_size:
            return img
        return img.resize((load_size, int(max(load_size * oh / ow, crop_size))), Image.BICUBIC)
    return img


def _random_crop(
    img: Image.Image, crop_size: int, rng: random.Random, path: str | os.PathLike | None
) -> tuple[Image.Image, int, int]:
    """Step 2: uniform random crop; returns (crop, top, left)."""
    w, h = img.size
    if w < crop_size or h < crop_size:
        raise DataError(
            f"{path or '<image>'}: {w}x{h} image is smaller than data.crop_size={crop_size} — "
            f"use data.preprocess=resize_and_crop or a smaller data.crop_size"
        )
    left = rng.randint(0, w - crop_size)  # drawn x first, then y, as the published get_params
    top = rng.randint(0, h - crop_size)
    return img.crop((left, top, left + crop_size, top + crop_size)), top, left


def transform_pil(
    img: Image.Image,
    rng: random.Random,
    *,
    preprocess: str = "resize_and_crop",
    load_size: int = 286,
    crop_size: int = 256,
    flip: bool = True,
    size_multiple: int = 4,
    path: str | os.PathLike | None = None,
) -> tuple[Image.Image, TransformParams]:
    """Apply resize, crop, make-multiple and flip to a PIL image (see the module docstring).

    Args:
        img: decoded image (any mode).
        rng: source of all randomness (crop offset, then the flip coin).
        preprocess: one of :data:`PREPROCESS_MODES`.
        load_size: resize target (square side, or width for ``scale_width_and_crop``).
        crop_size: random crop side.
        flip: random horizontal flip with p = 0.5.
        size_multiple: final H and W are made multiples of this (published: 4).
        path: file name used in error messages.

    Returns:
        (transformed PIL image, :class:`TransformParams` actually applied).

    Raises:
        DataError: unknown mode, inconsistent sizes, or (``crop``) an image smaller than the crop.
    """
    check_preprocess(preprocess, load_size, crop_size)
    img = _resize(img, preprocess, load_size, crop_size)
    load_w, load_h = img.size
    top = left = 0
    if preprocess != "none":
        img, top, left = _random_crop(img, crop_size, rng, path)
    img = make_multiple(img, size_multiple)
    if preprocess == "none":
        load_w, load_h = img.size
    flipped = bool(flip) and rng.random() < 0.5
    if flipped:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img, TransformParams(top, left, load_h, load_w, flipped)


def transform_image(
    img: Image.Image, rng: random.Random, **kwargs
) -> tuple[torch.Tensor, TransformParams]:
    """:func:`transform_pil` followed by ToTensor + Normalize: returns ([C, H, W] in [-1, 1], params)."""
    out, params = transform_pil(img, rng, **kwargs)
    return to_tensor(out), params
