"""Embedded demo data: two procedurally generated domains with checkable content.

Domain A: two to four shapes (circles, squares and equilateral triangles at random rotations), each
filled with one flat saturated colour from a six-hue palette, on a flat GRAY background
(:data:`BACKGROUND_LEVEL`). Domain B: the same kind of shapes filled with
horizontal stripes of one period (:data:`STRIPE_PERIOD` px, half light, half dark): the light
stripes are the shape's colour, the dark ones the same hue at :data:`DARK_FACTOR` of its brightness,
on the same kind of background. A translation A -> B should keep each shape's outline, corners,
place and hue, leave the background alone and darken every other band of
``STRIPE_PERIOD / 2`` rows inside the shapes, so each of these is checkable (i2i.utils.demo_check):
the background is exactly gray (saturation 0) and every shape pixel is strongly saturated, hence
:func:`blob_mask` recovers the shape mask of an image of either domain (exactly, for the generated
PNGs; approximately, for a generator's output).

Generation is vectorised over all images of a split with numpy (200 + 200 + 16 + 16 images of 72x72
take well under two seconds) and deterministic per seed. :func:`make_synthetic_dataset` writes the
standard ``trainA/ trainB/ testA/ testB/`` layout atomically (temporary folder + rename) with a
``manifest.json`` of the parameters; a folder made with other parameters (or by another version of
this generator) is regenerated.
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
from i2i.data.unaligned import UnpairedDataset

MANIFEST = "manifest.json"
GENERATOR_VERSION = 4
BACKGROUND_LEVEL = 128  # gray level of every background (both domains)
BACKGROUND_GRAIN = 0  # uniform per-pixel grain of the background, +-levels (0: flat)
STRIPE_PERIOD = 8  # px: domain B's stripes are horizontal bands of STRIPE_PERIOD / 2 light + dark rows
SATURATION, VALUE, DARK_FACTOR = 0.85, 0.9, 0.6  # HSV of the flat fill / light stripe; dark stripe value factor
#: of 255, on max - min: the background has 0, the flat fill and light stripes 196, the dark stripes 118. Half of the
#: least saturated fill: a soft edge is read at its midpoint, and a too dark stripe keeps a margin to the background
SATURATION_THRESHOLD = 59
PALETTE_HUES = np.arange(6) / 6.0  # red, yellow, green, cyan, blue, magenta
HUE_JITTER = 1.0 / 48  # +- 7.5 degrees around the palette hue
SHAPES = ("circle", "square", "triangle")


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (each in [0, 1]) -> RGB in [0, 255], shape [..., 3]."""
    h = h % 1.0
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    rgb = np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]  # [6, ..., 3] -> [..., 3]
    return rgb * 255.0


def _background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Gray backgrounds [n, H, W] (float): a fixed level plus uniform pixel grain (none by default)."""
    return BACKGROUND_LEVEL + rng.uniform(-BACKGROUND_GRAIN, BACKGROUND_GRAIN, (n, size, size))


def _shape_inside(kind: np.ndarray, dy: np.ndarray, dx: np.ndarray, radius: np.ndarray,
                  theta: np.ndarray) -> np.ndarray:
    """Inside test [n, H, W] of one shape per image, given offsets from its centre [n, H, W].

    ``kind`` [n] indexes :data:`SHAPES`; ``radius`` [n] is the circumradius (the circle's radius);
    ``theta`` [n] rotates the polygons. A regular k-gon is the intersection of k half-planes at the
    apothem ``radius * cos(pi / k)`` from the centre.
    """
    inside = np.hypot(dy, dx) < radius[:, None, None]  # circles
    for k_index, sides in ((1, 4), (2, 3)):
        poly = np.ones_like(inside)
        apothem = (radius * np.cos(np.pi / sides))[:, None, None]
        for j in range(sides):
            phi = (theta + (2 * j + 1) * np.pi / sides)[:, None, None]
            poly &= dx * np.cos(phi) + dy * np.sin(phi) < apothem
        inside = np.where((kind == k_index)[:, None, None], poly, inside)
    return inside


def _blobs(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Label maps [n, H, W] (0 = background, k = blob k, at most 4) and shape kinds [n, 4] (-1 = absent).

    One shape per quadrant (a random 2-4 of the 4 quadrants), circumradius <= 0.21 * size plus a centre
    jitter of <= 0.035 * size: shapes never overlap and never touch the border. Circles have radius
    0.12-0.19, squares circumradius 0.15-0.21 and triangles 0.16-0.21 (of ``size``), so the three
    kinds have similar areas.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cells = np.array([[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [0.75, 0.75]]) * size  # (y, x)
    count = rng.integers(2, 5, n)
    active = np.argsort(rng.random((n, 4)), 1) < count[:, None]  # [n, 4] random subset of quadrants
    kinds = rng.integers(0, len(SHAPES), (n, 4))
    labels = np.zeros((n, size, size), np.uint8)
    low, high = np.array([0.12, 0.15, 0.16]), np.array([0.19, 0.21, 0.21])
    for q in range(4):
        cy = cells[q, 0] + rng.uniform(-0.035, 0.035, n) * size
        cx = cells[q, 1] + rng.uniform(-0.035, 0.035, n) * size
        kind = kinds[:, q]
        radius = rng.uniform(low[kind], high[kind]) * size
        theta = rng.uniform(0, 2 * np.pi, n)
        dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]  # [n, H, W]
        inside = _shape_inside(kind, dy, dx, radius, theta) & active[:, q, None, None]
        labels[inside] = q + 1
    return labels, np.where(active, kinds, -1)


CHUNK = 32  # images drawn per generator; image i depends on (seed, domain, size, i // CHUNK) only


def render_domain(seed: int, n: int, size: int, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` images of domain 'A' (flat shapes) or 'B' (striped shapes).

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


def stripes(size: int, phase: np.ndarray) -> np.ndarray:
    """Domain B's stripe pattern [n, size, size] (True = dark row) for per-image phases [n] in [0, 1)."""
    rows = np.arange(size, dtype=np.float64)[None, :, None] / STRIPE_PERIOD + np.asarray(phase)[:, None, None]
    return np.broadcast_to((rows % 1.0) < 0.5, (len(phase), size, size))


def add_stripes(images: np.ndarray, masks: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Domain B's fill of domain-A images: every dark row of :func:`stripes` inside ``masks`` at DARK_FACTOR.

    Args:
        images: uint8 [n, H, W, 3] (square).
        masks: bool [n, H, W], the shapes.
        phase: [n] stripe phases in [0, 1).

    Returns:
        uint8 [n, H, W, 3]: what a perfect translation of ``images`` looks like.
    """
    dark = masks & stripes(images.shape[1], phase)
    return np.where(dark[..., None], np.rint(images * DARK_FACTOR), images).astype(np.uint8)


def _render_chunk(seed: int, size: int, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """:data:`CHUNK` images of one domain from one generator (vectorised over the images)."""
    n = CHUNK
    rng = np.random.default_rng(seed)
    img = np.repeat(_background(rng, n, size)[..., None], 3, axis=-1)  # [n, H, W, 3], exactly gray
    labels, _ = _blobs(rng, n, size)
    hue = PALETTE_HUES[rng.integers(0, len(PALETTE_HUES), (n, 4))] + rng.uniform(-HUE_JITTER, HUE_JITTER, (n, 4))
    fill = _hsv_to_rgb(hue, np.full((n, 4), SATURATION), np.full((n, 4), VALUE))  # [n, 4, 3]
    idx = np.clip(labels.reshape(n, -1, 1).astype(int) - 1, 0, 3)
    colour = np.take_along_axis(fill, idx, 1).reshape(n, size, size, 3)
    mask = labels > 0
    img = np.clip(np.rint(np.where(mask[..., None], colour, img)), 0, 255).astype(np.uint8)
    phase = rng.random(n)
    return (add_stripes(img, mask, phase) if domain == "B" else img), mask


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


class SyntheticDataset(UnpairedDataset):
    """The demo domains as an :class:`~i2i.data.unaligned.UnpairedDataset`, generated at ``root`` on first use.

    Args:
        root: where the domains are (or will be) written.
        synthetic: :func:`make_synthetic_dataset` parameters (``seed``, ``size``, ``n_train``, ``n_test``).
        **kwargs: the :class:`~i2i.data.unaligned.UnpairedDataset` arguments.
    """

    def __init__(self, root: str | os.PathLike, synthetic: dict | None = None, **kwargs) -> None:
        make_synthetic_dataset(root, **(synthetic or {}))
        super().__init__(root, **kwargs)
