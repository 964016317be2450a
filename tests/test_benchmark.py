"""scripts/benchmark.py runs end to end on the CPU at a tiny size and prints the promised table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "benchmark.py"


def load_benchmark():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(stdout: str) -> list[dict[str, str]]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("| method")]
    assert len(lines) == 1, stdout
    start = stdout.splitlines().index(lines[0])
    rows = []
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for ln in stdout.splitlines()[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))))
    return rows


@pytest.mark.slow  # a subprocess or a long run
def test_benchmark_prints_the_table_for_each_method_and_mode(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(SCRIPT), "--size", "32", "--ngf", "4", "--iters", "3", "--warmup", "1", "--methods",
           "cut,fastcut", "--batches", "1", "--modes", "fp32-eager,bf16", "--extras", "none", "--device", "cpu",
           "--threads", "1", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    first = res.stdout.splitlines()[0]
    assert "i2i benchmark" in first and f"torch {torch.__version__}" in first and "CPU" in first
    rows = table(res.stdout)
    bench = load_benchmark()
    assert list(rows[0]) == bench.COLUMNS + ["speedup_vs_fp32"]
    assert [(r["method"], r["mode"], r["batch"]) for r in rows] == [
        (m, mode, "1") for m in ("cut", "fastcut") for mode in ("fp32-eager", "bf16")]
    for r in rows:
        assert float(r["s_per_iter"]) > 0 and float(r["GFLOP_per_iter"]) > 0
        assert abs(float(r["images_per_s"]) * float(r["s_per_iter"]) - 1) < 1e-2  # batch 1
        assert r["peak_mem_GB"] == "-"  # no GPU
    assert [r["speedup_vs_fp32"] for r in rows if r["mode"] == "fp32-eager"] == ["1", "1"]
    data = json.loads(out.read_text())
    assert data["env"]["torch"] == torch.__version__ and data["env"]["date"]
    cut = next(r for r in data["rows"] if r["method"] == "cut")
    # the FLOP column is the count of a real (meta-device) step: equal to the analytic CUT count
    from flops import cut_step_flops  # scripts/, on sys.path above
    from i2i.models.discriminators import PatchGAN
    from i2i.models.generators import ResnetGenerator

    analytic = cut_step_flops(ResnetGenerator(ngf=4), PatchGAN(ndf=4), 32, 1, [0, 4, 8, 12, 16])["total"]
    assert abs(cut["GFLOP_per_iter"] * 1e9 - analytic) < 1e-6 * analytic


def test_methods_without_a_config_are_skipped_with_a_note(capsys, monkeypatch):
    bench = load_benchmark()
    monkeypatch.setitem(bench.METHODS, "notyet", "notyet_horse2zebra")
    assert bench.main(["--methods", "notyet", "--device", "cpu", "--extras", "none"]) == 0
    out = capsys.readouterr().out
    assert "notyet: skipped (configs/experiment/notyet_horse2zebra.yaml does not exist yet)" in out
