"""CycleGAN (Zhu et al., ICCV 2017) as a :class:`~i2i.methods.base.Method` — the base system of ASGIT (Eq. 10-11).

    L = L_GAN(G, D_B) + L_GAN(F, D_A) + λ_cyc (‖F(G(a)) − a‖₁ + ‖G(F(b)) − b‖₁)
        [+ λ_idt λ_cyc (‖G(b) − b‖₁ + ‖F(a) − a‖₁)]

The loop's G and D are G: A→B and D_B (judges domain B); the method owns F = ``G_BA`` and ``D_A`` and returns
them in ``optimizer_modules()['G'|'D']`` so that they share the loop's two Adam optimizers, as published (one Adam for
both generators, one for both discriminators). D sees fakes through a 50-image history pool per domain; G is
updated before D (``update_order = ("G", "D")``).

With feedback (ASGIT): ``fake_B = G(a ⊕ T(M_a))``, ``fake_A = F(b ⊕ T(M_b))``; ``previous`` caches D_B's map of
fake_B for a and D_A's map of fake_A for b (the published v1); ``same_step`` uses the source-domain D's map of the
real input (D_A(a), D_B(b); the published v2). Reconstructions get the all-ones placeholder.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from i2i.losses.gan import GANLoss
from i2i.methods.base import Method, Parts
from i2i.methods.feedback import Side


class ImagePool(nn.Module):
    """History of generated images (Shrivastava et al. 2017, published ``ImagePool``).

    Until ``size`` images are stored each new image is stored and returned; afterwards, with probability 1/2 a
    random stored image is returned and replaced by the new one, else the new one is returned. The coins come from
    Python's ``random`` (saved with the checkpoint RNG state); the stored images are the module's extra state, so a
    resumed run continues with the same pool.
    """

    def __init__(self, size: int = 50) -> None:
        super().__init__()
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] (detached fakes) -> [B, C, H, W] for the discriminator."""
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif random.uniform(0, 1) > 0.5:
                j = random.randint(0, self.size - 1)
                out.append(self.images[j])
                self.images[j] = img
            else:
                out.append(img)
        return torch.cat(out)

    def get_extra_state(self) -> dict:
        return {"images": torch.cat(self.images) if self.images else torch.zeros(0)}

    def set_extra_state(self, state: dict) -> None:
        self.images = [img[None] for img in state["images"]] if state["images"].numel() else []


class CycleGAN(Method):
    """Two generators, two discriminators, cycle consistency.

    Args:
        G_BA: the second generator F: B→A (:meth:`create` builds it like the loop's G).
        D_A: the discriminator of domain A (built like the loop's D).
        lambda_gan: adversarial weight of each direction.
        lambda_cycle: λ_cyc for both cycles (published λ_A = λ_B = 10).
        lambda_identity: identity weight relative to λ_cyc (published CycleGAN 0.5, ASGIT 0).
        pool_size: fake-image history per domain (published 50).
        name: the method's name.
    """

    update_order = ("G", "D")

    def __init__(self, G_BA: nn.Module, D_A: nn.Module, lambda_gan: float = 1.0, lambda_cycle: float = 10.0,
                 lambda_identity: float = 0.0, pool_size: int = 50, name: str = "cyclegan") -> None:
        super().__init__(lambda_gan, name)
        self.G_BA, self.D_A = G_BA, D_A
        self.lambda_cycle, self.lambda_identity = lambda_cycle, lambda_identity
        self.pool_A, self.pool_B = ImagePool(pool_size), ImagePool(pool_size)

    @classmethod
    def create(cls, parts: Parts, **options) -> CycleGAN:
        """``G_BA`` and ``D_A`` are built like the loop's G and D (same configs, initialised)."""
        return cls(parts.new_generator(), parts.new_discriminator(), **options)

    def optimizer_modules(self) -> dict[str, list[nn.Module | None]]:
        """``G_BA`` with the loop's generator Adam, ``D_A`` with its discriminator Adam (as published)."""
        groups = super().optimizer_modules()
        groups["G"].append(self.G_BA)
        groups["D"].append(self.D_A)
        return groups

    def feedback_sources(self, D: nn.Module) -> dict[Side, nn.Module]:
        """Source-domain discriminators for same-step maps: D_A for A inputs, the loop's D (D_B) for B inputs."""
        return {Side.A: self.D_A, Side.B: D}

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """With feedback, also ``D_A``: the test-time placeholder map of A inputs may come from it."""
        state = super().inference_state_dict()
        if state:
            state.update(self.D_A.state_dict(prefix="D_A."))
        return state

    def forward_G(self, G: nn.Module, batch: dict) -> dict:
        real_A, real_B = batch["A"], batch["B"]
        out = {"fake_B": self.translate(G, real_A, batch, side=Side.A),
               "fake_A": self.translate(self.G_BA, real_B, batch, side=Side.B)}
        out["rec_A"] = self.translate(self.G_BA, out["fake_B"], batch, side=Side.REC)
        out["rec_B"] = self.translate(G, out["fake_A"], batch, side=Side.REC)
        if self.lambda_identity > 0 and self.training:
            out["idt_B"] = self.translate(G, real_B, batch, side=Side.B)        # G(b) ≈ b
            out["idt_A"] = self.translate(self.G_BA, real_A, batch, side=Side.A)  # F(a) ≈ a
        return out

    def _judge(self, D: nn.Module, x: torch.Tensor, batch: dict, side: Side) -> torch.Tensor:
        """D logits of a translation of the ``side`` images; its attention map goes to the feedback."""
        pred = D(x)
        if pred.attention is not None and self.feedback is not None:
            self.feedback.observe(pred.attention, batch, side=side)
        return pred.logits

    def generator_losses(self, G: nn.Module, D: nn.Module, batch: dict, out: dict,
                         gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        pred_fake_B = self._judge(D, out["fake_B"], batch, Side.A)
        pred_fake_A = self._judge(self.D_A, out["fake_A"], batch, Side.B)
        lam = self.lambda_cycle
        terms = {"G_GAN": self.lambda_gan * gan_loss(pred_fake_B, True, for_discriminator=False),
                 "G_GAN_BA": self.lambda_gan * gan_loss(pred_fake_A, True, for_discriminator=False),
                 "cycle_A": lam * F.l1_loss(out["rec_A"], batch["A"]),
                 "cycle_B": lam * F.l1_loss(out["rec_B"], batch["B"])}
        if "idt_B" in out:
            terms["idt_B"] = lam * self.lambda_identity * F.l1_loss(out["idt_B"], batch["B"])
            terms["idt_A"] = lam * self.lambda_identity * F.l1_loss(out["idt_A"], batch["A"])
        return terms

    def discriminator_losses(self, D: nn.Module, batch: dict, out: dict, gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        terms = {}
        for name, disc, real, fake, pool in (("D_B", D, batch["B"], out["fake_B"], self.pool_B),
                                             ("D_A", self.D_A, batch["A"], out["fake_A"], self.pool_A)):
            pred_fake = disc(pool.query(fake.detach())).logits
            pred_real = disc(real).logits
            terms[f"{name}_fake"] = 0.5 * gan_loss(pred_fake, False)
            terms[f"{name}_real"] = 0.5 * gan_loss(pred_real, True)
        return terms

    def visuals(self, batch: dict, out: dict) -> dict[str, torch.Tensor]:
        vis = {"real_A": batch["A"], "fake_B": out["fake_B"], "rec_A": out["rec_A"],
               "real_B": batch["B"], "fake_A": out["fake_A"], "rec_B": out["rec_B"]}
        if self.feedback is not None:
            vis.update(self.feedback.visuals(batch["A"].shape[0]))
        return vis
