"""Numerical faults: a NaN loss stops the run naming the term and the exact step and never reaches a checkpoint
(``train.on_nonfinite=raise``), or its optimizer step is skipped exactly and counted (``skip``)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from i2i.build import ConfigError
from i2i.cli.train import run_training
from i2i.engine.loop import NonFiniteLossError, Trainer
from i2i.engine.state import safe_load
from i2i.methods.cut import CUT

SMOKE = ["experiment=cut_horse2zebra", "debug=smoke", "train.sample_every=0", "train.deterministic=true"]
BAD_STEP = 3  # 1-based step whose NCE term is NaN


@pytest.fixture
def nan_at_step(monkeypatch):
    """Make CUT's NCE term NaN during step BAD_STEP (injected through the method, as a real fault would be)."""
    original, calls = CUT.generator_losses, {"n": 0}

    def faulty(self, *args, **kwargs):
        terms = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == BAD_STEP:
            terms["NCE"] = terms["NCE"] * float("nan")
        return terms

    monkeypatch.setattr(CUT, "generator_losses", faulty)
    return calls


def _all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for net in ("G", "D", "method") for v in state[net].values()
               if torch.is_tensor(v) and v.is_floating_point())


@pytest.mark.parametrize("detected_at,overrides", [
    ("log", ["train.log_every=1", "train.ckpt_every=0", "train.max_steps=6"]),
    ("checkpoint", ["train.log_every=100", "train.ckpt_every=1", "train.max_steps=6"]),
    ("end of run", ["train.log_every=100", "train.ckpt_every=0", "train.max_steps=5"]),
])
def test_raise_names_term_and_exact_step_and_writes_no_bad_checkpoint(compose, nan_at_step, detected_at, overrides):
    cfg = compose(*SMOKE, *overrides)
    with pytest.raises(NonFiniteLossError) as err:
        run_training(cfg)
    msg = str(err.value)
    assert "\n" not in msg and f"loss term NCE became non-finite at step {BAD_STEP}" in msg
    assert "train.on_nonfinite=skip" in msg
    last = f"{cfg.run_dir}/ckpt/last.pt"
    if detected_at == "checkpoint":  # written every step up to the fault, never after it
        state = safe_load(last)
        assert state["step"] == BAD_STEP - 1 and _all_finite(state)
    else:
        assert not __import__("os").path.exists(last)


def test_a_checkpoint_with_non_finite_weights_is_never_written(compose):
    trainer = run_training(compose(*SMOKE, "train.max_steps=1"))
    path = trainer.run_dir / "ckpt" / "last.pt"
    before = path.read_bytes()
    with torch.no_grad():
        next(trainer.G.parameters())[0].fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="G has non-finite weights; refusing to write"):
        trainer.save("last.pt")
    assert path.read_bytes() == before


def test_skip_leaves_the_faulty_phase_untouched_and_counts_it(compose, nan_at_step, monkeypatch, capsys):
    cfg = compose(*SMOKE, "train.on_nonfinite=skip", "train.log_every=1", "train.max_steps=5")
    original, seen = Trainer.train_step, {}

    def watched(self, batch):
        before = {k: v.detach().clone() for k, v in {**_named(self.G, "G"), **_named(self.D, "D")}.items()}
        opt = {k: v.clone() for k, v in _moments(self.opt_G).items()}
        out = original(self, batch)
        if self.step + 1 == BAD_STEP:
            seen["G_same"] = all(torch.equal(v, before[k]) for k, v in _named(self.G, "G").items())
            seen["D_changed"] = any(not torch.equal(v, before[k]) for k, v in _named(self.D, "D").items())
            seen["opt_G_same"] = all(torch.equal(v, opt[k]) for k, v in _moments(self.opt_G).items())
        return out

    monkeypatch.setattr(Trainer, "train_step", watched)
    trainer = run_training(cfg)
    assert seen == {"G_same": True, "D_changed": True, "opt_G_same": True}  # G+F step skipped, D step kept
    state = safe_load(trainer.run_dir / "ckpt" / "last.pt")
    assert state["step"] == 5 and state["skipped_steps"] == 1 and _all_finite(state)
    g_steps = {float(s["step"]) for s in state["opt_G"]["state"].values()}
    d_steps = {float(s["step"]) for s in state["opt_D"]["state"].values()}
    assert g_steps == {4.0} and d_steps == {5.0}  # Adam's step count: the skipped update did not happen
    records = [json.loads(line) for line in (trainer.run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["Train/skipped_steps"] for r in records] == [0, 0, 1, 1, 1]
    assert all(math.isfinite(r["Loss/NCE"]) for r in records)  # the NaN is not averaged into the log
    err = capsys.readouterr().err
    assert f"loss term NCE became non-finite at step {BAD_STEP}: optimizer step skipped (1 step(s)" in err


def test_skip_count_survives_resume(compose, nan_at_step):
    common = [*SMOKE, "train.on_nonfinite=skip", "train.log_every=1"]
    run_training(compose(*common, "train.max_steps=4"))
    trainer = run_training(compose(*common, "train.max_steps=6", "resume=auto"))
    assert int(trainer.guard.skipped) == 1 and safe_load(trainer.run_dir / "ckpt" / "last.pt")["skipped_steps"] == 1


def test_unknown_on_nonfinite_is_one_clear_error(compose):
    with pytest.raises(ConfigError, match="train.on_nonfinite=ignore: must be one of raise, skip"):
        run_training(compose(*SMOKE, "train.on_nonfinite=ignore"))


def _named(net, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{n}": p for n, p in net.named_parameters()}


def _moments(opt) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v for i, s in enumerate(opt.state.values()) for k, v in s.items() if torch.is_tensor(v)}
