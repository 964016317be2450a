"""``python -m i2i.utils.demo_figure <results dir> <out.png>``: the demo's picture and its content check.

Puts the first test inputs (``real_A``) above their translations (``fake_B``) and prints, per image, how well the
blobs kept their shape and place (intersection over union of the blob masks of input and output) and how
striped the output blobs are (mean absolute horizontal+vertical pixel difference inside the blobs, in grey
levels; flat domain-A blobs score near 0, striped domain-B blobs much higher).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from i2i.data.synthetic import blob_mask


def stripe_energy(img: np.ndarray, mask: np.ndarray) -> float:
    """Mean |gradient| (grey levels) inside ``mask`` of an RGB uint8 image."""
    g = img.astype(np.float32).mean(-1)
    grad = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    m = mask[:-1, :-1]
    return float(grad[m].mean()) if m.any() else 0.0


def main(results: str, out: str, n: int = 8) -> None:
    results_dir = Path(results)
    stems = sorted(p.stem for p in (results_dir / "fake_B").glob("*.png"))[:n]
    if not stems:
        raise SystemExit(f"i2i: error: {results_dir}/fake_B has no images — run i2i-test first")
    reals = [np.asarray(Image.open(results_dir / "real_A" / f"{s}.png").convert("RGB")) for s in stems]
    fakes = [np.asarray(Image.open(results_dir / "fake_B" / f"{s}.png").convert("RGB")) for s in stems]
    ious, stripes_in, stripes_out = [], [], []
    for r, f in zip(reals, fakes):
        mr, mf = blob_mask(r), blob_mask(f)
        ious.append((mr & mf).sum() / max((mr | mf).sum(), 1))
        stripes_in.append(stripe_energy(r, mr))
        stripes_out.append(stripe_energy(f, mr))
    grid = np.concatenate([np.concatenate(reals, axis=1), np.concatenate(fakes, axis=1)], axis=0)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out)
    print(f"blob IoU input vs output (shape and place kept; 1 = identical): mean {np.mean(ious):.2f} "
          f"(min {np.min(ious):.2f})")
    print(f"texture inside the blobs (mean |gradient|, grey levels): inputs {np.mean(stripes_in):.1f} -> "
          f"outputs {np.mean(stripes_out):.1f} (stripes raise it)")
    print(f"figure: {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m i2i.utils.demo_figure <results dir> <out.png>")
    main(sys.argv[1], sys.argv[2])
