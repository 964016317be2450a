"""The run directory's policy: one process per run, fresh or resumed, and what a resume may change.

Layout (README "The run directory"): ``.hydra/`` (the config the run was started with, its overrides and the
history of resumes), ``ckpt/``, ``samples/``, ``tb/``, ``stats.jsonl``, ``metrics.jsonl``, and ``.lock`` while a
process trains in it.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
from pathlib import Path

from i2i.errors import ConfigError, RunDirError, write_errors

#: what a training run writes into its directory (a directory holding only these and no checkpoint is restartable)
OWNED = frozenset({".hydra", "ckpt", "samples", "tb", "stats.jsonl", "metrics.jsonl", ".lock"})

#: keys a resume may change without ``resume_allow_changes=true``: where things are, how long to run, how often to
#: log, sample, checkpoint and evaluate, and speed levers that leave the arithmetic of a step as it is
RESUME_MAY_CHANGE = ("resume", "resume_allow_changes", "device", "name", "run_dir", "paths.", "train.max_steps",
                     "train.log_every", "train.sample_every", "train.ckpt_every", "train.save_epoch_every",
                     "train.num_workers", "train.prefetch_factor", "train.tensorboard", "train.compile",
                     "train.channels_last", "train.cuda_graphs", "train.on_nonfinite",
                     "train.max_skip_fraction", "train.epoch_snapshots", "train.keep_last_epochs", "eval.every_epochs",
                     "eval.feature_batch_size")

HISTORY = Path(".hydra") / "resume_history.jsonl"


def check_location(run_dir: Path, key: str = "paths.checkpoints_dir") -> None:
    """One line when the run directory cannot exist: it, or a folder above it, is a file."""
    for p in (run_dir, *run_dir.parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"run_dir={run_dir}: {p} is a file, not a folder — choose another {key} "
                                  "(or name=)")
            return


def checkpoints(run_dir: Path) -> list[Path]:
    """The complete checkpoints of a run (``ckpt/*.pt``; temp files of interrupted writes are not)."""
    ckpt = run_dir / "ckpt"
    return sorted(p for p in ckpt.glob("*.pt") if not p.name.startswith(".")) if ckpt.is_dir() else []


def is_restartable(run_dir: Path) -> bool:
    """A run that stopped before its first checkpoint: only what i2i writes is there, and no checkpoint."""
    return all(p.name in OWNED for p in run_dir.iterdir()) and not checkpoints(run_dir)


def find_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to continue from (None: start fresh), after checking the run directory against ``resume``.

    Args:
        run_dir: the run directory.
        resume: ``None`` (a new run: the directory must be empty, or a restartable run), ``"auto"``
            (``ckpt/last.pt`` when it exists) or a checkpoint file / run directory.
    """
    last = run_dir / "ckpt" / "last.pt"
    if resume is None:
        if run_dir.is_dir() and any(p.name != ".lock" for p in run_dir.iterdir()) and not is_restartable(run_dir):
            raise ConfigError(f"run directory {run_dir} is not empty: continue it with resume=auto, or start a new "
                              "run with another name=<name>")
        return None
    if resume == "auto":
        return last if last.is_file() else None
    path = Path(resume)
    path = path / "ckpt" / "last.pt" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"resume={resume}: no such checkpoint — give a ckpt/*.pt file, a run dir, or resume=auto")
    return path


def clear_restartable(run_dir: Path) -> None:
    """Remove what a run that stopped before its first checkpoint left (logs, samples, config), keeping the lock."""
    if not run_dir.is_dir() or not is_restartable(run_dir):
        return
    leftovers = [p for p in run_dir.iterdir() if p.name != ".lock"]
    if leftovers:
        print(f"i2i: {run_dir} holds no checkpoint (a run that stopped before its first one): starting it afresh",
              file=sys.stderr)
    for p in leftovers:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


# ---------------------------------------------------------------------------------------------- the lock
class RunLock:
    """Exclusive use of a run directory by one process: ``<run>/.lock`` holds its pid and host.

    The lock is an ``flock`` on that file, so the kernel releases it when the process dies (also on ``kill -9``):
    a lock file left by a dead process is stale and taken over. On exit the file is removed, and the run
    directory too when the lock created it and nothing else was written.

    Args:
        run_dir: the run directory.
        enabled: False on the processes of a distributed run other than rank 0 (rank 0 holds it for all).
    """

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir, self.enabled = Path(run_dir), enabled
        self.path = self.run_dir / ".lock"
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        self._created = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunDirError(f"{self.run_dir}: in use by {self._holder()} (lock file {self.path}) — wait for that "
                              "run to end, or train into another name=") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            pid, _, host = self.path.read_text().strip().partition(" ")
            return f"process {pid} on {host}" if host else f"process {pid}"
        except OSError:
            return "another process"

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # releases the flock
            self._fd = None
        for p in self._created:  # directories this lock made, if still empty (a run refused before any write)
            try:
                p.rmdir()
            except OSError:
                break


# ---------------------------------------------------------------------------------------------- resume
def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists stay values)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def resume_changes(stored: dict, current: dict, may_change=RESUME_MAY_CHANGE) -> dict[str, tuple]:
    """Keys whose value differs between the run's config and today's, other than those a resume may change.

    Keys present in only one of them (added or removed by a later version of i2i) are not compared.

    Returns:
        ``{key: (value in the run, value now)}``, sorted by key.
    """
    a, b = flatten(stored), flatten(current)
    allowed = tuple(may_change)
    return {k: (a[k], b[k]) for k in sorted(a.keys() & b.keys())
            if a[k] != b[k] and not any(k == m or (m.endswith(".") and k.startswith(m)) for m in allowed)}


def check_resume_config(stored: dict, current: dict, run_dir: Path, allow: bool) -> dict[str, tuple]:
    """Refuse (one line naming the keys) a resume whose config changes the training, unless ``allow``.

    Returns:
        The changes (empty when none), for :func:`record_resume`.
    """
    changes = resume_changes(stored, current)
    if not changes or allow:
        return changes
    shown = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in list(changes.items())[:4])
    more = f"; and {len(changes) - 4} more" if len(changes) > 4 else ""
    overrides = run_dir / ".hydra" / "overrides.yaml"
    original = f" (the run's overrides are in {overrides})" if overrides.is_file() else ""
    raise ConfigError(f"resume: this command changes the run's training settings ({shown}{more}) — resume with the "
                      f"run's own settings{original}, or add resume_allow_changes=true to apply the changes (they "
                      f"are recorded in {run_dir / HISTORY}; .hydra/config.yaml keeps the original)")


def record_resume(run_dir: Path, step: int, source: Path, changes: dict[str, tuple], overrides: list[str]) -> None:
    """Append this resume (time, step, checkpoint, command-line overrides, changed keys) to the run's history."""
    entry = {"time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "step": step,
             "checkpoint": str(source), "overrides": overrides,
             "changes": {k: {"run": old, "now": new} for k, (old, new) in changes.items()}}
    path = run_dir / HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    for k, (old, new) in changes.items():
        print(f"i2i: resume changes {k}: {old!r} -> {new!r}", file=sys.stderr)


def disk_errors(run_dir: Path):
    """Turn an OSError of a full or unwritable run directory into one :class:`RunDirError` line."""
    return write_errors(run_dir, f"free disk space or fix the permissions of {run_dir} (or choose another "
                        "paths.checkpoints_dir), then continue with resume=auto; the last complete checkpoint is kept")
