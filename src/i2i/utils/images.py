"""Tensor <-> image conversion, sample grids and the HTML gallery."""

from __future__ import annotations

import functools
import html
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

#: pixels left of and above each column label
_LABEL_PAD = 2


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] image(s) -> uint8 as the published ``tensor2im`` saves them: clamp, (x + 1) / 2 * 255, truncate.

    The one conversion of the project: PNGs written by ``i2i-test`` and images scored in memory during training
    (``i2i.metrics.tensor_to_uint8`` is this function) get the same pixels, so their metrics agree.
    """
    return ((x.detach().float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)


def save_image(x: torch.Tensor, path: str | Path) -> None:
    """Save one [C, H, W] image in [-1, 1] as PNG (C = 1, 3 or 4); written atomically."""
    arr = to_uint8(x).cpu()
    arr = arr[0] if arr.shape[0] == 1 else arr.permute(1, 2, 0)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[x.shape[0]] if x.dim() == 3 else "L"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(arr.numpy(), mode=mode if x.shape[0] != 1 else "L").save(tmp, format="PNG")
    os.replace(tmp, path)


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> 3 channels (grey repeated, alpha dropped) for grids."""
    if x.shape[1] == 1:
        return x.repeat(1, 3, 1, 1)
    return x[:, :3]


@functools.lru_cache(maxsize=1)
def _label_font():
    """PIL's built-in default font (shipped with Pillow: nothing is downloaded)."""
    return ImageFont.load_default()


def label_band(names: list[str], width: int) -> torch.Tensor:
    """White column names on a black band, one ``width``-pixel cell per name (text longer than a cell is clipped).

    Returns:
        [3, band_h, len(names)*width] in [-1, 1]; ``band_h`` fits one line of the default font.
    """
    font = _label_font()
    left, top, right, bottom = font.getbbox("Ag_|")
    band_h = bottom + 2 * _LABEL_PAD
    band = Image.new("RGB", (len(names) * width, band_h), (0, 0, 0))
    for i, name in enumerate(names):
        cell = Image.new("RGB", (width, band_h), (0, 0, 0))  # drawing into the cell clips the text to it
        ImageDraw.Draw(cell).text((_LABEL_PAD, _LABEL_PAD), name, fill=(255, 255, 255), font=font)
        band.paste(cell, (i * width, 0))
    arr = torch.from_numpy(np.asarray(band).copy()).permute(2, 0, 1).float()  # [3, band_h, cols*W] in 0..255
    return arr / 127.5 - 1


def make_grid(columns: dict[str, torch.Tensor], max_rows: int = 4, labels: bool = False) -> torch.Tensor:
    """Images side by side: one column per entry (e.g. real_A | fake_B | real_B | idt_B), one row per sample.

    Args:
        columns: name -> [B, C, h, w] images in [-1, 1].
        max_rows: at most this many samples (rows).
        labels: draw each column's name on a band above it (:func:`label_band`).

    Returns:
        [3, band_h + rows*H, cols*W] in [-1, 1] (``band_h`` = 0 without labels). Columns of other sizes (e.g.
        heatmaps) are resized to the first.
    """
    first = next(iter(columns.values()))
    h, w = first.shape[-2:]
    cols = []
    for x in columns.values():
        x = to_rgb(x[:max_rows].detach().float())
        if x.shape[-2:] != (h, w):
            x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        cols.append(x.cpu())
    rows = [torch.cat([c[i] for c in cols], dim=2) for i in range(cols[0].shape[0])]  # each [3, H, cols*W]
    if labels:
        rows.insert(0, label_band(list(columns), w))
    return torch.cat(rows, dim=1)


def write_gallery(out_dir: str | Path, stems: list[str], columns: tuple[str, ...] = ("real_A", "fake_B"),
                  title: str = "i2i results") -> Path:
    """Write ``index.html`` showing, per input, the images ``<out_dir>/<column>/<stem>.png`` side by side."""
    out_dir = Path(out_dir)
    rows = []
    for stem in stems:
        cells = "".join(f'<td><img src="{html.escape(c)}/{html.escape(stem)}.png" width="256"><br>{html.escape(c)}</td>'
                        for c in columns)
        rows.append(f"<tr><td>{html.escape(stem)}</td>{cells}</tr>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{len(stems)} images</p><table border='1'>"
            + "".join(rows) + "</table></body></html>\n")
    path = out_dir / "index.html"
    tmp = path.with_name(".index.html.tmp")
    tmp.write_text(page)
    os.replace(tmp, path)
    return path
