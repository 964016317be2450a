"""Optional: a few real training steps on horse2zebra when datasets/horse2zebra (or $I2I_HORSE2ZEBRA) is present."""

from __future__ import annotations

import json
import math

import pytest

from conftest import SHARED_H2Z

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (SHARED_H2Z / "trainA").is_dir(), reason=f"{SHARED_H2Z} not present")]


def test_cut_trains_two_steps_on_real_horse2zebra(compose):
    from i2i.cli.train import run_training

    cfg = compose("experiment=cut_horse2zebra", f"data.root={SHARED_H2Z}", "device=cpu", "train.max_steps=2",
                  "train.num_workers=0", "train.log_every=1", "train.sample_every=2", "train.tensorboard=false",
                  "data.load_size=143", "data.crop_size=128")  # full-size networks, half-size crops: CPU time
    trainer = run_training(cfg)
    assert len(trainer.dataset) == 1334  # max(|trainA| 1067, |trainB| 1334)
    last = json.loads((trainer.run_dir / "stats.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2 and all(math.isfinite(v) for k, v in last.items() if k.startswith("Loss/"))
    assert (trainer.run_dir / "samples" / "step_00000002.png").is_file()
