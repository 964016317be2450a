"""Specifications of MetricSuite, the statistics cache, metrics.json and the i2i-compare CLI (mocked extractor)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.metrics.cache import StatsCache
from i2i.metrics.evaluate import MetricSuite, evaluate_folders, write_metrics_json
from i2i.metrics.features import MockExtractor, extract_features, load_image, tensor_to_uint8
from i2i.metrics.fid import frechet_distance
from i2i.metrics.kid import kid
from i2i.metrics.stats import stats_from_features

ROOT = Path(__file__).resolve().parents[2]


def _folder(path: Path, n: int, seed: int, shift: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = np.clip(rng.integers(0, 200, (32, 32, 3)) + shift, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(path / f"img_{i:03d}.png")
    return path


@pytest.fixture
def dirs(tmp_path):
    return {"real": _folder(tmp_path / "real", 12, 0), "fake": _folder(tmp_path / "fake", 10, 1, shift=40),
            "src": _folder(tmp_path / "src", 8, 2, shift=-30), "cache": tmp_path / "cache"}


def _suite(dirs, metrics=("fid", "kid"), **kw):
    return MetricSuite(metrics, dirs["real"], extractor=MockExtractor(), cache_dir=dirs["cache"], device="cpu",
                       kid_subsets=5, swd_resolution=32, **kw)


def test_values_equal_pure_functions_and_fused_kid(dirs):
    ext = MockExtractor()
    fr, ff, fs = (extract_features(dirs[k], ext) for k in ("real", "fake", "src"))
    v = _suite(dirs, ("fid", "kid", "pr"), source_dir=dirs["src"]).compute(dirs["fake"])
    r, f = stats_from_features(fr), stats_from_features(ff)
    assert v["fid"] == pytest.approx(frechet_distance(f.mu, f.sigma, r.mu, r.sigma), rel=1e-9)
    assert (v["kid"], v["kid_std"]) == pytest.approx(kid(ff, fr, n_subsets=5))
    assert (v["kid_fused"], v["kid_fused_std"]) == pytest.approx(kid(ff, np.concatenate([fr, fs]), n_subsets=5))
    assert v["fid"] > 0 and v["kid"] > 0 and 0 <= v["precision"] <= 1 and 0 <= v["recall"] <= 1
    assert (v["n_fake"], v["n_real"], v["n_source"]) == (10, 12, 8)


def test_identical_folders_give_zero(dirs):
    v = _suite(dirs, ("fid", "swd")).compute(dirs["real"])
    assert v["fid"] == pytest.approx(0, abs=1e-6) and v["swd"] == 0.0


@pytest.mark.parametrize("batch_size", [1, 5])
def test_in_memory_tensors_equal_folder_and_batch_size(dirs, batch_size):
    suite = _suite(dirs, ("fid", "kid", "swd"), batch_size=batch_size)
    imgs = [load_image(p) for p in sorted(dirs["fake"].iterdir())]
    from_tensors = suite.compute(torch.stack(imgs).split(3))  # iterable of [B, 3, H, W] uint8 batches
    from_folder = _suite(dirs, ("fid", "kid", "swd"), batch_size=4, use_cache=False).compute(dirs["fake"])
    for k in ("fid", "kid", "swd"):
        assert from_tensors[k] == pytest.approx(from_folder[k], rel=1e-5, abs=1e-9), k


def test_tensor_to_uint8_matches_cut_tensor2im():
    x = torch.tensor([-1.5, -1.0, -0.2, 0.0, 0.999, 1.0])
    expected = ((np.clip(x.numpy(), -1, 1) + 1) / 2.0 * 255.0).astype(np.uint8)
    assert np.array_equal(tensor_to_uint8(x).numpy(), expected)


def test_cache_hit_miss_and_invalidation(dirs):
    s1 = _suite(dirs)
    v1 = s1.compute(dirs["fake"])
    assert (s1.cache.hits, s1.cache.misses) == (0, 2)  # real and fake computed and stored
    assert not [p for p in dirs["cache"].iterdir() if p.suffix != ".npz"]  # atomic write left no temp file
    s2 = _suite(dirs)
    assert s2.compute(dirs["fake"]) == v1 and (s2.cache.hits, s2.cache.misses) == (2, 0)
    touched = dirs["real"] / "img_000.png"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    s3 = _suite(dirs)
    s3.compute(dirs["fake"])
    assert (s3.cache.hits, s3.cache.misses) == (1, 1)  # touched reference: recomputed; fake: hit
    (dirs["real"] / "img_011.png").unlink()
    s4 = _suite(dirs)
    v4 = s4.compute(dirs["fake"])
    assert (s4.cache.hits, s4.cache.misses) == (1, 1) and v4["n_real"] == 11 and v4["fid"] != v1["fid"]
    s5 = MetricSuite(("fid",), dirs["real"], extractor=MockExtractor(seed=1), cache_dir=dirs["cache"], device="cpu")
    s5.compute(dirs["fake"])
    assert s5.cache.misses == 2  # other weights hash


def test_cache_entry_round_trip_and_wrong_key(tmp_path):
    cache = StatsCache(tmp_path)
    st = stats_from_features(np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32))
    cache.save("split", "a" * 64, st)
    got = cache.load("split", "a" * 64)
    assert np.array_equal(got.mu, st.mu) and np.array_equal(got.features, st.features) and got.n == 5
    os.replace(cache.path("split", "a" * 64), cache.path("split", "a" * 20 + "b" * 44))
    assert cache.load("split", "a" * 20 + "b" * 44) is None and cache.misses == 1  # prefix clash: key checked


def test_bad_inputs_fail_before_work(dirs, tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        _suite(dirs, ("fid", "is"))
    with pytest.raises(FileNotFoundError, match="absent"):
        _suite(dirs).compute(tmp_path / "absent")
    assert not dirs["cache"].exists()  # nothing computed
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        evaluate_folders(tmp_path / "empty", dirs["real"], extractor=MockExtractor())


def test_write_metrics_json(tmp_path):
    p = write_metrics_json(tmp_path, {"fid": 1.5, "n_fake": 3}, {"weights_hash": "abc", "protocol": "p"})
    assert p == tmp_path / "metrics.json"
    d = json.loads(p.read_text())
    assert d["values"] == {"fid": 1.5, "n_fake": 3} and d["meta"]["weights_hash"] == "abc" and "written" in d["meta"]


@pytest.mark.slow  # a subprocess or a long run
def test_compare_cli_subprocess(dirs, tmp_path):
    out = tmp_path / "res" / "m.json"
    cmd = [sys.executable, "-m", "i2i.cli.compare", f"fake={dirs['fake']}", f"real={dirs['real']}",
           f"real2={dirs['src']}", "metrics=[fid,kid,swd,pr]", f"out={out}", f"cache_dir={dirs['cache']}",
           "extractor=mock", "device=cpu", "kid_subsets=5", "swd_resolution=32"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    expected = _suite(dirs, ("fid", "kid", "swd", "pr"), source_dir=dirs["src"]).compute(dirs["fake"])
    assert d["values"].keys() == expected.keys()
    for k in ("fid", "kid", "kid_fused", "swd", "precision", "recall", "n_fake", "n_real"):
        assert d["values"][k] == pytest.approx(expected[k]), k
    assert d["meta"]["weights_hash"] == "mock-16-0" and d["meta"]["protocol"].startswith("mock")
    assert f"FID        {expected['fid']:.4f}" in r.stdout and "fused-KID" in r.stdout
    bad = subprocess.run(cmd[:3] + [f"real={tmp_path / 'nope'}", "extractor=mock"], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=300)
    assert bad.returncode != 0 and "nope" in bad.stderr and "Traceback" not in bad.stderr
