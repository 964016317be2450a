"""Config mistakes Hydra cannot see are one clear line (naming the key and the fix) before any work: nothing is
trained and nothing is written into the run directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from i2i.build import ConfigError, load_generator
from i2i.cli.train import run_training
from i2i.data.errors import DataError
from i2i.engine.state import CheckpointError, atomic_torch_save, safe_load

SMOKE = ["debug=smoke", "train.sample_every=0", "train.max_steps=1"]


@pytest.mark.parametrize("overrides,error,what_and_fix", [
    (["experiment=cut_horse2zebra", "feedback=pha_rhp", "discriminator=patchgan"], ConfigError,
     ("feedback=pha_rhp needs an attention discriminator", "use discriminator=pha or discriminator=tam")),
    (["experiment=cut_horse2zebra", "data.load_size=36", "data.crop_size=40"], DataError,
     ("data.load_size=36 < data.crop_size=40: the crop would not fit", "set data.load_size >= data.crop_size")),
    (["experiment=enco_horse2zebra", "method.pairs=[[3,24]]"], ConfigError,
     ("method.pairs=[[3, 24]]: pair [3, 24]", "set method.pairs to same-shape pairs")),
    (["experiment=cut_horse2zebra", "train.on_nonfinite=maybe"], ConfigError,
     ("train.on_nonfinite=maybe", "must be one of raise, skip")),
])
def test_mistake_is_one_line_before_any_work(compose, overrides, error, what_and_fix):
    cfg = compose(*overrides, *SMOKE)
    with pytest.raises(error) as err:
        run_training(cfg)
    msg = str(err.value)
    assert "\n" not in msg and all(part in msg for part in what_and_fix), msg
    assert not Path(cfg.run_dir).exists()


def test_resume_with_another_architecture_names_the_key_and_touches_nothing(compose):
    cfg = compose("experiment=cut_horse2zebra", *SMOKE)
    run_training(cfg)
    run = Path(cfg.run_dir)
    files = {p: p.read_bytes() for p in (run / "ckpt" / "last.pt", run / ".hydra" / "config.yaml")}
    with pytest.raises(ConfigError) as err:
        run_training(compose("experiment=cut_horse2zebra", *SMOKE, "generator.ngf=8", "resume=auto",
                             "train.max_steps=2"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("resume: this command changes the run's training settings")
    assert "generator.ngf: 4 in the checkpoint, 8 now" in msg and "resume_allow_changes=true" in msg
    assert all(p.read_bytes() == b for p, b in files.items())  # the run's config is not overwritten


def test_i2i_test_of_a_checkpoint_that_contradicts_its_config(compose, tmp_path):
    cfg = compose("experiment=cut_horse2zebra", *SMOKE)
    run_training(cfg)
    state = safe_load(Path(cfg.run_dir) / "ckpt" / "last.pt")
    state["cfg"]["generator"]["ngf"] = 8  # weights of ngf 4, config says 8
    bad = tmp_path / "mixed.pt"
    atomic_torch_save(state, bad)
    with pytest.raises(CheckpointError) as err:
        load_generator(bad)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{bad}: generator weights do not match") and "size mismatch" in msg
    sd = {"model.1.weight": torch.zeros(4, 3, 7, 7)}  # a state_dict that is not a whole generator
    atomic_torch_save(sd, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="partial.pth: "):
        load_generator(tmp_path / "partial.pth")
