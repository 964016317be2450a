"""Adversarial objectives on discriminator logits: LSGAN (Mao et al. 2017), vanilla, non-saturating, hinge, WGAN.

Matches the published ``GANLoss``: LSGAN is MSE against 1/0; vanilla is BCE-with-logits; losses are means over
all patch logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("lsgan", "vanilla", "nonsaturating", "hinge", "wgangp")


class GANLoss:
    """Callable adversarial loss.

    Args:
        mode: one of ``lsgan``, ``vanilla``, ``nonsaturating``, ``hinge``, ``wgangp``.
    """

    def __init__(self, mode: str = "lsgan") -> None:
        if mode not in MODES:
            raise ValueError(f"gan_loss.mode={mode!r} is not supported: use one of {', '.join(MODES)}")
        self.mode = mode

    def __call__(self, pred: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        """Mean loss of logits ``pred`` (any shape) towards real or fake."""
        pred = pred.float()
        if self.mode == "lsgan":
            target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
            return F.mse_loss(pred, target)
        if self.mode == "vanilla":
            target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
            return F.binary_cross_entropy_with_logits(pred, target)
        if self.mode == "nonsaturating":
            return F.softplus(-pred).mean() if target_is_real else F.softplus(pred).mean()
        if self.mode == "hinge" and for_discriminator:
            return F.relu(1 - pred).mean() if target_is_real else F.relu(1 + pred).mean()
        # wgangp, and hinge for the generator: maximise the critic's score
        return -pred.mean() if target_is_real else pred.mean()
