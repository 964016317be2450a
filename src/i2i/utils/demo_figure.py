"""``python -m i2i.utils.demo_figure <results dir> <out.png>``: the demo's picture.

Puts the first test inputs (``real_A``) above their translations (``fake_B``), both enlarged twice without
smoothing, and writes the measured criteria of ``<results dir>/criteria.json`` (:mod:`i2i.utils.demo_check`)
underneath as the caption, one line per criterion.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SCALE = 2
GAP = 4
FONT_SIZE = 18
LINE = 24


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` px (its fixed small bitmap font on builds without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def _row(images: list[np.ndarray]) -> np.ndarray:
    """Images side by side with white gaps, each enlarged :data:`SCALE` times (nearest neighbour)."""
    tiles = [np.asarray(Image.fromarray(im).resize((im.shape[1] * SCALE, im.shape[0] * SCALE), Image.NEAREST))
             for im in images]
    gap = np.full((tiles[0].shape[0], GAP, 3), 255, np.uint8)
    parts = [p for t in tiles for p in (t, gap)][:-1]
    return np.concatenate(parts, axis=1)


def caption_lines(criteria: dict | None) -> list[str]:
    """The caption: one line per criterion (``ok`` or ``MISSED``, name, measured value)."""
    if criteria is None:
        return ["(no criteria.json: run python -m i2i.utils.demo_check first)"]
    lines = [f"{'ok    ' if c['ok'] else 'MISSED'}  {c['name']}: {c['value']}" for c in criteria["criteria"]]
    verdict = "all criteria met" if criteria["ok"] else "some criteria missed"
    return [f"Measured on all test images ({verdict}):", *lines]


def compose(reals: list[np.ndarray], fakes: list[np.ndarray], lines: list[str]) -> Image.Image:
    """The figure: a heading and the inputs, a heading and the translations, then the caption ``lines``."""
    top, bottom = _row(reals), _row(fakes)
    width, font = top.shape[1], _font()
    heights = [LINE, top.shape[0], LINE, bottom.shape[0], GAP + LINE * len(lines)]
    canvas = Image.new("RGB", (width, sum(heights) + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    draw.text((0, y + 2), "inputs (domain A: flat shapes)", fill="black", font=font)
    canvas.paste(Image.fromarray(top), (0, y + LINE))
    y += LINE + top.shape[0]
    draw.text((0, y + 2), "CUT translations (domain B: horizontal stripes)", fill="black", font=font)
    canvas.paste(Image.fromarray(bottom), (0, y + LINE))
    y += LINE + bottom.shape[0] + GAP
    for line in lines:
        colour = (170, 0, 0) if line.startswith("MISSED") else (0, 0, 0)
        draw.text((0, y + 2), line, fill=colour, font=font)
        y += LINE
    return canvas


def main(results: str, out: str, n: int = 8) -> None:
    """Write the figure of the first ``n`` translated test images of ``results`` to ``out``."""
    results_dir = Path(results)
    stems = sorted(p.stem for p in (results_dir / "fake_B").glob("*.png"))[:n]
    if not stems:
        raise SystemExit(f"i2i: error: {results_dir}/fake_B has no images — run i2i-test first")
    reals, fakes = ([np.asarray(Image.open(results_dir / d / f"{s}.png").convert("RGB")) for s in stems]
                    for d in ("real_A", "fake_B"))
    path = results_dir / "criteria.json"
    criteria = json.loads(path.read_text()) if path.exists() else None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    compose(reals, fakes, caption_lines(criteria)).save(out)
    print(f"figure: {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m i2i.utils.demo_figure <results dir> <out.png>")
    main(sys.argv[1], sys.argv[2])
