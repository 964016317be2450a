"""Training through the real configs: every experiment smoke-trains, runs resume exactly, run dirs are protected."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import experiment_params
from i2i.build import ConfigError, build_trainer
from i2i.cli.train import run_training

#: methods whose own test file (tests/methods/, tests/samplers/) smoke-trains their horse2zebra preset
_OWN_SMOKE = ("dclgan", "simdcl", "hneg_src", "monce", "negcut", "fastnegcut", "fsesim", "lsesim")


@pytest.mark.parametrize("experiment", experiment_params(
    lambda name: name == "demo" or (name.endswith("_horse2zebra") and not name.startswith(_OWN_SMOKE))))
def test_every_experiment_smoke_trains_two_steps(compose_runnable, experiment):
    cfg = compose_runnable(f"experiment={experiment}", "debug=smoke")
    trainer = run_training(cfg)
    run = trainer.run_dir
    assert trainer.step == 2
    assert (run / "ckpt" / "last.pt").is_file() and (run / ".hydra" / "config.yaml").is_file()
    assert (run / "samples" / "step_00000002.png").is_file()
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    losses = {k: v for k, v in records[-1].items() if k.startswith("Loss/")}
    assert losses and all(math.isfinite(v) for v in losses.values())
    assert "Loss/G_GAN" in losses or "Loss/G_GAN_A" in losses


def _weights(trainer) -> dict[str, torch.Tensor]:
    state = trainer.state_dict()
    flat = {f"{net}.{k}": v for net in ("G", "D", "method") for k, v in state[net].items()}
    for name in ("opt_G", "opt_D", "opt_F"):
        if name in state:
            for pid, s in state[name]["state"].items():
                flat.update({f"{name}.{pid}.{k}": v for k, v in s.items() if torch.is_tensor(v)})
    return flat


@pytest.mark.parametrize("experiment,split,total", [("cut_horse2zebra", 2, 4), ("fastcut_horse2zebra", 3, 6)])
def test_resume_gives_exactly_the_weights_of_an_uninterrupted_run(compose, experiment, split, total):
    common = [f"experiment={experiment}", "debug=smoke", "train.deterministic=true", "train.n_epochs=1",
              "train.n_epochs_decay=1", "train.ckpt_every=0"]
    straight = run_training(compose(*common, "name=straight", f"train.max_steps={total}"))
    first = run_training(compose(*common, "name=split", f"train.max_steps={split}"))
    assert first.step == split
    resumed = run_training(compose(*common, "name=split", "resume=auto", f"train.max_steps={total}"))
    assert resumed.step == total
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.opt_G.param_groups[0]["lr"] == straight.opt_G.param_groups[0]["lr"]
    if total > resumed.steps_per_epoch:  # the resumed part crossed into the decay epoch
        assert resumed.epoch == 2 and resumed.opt_G.param_groups[0]["lr"] < 2e-4


def test_new_run_into_non_empty_run_dir_is_refused_and_nothing_is_touched(compose):
    cfg = compose("experiment=cut_horse2zebra", "debug=smoke")
    run_training(cfg)
    last = cfg.run_dir + "/ckpt/last.pt"
    before = open(last, "rb").read()
    with pytest.raises(ConfigError, match="is not empty: continue it with resume=auto"):
        run_training(compose("experiment=cut_horse2zebra", "debug=smoke"))
    assert open(last, "rb").read() == before


def test_resume_auto_on_an_empty_run_dir_starts_fresh(compose):
    trainer = run_training(compose("experiment=cut_horse2zebra", "debug=smoke", "resume=auto", "train.max_steps=1"))
    assert trainer.step == 1


def test_tensorboard_gets_every_loss_term_lr_and_timing(compose):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = run_training(compose("experiment=cut_horse2zebra", "debug=smoke", "train.tensorboard=true"))
    acc = EventAccumulator(str(trainer.run_dir / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"Loss/G_GAN", "Loss/NCE", "Loss/NCE_Y", "Loss/D_real", "Loss/D_fake", "LR/G", "LR/D", "LR/F",
            "Timing/sec_per_iter", "Timing/images_per_sec"} <= tags
    assert [e.step for e in acc.Scalars("Loss/NCE")] == [1, 2]
    assert "samples" in acc.Tags()["images"]


def test_data_phase_and_lr_follow_the_epoch(compose):
    cfg = compose("experiment=cut_horse2zebra", "debug=smoke", "train.n_epochs=1", "train.n_epochs_decay=2")
    trainer = build_trainer(cfg, __import__("pathlib").Path(cfg.run_dir))
    trainer._set_epoch(1)
    assert not trainer.dataset.no_crop and trainer.opt_G.param_groups[0]["lr"] == pytest.approx(2e-4)
    trainer._set_epoch(2)
    assert trainer.dataset.no_crop and trainer.opt_G.param_groups[0]["lr"] == pytest.approx(2e-4 * (1 - 1 / 3))


def test_batch_larger_than_dataset_is_one_clear_error(compose):
    with pytest.raises(ValueError, match="train.batch_size=64"):
        run_training(compose("experiment=cut_horse2zebra", "debug=smoke", "train.batch_size=64"))


def test_unknown_sampler_is_one_clear_error(compose):
    with pytest.raises(ConfigError, match="method.sampler='nope'"):
        run_training(compose("experiment=cut_horse2zebra", "debug=smoke", "method.sampler=nope"))
