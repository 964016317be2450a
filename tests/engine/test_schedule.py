"""The LR factor sequence equals the published linear policy (LambdaLR stepped once per epoch)."""

from __future__ import annotations

import pytest
import torch

from i2i.engine.schedule import lr_factor


def published_lrs(base: float, n_epochs: int, n_epochs_decay: int, epoch_count: int = 1) -> list[float]:
    """Run the published scheduler: LambdaLR(rule), rule(e) = 1 - max(0, e + epoch_count - n_epochs)/(n_decay + 1),
    read the LR during every epoch, step at each epoch's end."""
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=base)
    rule = lambda e: 1.0 - max(0, e + epoch_count - n_epochs) / float(n_epochs_decay + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, rule)
    lrs = []
    for _ in range(n_epochs + n_epochs_decay):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("n_epochs,n_decay", [(200, 200), (150, 50), (3, 4), (1, 1)])
def test_lr_factor_sequence_equals_published(n_epochs, n_decay):
    ours = [2e-4 * lr_factor(e, n_epochs, n_decay) for e in range(1, n_epochs + n_decay + 1)]
    assert ours == pytest.approx(published_lrs(2e-4, n_epochs, n_decay), rel=1e-12)


def test_lr_factor_landmarks():
    assert lr_factor(200, 200, 200) == 1.0
    assert lr_factor(201, 200, 200) == pytest.approx(1 - 1 / 201)
    assert lr_factor(400, 200, 200) == pytest.approx(1 / 201)  # last epoch is not zero


def test_warmup_matches_enco_published_values():
    lrs = [5e-5 * lr_factor(e, 100, 100, warmup_epochs=20) for e in (1, 2, 20, 21, 100, 101, 200)]
    assert lrs == pytest.approx([2.5e-6, 5e-6, 5e-5, 5e-5, 5e-5, 4.95e-5, 4.95e-7 * 1.0], rel=1e-3)
