"""``train experiment=<name> [key=value ...]``: compose the config and train.

:func:`run_training` is the run policy around :func:`i2i.build.build_trainer`: checks first, then the run
directory (lock, resume, what a resume may change), then the loop.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from i2i import build
from i2i.cli.common import check_overrides, config_dir, run_cli
from i2i.engine import distributed, rundir
from i2i.engine.loop import Trainer
from i2i.engine.state import CheckpointError, is_checkpoint, safe_load


def write_run_config(cfg, run_dir: Path) -> None:
    """Resolved config and command-line overrides into ``<run>/.hydra/`` (Hydra itself writes nothing)."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(command_overrides())))


def command_overrides() -> list[str]:
    """The command line's overrides (empty outside a Hydra app, e.g. when a test composes the config)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run_training(cfg: DictConfig) -> Trainer:
    """``train``: check the config and run dir, build, resume if asked, train, and say where the results are.

    Nothing is written before the config, the data and (when resuming) the checkpoint have been checked; the run
    dir is locked against a second process for the whole run. A resume continues the run that was started: a
    command line that changes its training settings is refused (engine/rundir.py ``RESUME_MAY_CHANGE`` lists what
    may change) unless ``resume_allow_changes=true``, and ``.hydra/config.yaml`` keeps the original config.
    """
    from i2i.engine.banner import print_banner
    from i2i.engine.state import check_training_state

    build.check_config(cfg)
    env = build.distributed_env(cfg)
    run_dir = Path(cfg.run_dir)
    rundir.check_location(run_dir)
    with rundir.disk_errors(run_dir), rundir.RunLock(run_dir, enabled=env.is_main):
        resume_from = rundir.find_resume(run_dir, cfg.resume)
        state, changes = None, {}
        if resume_from is not None:  # the checkpoint's config is the run's: today's may differ only where allowed
            state = safe_load(resume_from)
            if not is_checkpoint(state):
                raise CheckpointError(f"{resume_from}: not an i2i training checkpoint — resume expects "
                                      "<run>/ckpt/last.pt")
            check_training_state(state, resume_from)  # an inference-only epoch snapshot: one line
            changes = rundir.check_resume_config(state.get("cfg") or {}, build.to_dict(cfg), run_dir,
                                                 bool(cfg.get("resume_allow_changes", False)))
        trainer = build.build_trainer(cfg, run_dir)  # validates data and config before anything is written
        if state is not None:  # before anything is written: a mismatching checkpoint leaves the run untouched
            trainer.resume(resume_from, state)
            if env.is_main:
                print(f"i2i: resumed {resume_from} at step {trainer.step} (epoch {trainer.epoch})", file=sys.stderr)
        if env.is_main:
            print_banner(trainer, str(cfg.device))
        env.barrier()  # every rank has checked the run dir before rank 0 writes into it
        if env.is_main:
            if state is None:
                rundir.clear_restartable(run_dir)
                write_run_config(cfg, run_dir)
            else:
                rundir.record_resume(run_dir, trainer.step, resume_from, changes, command_overrides())
        trainer.fit()
    env.barrier()
    if env.is_main:
        print(f"i2i: run finished at step {trainer.step}: {run_dir} (checkpoint {run_dir / 'ckpt' / 'last.pt'})",
              file=sys.stderr)
    distributed.cleanup()
    return trainer


# ---------------------------------------------------------------------------------------------- inference


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    run_cli(run_training, cfg)


def main() -> None:
    """Console entry point (an override Hydra cannot parse is one line, exit 2)."""
    check_overrides()
    _main()


if __name__ == "__main__":
    main()
