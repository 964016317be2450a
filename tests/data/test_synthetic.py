"""Specification tests for the synthetic demo domains (i2i.data.synthetic)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from i2i.data import DataError, UnpairedDataset, blob_mask, list_images, make_synthetic_dataset, render_domain
from i2i.data.images import to_tensor
from i2i.data.synthetic import BACKGROUND_GRAIN, BACKGROUND_LEVEL, STRIPE_PERIOD


def test_render_is_deterministic_per_seed_and_differs_across_seeds():
    a1, m1 = render_domain(0, 8, 32, "A")
    a2, m2 = render_domain(0, 8, 32, "A")
    b1, _ = render_domain(1, 8, 32, "A")
    assert np.array_equal(a1, a2) and np.array_equal(m1, m2)
    assert not np.array_equal(a1, b1)
    assert a1.shape == (8, 32, 32, 3) and a1.dtype == np.uint8 and m1.shape == (8, 32, 32)


@pytest.mark.parametrize("domain", ["A", "B"])
def test_blob_mask_recovers_the_geometric_blobs(domain):
    images, masks = render_domain(3, 16, 64, domain)
    assert np.array_equal(blob_mask(images), masks)  # numpy path, whole batch
    x = torch.stack([to_tensor(Image.fromarray(im)) for im in images])  # [N, 3, H, W] in [-1, 1]
    assert torch.equal(blob_mask(x), torch.from_numpy(masks))  # tensor path (generator outputs)
    for im, m in zip(images, masks):
        _, count = ndimage.label(m, np.ones((3, 3), bool))  # 8-connected: a rotated tip may touch diagonally
        assert 2 <= count <= 4  # a few separate blobs
        assert not m[0].any() and not m[-1].any() and not m[:, 0].any() and not m[:, -1].any()
        assert (im[~m].max(-1) == im[~m].min(-1)).all()  # background exactly gray


def test_blob_mask_reads_a_soft_edge_close_to_the_outline():
    # a generator's outlines are soft: blurred across a pixel or two, the mask must grow by a fraction of a pixel
    # only (the threshold is half the dark stripes' saturation; one at a fifth of the fill's grew it by 10 %)
    images, masks = render_domain(5, 16, 72, "B")
    soft = ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, 1.0, 1.0, 0))  # [N, H, W, 3]
    read = blob_mask(np.rint(soft).astype(np.uint8))
    growth = read.sum() / masks.sum() - 1.0
    iou = (read & masks).sum() / (read | masks).sum()
    assert abs(growth) < 0.06 and iou > 0.94, (growth, iou)  # measured: +4.0 %, 0.956


def test_domains_differ_in_fill_not_in_layout_statistics():
    a, ma = render_domain(0, 32, 64, "A")
    b, mb = render_domain(0, 32, 64, "B")
    # A blobs are flat: one colour per blob; B blobs are striped: exactly two colours per blob
    for imgs, masks, n_colours in ((a, ma, {1}), (b, mb, {2})):
        for im, m in zip(imgs[:8], masks[:8]):
            labels, count = ndimage.label(m, np.ones((3, 3), bool))
            for k in range(1, count + 1):
                colours = np.unique(im[labels == k], axis=0)
                assert len(colours) in n_colours
    assert abs(ma.mean() - mb.mean()) < 0.05  # same kind of blobs


def test_domain_b_stripes_are_horizontal_bands_of_one_period():
    images, masks = render_domain(2, 16, 64, "B")
    half = STRIPE_PERIOD // 2
    for im, m in zip(images, masks):
        labels, count = ndimage.label(m, np.ones((3, 3), bool))
        for k in range(1, count + 1):
            dark_rows = []
            for y in np.nonzero((labels == k).any(1))[0]:
                row = im[y][labels[y] == k].astype(int).sum(-1)  # brightness of the shape's pixels in row y
                assert np.ptp(row) <= 3  # one colour per row: the bands are horizontal
                dark_rows.append(row[0])
            dark = np.array(dark_rows) < np.median(dark_rows) if np.ptp(dark_rows) > 30 else None
            if dark is not None:  # a shape spanning both kinds of band: runs of STRIPE_PERIOD / 2 rows
                runs = np.diff(np.flatnonzero(np.diff(dark.astype(int)) != 0))
                assert (runs == half).all()


def test_domains_share_the_background_and_palette():
    for domain in ("A", "B"):
        images, masks = render_domain(4, 16, 64, domain)
        bg = images[~masks].astype(float)
        assert abs(bg.mean() - BACKGROUND_LEVEL) < 0.5 and bg.max() - bg.min() <= 2 * BACKGROUND_GRAIN
    a, ma = render_domain(4, 32, 64, "A")
    b, mb = render_domain(4, 32, 64, "B")
    hue_a = {_palette_index(c) for c in np.unique(a[ma], axis=0)}
    hue_b = {_palette_index(c) for c in np.unique(b[mb], axis=0)}
    assert hue_a == hue_b == set(range(6))  # light and dark stripes keep the hue of the flat fill


def _palette_index(rgb: np.ndarray) -> int:
    r, g, b = (float(c) for c in rgb)
    hue = np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)) % 360.0
    return int(np.rint(hue / 60.0)) % 6


def test_all_three_shape_kinds_occur_and_keep_their_corners():
    from i2i.utils.demo_check import corners_kept

    _, masks = render_domain(6, 32, 72, "A")
    corners = corners_kept(list(masks), list(masks))
    assert all(corners[k]["n"] >= 10 for k in ("circle", "square", "triangle"))
    assert corners["square"]["covered"] == corners["triangle"]["covered"] == 1.0
    assert corners["circle"]["tip_px"] < 0.1 * corners["square"]["tip_px"]  # discs have (almost) no corner tips


def test_make_synthetic_dataset_layout_manifest_reuse_and_regeneration(tmp_path):
    root = tmp_path / "syn"
    out = make_synthetic_dataset(root, seed=0, size=32, n_train=6, n_test=2)
    assert out == root
    for d, n in (("trainA", 6), ("trainB", 6), ("testA", 2), ("testB", 2)):
        assert len(list_images(root / d)) == n
    manifest = json.loads((root / "manifest.json").read_text())
    assert (manifest["seed"], manifest["size"], manifest["n_train"], manifest["n_test"]) == (0, 32, 6, 2)
    first = (root / "trainA" / "0000.png").read_bytes()
    mtime = os.stat(root / "trainA" / "0000.png").st_mtime_ns
    make_synthetic_dataset(root, seed=0, size=32, n_train=6, n_test=2)  # reused, not rewritten
    assert os.stat(root / "trainA" / "0000.png").st_mtime_ns == mtime
    make_synthetic_dataset(root, seed=1, size=32, n_train=6, n_test=2)  # other parameters: regenerated
    assert (root / "trainA" / "0000.png").read_bytes() != first
    make_synthetic_dataset(root, seed=0, size=32, n_train=4, n_test=2)
    assert len(list_images(root / "trainA")) == 4
    assert (root / "trainA" / "0000.png").read_bytes() == first  # same seed, same first image
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    ds = UnpairedDataset(root, load_size=32, crop_size=32)
    assert len(ds) == 4 and ds[0]["A"].shape == (3, 32, 32)


def test_half_written_folder_is_not_trusted_and_user_data_is_protected(tmp_path):
    root = tmp_path / "syn"
    (root / "trainA").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "trainA" / "mine.png")
    with pytest.raises(DataError, match="not a synthetic dataset"):
        make_synthetic_dataset(root, size=32, n_train=2, n_test=1)  # never deletes foreign data
    assert (root / "trainA" / "mine.png").exists()
    # an interrupted generation: images without a matching manifest -> regenerated
    (root / "manifest.json").write_text(json.dumps({"generator": "i2i.data.synthetic", "seed": 0}))
    make_synthetic_dataset(root, size=32, n_train=2, n_test=1)
    assert sorted(os.listdir(root / "trainA")) == ["0000.png", "0001.png"]


def test_default_size_dataset_has_the_documented_layout(tmp_path):
    root = make_synthetic_dataset(tmp_path / "syn")  # the function defaults: 200 + 200 train, 16 + 16 test, 64x64
    for d, n in (("trainA", 200), ("trainB", 200), ("testA", 16), ("testB", 16)):
        files = list_images(root / d)
        assert len(files) == n and Image.open(files[0]).size == (64, 64)


def test_interrupted_generation_leaves_nothing_trusted(tmp_path, monkeypatch):
    import i2i.data.synthetic as syn

    real = syn._write_split

    def crash_on_test_split(out, seed, size, n, phase):
        real(out, seed, size, n, phase)
        if phase == "test":
            raise KeyboardInterrupt  # after trainA/trainB/testA/testB, before the manifest and rename

    monkeypatch.setattr(syn, "_write_split", crash_on_test_split)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_dataset(tmp_path / "syn", size=32, n_train=2, n_test=1)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary folder
    monkeypatch.setattr(syn, "_write_split", real)
    assert len(list_images(make_synthetic_dataset(tmp_path / "syn", size=32, n_train=2, n_test=1) / "testB")) == 1
