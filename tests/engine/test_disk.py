"""Disk trouble: a full or unwritable run directory is one clear line, and the latest checkpoint is never a partial
file (the previous ``last.pt`` stays intact and loadable). Full disks are simulated (OSError ENOSPC) so the
tests also run as root, for whom ``chmod`` stops nothing."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch

from i2i.cli.train import run_training
from i2i.engine import state as state_mod
from i2i.engine.state import CheckpointError, atomic_torch_save, safe_load
from i2i.errors import RunDirError
from i2i.utils.runlog import RunLogger

SMOKE = ["experiment=cut_horse2zebra", "debug=smoke", "train.sample_every=0", "train.log_every=1"]


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_then_enospc(obj, f):
    f.write(b"PK\x03\x04 the first bytes of a checkpoint")
    _enospc()


@pytest.mark.parametrize("target,fault", [("torch.save", _half_then_enospc), ("os.fsync", _enospc),
                                          ("os.replace", _enospc)])
def test_failed_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, target, fault):
    path = tmp_path / "ckpt" / "last.pt"
    atomic_torch_save({"step": 1, "w": torch.ones(2)}, path)
    before = path.read_bytes()
    module, name = target.split(".")
    monkeypatch.setattr(getattr(state_mod, module), name, fault)
    with pytest.raises(CheckpointError) as err:
        atomic_torch_save({"step": 2, "w": torch.zeros(2)}, path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "No space left on device" in msg and "free space" in msg
    monkeypatch.undo()
    assert path.read_bytes() == before and safe_load(path)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no partial temp file left


def test_checkpoint_written_by_atomic_save_has_ordinary_permissions(tmp_path):
    path = tmp_path / "x.pt"
    atomic_torch_save({"a": 1}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_disk_full_during_training_keeps_last_checkpoint(compose, monkeypatch):
    cfg = compose(*SMOKE, "train.ckpt_every=1", "train.max_steps=2")
    run_training(cfg)
    last = f"{cfg.run_dir}/ckpt/last.pt"
    before = open(last, "rb").read()
    monkeypatch.setattr(state_mod.torch, "save", _half_then_enospc)
    with pytest.raises(CheckpointError, match="No space left on device"):
        run_training(compose(*SMOKE, "train.ckpt_every=1", "train.max_steps=4", "resume=auto"))
    monkeypatch.undo()
    assert open(last, "rb").read() == before and safe_load(last)["step"] == 2
    assert os.listdir(f"{cfg.run_dir}/ckpt") == ["last.pt"]


def test_disk_full_while_logging_is_one_line(compose, monkeypatch):
    cfg = compose(*SMOKE, "train.ckpt_every=1", "train.max_steps=4")
    original = RunLogger.scalars

    def filling(self, step, *a, **k):
        if step == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{cfg.run_dir}/stats.jsonl")
        return original(self, step, *a, **k)

    monkeypatch.setattr(RunLogger, "scalars", filling)
    with pytest.raises(RunDirError) as err:
        run_training(cfg)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{cfg.run_dir}/stats.jsonl: cannot write (No space left on device)")
    assert "resume=auto" in msg and safe_load(f"{cfg.run_dir}/ckpt/last.pt")["step"] == 2


def test_unwritable_run_directory_is_one_line_before_training(compose, monkeypatch):
    cfg = compose(*SMOKE, "train.max_steps=1")

    path_cls = type(Path(cfg.run_dir))
    original = path_cls.mkdir

    def denied(self, *a, **k):  # only the run directory is unwritable
        if str(self) == cfg.run_dir:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return original(self, *a, **k)

    monkeypatch.setattr(path_cls, "mkdir", denied)
    with pytest.raises(RunDirError) as err:
        run_training(cfg)
    assert f"{cfg.run_dir}: cannot write (Permission denied) — free disk space or fix the permissions" in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="chmod does not stop root; the simulated variants cover it")
def test_read_only_checkpoints_dir_for_real(compose, tmp_path):
    parent = tmp_path / "checkpoints"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(RunDirError, match="Permission denied"):
            run_training(compose(*SMOKE, "train.max_steps=1"))
    finally:
        parent.chmod(0o700)
