"""``python -m i2i.utils.demo_check <results dir> <domain-B folder>``: does the demo translation visibly work?

The demo translates flat-coloured shapes (domain A of :mod:`i2i.data.synthetic`) into striped ones (domain B).
Each thing a person checks at a glance is measured here, the same way on real domain-B images wherever a
reference is needed, and compared with a stated tolerance:

1. **place and outline** — intersection over union of the blob masks (:func:`~i2i.data.synthetic.blob_mask`)
   of input and translation, mean over images: at least :data:`MIN_IOU`.
2. **background** — mean colour of the background pixels (outside the input shapes grown by
   :data:`BACKGROUND_MARGIN` px) over all translations, within :data:`MAX_BACKGROUND_DIFF` grey levels per
   channel of the same mean over the real domain-B images.
3. **stripes** — the power spectra of the luminance inside each shape (shrunk by :data:`INTERIOR_MARGIN` px,
   mean removed per shape, zero-padded to :data:`FFT_SIZE` px) are summed; the peak (periods up to
   :data:`MAX_PERIOD` px) gives the stripes' period and angle (0 degrees = horizontal stripes). Against the
   domain-B spectrum: period within :data:`PERIOD_TOL` (relative), angle within :data:`ANGLE_TOL_DEG` degrees,
   *purity* (the share of all power within :data:`PEAK_RADIUS` cycles/px of the domain-B peak) at least
   :data:`MIN_PURITY_RATIO` of domain B's (cross-hatching and dots spread the power over other
   orientations), and *amplitude* (RMS grey levels of that peak's component) at least
   :data:`MIN_AMPLITUDE_RATIO` of domain B's (faint stripes fail).
4. **corners** — the *corner tips* of a shape are the pixels that rounding it by :data:`TIP_RADIUS` px would
   remove (the shape minus its morphological opening with a disc of that radius; components of at least
   :data:`MIN_TIP_PX` px, so the steps of a rotated edge do not count); its *corner windows* are the tips grown
   by :data:`TIP_WINDOW` px. Per kind (classified on the input by area / (pi R^2), R the largest centroid
   distance: disc 1, square 0.64, triangle 0.41), pooled over its shapes: at least :data:`MIN_TIPS_COVERED` of
   the input's tip pixels inside the translated blob mask (a rounded corner loses its tip; rounding every corner
   by 2 px leaves 61-69 %, by 1 px 88 %) and an IoU of input and translated masks inside the corner windows of at
   least :data:`MIN_CORNER_IOU` (a grown, blurred or ragged corner covers the tip but not only the tip). Mask IoU
   over the whole shape hardly sees rounding: rounding every corner by 3 px keeps it at 0.95 for squares.
5. **colours** — the hue of each translated shape's mean colour within :data:`MAX_HUE_DIFF_DEG` degrees of
   its input's (the palette's hues are 60 degrees apart), and still saturated, for at least
   :data:`MIN_HUE_KEPT` of the shapes.

Prints one line per criterion, writes the numbers to a JSON file and exits 1, with a ``FAILED`` line per missed
criterion, when any is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from i2i.data.synthetic import SATURATION_THRESHOLD, blob_mask

MIN_IOU = 0.90
BACKGROUND_MARGIN = 2
MAX_BACKGROUND_DIFF = 6.0
INTERIOR_MARGIN = 2
FFT_SIZE = 128
MAX_PERIOD = 24.0
PEAK_RADIUS = 0.04
PERIOD_TOL = 0.15
ANGLE_TOL_DEG = 10.0
MIN_PURITY_RATIO = 0.6
MIN_AMPLITUDE_RATIO = 0.5
TIP_RADIUS = 4
MIN_TIP_PX = 3
TIP_WINDOW = 3
MIN_TIPS_COVERED = 0.8
MIN_CORNER_IOU = 0.8
MAX_HUE_DIFF_DEG = 20.0
MIN_HUE_KEPT = 0.9
KINDS = ("circle", "square", "triangle")
POLYGONS = ("square", "triangle")


@dataclass(frozen=True)
class StripeStats:
    """Dominant stripe component of a set of shape interiors.

    Attributes:
        period: px per stripe cycle at the spectrum's peak.
        angle: orientation of the stripes in degrees in [0, 180); 0 = horizontal bands.
        purity: share of all power within :data:`PEAK_RADIUS` of the reference peak.
        amplitude: RMS grey levels of the component within :data:`PEAK_RADIUS` of the reference peak.
        peak: (fy, fx) of the peak in cycles/px.
    """

    period: float
    angle: float
    purity: float
    amplitude: float
    peak: tuple[float, float]


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` grown by ``px`` pixels (8-neighbourhood steps); ``px`` = 0 returns it unchanged."""
    return ndimage.binary_dilation(mask, np.ones((3, 3), bool), iterations=px) if px > 0 else mask


def _shrink(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` shrunk by ``px`` pixels (8-neighbourhood steps); ``px`` = 0 returns it unchanged."""
    return ndimage.binary_erosion(mask, np.ones((3, 3), bool), iterations=px) if px > 0 else mask


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected components of a boolean mask, largest first, each a full-size boolean mask."""
    labels, count = ndimage.label(mask, np.ones((3, 3), bool))
    parts = [labels == k for k in range(1, count + 1)]
    return sorted(parts, key=lambda m: -m.sum())


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1 when both are empty)."""
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def background_mean(images: list[np.ndarray], masks: list[np.ndarray], margin: int = BACKGROUND_MARGIN) -> np.ndarray:
    """Mean RGB [3] over all pixels outside ``masks`` grown by ``margin`` px, pooled over the images."""
    pixels = [im[~_grow(m, margin)].astype(np.float64) for im, m in zip(images, masks)]
    return np.concatenate(pixels).mean(0)


def _luminance(image: np.ndarray) -> np.ndarray:
    """Grey level (mean of the channels) of an RGB uint8 image, float [H, W]."""
    return image.astype(np.float64).mean(-1)


def stripe_spectrum(images: list[np.ndarray], masks: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Summed power spectrum [FFT_SIZE, FFT_SIZE] of the luminance in each shape's interior, and its pixel count.

    Each interior (a component of ``mask`` shrunk by :data:`INTERIOR_MARGIN` px) has its mean removed, is moved to
    the corner of a zero canvas of :data:`FFT_SIZE` px and transformed on its own, so shapes of different phases do
    not interfere.
    """
    total, count = np.zeros((FFT_SIZE, FFT_SIZE)), 0
    for image, mask in zip(images, masks):
        lum = _luminance(image)
        for part in _components(_shrink(mask, INTERIOR_MARGIN)):
            ys, xs = np.nonzero(part)
            canvas = np.zeros((FFT_SIZE, FFT_SIZE))
            values = lum[ys, xs]
            canvas[ys - ys.min(), xs - xs.min()] = values - values.mean()
            total += np.abs(np.fft.fft2(canvas)) ** 2
            count += len(values)
    return total, count


def _frequencies() -> tuple[np.ndarray, np.ndarray]:
    """(fy, fx) grids in cycles/px of an FFT_SIZE x FFT_SIZE spectrum."""
    f = np.fft.fftfreq(FFT_SIZE)
    return np.meshgrid(f, f, indexing="ij")


def spectrum_peak(power: np.ndarray) -> tuple[float, float]:
    """(fy, fx) of the strongest frequency with a period of at most :data:`MAX_PERIOD` px."""
    fy, fx = _frequencies()
    search = np.where(np.hypot(fy, fx) >= 1.0 / MAX_PERIOD, power, -1.0)
    i = np.unravel_index(int(np.argmax(search)), power.shape)
    return float(fy[i]), float(fx[i])


def stripe_stats(power: np.ndarray, count: int, reference_peak: tuple[float, float] | None = None) -> StripeStats:
    """Period, angle, purity and amplitude of a summed spectrum (see :func:`stripe_spectrum`).

    Args:
        power: summed power spectrum.
        count: interior pixels it sums over.
        reference_peak: (fy, fx) around which purity and amplitude are measured (default: this spectrum's peak).
    """
    peak = spectrum_peak(power)
    ry, rx = reference_peak if reference_peak is not None else peak
    fy, fx = _frequencies()
    near = (np.hypot(fy - ry, fx - rx) <= PEAK_RADIUS) | (np.hypot(fy + ry, fx + rx) <= PEAK_RADIUS)
    band, total = float(power[near].sum()), float(power.sum())
    angle = float(np.degrees(np.arctan2(peak[0], peak[1])) + 90.0) % 180.0  # bands run across the wave vector
    return StripeStats(period=float(1.0 / np.hypot(*peak)), angle=angle, purity=band / total if total else 0.0,
                       amplitude=float(np.sqrt(band / (FFT_SIZE ** 2 * max(count, 1)))), peak=peak)


def angle_difference(a: float, b: float) -> float:
    """Difference of two stripe orientations in degrees, modulo 180 (in [0, 90])."""
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def shape_geometry(part: np.ndarray) -> tuple[float, float]:
    """(R, fill) of one shape mask: the largest distance from its centroid to its outline, and area / (pi R^2).

    R is measured to the pixel centres of the shape plus half a pixel; holes are filled first.
    """
    part = ndimage.binary_fill_holes(part)
    ys, xs = np.nonzero(part)
    cy, cx = ys.mean(), xs.mean()
    reach = float(np.hypot(ys - cy, xs - cx).max()) + 0.5
    return reach, float(part.sum() / (np.pi * reach ** 2))


def shape_kind(fill: float) -> str:
    """Kind of a shape from area / (pi R^2): disc 1, square 2/pi = 0.64, equilateral triangle 0.41."""
    return "circle" if fill > 0.8 else "square" if fill > 0.52 else "triangle"


def _matching_part(part: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The component of ``mask`` overlapping ``part`` most (None when none overlaps)."""
    labels, _ = ndimage.label(mask, np.ones((3, 3), bool))
    hits = labels[part & (labels > 0)]
    return labels == np.bincount(hits).argmax() if hits.size else None


def _disc(radius: int) -> np.ndarray:
    """Boolean disc structuring element of ``radius`` px."""
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def corner_tips(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` that rounding by :data:`TIP_RADIUS` px removes, in components of >= :data:`MIN_TIP_PX` px."""
    tips = mask & ~ndimage.binary_opening(mask, _disc(TIP_RADIUS))
    labels, count = ndimage.label(tips, np.ones((3, 3), bool))
    sizes = ndimage.sum(tips, labels, range(1, count + 1))
    return np.isin(labels, 1 + np.flatnonzero(np.asarray(sizes) >= MIN_TIP_PX))


def _owned(mask: np.ndarray, parts: list[np.ndarray]) -> list[np.ndarray]:
    """``mask`` split among ``parts``: each pixel goes to the part nearest to it."""
    labels = np.zeros(mask.shape, np.int32)
    for k, part in enumerate(parts, 1):
        labels[part] = k
    nearest = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    owner = labels[nearest[0], nearest[1]]
    return [mask & (owner == k) for k in range(1, len(parts) + 1)]


def corners_kept(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> dict[str, dict]:
    """Per kind of input shape: corner tips covered by the output and the IoU of the masks in the corner windows.

    The output mask is split among the input shapes by nearness; each shape's corner window is its corner tips
    grown by :data:`TIP_WINDOW` px. Both numbers are pooled over the shapes of a kind (pixel counts summed).

    Returns:
        ``{kind: {"n": shapes, "tip_px": input tip pixels, "covered": share of them inside the output mask,
        "iou": corner-window IoU}}`` for each of :data:`KINDS` (None where a kind has no tips).
    """
    counts = {k: np.zeros(5, np.int64) for k in KINDS}  # shapes, tips, tips covered, window inter, window union
    for m_in, m_out in zip(inputs, outputs):
        parts = _components(m_in)
        for part, local in zip(parts, _owned(m_out, parts)):
            tips = corner_tips(part)
            window = ndimage.binary_dilation(tips, _disc(TIP_WINDOW))
            counts[shape_kind(shape_geometry(part)[1])] += [1, tips.sum(), (tips & local).sum(),
                                                          (part & local & window).sum(), ((part | local) & window).sum()]
    return {k: {"n": int(c[0]), "tip_px": int(c[1]), "covered": c[2] / c[1] if c[1] else None,
                "iou": c[3] / c[4] if c[4] else None} for k, c in counts.items()}


def _hue_degrees(rgb: np.ndarray) -> float:
    """Hue in degrees [0, 360) of one RGB colour (any scale)."""
    r, g, b = (float(c) for c in rgb)
    return float(np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b))) % 360.0


def hue_kept(inputs: list[np.ndarray], outputs: list[np.ndarray], masks: list[np.ndarray]) -> tuple[float, float]:
    """(share of shapes whose translated mean colour keeps the input's hue and saturation, worst hue error).

    Mean colours are taken over each input shape's interior (shrunk by :data:`INTERIOR_MARGIN` px); a
    translated mean colour with channel spread (max - min) of at most the blob saturation threshold is grey
    and counts as a miss (hue error 180).
    """
    errors = []
    for im_in, im_out, mask in zip(inputs, outputs, masks):
        for part in _components(_shrink(mask, INTERIOR_MARGIN)):
            c_in, c_out = im_in[part].astype(np.float64).mean(0), im_out[part].astype(np.float64).mean(0)
            if np.ptp(c_out) <= SATURATION_THRESHOLD:
                errors.append(180.0)
                continue
            d = abs(_hue_degrees(c_in) - _hue_degrees(c_out)) % 360.0
            errors.append(min(d, 360.0 - d))
    if not errors:
        return 0.0, 180.0
    return float(np.mean(np.array(errors) <= MAX_HUE_DIFF_DEG)), float(np.max(errors))


def _criterion(name: str, value: str, ok: bool, need: str) -> dict:
    return {"name": name, "value": value, "ok": bool(ok), "need": need}


def _stripe_criteria(out: StripeStats, ref: StripeStats) -> list[dict]:
    """The four stripe criteria of a translation's spectrum against domain B's."""
    rel = abs(out.period - ref.period) / ref.period
    da = angle_difference(out.angle, ref.angle)
    purity, amplitude = out.purity / ref.purity, out.amplitude / ref.amplitude
    return [
        _criterion("stripe period", f"{out.period:.2f} px (domain B {ref.period:.2f}; {rel:.0%} off)",
                   rel <= PERIOD_TOL, f"within {PERIOD_TOL:.0%}"),
        _criterion("stripe angle", f"{out.angle:.1f} deg (domain B {ref.angle:.1f}; {da:.1f} off)",
                   da <= ANGLE_TOL_DEG, f"within {ANGLE_TOL_DEG:g} deg"),
        _criterion("stripe purity", f"{out.purity:.2f} (domain B {ref.purity:.2f}; ratio {purity:.2f})",
                   purity >= MIN_PURITY_RATIO, f"ratio >= {MIN_PURITY_RATIO}"),
        _criterion("stripe amplitude", f"{out.amplitude:.1f} grey levels (domain B {ref.amplitude:.1f}; "
                   f"ratio {amplitude:.2f})", amplitude >= MIN_AMPLITUDE_RATIO, f"ratio >= {MIN_AMPLITUDE_RATIO}"),
    ]


def _corner_criteria(corners: dict[str, dict]) -> list[dict]:
    """One criterion per polygon kind: corner tips covered and corner-window IoU."""
    rows = []
    for kind in POLYGONS:
        c = corners[kind]
        if c["covered"] is None:
            rows.append(_criterion(f"{kind} corners", "no such shapes among the inputs", False, "some shapes"))
            continue
        ok = c["covered"] >= MIN_TIPS_COVERED and c["iou"] >= MIN_CORNER_IOU
        rows.append(_criterion(f"{kind} corners", f"tips covered {c['covered']:.0%}, corner IoU {c['iou']:.3f} "
                               f"({c['n']} shapes)", ok, f"tips >= {MIN_TIPS_COVERED:.0%} and IoU >= {MIN_CORNER_IOU}"))
    return rows


def evaluate(real_a: list[np.ndarray], fake_b: list[np.ndarray], real_b: list[np.ndarray]) -> dict:
    """All criteria for translations ``fake_b`` of ``real_a`` (paired lists), with real domain-B images ``real_b``.

    Returns:
        ``{"criteria": [{"name", "value", "ok", "need"}, ...], "ok": bool, "numbers": {...}}``.
    """
    masks_a, masks_f, masks_b = ([blob_mask(im) for im in ims] for ims in (real_a, fake_b, real_b))
    ious = [mask_iou(a, f) for a, f in zip(masks_a, masks_f)]
    bg_out, bg_ref = background_mean(fake_b, masks_a), background_mean(real_b, masks_b)
    bg_diff = np.abs(bg_out - bg_ref)
    ref = stripe_stats(*stripe_spectrum(real_b, masks_b))
    out = stripe_stats(*stripe_spectrum(fake_b, masks_a), reference_peak=ref.peak)
    corners = corners_kept(masks_a, masks_f)
    hue_share, hue_worst = hue_kept(real_a, fake_b, masks_a)
    criteria = [
        _criterion("blob IoU", f"mean {np.mean(ious):.3f} (min {np.min(ious):.3f}, {len(ious)} images)",
                   np.mean(ious) >= MIN_IOU, f"mean >= {MIN_IOU}"),
        _criterion("background colour", f"RGB {_rgb(bg_out)} (domain B {_rgb(bg_ref)}; off by {_rgb(bg_diff)})",
                   bg_diff.max() <= MAX_BACKGROUND_DIFF, f"<= {MAX_BACKGROUND_DIFF:g} per channel"),
        *_stripe_criteria(out, ref),
        *_corner_criteria(corners),
        _criterion("shape colours", f"{hue_share:.0%} of shapes keep their hue (worst {hue_worst:.0f} deg off)",
                   hue_share >= MIN_HUE_KEPT, f">= {MIN_HUE_KEPT:.0%} within {MAX_HUE_DIFF_DEG:g} deg"),
    ]
    numbers = {"iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious)),
               "background_rgb": bg_out.tolist(), "background_rgb_domain_b": bg_ref.tolist(),
               "stripes": _stripe_dict(out), "stripes_domain_b": _stripe_dict(ref), "corners": corners,
               "hue_kept": hue_share, "hue_worst_deg": hue_worst}
    return {"ok": all(c["ok"] for c in criteria), "criteria": criteria, "numbers": numbers}


def _rgb(v: np.ndarray) -> str:
    return ",".join(f"{x:.1f}" for x in v)


def _stripe_dict(s: StripeStats) -> dict:
    return {"period": s.period, "angle": s.angle, "purity": s.purity, "amplitude": s.amplitude}


def load_images(folder: Path) -> dict[str, np.ndarray]:
    """RGB uint8 arrays of the PNG files of ``folder`` by file stem."""
    return {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))}


def check_results(results: Path, domain_b: Path) -> dict:
    """:func:`evaluate` on ``<results>/real_A`` vs ``<results>/fake_B`` (paired by name) with ``domain_b`` images."""
    real_a, fake_b, real_b = (load_images(d) for d in (results / "real_A", results / "fake_B", domain_b))
    stems = sorted(set(real_a) & set(fake_b))
    if not stems or not real_b:
        raise SystemExit(f"i2i: error: no translated pairs in {results} or no images in {domain_b}")
    return evaluate([real_a[s] for s in stems], [fake_b[s] for s in stems], list(real_b.values()))


def report(result: dict) -> str:
    """One line per criterion, then one ``FAILED`` line per missed criterion (or an all-passed line)."""
    lines = [f"  {'ok  ' if c['ok'] else 'FAIL'} {c['name']:<18} {c['value']}   [needs {c['need']}]"
             for c in result["criteria"]]
    failed = [c for c in result["criteria"] if not c["ok"]]
    lines += [f"FAILED: {c['name']}: {c['value']} — needs {c['need']}" for c in failed]
    lines.append("all demo criteria met" if not failed else f"{len(failed)} demo criteria missed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: check, print, write the JSON; exit status 1 when a criterion is missed."""
    parser = argparse.ArgumentParser(prog="python -m i2i.utils.demo_check", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="i2i-test output folder (real_A/, fake_B/)")
    parser.add_argument("domain_b", type=Path, help="folder of real domain-B images (e.g. the dataset's testB)")
    parser.add_argument("--json", type=Path, default=None, help="write the criteria here (default <results>/criteria.json)")
    args = parser.parse_args(argv)
    result = check_results(args.results, args.domain_b)
    out = args.json or args.results / "criteria.json"
    out.write_text(json.dumps(result, indent=1))
    print("demo criteria (translations of the test images vs domain B):")
    print(report(result))
    print(f"criteria: {out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
