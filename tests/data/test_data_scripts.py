"""Offline tests of scripts/download_dataset.sh and the dataset preparation scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2i.data import UnpairedDataset, list_images

REPO = Path(__file__).resolve().parents[2]
DOWNLOAD = REPO / "scripts" / "download_dataset.sh"
NAMES = ("apple2orange summer2winter_yosemite horse2zebra monet2photo cezanne2photo ukiyoe2photo vangogh2photo "
         "maps facades iphone2dslr_flower grumpifycat mini").split()


def _curl_has_file_protocol() -> bool:
    if not shutil.which("curl"):
        return False
    out = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
    return any(line.startswith("Protocols:") and " file " in f" {line} " for line in out.splitlines())


def _run(args, tmp_path, url_base="file:///nonexistent"):
    env = {**os.environ, "I2I_DATASET_URL_BASE": url_base, "I2I_DATASETS_DIR": str(tmp_path / "datasets")}
    return subprocess.run(["bash", str(DOWNLOAD), *args], capture_output=True, text=True, env=env, timeout=60)


def _png_bytes(seed):
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _zip(path, name, dirs):
    with zipfile.ZipFile(path, "w") as z:
        for d, n in dirs.items():
            for i in range(n):
                z.writestr(f"{name}/{d}/{i}.png", _png_bytes(i))


def test_usage_and_unknown_name(tmp_path):
    for args in ([], ["not_a_set"], ["a", "b"]):
        res = _run(args, tmp_path)
        assert res.returncode == 2, res
        assert "usage" in res.stderr and all(n in res.stderr for n in NAMES)
    assert "not_a_set" in _run(["not_a_set"], tmp_path).stderr
    assert not (tmp_path / "datasets").exists()


@pytest.mark.parametrize("name,hint", [("cityscapes", "prepare_cityscapes.py"), ("cat2dog", "prepare_afhq_cat2dog.sh")])
def test_manual_datasets_print_instructions(tmp_path, name, hint):
    res = _run([name], tmp_path)
    assert res.returncode == 1 and hint in res.stdout and "datasets/README.md" in res.stdout
    assert not (tmp_path / "datasets").exists()


@pytest.mark.skipif(not _curl_has_file_protocol(), reason="curl with file:// support needed")
def test_offline_download_extracts_checks_and_moves(tmp_path):
    server = tmp_path / "server"
    server.mkdir()
    _zip(server / "mini.zip", "mini", {"trainA": 3, "trainB": 2, "testA": 1, "testB": 2})
    res = _run(["mini"], tmp_path, url_base=f"file://{server}")
    assert res.returncode == 0, res.stderr
    dest = tmp_path / "datasets" / "mini"
    for d, n in (("trainA", 3), ("trainB", 2), ("testA", 1), ("testB", 2)):
        assert len(list_images(dest / d)) == n and f"{d}: {n} images" in res.stdout
    assert sorted(os.listdir(tmp_path / "datasets")) == ["mini"]  # no temporary folder left
    assert len(UnpairedDataset(dest, load_size=8, crop_size=8)) == 3
    again = _run(["mini"], tmp_path, url_base=f"file://{server}")
    assert again.returncode == 0 and "already exists" in again.stdout
    # an archive without trainB: error, and nothing half-written
    _zip(server / "facades.zip", "facades", {"trainA": 2})
    bad = _run(["facades"], tmp_path, url_base=f"file://{server}")
    assert bad.returncode == 1 and "trainB" in bad.stderr
    assert sorted(os.listdir(tmp_path / "datasets")) == ["mini"]
    missing = _run(["maps"], tmp_path, url_base=f"file://{server}")  # 404 equivalent
    assert missing.returncode != 0 and sorted(os.listdir(tmp_path / "datasets")) == ["mini"]


def test_prepare_cityscapes(tmp_path):
    gt, photos = tmp_path / "gtFine", tmp_path / "leftImg8bit"
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            stem = f"aachen_{i:06d}_000019"
            for folder, suffix in ((gt, "_gtFine_color.png"), (photos, "_leftImg8bit.png")):
                (folder / split / "aachen").mkdir(parents=True, exist_ok=True)
                (folder / split / "aachen" / f"{stem}{suffix}").write_bytes(_png_bytes(i))
            (gt / split / "aachen" / f"{stem}_gtFine_labelIds.png").write_bytes(_png_bytes(i))  # ignored
    out = tmp_path / "cityscapes"
    cmd = [sys.executable, str(REPO / "datasets" / "prepare_cityscapes.py"), "--gtFine_dir", str(gt),
           "--leftImg8bit_dir", str(photos), "--output_dir", str(out), "--size", "16"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for d, n in (("trainA", 2), ("trainB", 2), ("testA", 1), ("testB", 1)):
        files = list_images(out / d)
        assert len(files) == n and Image.open(files[0]).size == (16, 16)
    assert "BtoA" in res.stdout
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "already exists" in res.stderr


def test_prepare_afhq_cat2dog(tmp_path):
    afhq = tmp_path / "afhq"
    for split, cls, n in (("train", "cat", 3), ("train", "dog", 2), ("test", "cat", 1), ("test", "dog", 1)):
        (afhq / split / cls).mkdir(parents=True)
        for i in range(n):
            (afhq / split / cls / f"{cls}{i}.png").write_bytes(_png_bytes(i))
    out = tmp_path / "cat2dog"
    res = subprocess.run(["bash", str(REPO / "datasets" / "prepare_afhq_cat2dog.sh"), str(afhq), str(out)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for d, n, cls in (("trainA", 3, "cat"), ("trainB", 2, "dog"), ("testA", 1, "cat"), ("testB", 1, "dog")):
        files = list_images(out / d)
        assert len(files) == n and all(os.path.basename(f).startswith(cls) for f in files)
    res = subprocess.run(["bash", str(REPO / "datasets" / "prepare_afhq_cat2dog.sh"), str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "train/cat" in res.stderr
