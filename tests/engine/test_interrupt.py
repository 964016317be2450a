"""Interruptions lose nothing: SIGINT/SIGTERM checkpoint the current step and say how to resume; kill -9 at any
moment (even inside a checkpoint write) leaves the previous checkpoint loadable; a run killed many times at
random moments and resumed each time ends with exactly the step, epoch, learning rate and weights of a run
that was never interrupted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from i2i.cli.common import resume_command
from i2i.cli.train import run_training
from i2i.engine.loop import Trainer
from i2i.engine.signals import TrainingInterrupted
from i2i.engine.state import atomic_torch_save, remove_stale_temps, safe_load

BIN = Path(sys.executable).parent
SMOKE = ["experiment=cut_horse2zebra", "debug=smoke", "train.deterministic=true", "train.sample_every=0"]


def _flat_state(state: dict) -> dict[str, torch.Tensor]:
    """Every network weight and optimizer moment of a checkpoint dict, flattened."""
    flat = {f"{net}.{k}": v for net in ("G", "D", "method") for k, v in state[net].items()}
    for name in ("opt_G", "opt_D", "opt_F"):
        for pid, s in state.get(name, {}).get("state", {}).items():
            flat.update({f"{name}.{pid}.{k}": v for k, v in s.items() if torch.is_tensor(v)})
    return flat


def _assert_same_training_state(a: dict, b: dict) -> None:
    fa, fb = _flat_state(a), _flat_state(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert torch.equal(fa[k], fb[k]), k
    for name in ("opt_G", "opt_D", "opt_F"):
        assert [g["lr"] for g in a[name]["param_groups"]] == [g["lr"] for g in b[name]["param_groups"]]


# ---------------------------------------------------------------------------------------------- in process
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_step_checkpoints_that_step_and_resume_is_exact(compose, monkeypatch, sig):
    common = [*SMOKE, "train.n_epochs=1", "train.n_epochs_decay=1", "train.ckpt_every=0", "train.max_steps=6"]
    straight = run_training(compose(*common, "name=straight")).state_dict()
    original, seen = Trainer.train_step, []

    def signalled_step(self, batch):  # the signal arrives while step 3 is being computed
        if self.step == 2:
            os.kill(os.getpid(), sig)
        seen.append(self.step)
        return original(self, batch)

    before = signal.getsignal(sig)
    monkeypatch.setattr(Trainer, "train_step", signalled_step)
    with pytest.raises(TrainingInterrupted) as err:
        run_training(compose(*common, "name=split"))
    assert seen == [0, 1, 2]  # the step in flight was finished, no further step was started
    assert signal.getsignal(sig) is before  # handlers restored
    e = err.value
    assert e.step == 3 and e.exit_code == 128 + sig and "resume=auto" in str(e) and "\n" not in str(e)
    assert f"interrupted by {signal.Signals(sig).name} at step 3" in str(e)
    assert safe_load(e.path)["step"] == 3
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = run_training(compose(*common, "name=split", "resume=auto"))
    assert resumed.step == 6
    _assert_same_training_state(straight, resumed.state_dict())


def test_resume_command_replaces_resume_and_spells_out_python_m():
    assert resume_command(["/usr/bin/train", "experiment=x", "resume=/a/b.pt", "name=n y"]) == \
        "train experiment=x 'name=n y' resume=auto"
    assert resume_command(["i2i train", "a=1"]) == "i2i train a=1 resume=auto"
    assert resume_command(["python -m i2i train", "a=1"]) == "python -m i2i train a=1 resume=auto"


# ---------------------------------------------------------------------------------------------- kill -9 in a write
_DIE_IN_WRITE = """
import os, signal, sys, torch
from i2i.engine import state
path, where = sys.argv[1], sys.argv[2]
state.atomic_torch_save({"v": torch.ones(3)}, path)
real_save = torch.save
def dying_save(obj, f):
    if where == "mid_write":
        f.write(b"PK\\x03\\x04 half a checkpoint"); f.flush()
    else:
        real_save(obj, f); f.flush()  # the whole temp file is written ...
    os.kill(os.getpid(), signal.SIGKILL)  # ... and the process dies before the rename
state.torch.save = dying_save
state.atomic_torch_save({"v": torch.zeros(3)}, path)
"""


@pytest.mark.parametrize("where", ["mid_write", "before_rename"])
def test_kill9_inside_a_checkpoint_write_leaves_the_previous_one_intact(tmp_path, where):
    path = tmp_path / "ckpt" / "last.pt"
    proc = subprocess.run([sys.executable, "-c", _DIE_IN_WRITE, str(path), where], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert torch.equal(safe_load(path)["v"], torch.ones(3))  # the previous checkpoint, complete
    stale = list(path.parent.glob(".*.tmp"))
    assert len(stale) == 1 and stale[0].name.startswith(".last.pt.")
    assert remove_stale_temps(path.parent) == stale and not stale[0].exists()
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_stale_temp_files_do_not_confuse_resume_and_are_removed(compose):
    common = [*SMOKE, "train.max_steps=2"]
    first = run_training(compose(*common))
    ckpt = first.run_dir / "ckpt"
    (ckpt / ".last.pt.x1y2z3.tmp").write_bytes(b"PK\x03\x04 garbage from a killed write")
    atomic_torch_save({"not": "a checkpoint"}, ckpt / "unrelated.pt")  # real files stay
    resumed = run_training(compose(*SMOKE, "train.max_steps=3", "resume=auto"))
    assert resumed.step == 3 and safe_load(ckpt / "last.pt")["step"] == 3
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt", "unrelated.pt"]


# ---------------------------------------------------------------------------------------------- random kills
N_EPOCHS, N_DECAY = 5, 10  # debug=smoke: 4 training images, batch 1 -> 4 steps per epoch, 60 steps
TORTURE = [*SMOKE, "train.max_steps=null", f"train.n_epochs={N_EPOCHS}", f"train.n_epochs_decay={N_DECAY}",
           "train.ckpt_every=1", "train.log_every=1"]
KILLS = [signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _ckpt_step(path: Path) -> int | None:
    return safe_load(path)["step"] if path.is_file() else None


def _launch(tmp: Path, datasets: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "I2I_DATASETS_DIR": str(datasets), "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([str(BIN / "train"), *TORTURE, "name=run", "resume=auto"], cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                            stderr=log.open("w"))


def _kill_after_progress(proc: subprocess.Popen, stats: Path, sig: int, delay: float) -> None:
    """Wait until this process has trained at least one step, then ``delay`` seconds more, then signal it."""
    start, deadline = _lines(stats), time.time() + 240
    while _lines(stats) <= start and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)


@pytest.mark.slow  # a subprocess or a long run
def test_random_kills_and_resumes_end_exactly_like_an_uninterrupted_run(tmp_path, datasets_dir, compose):
    rng = random.Random(int(os.environ.get("I2I_KILL_SEED", "8")))
    run = tmp_path / "checkpoints" / "run"
    last, stats = run / "ckpt" / "last.pt", run / "stats.jsonl"
    kills = 0
    for i, sig in enumerate([*KILLS, None]):
        before, log = _ckpt_step(last), tmp_path / f"launch{i}.log"
        proc = _launch(tmp_path, datasets_dir, log)
        if sig is not None:
            _kill_after_progress(proc, stats, sig, rng.uniform(0.0, 0.4))
        rc = proc.wait(timeout=300)
        err = log.read_text()
        if before is not None:  # every resume works, from the checkpoint that was there
            assert f"resumed {last.relative_to(tmp_path)} at step {before} " in err, err[-2000:]
        if rc == 0:
            break
        kills += 1
        after = _ckpt_step(last)  # loadable after any kind of kill
        if sig == signal.SIGKILL:
            assert rc == -signal.SIGKILL, err[-2000:]
        else:  # graceful: checkpoint at the step reached, one line saying how to continue
            assert rc == 128 + sig, err[-2000:]
            line = err.strip().splitlines()[-1]
            assert line.startswith(f"i2i: interrupted by {signal.Signals(sig).name} at step {after}: "), line
            assert line.endswith(" resume=auto") and "continue with: train " in line
    assert kills >= 6, f"the run finished after {kills} kills; make it longer"
    final = safe_load(last)
    steps_per_epoch, total = 4, (N_EPOCHS + N_DECAY) * 4
    assert final["step"] == total and final["epoch"] == total // steps_per_epoch + 1
    factor = 1 - (N_EPOCHS + N_DECAY - N_EPOCHS) / (N_DECAY + 1)  # published linear decay, last epoch
    for name in ("opt_G", "opt_D", "opt_F"):
        assert final[name]["param_groups"][0]["lr"] == pytest.approx(2e-4 * factor)
    assert not list(last.parent.glob(".*.tmp"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses: the same float reductions
    try:
        straight = run_training(compose(*TORTURE, "name=straight"))  # never interrupted, same settings
    finally:
        torch.set_num_threads(threads)
    _assert_same_training_state(straight.state_dict(), final)
