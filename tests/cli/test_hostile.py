"""Hostile files: loading a checkpoint or weights file never runs code. A file carrying a pickle payload is refused
with one clear line wherever i2i loads files (resume=, resume=auto, i2i-test ckpt=, FID Inception weights,
metric caches), and the payload does not run. The payload is real: unpickled unsafely it does run."""

from __future__ import annotations

import builtins
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from i2i.build import load_generator
from i2i.cli.test import run_test
from i2i.cli.train import run_training
from i2i.engine.state import CheckpointError, safe_load

BIN = Path(sys.executable).parent
SMOKE = ["experiment=cut_horse2zebra", "debug=smoke", "train.sample_every=0"]


class Payload:
    """Unpickling this runs ``exec``: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, Path]:
    """(a torch checkpoint whose 'G' entry is a payload, the marker file the payload would create)."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "hostile.pt"
    torch.save({"format": "i2i-checkpoint", "step": 1, "G": Payload(marker), "cfg": {}}, path)
    return path, marker


def test_the_payload_is_real(hostile):
    path, marker = hostile
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.read_text() == "pwned"


def _refused(err, path: Path) -> None:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "refused" in msg and "pickled Python objects" in msg


def test_safe_load_refuses(hostile):
    path, marker = hostile
    with pytest.raises(CheckpointError) as err:
        safe_load(path)
    _refused(err, path)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["resume=<file>", "resume=auto"])
def test_resume_refuses(compose, hostile, how):
    path, marker = hostile
    if how == "resume=auto":
        cfg = compose(*SMOKE, "train.max_steps=1")
        run_training(cfg)
        target = Path(cfg.run_dir) / "ckpt" / "last.pt"
        target.write_bytes(path.read_bytes())
        override = "resume=auto"
    else:
        target, override = path, f"resume={path}"
    with pytest.raises(CheckpointError) as err:
        run_training(compose(*SMOKE, "train.max_steps=2", override))
    _refused(err, target)
    assert not marker.exists()


@pytest.mark.slow  # a subprocess or a long run
def test_i2i_test_refuses_in_process_and_on_the_command_line(compose, hostile, tmp_path):
    path, marker = hostile
    with pytest.raises(CheckpointError) as err:
        load_generator(path)
    _refused(err, path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    with pytest.raises(CheckpointError):
        run_test(compose(f"ckpt={path}", "data=folder", f"data.root={folder}", config="test"))
    proc = subprocess.run([str(BIN / "i2i-test"), f"ckpt={path}", "data=folder", f"data.root={folder}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"i2i: error: {path}: refused")
    assert not marker.exists()


def test_fid_inception_weights_refuse_pickle_and_torchscript_payloads(hostile, tmp_path):
    from i2i.metrics.inception import load_fid_inception

    path, marker = hostile
    with pytest.raises(ValueError, match="not a weights_only state dict"):
        load_fid_inception(path)
    ts = tmp_path / "ts.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(ts))
    evil = tmp_path / "evil_ts.pt"
    with zipfile.ZipFile(ts) as zin, zipfile.ZipFile(evil, "w") as zout:
        for name in zin.namelist():  # a TorchScript archive whose data.pkl is the payload
            data = pickle.dumps(Payload(marker), protocol=2) if name.endswith("/data.pkl") else zin.read(name)
            zout.writestr(name, data)
    with pytest.raises(ValueError, match="TorchScript file is not the FID Inception"):
        load_fid_inception(evil)
    assert not marker.exists()


def test_metric_cache_never_unpickles(tmp_path):
    from i2i.metrics.cache import StatsCache

    cache = StatsCache(tmp_path)
    marker = tmp_path / "PWNED"
    entry = cache.path("split", "k" * 20)
    entry.parent.mkdir(parents=True, exist_ok=True)
    np.savez(entry, key=np.array([Payload(marker)], dtype=object), mu=np.zeros(2))
    assert cache.load("split", "k" * 20) is None and cache.misses == 1  # treated as absent, recomputed
    assert not marker.exists()


def test_every_loader_in_src_is_safe():
    """No unsafe deserialisation call sites beyond the audited ones (grep: torch.load / pickle / np.load)."""
    src = Path(__file__).resolve().parents[2] / "src" / "i2i"
    calls = []
    for path in src.rglob("*.py"):
        for line in path.read_text().splitlines():
            if any(t in line for t in ("torch.load(", "pickle.load", "np.load(", "jit.load(", "dill", "joblib.load")):
                calls.append((path.relative_to(src).as_posix(), line.strip()))
    for where, line in calls:
        ok = ("weights_only=True" in line or "allow_pickle=False" in line
              or (where == "metrics/inception.py" and "torch.jit.load" in line)  # restricted unpickler: tested above
              or (where == "export.py" and "torch.jit.load" in line))  # reads back only the file it just wrote
        assert ok, f"{where}: {line}"
    assert any(where == "engine/state.py" for where, _ in calls)  # the grep sees the checkpoint loader
