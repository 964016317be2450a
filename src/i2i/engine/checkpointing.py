"""The checkpoint files of a run (``<run>/ckpt/``) and resuming from them.

- ``last.pt``: the whole training state, every ``train.ckpt_every`` steps, at the end and on an interrupt;
- ``epoch_XXXX.pt``: every ``train.save_epoch_every`` epochs, what inference reads
  (``train.epoch_snapshots=inference``) or the whole state (``full``); only the newest ``train.keep_last_epochs``
  are kept;
- ``best_<metric>.pt``: the whole state at the lowest value so far of each evaluated metric.

The file format (keys, atomic writes, reads without unpickling code) is engine/state.py's.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from i2i.engine.distributed import DistEnv, convert_step
from i2i.engine.evaluation import LOWER_IS_BETTER
from i2i.engine.state import (
    FORMAT,
    CheckpointError,
    atomic_torch_save,
    capture_rng,
    check_training_state,
    config_diff,
    inference_state,
    mismatch_line,
    prune_epoch_snapshots,
    remove_stale_temps,
    restore_rng,
    safe_load,
)


def _unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP / compiled wrapper (its state_dict keys are the published ones)."""
    return getattr(module, "module", module)


class Checkpointer:
    """Writes a trainer's state to ``directory`` and loads it back.

    Every rank calls :meth:`save` (it holds collectives); rank 0 writes.

    Args:
        directory: ``<run>/ckpt``.
        env: this process's place among the training processes.
        comm: :class:`~i2i.engine.distributed.Communicator` when several processes train (every rank's RNG state
            goes into a full state).
        epoch_snapshots: ``inference`` or ``full`` (``train.epoch_snapshots``).
        keep_last_epochs: keep only the newest N epoch snapshots (None: all).

    Attributes:
        last: ``(step, path)`` of the last ``last.pt`` written, or None.
    """

    def __init__(self, directory: str | Path, env: DistEnv, comm=None, epoch_snapshots: str = "inference",
                 keep_last_epochs: int | None = None) -> None:
        self.directory, self.env, self.comm = Path(directory), env, comm
        self.epoch_snapshots, self.keep_last_epochs = epoch_snapshots, keep_last_epochs
        self.last: tuple[int, Path] | None = None

    # ------------------------------------------------------------------ state capture
    def state_dict(self, trainer) -> dict:
        """The whole training state of ``trainer`` (what ``last.pt`` holds)."""
        state = {"format": FORMAT, "version": 1, "step": trainer.step, "epoch": trainer.epoch,
                 "G": _unwrap(trainer.G).state_dict(), "D": _unwrap(trainer.D).state_dict(),
                 "method": _unwrap(trainer.method).state_dict(), "rng": capture_rng(), "best": trainer.best,
                 "cfg": trainer.config_dict, "global_batch": trainer.global_batch}
        state.update(trainer.guard.state_dict())  # skipped_steps: read back at checkpoint time only
        state.update({name: opt.state_dict() for name, opt in trainer.optimizers.items()})
        return state

    def inference_state_dict(self, trainer) -> dict:
        """What inference reads: G, config, step, epoch and, for feedback runs, the method's
        :meth:`~i2i.methods.base.Method.inference_state_dict` (plus D when every feedback source is the loop's D:
        the test-time placeholder map may come from it)."""
        method, D = _unwrap(trainer.method), _unwrap(trainer.D)
        extra = method.inference_state_dict()
        one_sided = bool(extra) and all(source is D for source in method.feedback_sources(D).values())
        return inference_state(self.state_dict(trainer), extra, with_D=one_sided)

    def load_state_dict(self, trainer, state: dict) -> None:
        """Put a whole training state into ``trainer`` (weights, optimizers, step, RNG streams)."""
        _unwrap(trainer.G).load_state_dict(state["G"])
        _unwrap(trainer.D).load_state_dict(state["D"])
        _unwrap(trainer.method).load_state_dict(state["method"])
        for name, opt in trainer.optimizers.items():
            opt.load_state_dict(state[name])
        trainer.best = dict(state.get("best", {}))
        trainer.guard.load_state_dict(state)
        global_batch = trainer.global_batch
        trainer.step = convert_step(int(state["step"]), int(state.get("global_batch", global_batch)), global_batch,
                                    len(trainer.dataset))  # another process count: same epoch, position by samples
        restore_rng(state["rng"])
        if self.comm is not None:
            self.comm.restore_rng(state, trainer.step)

    # ------------------------------------------------------------------ files
    def save(self, trainer, name: str = "last.pt", full: bool = True) -> Path:
        """Write ``<directory>/<name>``: the whole training state, or (``full=False``) what inference reads."""
        path = self.directory / name
        rng_ranks = self.comm.gather_rng() if self.comm is not None and full else None  # collective
        trainer.guard.before_checkpoint()  # raise mode: name the term and step, write nothing
        if self.env.is_main:
            nets = {"G": trainer.G, "D": trainer.D, "method": trainer.method}
            trainer.guard.check_weights(nets, trainer.step, path)
            state = self.state_dict(trainer) if full else self.inference_state_dict(trainer)
            if rng_ranks is not None:
                state["rng_ranks"] = rng_ranks
            atomic_torch_save(state, path)
        if name == "last.pt":
            self.last = (trainer.step, path)
        return path

    def save_epoch(self, trainer, epoch: int) -> Path:
        """``epoch_XXXX.pt`` (``train.epoch_snapshots``), then drop the snapshots beyond the newest
        ``train.keep_last_epochs``."""
        path = self.save(trainer, f"epoch_{epoch:04d}.pt", full=self.epoch_snapshots == "full")
        if self.env.is_main:
            prune_epoch_snapshots(self.directory, self.keep_last_epochs)
        return path

    def keep_best(self, trainer, values: dict[str, float], epoch: int) -> None:
        """``best_<metric>.pt`` for each lower-is-better metric of ``values`` that improved on ``trainer.best``."""
        for name, value in values.items():
            if name not in LOWER_IS_BETTER:
                continue
            if name in trainer.best and trainer.best[name]["value"] <= value:
                continue
            trainer.best[name] = {"value": value, "epoch": epoch, "step": trainer.step}
            self.save(trainer, f"best_{name}.pt")

    def remove_stale_temps(self) -> None:
        """Rank 0: delete the temp files a kill during a checkpoint write left."""
        if self.env.is_main:
            remove_stale_temps(self.directory)

    def resume(self, trainer, path: str | Path, state: dict | None = None) -> None:
        """Continue from the checkpoint ``path`` (``state``: its contents, when already loaded)."""
        state = safe_load(path, map_location=trainer.device) if state is None else state
        if state.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not an i2i training checkpoint — resume expects <run>/ckpt/last.pt")
        check_training_state(state, path)
        try:
            self.load_state_dict(trainer, state)
        except (RuntimeError, ValueError, KeyError) as e:  # shapes / keys / optimizer groups differ
            diff = config_diff(state.get("cfg") or {}, trainer.config_dict)
            raise CheckpointError(f"{path}: the checkpoint does not match the configured networks ("
                                  f"{'; '.join(diff[:3]) or mismatch_line(e)}) — resume with the run's own settings "
                                  "(see its .hydra/config.yaml) or start a new run with another name=") from None
