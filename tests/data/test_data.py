"""Specification tests for i2i.data: decoding, transforms, validation, unpaired/folder datasets, sampler."""

from __future__ import annotations

import io
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.data import (
    DataError,
    EpochSampler,
    ImageFolderDataset,
    UnpairedDataset,
    build_loader,
    check_images,
    check_unpaired_root,
    crop_to_size,
    load_image,
    steps_per_epoch,
    to_pil,
    to_tensor,
    transform_pil,
)

RNG = np.random.default_rng(0)


def _rgb(h=20, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, arr_or_img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    img.save(path, **kw)
    return path


def _make_root(root, n_a=5, n_b=3, size=(36, 40), phases=("train",)):
    """Unpaired folder with noise images of size (h, w); file i of a domain has seed i (+100 for B)."""
    for phase in phases:
        for d, n, off in (("A", n_a, 0), ("B", n_b, 100)):
            for i in range(n):
                _save(root / f"{phase}{d}" / f"{i:03d}.png", _rgb(*size, seed=i + off))
    return root


def _one_line(err):
    msg = str(err.value)
    assert "\n" not in msg and " — " in msg, msg  # one line: problem — fix
    return msg


# ---------------------------------------------------------------- images: decoding and channels
def _palette_image():
    idx = RNG.integers(0, 4, (6, 8), dtype=np.uint8)
    pal = [10, 20, 30, 200, 100, 50, 0, 255, 0, 7, 8, 9]
    img = Image.new("P", (8, 6))
    img.putpalette(pal + [0] * (768 - len(pal)))
    img.putdata(idx.reshape(-1).tolist())
    expected = np.array(pal, np.uint8).reshape(-1, 3)[idx]
    return img, expected


def test_modes_to_rgb_match_naive_expectations(tmp_path):
    rgb = _rgb(6, 8)
    gray = rgb[..., 0]
    alpha = np.where(np.arange(8) % 2, 0, 255).astype(np.uint8)[None].repeat(6, 0)  # half fully transparent
    cmyk = RNG.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    u16 = RNG.integers(0, 65536, (6, 8)).astype(np.uint16)
    pimg, pexp = _palette_image()
    cases = {
        "L.png": (Image.fromarray(gray), np.repeat(gray[..., None], 3, -1)),
        "LA.png": (Image.fromarray(np.dstack([gray, alpha])), np.repeat(gray[..., None], 3, -1)),
        # RGBA: alpha dropped, colours kept as stored (NOT composited on white)
        "RGBA.png": (Image.fromarray(np.dstack([rgb, alpha])), rgb),
        "P.png": (pimg, pexp),
        "CMYK.tif": (Image.frombytes("CMYK", (8, 6), cmyk.tobytes()),
                     np.rint((255 - cmyk[..., :3].astype(int)) * (255 - cmyk[..., 3:].astype(int)) / 255)),
        # 16-bit scaled by its true range (/257), where PIL's own convert clips at 255
        "I16.png": (Image.fromarray(u16), np.repeat(np.rint(u16 / 257.0).astype(np.uint8)[..., None], 3, -1)),
        "I32.tif": (Image.fromarray(u16.astype(np.int32)), np.repeat(np.rint(u16 / 257.0).astype(np.uint8)[..., None], 3, -1)),
        "F.tif": (Image.fromarray((u16 / 65535.0).astype(np.float32)),
                  np.repeat(np.rint(u16 / 65535.0 * 255).astype(np.uint8)[..., None], 3, -1)),
    }
    for name, (img, expected) in cases.items():
        path = _save(tmp_path / name, img)
        out = load_image(path, 3)
        assert out.mode == "RGB", name
        got = np.asarray(out).astype(int)
        assert np.abs(got - expected.astype(int)).max() <= (1 if name == "F.tif" else 0), name
    assert np.asarray(load_image(tmp_path / "I16.png", 3)).max() > 200  # spans the range, not clipped


def test_channels_1_and_4(tmp_path):
    rgb = _rgb(6, 8)
    p = _save(tmp_path / "c.png", rgb)
    gray = np.asarray(load_image(p, 1)).astype(float)
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114  # ITU-R 601-2
    assert load_image(p, 1).mode == "L" and np.abs(gray - luma).max() <= 1.0
    rgba = load_image(p, 4)
    assert rgba.mode == "RGBA" and (np.asarray(rgba)[..., 3] == 255).all()
    assert (np.asarray(rgba)[..., :3] == rgb).all()
    u16 = (np.arange(48).reshape(6, 8) * 1365).astype(np.uint16)
    g16 = np.asarray(load_image(_save(tmp_path / "g16.png", u16), 1))
    assert (g16 == np.rint(u16 / 257.0)).all()
    with pytest.raises(DataError, match="data.channels=2"):
        load_image(p, 2)


def test_to_tensor_range_and_inverse():
    arr = np.zeros((4, 5, 3), np.uint8)
    arr[0, 0] = 255
    x = to_tensor(Image.fromarray(arr))
    assert x.shape == (3, 4, 5) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    rgb = _rgb(5, 7)
    assert (np.asarray(to_pil(to_tensor(Image.fromarray(rgb)))) == rgb).all()
    assert to_tensor(Image.fromarray(rgb[..., 0])).shape == (1, 5, 7)


def test_corrupt_truncated_nonimage_files_raise_dataerror_naming_path(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "PNG")
    (tmp_path / "trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("trunc.jpg", "trunc.png", "text.jpg", "missing.png"):
        with pytest.raises(DataError) as err:
            load_image(tmp_path / name, 3)
        assert str(tmp_path / name) in _one_line(err)


# ---------------------------------------------------------------- transforms
@pytest.mark.parametrize("preprocess", ["resize_and_crop", "scale_width_and_crop", "crop"])
def test_params_match_the_actual_crop(preprocess):
    src = Image.fromarray(_rgb(50, 70))
    seen_flips = set()
    for seed in range(12):
        out, p = transform_pil(src, random.Random(seed), preprocess=preprocess, load_size=44, crop_size=32)
        resized = {"resize_and_crop": src.resize((44, 44), Image.BICUBIC),
                   "scale_width_and_crop": src.resize((44, int(max(44 * 50 / 70, 32))), Image.BICUBIC),
                   "crop": src}[preprocess]
        assert (p.load_w, p.load_h) == resized.size
        ref = resized.crop((p.left, p.top, p.left + 32, p.top + 32))
        if p.flipped:
            ref = ref.transpose(Image.FLIP_LEFT_RIGHT)
        assert out.size == (32, 32) and (np.asarray(out) == np.asarray(ref)).all()
        seen_flips.add(p.flipped)
    assert seen_flips == {True, False}


def test_transform_uses_only_the_given_rng():
    src = Image.fromarray(_rgb(40, 40))
    state = random.getstate()
    a = transform_pil(src, random.Random(3), load_size=36, crop_size=32)[1]
    assert random.getstate() == state
    assert a == transform_pil(src, random.Random(3), load_size=36, crop_size=32)[1]
    flips = {transform_pil(src, random.Random(s), load_size=36, crop_size=32, flip=False)[1].flipped for s in range(8)}
    assert flips == {False}


def test_preprocess_none_makes_multiple_of_4_and_crop_too_small_errors():
    out, p = transform_pil(Image.fromarray(_rgb(37, 50)), random.Random(0), preprocess="none", flip=False)
    assert out.size == (48, 36) and (p.top, p.left, p.load_h, p.load_w) == (0, 0, 36, 48)
    with pytest.raises(DataError) as err:
        transform_pil(Image.fromarray(_rgb(20, 50)), random.Random(0), preprocess="crop", crop_size=32, path="x/y.png")
    msg = _one_line(err)
    assert "x/y.png" in msg and "resize_and_crop" in msg and "crop_size" in msg


# ---------------------------------------------------------------- validation
def test_layout_errors_name_path_and_fix(tmp_path):
    cases = []
    with pytest.raises(DataError) as err:
        check_unpaired_root(tmp_path / "nope")
    cases.append((err, str(tmp_path / "nope"), "download_dataset.sh"))
    flat = tmp_path / "flat"
    _save(flat / "a.png", _rgb())
    with pytest.raises(DataError) as err:
        check_unpaired_root(flat)
    cases.append((err, str(flat), "trainA"))
    nested = _make_root(tmp_path / "outer" / "h2z", 1, 1)
    with pytest.raises(DataError) as err:
        check_unpaired_root(tmp_path / "outer")
    cases.append((err, str(tmp_path / "outer" / "trainA"), f"data.root={nested}"))
    half = tmp_path / "half"
    _save(half / "trainA" / "a.png", _rgb())
    with pytest.raises(DataError) as err:
        check_unpaired_root(half)
    cases.append((err, str(half / "trainB"), "trainB"))
    empty = _make_root(tmp_path / "empty", 1, 1)
    for f in (empty / "trainB").iterdir():
        f.unlink()
    (empty / "trainB" / "notes.txt").write_text("x")
    with pytest.raises(DataError) as err:
        check_unpaired_root(empty)
    cases.append((err, str(empty / "trainB"), ".txt"))
    with pytest.raises(DataError) as err:
        check_unpaired_root(empty.parent / "outer" / "h2z", phases=("train", "test"))
    cases.append((err, "testA", "testA"))
    afhq = tmp_path / "afhq"
    _save(afhq / "train" / "cat" / "a.png", _rgb())
    with pytest.raises(DataError) as err:
        check_unpaired_root(afhq)
    cases.append((err, str(afhq / "trainA"), "prepare_afhq_cat2dog"))
    for err, path, fix in cases:
        msg = _one_line(err)
        assert path in msg and fix in msg, msg


def test_check_images_reports_first_bad_file_and_small_images(tmp_path):
    good = _save(tmp_path / "a.png", _rgb(40, 40))
    bad1, bad2 = tmp_path / "b.png", tmp_path / "c.png"
    bad1.write_bytes(b"garbage")
    bad2.write_bytes(b"garbage")
    assert check_images([good]) == []
    with pytest.raises(DataError) as err:
        check_images([good, bad1, bad2])
    msg = _one_line(err)
    assert str(bad1) in msg and str(bad2) not in msg and "1 more" in msg
    with pytest.raises(DataError, match="smaller than 64"):
        check_images([good], min_size=64)
    with pytest.warns(UserWarning, match="b.png"):
        assert len(check_images([good, bad1], on_error="warn")) == 1


# ---------------------------------------------------------------- unpaired dataset
def _ds(root, **kw):
    kw = {"load_size": 36, "crop_size": 32, **kw}
    return UnpairedDataset(root, **kw)


def test_unpaired_indexing_direction_and_recursion(tmp_path):
    root = _make_root(tmp_path / "d", n_a=5, n_b=3)
    _save(root / "trainA" / "sub" / "z.PNG", _rgb(36, 40, seed=9))
    (root / "trainA" / "readme.txt").write_text("ignored")
    ds = _ds(root)
    assert len(ds) == 6 and ds.A_paths[-1].endswith("sub/z.PNG") and ds.A_paths == sorted(ds.A_paths)
    for i in range(len(ds)):
        item = ds[i]
        assert item["A_path"] == ds.A_paths[i % 6] and item["A_index"] == i % 6
        assert 0 <= item["B_index"] < 3 and item["B_path"] == ds.B_paths[item["B_index"]]
        assert item["A"].shape == (3, 32, 32) and item["A_params"].dtype == torch.long
    serial = _ds(root, serial_batches=True)
    assert [serial[i]["B_index"] for i in range(6)] == [i % 3 for i in range(6)]
    rev = _ds(root, direction="BtoA")
    assert len(rev) == 6 and "trainB" in rev[0]["A_path"] and "trainA" in rev[0]["B_path"]
    gray = _ds(root, channels=1)
    assert gray[0]["A"].shape == (1, 32, 32)
    assert len(_ds(root, max_dataset_size=2)) == 2


def test_unpaired_randomness_is_a_function_of_seed_epoch_index(tmp_path):
    root = _make_root(tmp_path / "d", n_a=6, n_b=6)
    a, b = _ds(root), _ds(root)
    b_items = [b[i] for i in reversed(range(6))][::-1]  # access order must not matter
    for i in range(6):
        assert torch.equal(a[i]["A_params"], b_items[i]["A_params"]) and a[i]["B_index"] == b_items[i]["B_index"]
        assert torch.equal(a[i]["B"], b_items[i]["B"])
    before = [(a[i]["A_params"].tolist(), a[i]["B_index"]) for i in range(6)]
    a.set_epoch(1)
    assert [(a[i]["A_params"].tolist(), a[i]["B_index"]) for i in range(6)] != before
    c = _ds(root, seed=1)
    assert [(c[i]["A_params"].tolist(), c[i]["B_index"]) for i in range(6)] != before


def test_params_in_dataset_match_image(tmp_path):
    root = _make_root(tmp_path / "d", n_a=2, n_b=2)
    ds = _ds(root)
    for i in range(2):
        item = ds[i]
        top, left, lh, lw, fl = item["A_params"].tolist()
        ref = Image.open(item["A_path"]).convert("RGB").resize((lw, lh), Image.BICUBIC)
        ref = ref.crop((left, top, left + 32, top + 32))
        ref = ref.transpose(Image.FLIP_LEFT_RIGHT) if fl else ref
        assert torch.equal(item["A"], to_tensor(ref))


def test_no_crop_phase_resizes_straight_to_crop_size(tmp_path):
    root = _make_root(tmp_path / "d", n_a=4, n_b=2)
    ds = _ds(root)
    ds.set_no_crop(True)
    flips = set()
    for i in range(4):
        item = ds[i]
        top, left, lh, lw, fl = item["A_params"].tolist()
        assert (top, left, lh, lw) == (0, 0, 32, 32)
        ref = Image.open(item["A_path"]).convert("RGB").resize((32, 32), Image.BICUBIC)
        ref = ref.transpose(Image.FLIP_LEFT_RIGHT) if fl else ref
        assert torch.equal(item["A"], to_tensor(ref))
        flips.add(fl)
    ds.set_no_crop(False)
    assert ds[0]["A_params"].tolist()[2] == 36


def test_test_phase_falls_back_to_val(tmp_path):
    root = _make_root(tmp_path / "d", 2, 2, phases=("train", "val"))
    ds = _ds(root, phase="test")
    assert "valA" in ds[0]["A_path"] and "valB" in ds[0]["B_path"]


def test_on_error_skip_and_raise(tmp_path):
    root = _make_root(tmp_path / "d", n_a=4, n_b=2)
    buf = io.BytesIO()
    Image.fromarray(_rgb(36, 40)).save(buf, "JPEG")
    bad = root / "trainA" / "001b.jpg"  # sorted between 001.png and 002.png -> index 2
    bad.write_bytes(buf.getvalue()[:300])  # header intact (passes verify), body truncated
    with pytest.raises(DataError, match="001b.jpg"):
        _ds(root)  # up-front header check
    with pytest.raises(DataError, match="001b.jpg"):
        _ds(root, validate=False)[2]  # mid-run
    with pytest.warns(UserWarning, match="001b.jpg"):
        ds = _ds(root, on_error="skip")  # up-front: only a warning
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        item, again = ds[2], ds[2 + len(ds)]  # the sample reports the skipped file; the dataset does not warn
        assert item["skipped"].startswith(f"{bad}\t{bad}: cannot decode") and again["skipped"] == ""
        ds.note_skipped(item["skipped"].splitlines() * 2)  # the main process warns once per file ...
        ds.note_skipped(item["skipped"].splitlines())  # ... also when reported again (another worker or epoch)
    assert item["A_path"] == ds.A_paths[3] and item["A_index"] == 3 and again["A_index"] == 3
    assert sum("001b.jpg" in str(w.message) for w in rec) == 1 and ds.skipped == 1


# ---------------------------------------------------------------- loader and sampler
def _batches(loader):
    return list(loader)


def _same(b1, b2):
    assert b1.keys() == b2.keys()
    for k in b1:
        assert torch.equal(b1[k], b2[k]) if isinstance(b1[k], torch.Tensor) else b1[k] == b2[k], k


def test_batches_independent_of_workers_and_resume_exact(tmp_path):
    root = _make_root(tmp_path / "d", n_a=7, n_b=5)
    ds = _ds(root)
    serial = _batches(build_loader(ds, batch_size=2, num_workers=0, seed=3, epoch=2))
    parallel = _batches(build_loader(ds, batch_size=2, num_workers=2, seed=3, epoch=2))
    assert len(serial) == steps_per_epoch(7, 2) == 3
    for x, y in zip(serial, parallel, strict=True):
        _same(x, y)
    resumed = _batches(build_loader(ds, batch_size=2, num_workers=0, seed=3, epoch=2, start_step=2))
    assert len(resumed) == 1
    _same(resumed[0], serial[2])
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    _batches(build_loader(ds, batch_size=2, seed=3, epoch=2))
    assert torch.equal(torch.rand(1), expected)  # loading does not consume the global torch RNG


def test_sampler_epoch_coverage_start_step_and_ranks():
    n, bs = 23, 3
    full = list(EpochSampler(n, bs, seed=5, epoch=0))
    assert len(full) == steps_per_epoch(n, bs) * bs == 21 and len(set(full)) == 21 and set(full) <= set(range(n))
    whole = list(EpochSampler(24, 4, seed=5, epoch=1))
    assert sorted(whole) == list(range(24))
    assert whole != list(EpochSampler(24, 4, seed=5, epoch=2)) and whole == list(EpochSampler(24, 4, seed=5, epoch=1))
    assert list(EpochSampler(24, 4, shuffle=False)) == list(range(24))
    for k in range(8):
        s = EpochSampler(n, bs, seed=5, epoch=0, start_step=k)
        assert list(s) == full[k * bs:] and len(s) == len(full) - k * bs
    ws, bs = 3, 2
    glob_ = list(EpochSampler(n, bs * ws, seed=5, epoch=0))  # global batches of 6
    ranks = [list(EpochSampler(n, bs, seed=5, epoch=0, rank=r, world_size=ws)) for r in range(ws)]
    assert steps_per_epoch(n, bs, ws) == 3 and all(len(r) == 3 * bs for r in ranks)
    for step in range(3):
        parts = [r[step * bs:(step + 1) * bs] for r in ranks]
        assert [i for part in parts for i in part] == glob_[step * 6:(step + 1) * 6]  # rank slices partition the global batch
    with pytest.raises(DataError, match="batch"):
        EpochSampler(3, 2, world_size=2)


# ---------------------------------------------------------------- single-folder dataset
def test_folder_pad_and_crop_back_round_trip(tmp_path):
    arr = _rgb(37, 23, seed=4)
    p = _save(tmp_path / "imgs" / "a.png", arr)
    _save(tmp_path / "imgs" / "deep" / "b.jpg", _rgb(16, 16))
    ds = ImageFolderDataset(tmp_path / "imgs")
    assert len(ds) == 2 and ds[0]["A_path"] == str(p)
    item = ds[0]
    assert item["A"].shape == (3, 40, 24) and item["orig_size"].tolist() == [37, 23]
    assert torch.equal(crop_to_size(item["A"], *item["orig_size"]), to_tensor(Image.fromarray(arr)))
    ref = np.pad(arr, ((0, 3), (0, 1), (0, 0)), mode="reflect")
    assert torch.equal(item["A"], to_tensor(Image.fromarray(ref)))
    loader = torch.utils.data.DataLoader(ds, batch_size=1)
    for batch in loader:  # batch size 1, any size
        out = crop_to_size(batch["A"], *batch["orig_size"][0])
        assert out.shape[-2:] == tuple(batch["orig_size"][0].tolist())
    resized = ImageFolderDataset([tmp_path / "imgs" / "deep", p], resize=30, channels=1)
    assert resized[0]["A"].shape == (1, 32, 32) and resized[1]["file_size"].tolist() == [37, 23]
    with pytest.raises(DataError, match="nothere"):
        ImageFolderDataset(tmp_path / "nothere")
