"""Bad input and faults on the training side end in one line naming the file or key (exit status 2), before work
starts where that can be checked up front; nothing already in the run dir changes; nothing hangs.

One case per class: a loader worker hitting an unreadable file, data checked before anything is written (truncated
bodies, runs that failed before their first checkpoint, symlink loops), typed config values, resume against the
run's own config, one process per run dir, a full disk inside torch's zip writer and a run dir under a file, and
non-finite gradients under ``train.on_nonfinite=skip``. (Inference-side cases: tests/cli/test_bad_inputs_inference.py.)
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import i2i.build as build
from helpers import random_rgb, spoil_after_validation, unpaired_root
from i2i.cli.common import run_cli
from i2i.cli.train import run_training
from i2i.data.errors import DataError
from i2i.data.images import list_images
from i2i.engine.rundir import RunLock
from i2i.engine.state import CheckpointError, safe_load

SMOKE = ["experiment=cut_horse2zebra", "debug=smoke", "train.sample_every=0"]


# ---------------------------------------------------------------------------------------------- helpers
def _own_data(compose, root: Path, *extra: str):
    return compose(*SMOKE, "data=unpaired", f"data.root={root}", *extra)


def _truncate_body(path: Path) -> None:
    """A JPEG whose header and first scan bytes are intact (Pillow's ``verify`` passes) but whose body is cut."""
    buf = io.BytesIO()
    Image.fromarray(random_rgb(7)).save(buf, "JPEG")
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as img:
        img.verify()  # the header-only check of before would accept it


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (empty when it does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_exit(capsys, fn, cfg) -> str:
    """Run ``fn(cfg)`` as the CLI does; assert exit status 2 and exactly one stderr line; return that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_cli(fn, cfg)
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("i2i: error: ")]
    assert len(lines) == 1, lines
    return lines[0][len("i2i: error: "):]


# ---------------------------------------------------------------------------------------------- 1. workers
def test_worker_error_is_one_line_and_the_workers_are_gone(compose, tmp_path, monkeypatch):
    root = unpaired_root(tmp_path)
    victim = root / "trainA" / "02.png"
    spoil_after_validation(monkeypatch, lambda: victim.write_bytes(victim.read_bytes()[:60]))
    with pytest.raises(DataError) as err:
        run_training(_own_data(compose, root, "train.num_workers=2", "train.max_steps=8"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{victim}: cannot decode image") and "DataLoader" not in msg
    assert multiprocessing.active_children() == []  # shut down although the exception still holds the iterator


@pytest.mark.slow
def test_skip_with_workers_warns_once_per_file_for_the_whole_run(compose, tmp_path, monkeypatch):
    root = unpaired_root(tmp_path)
    victim = root / "trainA" / "02.png"
    spoil_after_validation(monkeypatch, lambda: victim.write_bytes(b""))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer = run_training(_own_data(compose, root, "train.num_workers=2", "data.on_error=skip",
                                         "train.max_steps=8"))  # 2 epochs of 4 steps, 2 new workers each
    assert trainer.step == 8 and trainer.dataset.skipped == 1
    assert sum(f"skipping {victim}" in str(w.message) for w in rec) == 1


HANG_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import i2i.build as build
    from i2i.cli.train import main

    victim = Path(sys.argv[1])
    original = build.build_trainer

    def spoiled(cfg, run_dir, *a, **k):  # the file goes bad after the up-front check, as if damaged mid-run
        trainer = original(cfg, run_dir, *a, **k)
        victim.write_bytes(victim.read_bytes()[:60])
        return trainer

    build.build_trainer = spoiled
    sys.argv = ["train", *sys.argv[2:]]
    main()
""")


@pytest.mark.slow
def test_cli_with_workers_exits_instead_of_hanging(tmp_path, datasets_dir):
    root = unpaired_root(tmp_path)
    victim = root / "trainA" / "02.png"
    proc = subprocess.run([sys.executable, "-c", HANG_SCRIPT, str(victim), *SMOKE, "data=unpaired",
                           f"data.root={root}", "train.num_workers=4", "train.max_steps=8",
                           f"paths.checkpoints_dir={tmp_path / 'ck'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("i2i: error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(errors) == 1 and errors[0].startswith(f"i2i: error: {victim}: cannot decode image")


# ---------------------------------------------------------------------------------------------- 2. data
def test_truncated_body_is_reported_before_anything_is_written(compose, tmp_path, capsys):
    root = unpaired_root(tmp_path)
    bad = root / "trainB" / "01.jpg"
    _truncate_body(bad)
    cfg = _own_data(compose, root)
    msg = one_line_exit(capsys, run_training, cfg)
    assert msg.startswith(f"{bad}: cannot decode image") and "remove or replace the file" in msg
    assert not Path(cfg.run_dir).exists()  # no .hydra/, no tb/, no lock left behind


@pytest.mark.slow
def test_a_run_that_failed_before_its_first_checkpoint_does_not_block_its_retry(compose, tmp_path, monkeypatch,
                                                                             capsys):
    root = unpaired_root(tmp_path)
    spoil_after_validation(monkeypatch, lambda: (root / "trainA" / "01.png").write_bytes(b""))  # dies in epoch 1
    cfg = _own_data(compose, root, "train.max_steps=4", "train.ckpt_every=4", "train.log_every=1")
    with pytest.raises(DataError):
        run_training(cfg)
    run = Path(cfg.run_dir)
    assert (run / ".hydra" / "config.yaml").is_file() and not list(run.glob("ckpt/*.pt"))
    monkeypatch.undo()
    Image.fromarray(random_rgb(1)).save(root / "trainA" / "01.png")  # the user fixes the file and runs again
    capsys.readouterr()
    trainer = run_training(cfg)
    assert trainer.step == 4 and "holds no checkpoint" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # the failed run's log lines are gone with it


def test_a_dir_with_other_files_is_still_refused(compose, tmp_path, capsys):
    cfg = compose(*SMOKE)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    assert "is not empty: continue it with resume=auto" in one_line_exit(capsys, run_training, cfg)
    assert snapshot(run) == before and not (run / ".lock").exists()


def test_symlinks_are_followed_once_and_never_out_of_the_domain(tmp_path):
    root = unpaired_root(tmp_path)
    a = root / "trainA"
    (a / "sub").mkdir()
    Image.fromarray(random_rgb(9)).save(a / "sub" / "09.png")
    (a / "up").symlink_to("..")  # the dataset root: trainB/ would come in
    (a / "self").symlink_to(".")  # a loop
    (a / "alias").symlink_to("sub")  # inside the domain: its files once
    with pytest.warns(UserWarning, match=f"{a / 'up'}: symlink to {root.resolve()}, outside"):
        found = list_images(a)
    names = sorted(Path(p).relative_to(a).as_posix() for p in found)
    assert names in (["00.png", "01.png", "02.png", "03.png", "alias/09.png"],
                     ["00.png", "01.png", "02.png", "03.png", "sub/09.png"])


# ---------------------------------------------------------------------------------------------- 3. config
BAD_VALUES = [
    ("train.batch_size=abc", "train.batch_size=abc: must be an integer >= 1"),
    ("train.batch_size=0", "train.batch_size=0: must be an integer >= 1"),
    ("train.batch_size=-1", "train.batch_size=-1: must be an integer >= 1"),
    ("train.max_steps=-5", "train.max_steps=-5: must be null or an integer >= 1"),
    ("train.n_epochs=-3", "train.n_epochs=-3: must be an integer >= 0"),
    ("train.amp=fp8", "train.amp=fp8: must be one of auto, bf16, fp16, none"),
    ("train.ckpt_every=-1", "train.ckpt_every=-1: must be an integer >= 0"),
    ("generator.ngf=0", "generator.ngf=0: must be an integer >= 1"),
    ("generator.n_downsampling=3", "generator.n_downsampling=3: must be one of 0, 1, 2"),
    ("seed=abc", "seed=abc: must be an integer >= 0"),
    ("optim.lr_g=fast", "optim.lr_g=fast: must be a number > 0.0"),
    ("device=tpu", "device=tpu: must be auto, cpu, cuda or cuda:<index>"),
    ("train.num_workers=-1", "train.num_workers=-1: must be an integer >= 0"),
    ("train.batch_size=1.5", "train.batch_size=1.5: must be an integer >= 1"),
    ("train.tensorboard=maybe", "train.tensorboard=maybe: must be true or false"),
    ("optim.betas=[0.5]", "optim.betas=[0.5]: must be two numbers in [0.0, 1.0)"),
    ("eval.metrics=[fid,fid2]", "eval.metrics=[fid,fid2]: must be a list of distinct entries"),
    ("method.lambda_nce=-1", "method.lambda_nce=-1: must be a number >= 0.0"),
    ("train.batch_size=64", "train.batch_size=64 x 1 process(es) is larger than the dataset (4 images)"),
    ("train.n_epochs=0 train.n_epochs_decay=0", "train.n_epochs=0, train.n_epochs_decay=0: nothing to train"),
    ("data=unpaired", "data.root: Missing mandatory value"),  # root: ??? not given
]


@pytest.mark.parametrize("override,expected", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_the_key_before_any_work(compose, capsys, override, expected):
    cfg = compose(*SMOKE, *override.split())
    msg = one_line_exit(capsys, run_training, cfg)
    assert msg.startswith(expected) and " — " in msg, msg
    assert not Path(cfg.run_dir).exists()


@pytest.mark.slow
def test_every_experiment_passes_the_schema(compose):
    from conftest import experiments
    from i2i import schema

    for name in experiments():
        schema.check(build.to_dict(compose(f"experiment={name}")), schema.TRAIN)


# ---------------------------------------------------------------------------------------------- 4. resume
@pytest.fixture
def started(compose):
    """A CUT run trained 2 steps at 36 -> 32 pixels: (its run dir, snapshot of its files)."""
    cfg = compose(*SMOKE)
    run_training(cfg)
    run = Path(cfg.run_dir)
    return run, snapshot(run)


@pytest.mark.parametrize("overrides,key", [
    (["data.load_size=286", "data.crop_size=256", "data.synthetic.size=36"], "data.crop_size: 32 in the checkpoint"),
    (["method=fastcut"], "method.lambda_nce: 1.0 in the checkpoint, 10.0 now"),
    (["optim.lr_g=1e-3"], "optim.lr_g: 0.0002 in the checkpoint, 0.001 now"),
])
def test_resume_refuses_changes_to_the_training_and_touches_nothing(compose, capsys, started, overrides, key):
    run, before = started
    cfg = compose(*SMOKE, "train.max_steps=4", "resume=auto", f"name={run.name}", *overrides)  # method= renames
    msg = one_line_exit(capsys, run_training, cfg)
    assert msg.startswith("resume: this command changes the run's training settings") and key in msg, msg
    assert "resume_allow_changes=true" in msg and snapshot(run) == before


def test_resume_with_allowed_keys_continues_and_keeps_the_original_config(compose, started):
    run, before = started
    trainer = run_training(compose(*SMOKE, "train.max_steps=4", "train.log_every=2", "resume=auto"))
    assert trainer.step == 4
    assert snapshot(run)[".hydra/config.yaml"] == before[".hydra/config.yaml"]
    (entry,) = [json.loads(line) for line in (run / ".hydra" / "resume_history.jsonl").read_text().splitlines()]
    assert entry["step"] == 2 and entry["changes"] == {}


@pytest.mark.slow
def test_resume_allow_changes_applies_prints_and_records_them(compose, capsys, started):
    run, before = started
    capsys.readouterr()
    trainer = run_training(compose(*SMOKE, "train.max_steps=4", "resume=auto", "optim.lr_g=1e-3",
                                   "resume_allow_changes=true"))
    assert trainer.step == 4 and trainer.opt_G.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert "i2i: resume changes optim.lr_g: 0.0002 -> 0.001" in capsys.readouterr().err
    (entry,) = [json.loads(line) for line in (run / ".hydra" / "resume_history.jsonl").read_text().splitlines()]
    assert entry["changes"]["optim.lr_g"] == {"run": 2e-4, "now": 1e-3}
    assert snapshot(run)[".hydra/config.yaml"] == before[".hydra/config.yaml"]  # the original stays the record
    assert safe_load(run / "ckpt" / "last.pt")["cfg"]["optim"]["lr_g"] == 1e-3


def test_allowed_architecture_change_still_fails_cleanly_on_the_weights(compose, started):
    run, before = started
    with pytest.raises(CheckpointError, match="generator.ngf: 4 in the checkpoint, 8 now"):
        run_training(compose(*SMOKE, "train.max_steps=4", "resume=auto", "generator.ngf=8",
                             "resume_allow_changes=true"))
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------------- 5. lock
def test_second_process_on_a_run_dir_is_refused_with_the_pid(compose, capsys):
    cfg = compose(*SMOKE)
    run = Path(cfg.run_dir)
    with RunLock(run):  # another run holds it (flock is per open file: this counts as another holder)
        before = snapshot(run)
        msg = one_line_exit(capsys, run_training, cfg)
        assert msg.startswith(f"{run}: in use by process {os.getpid()}") and "another name=" in msg
        assert snapshot(run) == before
    assert not run.exists()  # the lock made the dir and removed it again


def test_stale_lock_of_a_dead_process_is_taken_over_and_removed_at_the_end(compose):
    cfg = compose(*SMOKE)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True)
    (run / ".lock").write_text("999999999 elsewhere\n")  # no process holds its flock
    assert run_training(cfg).step == 2
    assert not (run / ".lock").exists()


@pytest.mark.slow
def test_two_cli_processes_on_one_run_dir(tmp_path, datasets_dir):
    args = [str(Path(sys.executable).parent / "train"), *SMOKE, f"paths.datasets_dir={datasets_dir}",
            f"paths.checkpoints_dir={tmp_path}", "name=two", "train.max_steps=400", "train.ckpt_every=0",
            "train.log_every=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        run = tmp_path / "two"
        lock = run / ".lock"
        for _ in range(600):
            if lock.is_file() and lock.read_text():
                break
            first.poll()
            assert first.returncode is None, first.stderr.read()
            time.sleep(0.1)
        second = subprocess.run(args + ["resume=auto"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1].startswith(f"i2i: error: {run}: in use "
                                                                 f"by process {first.pid}")
    finally:
        first.kill()
        first.wait()


# ---------------------------------------------------------------------------------------------- 6. disk
@pytest.mark.slow
def test_disk_full_inside_the_zip_writer_is_one_line_and_keeps_last(compose, monkeypatch, capsys):
    cfg = compose(*SMOKE, "train.ckpt_every=1", "train.max_steps=2")
    run_training(cfg)
    run = Path(cfg.run_dir)
    last = run / "ckpt" / "last.pt"
    before = last.read_bytes()
    real_save = torch.save

    class FullDisk(io.RawIOBase):  # accepts 1000 bytes, then ENOSPC: torch reports "unexpected pos"
        def __init__(self, f):
            self.f, self.n = f, 0

        def writable(self):
            return True

        def write(self, b):
            if self.n + len(b) > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.n += len(b)
            return self.f.write(b)

    def save(obj, f, *a, **k):
        with pytest.raises(RuntimeError, match="unexpected pos"):  # what torch raises, unwrapped
            real_save(obj, FullDisk(io.BytesIO()))
        return real_save(obj, FullDisk(f), *a, **k)

    monkeypatch.setattr(torch, "save", save)
    msg = one_line_exit(capsys, run_training, compose(*SMOKE, "train.ckpt_every=1", "train.max_steps=4",
                                                      "resume=auto"))
    assert msg.startswith(f"{last}: cannot write checkpoint (No space left on device)") and "free space" in msg
    monkeypatch.undo()
    assert last.read_bytes() == before and not list(last.parent.glob(".*.tmp"))


def test_run_dir_under_a_file_is_one_line(compose, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    cfg = compose(*SMOKE, f"paths.checkpoints_dir={afile}/x")
    msg = one_line_exit(capsys, run_training, cfg)
    assert msg.startswith(f"run_dir={cfg.run_dir}: {afile} is a file, not a folder")
    assert "paths.checkpoints_dir" in msg and afile.read_text() == "not a folder"


# ---------------------------------------------------------------------------------------------- 7. non-finite
def test_skip_on_nonfinite_gradients_warns_and_stops(compose, capsys):
    cfg = compose(*SMOKE, "train.on_nonfinite=skip", "optim.lr_g=1e10", "optim.lr_d=1e10", "train.max_steps=6",
                  "train.log_every=1", "train.ckpt_every=0")
    msg = one_line_exit(capsys, run_training, cfg)
    assert msg.startswith("3 of the last 3 steps were skipped (non-finite losses or gradients; "
                          "train.max_skip_fraction=0.5)") and "lower the learning rate" in msg
    assert not Path(cfg.run_dir, "ckpt").exists()  # nothing written from the skipped steps


@pytest.mark.slow
def test_skip_warnings_name_the_count_at_each_log_step(compose, capsys):
    cfg = compose(*SMOKE, "train.on_nonfinite=skip", "optim.lr_g=1e10", "optim.lr_d=1e10", "train.max_steps=6",
                  "train.log_every=1", "train.max_skip_fraction=1.0")
    trainer = run_training(cfg)
    err = capsys.readouterr().err
    counts = [line for line in err.splitlines() if "optimizer step(s) skipped since the last log" in line]
    assert trainer.step == 6 and int(trainer.guard.skipped) == 6
    assert [c.split("; ")[-1] for c in counts] == [f"{n} in all)" for n in range(1, 7)]
