"""A method's own optimisation phases (``update_order`` beyond "D" and "G", ``Method.phase_losses``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from i2i.engine.loop import LoopConfig, Networks, Trainer
from i2i.losses.gan import GANLoss
from i2i.methods.base import Method
from i2i.models.discriminators import PatchGAN
from i2i.models.generators import ResnetGenerator


class Critic(Method):
    """A plain GAN plus a small module "N" trained in its own phase against a term G minimises."""

    update_order = ("D", "N", "G")

    def __init__(self) -> None:
        super().__init__(name="critic")
        self.N = nn.Linear(3, 1)

    def optimizer_modules(self):
        groups = super().optimizer_modules()
        groups["N"] = [self.N]
        return groups

    def term(self, fake: torch.Tensor) -> torch.Tensor:
        return self.N(fake.mean(dim=(2, 3))).square().mean()  # [B, 3] -> scalar

    def phase_losses(self, phase, G, D, batch, out, gan_loss):
        assert phase == "N"
        return {"N": -self.term(out["fake_B"].detach())}

    def generator_losses(self, G, D, batch, out, gan_loss):
        terms = super().generator_losses(G, D, batch, out, gan_loss)
        terms["crit"] = self.term(out["fake_B"])
        return terms


def _trainer(method, tmp_path, lr_f=1e-3):
    torch.manual_seed(0)
    G, D = ResnetGenerator(ngf=4, n_blocks=1), PatchGAN(ndf=4)
    cfg = LoopConfig(n_epochs=1, n_epochs_decay=0, batch_size=2, tensorboard=False, lr_f=lr_f)
    return Trainer(Networks(G, D, method, GANLoss("lsgan")), [None] * 4, lambda *a: [], cfg, tmp_path)


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"A": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, "B": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1}


def test_phase_has_its_own_optimizer_and_learns_only_from_its_own_loss(tmp_path):
    method = Critic()
    trainer = _trainer(method, tmp_path, lr_f=3e-3)
    opt = trainer.optimizers["opt_N"]
    assert [p for g in opt.param_groups for p in g["params"]] == list(method.N.parameters())
    assert opt.param_groups[0]["lr"] == 3e-3  # optim.lr_f
    assert not any(p is q for p in method.N.parameters() for q in trainer.params_G)
    before = copy.deepcopy(method.N)
    out = trainer.train_step(_batch())
    # the gradient N was stepped with is that of its phase loss alone (G's "crit" term, which would push the other
    # way, reached no parameter of N)
    loss = -before(out["fake_B"].detach().mean(dim=(2, 3))).square().mean()
    grads = torch.autograd.grad(loss, list(before.parameters()))
    for p, g in zip(method.N.parameters(), grads):
        torch.testing.assert_close(p.grad, g)
    assert all(p.requires_grad for p in method.N.parameters())  # unfrozen again after the step
    assert not torch.equal(method.N.weight, before.weight)


def test_phase_optimizer_is_checkpointed_and_resumed(tmp_path):
    trainer = _trainer(Critic(), tmp_path / "a")
    trainer.train_step(_batch())
    path = trainer.save("last.pt")
    state = torch.load(path, weights_only=False)
    assert state["opt_N"]["state"]  # Adam moments of N
    other = _trainer(Critic(), tmp_path / "b")
    other.resume(path)
    torch.testing.assert_close(other.optimizers["opt_N"].state_dict()["state"][0]["exp_avg"],
                               state["opt_N"]["state"][0]["exp_avg"])


@pytest.mark.parametrize("order, groups, message", [
    (("D", "G"), {"N": "N"}, "unknown optimizer 'N'"),
    (("D", "N", "N", "G"), {"N": "N"}, "list 'D' and 'G' once"),
    (("D", "F", "G"), {"F": "N"}, "list 'D' and 'G' once"),
    (("N", "G"), {"N": "N"}, "list 'D' and 'G' once"),
])
def test_bad_phase_declarations_are_refused(order, groups, message):
    method = Critic()
    method.update_order = order
    method.optimizer_modules = lambda: {"G": [], "D": [], "F": [], **{k: [method.N] for k in groups}}
    with pytest.raises(ValueError, match=message):
        method.param_groups()


def test_phase_without_phase_losses_says_so(tmp_path):
    class Forgot(Critic):
        phase_losses = Method.phase_losses

    trainer = _trainer(Forgot(), tmp_path)
    with pytest.raises(NotImplementedError, match="lists phase 'N' in update_order but does not define phase_losses"):
        trainer.train_step(_batch())
