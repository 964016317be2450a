"""Embedded demo data: two procedurally generated domains with checkable content.

Domain A: two to four smooth closed blobs (ellipses with a low-frequency boundary wobble) filled with
flat saturated colours, on a finely textured GRAY background. Domain B: the same kind of blobs
filled with dark/light stripes of one saturated hue at a random angle and period, on the same kind
of background. A translation A -> B should keep each blob's shape and place and replace its flat
fill by stripes, so content preservation is checkable: the background is exactly gray (saturation
0) and every blob pixel is strongly saturated, hence :func:`blob_mask` recovers the blob mask of an
image of either domain (exactly, for the generated PNGs; approximately, for a generator's output).

Generation is vectorised over all images of a split with numpy (200 + 200 + 16 + 16 images of 64x64
take well under two seconds) and deterministic per seed. :func:`make_synthetic_dataset` writes the
standard ``trainA/ trainB/ testA/ testB/`` layout atomically (temporary folder + rename) with a
``manifest.json`` of the parameters; a folder made with other parameters is regenerated.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from i2i.data.errors import DataError
from i2i.data.sampler import derive_seed

MANIFEST = "manifest.json"
GENERATOR_VERSION = 1
SATURATION_THRESHOLD = 40  # of 255: background has 0, every blob pixel > 80


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (each in [0, 1]) -> RGB in [0, 255], shape [..., 3]."""
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    rgb = np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]  # [6, ..., 3] -> [..., 3]
    return rgb * 255.0


def _background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Finely textured gray backgrounds [n, H, W] (float): base level + pixel grain + fine ripple."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    base = rng.uniform(90, 170, (n, 1, 1))
    grain = rng.uniform(-14, 14, (n, size, size))
    freq = rng.uniform(0.8, 1.6, (n, 1, 1))  # radians per pixel: a 4-8 px ripple
    ang = rng.uniform(0, np.pi, (n, 1, 1))
    ripple = 10 * np.sin(freq * (xx * np.cos(ang) + yy * np.sin(ang)))
    return base + grain + ripple


def _blobs(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Label maps [n, H, W] (0 = background, k = blob k, at most 4) and active flags [n, 4].

    One blob per quadrant (a random 2-4 of the 4 quadrants), radius <= 0.21 * size including the
    wobble plus a center jitter of <= 0.035 * size: blobs never overlap and never touch the border.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cells = np.array([[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [0.75, 0.75]]) * size  # (y, x)
    count = rng.integers(2, 5, n)
    active = np.argsort(rng.random((n, 4)), 1) < count[:, None]  # [n, 4] random subset of quadrants
    labels = np.zeros((n, size, size), np.uint8)
    for k in range(4):
        cy = cells[k, 0] + rng.uniform(-0.035, 0.035, n) * size
        cx = cells[k, 1] + rng.uniform(-0.035, 0.035, n) * size
        a, b = rng.uniform(0.09, 0.18, (2, n)) * size
        theta, psi = rng.uniform(0, 2 * np.pi, (2, n))
        wobble = rng.uniform(0.0, 0.15, n)
        lobes = rng.integers(2, 5, n)
        dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]  # [n, H, W]
        c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        u, v = (dx * c + dy * s) / a[:, None, None], (-dx * s + dy * c) / b[:, None, None]
        boundary = 1 + wobble[:, None, None] * np.cos(lobes[:, None, None] * np.arctan2(v, u) + psi[:, None, None])
        inside = (np.hypot(u, v) < boundary) & active[:, k, None, None]
        labels[inside] = k + 1
    return labels, active


CHUNK = 32  # images drawn per generator; image i depends on (seed, domain, size, i // CHUNK) only


def render_domain(seed: int, n: int, size: int, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` images of domain 'A' (flat blobs) or 'B' (striped blobs).

    Prefix-stable: the first ``m`` images are the same for every ``n >= m``.

    Returns:
        (images uint8 [n, H, W, 3], blob masks bool [n, H, W]) — the mask is the geometric ground
        truth that :func:`blob_mask` recovers from the image.
    """
    if domain not in ("A", "B"):
        raise ValueError(f"domain={domain!r}: use 'A' or 'B'")
    chunks = [_render_chunk(derive_seed("synthetic", seed, domain, size, c), size, domain) for c in range(-(-n // CHUNK))]
    images, masks = (np.concatenate(parts)[:n] for parts in zip(*chunks))
    return images, masks


def _render_chunk(seed: int, size: int, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """:data:`CHUNK` images of one domain from one generator (vectorised over the images)."""
    n = CHUNK
    rng = np.random.default_rng(seed)
    bg = _background(rng, n, size)
    img = np.repeat(bg[..., None], 3, axis=-1)  # [n, H, W, 3], exactly gray
    labels, _ = _blobs(rng, n, size)
    hue = rng.random((n, 4))
    if domain == "A":
        fill = _hsv_to_rgb(hue, rng.uniform(0.75, 1.0, (n, 4)), rng.uniform(0.65, 1.0, (n, 4)))  # [n, 4, 3]
        colour = np.take_along_axis(fill, np.clip(labels.reshape(n, -1, 1).astype(int) - 1, 0, 3), 1)
        colour = colour.reshape(n, size, size, 3)
    else:
        dark = _hsv_to_rgb(hue, np.full((n, 4), 0.9), np.full((n, 4), 0.45))
        light = _hsv_to_rgb(hue, np.full((n, 4), 0.6), np.full((n, 4), 0.95))
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
        ang = rng.uniform(0, np.pi, (n, 1, 1))
        period = rng.uniform(4.0, 8.0, (n, 1, 1))
        phase = rng.random((n, 1, 1))
        stripe = ((xx * np.cos(ang) + yy * np.sin(ang)) / period + phase) % 1.0 < 0.5  # [n, H, W]
        idx = np.clip(labels.reshape(n, -1, 1).astype(int) - 1, 0, 3)
        d = np.take_along_axis(dark, idx, 1).reshape(n, size, size, 3)
        li = np.take_along_axis(light, idx, 1).reshape(n, size, size, 3)
        colour = np.where(stripe[..., None], d, li)
    mask = labels > 0
    img = np.where(mask[..., None], colour, img)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def blob_mask(image: np.ndarray | Image.Image | torch.Tensor, threshold: int = SATURATION_THRESHOLD):
    """Recover the blob mask of a synthetic image of either domain: pixels with max - min > threshold.

    Args:
        image: PIL RGB image or uint8 array [..., H, W, 3] (-> bool array [..., H, W]), or a float
            tensor [..., 3, H, W] in [-1, 1] (-> bool tensor [..., H, W]).
        threshold: saturation threshold on the 0-255 scale.
    """
    if isinstance(image, torch.Tensor):
        x = (image.float() + 1.0) * 127.5  # [..., 3, H, W] in [0, 255]
        return (x.amax(-3) - x.amin(-3)) > threshold
    arr = np.asarray(image, dtype=np.int16)
    return (arr.max(-1) - arr.min(-1)) > threshold


def _manifest(seed: int, size: int, n_train: int, n_test: int) -> dict:
    return {"generator": "i2i.data.synthetic", "version": GENERATOR_VERSION,
            "seed": seed, "size": size, "n_train": n_train, "n_test": n_test}


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _write_split(out: Path, seed: int, size: int, n: int, phase: str) -> None:
    for domain in ("A", "B"):
        folder = out / f"{phase}{domain}"
        folder.mkdir(parents=True)
        images, _ = render_domain(derive_seed(seed, phase), n, size, domain)
        for i, im in enumerate(images):
            Image.fromarray(im).save(folder / f"{i:04d}.png", compress_level=1)


def _clean_stale_tmp(root: Path, max_age_s: float = 3600.0) -> None:
    """Remove temporary folders of interrupted generations older than ``max_age_s``."""
    for tmp in root.parent.glob(f".{root.name}.tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime > max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def make_synthetic_dataset(
    root: str | os.PathLike, seed: int = 0, size: int = 64, n_train: int = 200, n_test: int = 16
) -> Path:
    """Generate the demo dataset at ``root`` unless it is already there with these parameters.

    The folder appears complete or not at all: images and ``manifest.json`` are written into
    ``.<name>.tmp-<id>`` next to ``root`` and renamed into place; a folder without a matching
    manifest is never trusted. A concurrent generator that loses the rename race uses the winner's
    folder. A folder made by this function with other parameters is replaced; a non-empty folder
    that this function did not make is left alone (:class:`DataError`).

    Args:
        root: target folder (e.g. ``datasets/synthetic``).
        seed: generation seed.
        size: image side in pixels (>= 16).
        n_train: images per domain in trainA/trainB.
        n_test: images per domain in testA/testB.

    Returns:
        ``root`` as a Path.
    """
    if size < 16 or n_train < 1 or n_test < 1:
        raise DataError(f"synthetic dataset: size={size} (>= 16), n_train={n_train}, n_test={n_test} (>= 1) required")
    root = Path(root)
    want = _manifest(seed, size, n_train, n_test)
    if _read_manifest(root) == want:
        return root
    existing = _read_manifest(root)
    ours = isinstance(existing, dict) and existing.get("generator") == want["generator"]
    if root.exists() and any(root.iterdir()) and not ours:
        raise DataError(f"{root}: exists and is not a synthetic dataset (no {MANIFEST}) — choose another data.root")
    root.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(root)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_split(tmp, seed, size, n_train, "train")
        _write_split(tmp, seed, size, n_test, "test")
        (tmp / MANIFEST).write_text(json.dumps(want, indent=1))
        if _read_manifest(root) == want:  # a concurrent generator finished first: use its folder
            return root
        if root.exists():  # ours, other parameters (or empty): move aside, then replace
            old = root.parent / f".{root.name}.tmp-old-{uuid.uuid4().hex[:8]}"
            os.rename(root, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, root)
    except OSError:
        if _read_manifest(root) != want:  # lost a race to a generator with other parameters, or a real error
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
