"""The demo's criteria (i2i.utils.demo_check) on translations whose answer is known by construction.

A perfect translation is domain B's own rendering of the domain-A shapes (:func:`add_stripes`); every
degraded version changes one property on purpose and must miss the criterion about that property, and only
those its change really affects.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter
from scipy import ndimage

from i2i.data.synthetic import BACKGROUND_LEVEL, DARK_FACTOR, add_stripes, render_domain
from i2i.utils import demo_check as dc
from i2i.utils import demo_figure

N, SIZE = 16, 72
STRIPE_CRITERIA = {"stripe period", "stripe angle", "stripe purity", "stripe amplitude"}


@pytest.fixture(scope="module")
def domains():
    """(A images, A masks, perfect translations, real B images) of one test split."""
    a, masks = render_domain(5, N, SIZE, "A")
    b, _ = render_domain(5, N, SIZE, "B")
    perfect = add_stripes(a, masks, np.random.default_rng(0).random(N))
    return a, masks, perfect, b


def _failed(a, fake, b) -> set[str]:
    return {c["name"] for c in dc.evaluate(list(a), list(fake), list(b))["criteria"] if not c["ok"]}


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def _with_pattern(a, masks, dark):
    """Domain-A images with the rows/pixels ``dark`` [.., H, W] inside the shapes darkened as in domain B."""
    return np.where((masks & dark)[..., None], np.rint(a * DARK_FACTOR), a).astype(np.uint8)


def test_perfect_translation_meets_every_criterion(domains):
    a, _, perfect, b = domains
    result = dc.evaluate(list(a), list(perfect), list(b))
    assert result["ok"], dc.report(result)
    numbers = result["numbers"]
    assert numbers["iou_mean"] == 1.0 and numbers["hue_kept"] == 1.0
    assert numbers["stripes_domain_b"]["period"] == pytest.approx(8.0) and numbers["stripes_domain_b"]["angle"] == 0.0
    for kind in dc.POLYGONS:
        c = numbers["corners"][kind]
        assert c["covered"] == 1.0 and c["iou"] == 1.0 and c["n"] >= 10


def test_real_domain_b_against_itself_is_the_reference(domains):
    _, _, _, b = domains
    masks = [dc.blob_mask(im) for im in b]
    ref = dc.stripe_stats(*dc.stripe_spectrum(list(b), masks))
    assert ref.period == pytest.approx(8.0) and ref.angle == 0.0 and ref.purity > 0.4
    assert dc.background_mean(list(b), masks) == pytest.approx([BACKGROUND_LEVEL] * 3, abs=0.5)


def test_rounded_corners_keep_iou_but_miss_the_corner_criteria(domains):
    a, masks, perfect, b = domains
    rounded = np.stack([ndimage.binary_opening(m, _disk(3)) for m in masks])  # every corner rounded by 3 px
    fake = np.where((masks & ~rounded)[..., None], np.uint8(BACKGROUND_LEVEL), perfect)
    result = dc.evaluate(list(a), list(fake), list(b))
    assert result["numbers"]["iou_mean"] > 0.93  # mask overlap alone would accept these
    assert {c["name"] for c in result["criteria"] if not c["ok"]} == {"square corners", "triangle corners"}


def test_one_pixel_rounding_is_within_the_corner_tolerance(domains):
    a, masks, perfect, b = domains
    rounded = np.stack([ndimage.binary_opening(m, _disk(1)) for m in masks])
    fake = np.where((masks & ~rounded)[..., None], np.uint8(BACKGROUND_LEVEL), perfect)
    assert _failed(a, fake, b) == set()


@pytest.mark.parametrize("sigma,missed", [
    (2.0, {"blob IoU", "triangle corners", "stripe amplitude"}),  # squares' corner windows keep 0.81
    (2.5, {"blob IoU", "square corners", "triangle corners", "stripe amplitude"}),
])
def test_blurred_translation_misses_iou_corners_and_amplitude(domains, sigma, missed):
    a, _, perfect, b = domains
    blurred = np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(sigma))) for im in perfect])
    assert missed <= _failed(a, blurred, b)


def test_grown_outlines_miss_iou_and_corners(domains):
    a, masks, perfect, b = domains
    grown = np.stack([ndimage.binary_dilation(m, _disk(2)) for m in masks])  # growing by a disc rounds corners
    nearest = [ndimage.distance_transform_edt(~m, return_distances=False, return_indices=True) for m in masks]
    fill = np.stack([p[i[0], i[1]] for p, i in zip(perfect, nearest)])  # each new pixel: its nearest shape colour
    fake = np.where(grown[..., None], fill, perfect)
    assert {"blob IoU", "square corners", "triangle corners"} <= _failed(a, fake, b)


def test_blurred_stripes_miss_the_amplitude(domains):
    a, masks, perfect, b = domains
    soft = np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.BoxBlur(4))) for im in perfect])
    fake = np.where(masks[..., None], soft, perfect)  # stripes washed out inside the shapes
    assert "stripe amplitude" in _failed(a, fake, b)


def test_tinted_background_misses_only_the_background(domains):
    a, masks, perfect, b = domains
    tint = np.array([12, 2, 3]) * ~masks[..., None]  # the pink cast of a half-trained generator
    fake = np.clip(perfect.astype(int) + tint, 0, 255).astype(np.uint8)
    assert _failed(a, fake, b) == {"background colour"}


def test_small_background_shift_is_within_tolerance(domains):
    a, masks, perfect, b = domains
    fake = np.clip(perfect.astype(int) + 4 * ~masks[..., None], 0, 255).astype(np.uint8)
    assert _failed(a, fake, b) == set()


def test_cross_hatched_and_dotted_stripes_miss_the_purity(domains):
    a, masks, _, b = domains
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    rows, cols = (yy // 4) % 2 == 0, (xx // 4) % 2 == 0
    assert _failed(a, _with_pattern(a, masks, rows | cols), b) == {"stripe purity"}
    assert "stripe purity" in _failed(a, _with_pattern(a, masks, rows & cols), b)


@pytest.mark.parametrize("angle, period, missed", [(90, 8, "stripe angle"), (45, 8, "stripe angle"),
                                                   (0, 12, "stripe period"), (0, 5, "stripe period"),
                                                   (15, 8, "stripe angle")])
def test_wrong_orientation_or_period_is_missed(domains, angle, period, missed):
    a, masks, _, b = domains
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    t = np.radians(angle)
    dark = ((yy * np.cos(t) - xx * np.sin(t)) / period) % 1.0 < 0.5  # bands at `angle` degrees from horizontal
    assert missed in _failed(a, _with_pattern(a, masks, dark), b)


def test_slightly_tilted_stripes_are_within_tolerance(domains):
    a, masks, _, b = domains
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    t = np.radians(4)
    dark = ((yy * np.cos(t) - xx * np.sin(t)) / 8.4) % 1.0 < 0.5
    assert _failed(a, _with_pattern(a, masks, dark), b) == set()


def test_faint_stripes_miss_the_amplitude(domains):
    a, masks, _, b = domains
    rows = (np.mgrid[0:SIZE, 0:SIZE][0] // 4) % 2 == 0
    faint = np.where((masks & rows)[..., None], np.rint(a * 0.85), a).astype(np.uint8)
    assert _failed(a, faint, b) == {"stripe amplitude"}


def test_flat_output_misses_the_stripes(domains):
    a, _, _, b = domains
    assert STRIPE_CRITERIA - {"stripe angle", "stripe period"} <= _failed(a, a, b)


def test_swapped_colours_miss_only_the_colour_criterion(domains):
    a, masks, perfect, b = domains
    rotated = np.where(masks[..., None], perfect[..., [2, 0, 1]], perfect)  # every hue turned by 120 degrees
    assert _failed(a, rotated, b) == {"shape colours"}


def test_grey_shapes_miss_the_colour_criterion(domains):
    a, masks, perfect, b = domains
    grey = perfect.mean(-1, keepdims=True).repeat(3, -1).astype(np.uint8)
    grey = np.where(masks[..., None], np.clip(grey.astype(int) + [22, 0, 0], 0, 255).astype(np.uint8), perfect)
    share, worst = dc.hue_kept(list(a), list(grey), list(masks))
    assert share == 0.0 and worst == 180.0


def test_shape_kinds_from_the_analytic_fill_ratios():
    yy, xx = np.mgrid[0:201, 0:201] + 0.5 - 100.5
    disc = np.hypot(yy, xx) < 80
    square = (np.abs(yy) < 60) & (np.abs(xx) < 60)
    triangle = np.ones_like(disc)
    for j in range(3):  # equilateral, circumradius 80, apothem 40
        phi = np.radians(90 + 120 * j)
        triangle &= xx * np.cos(phi) + yy * np.sin(phi) < 40
    fills = (1.0, 2 / np.pi, 3 * np.sqrt(3) / (4 * np.pi))  # area / (pi R^2)
    for mask, fill, reach, kind in zip((disc, square, triangle), fills, (80, 60 * np.sqrt(2), 80), dc.KINDS):
        r, f = dc.shape_geometry(mask)
        assert r == pytest.approx(reach, rel=0.02) and f == pytest.approx(fill, rel=0.03)
        assert dc.shape_kind(f) == kind
    assert not dc.corner_tips(disc).any()  # a disc has no corners
    for mask, corners in ((square, 4), (triangle, 3)):  # one tip per corner
        assert ndimage.label(dc.corner_tips(mask), np.ones((3, 3), bool))[1] == corners


def test_corner_tips_sit_at_the_corners():
    square = np.zeros((40, 40), bool)
    square[10:30, 10:30] = True
    ys, xs = np.nonzero(dc.corner_tips(square))
    assert len(ys) > 0
    assert (np.minimum(np.abs(ys - 9.5), np.abs(ys - 29.5)) <= dc.TIP_RADIUS).all()
    assert (np.minimum(np.abs(xs - 9.5), np.abs(xs - 29.5)) <= dc.TIP_RADIUS).all()


def test_stripe_stats_recover_a_known_period_and_angle():
    yy, xx = np.mgrid[0:96, 0:96].astype(float)
    mask = np.hypot(yy - 48, xx - 48) < 40
    t = np.radians(30)  # bands 30 degrees from horizontal, period 10 px
    lum = 128 + 60 * np.sin(2 * np.pi * (yy * np.cos(t) - xx * np.sin(t)) / 10)
    image = np.repeat(lum[..., None], 3, -1).astype(np.uint8)
    stats = dc.stripe_stats(*dc.stripe_spectrum([image], [mask]))
    assert stats.period == pytest.approx(10.0, rel=0.05)
    assert dc.angle_difference(stats.angle, 30.0) < 3.0
    assert stats.amplitude == pytest.approx(60 / np.sqrt(2), rel=0.15)  # RMS of a sine
    assert dc.angle_difference(179.0, 1.0) == pytest.approx(2.0)


def _write_results(root, a, fake, b):
    for name, images in (("real_A", a), ("fake_B", fake), ("testB", b)):
        (root / name).mkdir(parents=True)
        for i, im in enumerate(images):
            Image.fromarray(im).save(root / name / f"{i:04d}.png")


def test_command_line_passes_and_fails_loudly(domains, tmp_path, capsys):
    a, masks, perfect, b = domains
    _write_results(tmp_path / "good", a, perfect, b)
    assert dc.main([str(tmp_path / "good"), str(tmp_path / "good" / "testB")]) == 0
    assert json.loads((tmp_path / "good" / "criteria.json").read_text())["ok"] is True
    assert "all demo criteria met" in capsys.readouterr().out
    tinted = np.clip(perfect.astype(int) + np.array([12, 2, 3]) * ~masks[..., None], 0, 255).astype(np.uint8)
    _write_results(tmp_path / "bad", a, tinted, b)
    assert dc.main([str(tmp_path / "bad"), str(tmp_path / "bad" / "testB")]) == 1
    out = capsys.readouterr().out
    assert "FAILED: background colour" in out and out.count("FAILED:") == 1


def test_figure_puts_inputs_above_translations_with_the_criteria(domains, tmp_path):
    a, _, perfect, b = domains
    _write_results(tmp_path, a, perfect, b)
    dc.main([str(tmp_path), str(tmp_path / "testB")])
    demo_figure.main(str(tmp_path), str(tmp_path / "demo.png"), n=4)
    fig = np.asarray(Image.open(tmp_path / "demo.png").convert("RGB"))
    tile = SIZE * demo_figure.SCALE
    assert fig.shape[1] == 4 * tile + 3 * demo_figure.GAP
    top = fig[demo_figure.LINE:demo_figure.LINE + tile, :tile]
    bottom_y = 2 * demo_figure.LINE + tile
    bottom = fig[bottom_y:bottom_y + tile, :tile]
    assert np.array_equal(top[::2, ::2], a[0]) and np.array_equal(bottom[::2, ::2], perfect[0])
    lines = demo_figure.caption_lines(json.loads((tmp_path / "criteria.json").read_text()))
    assert len(lines) == 1 + 9 and all(line.startswith("ok") for line in lines[1:])
