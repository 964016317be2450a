#!/usr/bin/env python3
"""Convert Cityscapes into the unpaired layout used by CUT (photo <-> semantic label map).

Mirrors the published ``datasets/prepare_cityscapes_dataset.py``: for each photo
``leftImg8bit/<split>/<city>/<id>_leftImg8bit.png`` and its colour label map
``gtFine/<split>/<city>/<id>_gtFine_color.png`` (checked to match), both are resized to 256x256
(BICUBIC, Pillow's default for RGB) and written as JPEG (quality 100, no chroma subsampling):

    <output_dir>/trainA  photos      (train split)      <output_dir>/testA  photos      (val split)
    <output_dir>/trainB  label maps  (train split)      <output_dir>/testB  label maps  (val split)

CUT's cityscapes models translate label -> photo, i.e. ``data.direction=BtoA``. The output folder
is written into a temporary folder and renamed into place when complete.

Usage:
    python datasets/prepare_cityscapes.py --gtFine_dir gtFine --leftImg8bit_dir leftImg8bit \
        --output_dir datasets/cityscapes [--size 256] [--label_resample bicubic|nearest] [--format jpg|png]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile

from PIL import Image

SPLITS = {"train": "train", "val": "test"}  # cityscapes split -> our phase


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def _pairs(gtfine_dir: str, photo_dir: str, split: str) -> list[tuple[str, str]]:
    labels = sorted(glob.glob(os.path.join(gtfine_dir, split, "*", "*_gtFine_color.png")))
    photos = sorted(glob.glob(os.path.join(photo_dir, split, "*", "*_leftImg8bit.png")))
    if not photos:
        _fail(f"{os.path.join(photo_dir, split)}: no */*_leftImg8bit.png — pass the unzipped leftImg8bit/ folder")
    if len(labels) != len(photos):
        _fail(f"{split}: {len(photos)} photos but {len(labels)} *_gtFine_color.png label maps — pass the unzipped gtFine/ folder")
    for lab, pho in zip(labels, photos):
        if os.path.basename(lab).replace("_gtFine_color", "") != os.path.basename(pho).replace("_leftImg8bit", ""):
            _fail(f"{lab} does not match {pho} — the gtFine and leftImg8bit folders are from different releases")
    return list(zip(photos, labels))


def _save(img: Image.Image, path: str, fmt: str) -> None:
    if fmt == "jpg":
        img.save(path + ".jpg", format="JPEG", quality=100, subsampling=0)
    else:
        img.save(path + ".png")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gtFine_dir", required=True)
    ap.add_argument("--leftImg8bit_dir", required=True)
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--label_resample", choices=("bicubic", "nearest"), default="bicubic",
                    help="bicubic = published (blends label colours at edges); nearest keeps them pure")
    ap.add_argument("--format", choices=("jpg", "png"), default="jpg")
    args = ap.parse_args(argv)
    if os.path.exists(args.output_dir):
        _fail(f"{args.output_dir}: already exists — remove it or choose another --output_dir")
    label_resample = Image.BICUBIC if args.label_resample == "bicubic" else Image.NEAREST
    parent = os.path.dirname(os.path.abspath(args.output_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".cityscapes.tmp.", dir=parent)
    try:
        for split, phase in SPLITS.items():
            pairs = _pairs(args.gtFine_dir, args.leftImg8bit_dir, split)
            for d in ("A", "B"):
                os.makedirs(os.path.join(tmp, phase + d))
            for photo, label in pairs:
                stem = os.path.basename(photo).replace("_leftImg8bit.png", "")
                size = (args.size, args.size)
                _save(Image.open(photo).convert("RGB").resize(size, Image.BICUBIC), os.path.join(tmp, phase + "A", stem), args.format)
                _save(Image.open(label).convert("RGB").resize(size, label_resample), os.path.join(tmp, phase + "B", stem), args.format)
            print(f"{split}: {len(pairs)} photo/label pairs -> {phase}A/ {phase}B/")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        os.rename(tmp, args.output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"done: {args.output_dir} (train with data.direction=BtoA for label -> photo)")


if __name__ == "__main__":
    main()
