"""The method seam: everything a translator is trained with besides the loop.

A method owns its trainable modules and returns named, already weighted loss terms; the loop sums them,
steps the optimizers and never branches on which method it runs. One step of the loop is::

    out = method.forward_G(G, batch)                      # translations (with grad)
    D step:  sum(method.discriminator_losses(D, batch, out, gan_loss).values())
    G step:  sum(method.generator_losses(G, D, batch, out, gan_loss).values())

(``update_order`` says which of the two steps comes first.) Optional feedback (discriminator attention fed to
the generator input, ASGIT) plugs in through :meth:`Method.translate`, which every method uses to run G.
"""

from __future__ import annotations

import torch
from torch import nn

from i2i.losses.gan import GANLoss


class Method(nn.Module):
    """Base class with the GAN-only behaviour (a plain unpaired GAN).

    Attributes:
        update_order: ``("D", "G")`` as CUT (D first, then G with the updated D) or ``("G", "D")`` as CycleGAN.
        feedback: optional input-injection module (set by the builder), see ``i2i.methods.feedback``.
        lambda_gan: weight of the generator's adversarial term.
    """

    update_order: tuple[str, str] = ("D", "G")

    def __init__(self, lambda_gan: float = 1.0) -> None:
        super().__init__()
        self.lambda_gan = lambda_gan
        self.feedback: nn.Module | None = None
        self.epoch = 1

    # --- what the loop calls -------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Called at the start of every (1-based) epoch, before its first step."""
        self.epoch = epoch

    def optimizer_modules(self) -> dict[str, list[nn.Module | None]]:
        """The method's own trainable modules, by the optimizer that steps them.

        ``"G"``: stepped with the generator's Adam (a second generator, the feedback transfer block); ``"D"``: with
        the discriminator's (a second discriminator); ``"F"``: by the method's own Adam (projection heads, learning
        rate ``optim.lr_f``). Every module with parameters must be listed exactly once (``None`` entries are
        skipped): :meth:`param_groups` refuses a parameter that is in no group or in two, so a new module cannot
        end up in the wrong optimizer silently. Subclasses extend the lists of ``super().optimizer_modules()``.
        """
        return {"G": [self.feedback], "D": [], "F": []}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimizer (``{"G": [...], "D": [...], "F": [...]}``), from :meth:`optimizer_modules`.

        Raises:
            ValueError: a parameter of the method is in no group, or in more than one.
        """
        groups = {name: [p for m in modules if m is not None for p in m.parameters()]
                  for name, modules in self.optimizer_modules().items()}
        where: dict[int, str] = {}
        for name, params in groups.items():
            for p in params:
                if id(p) in where:
                    raise ValueError(f"{type(self).__name__}.optimizer_modules(): a parameter is listed under both "
                                     f"{where[id(p)]!r} and {name!r} — list each module once")
                where[id(p)] = name
        missing = [n for n, p in self.named_parameters() if id(p) not in where]
        if missing:
            raise ValueError(f"{type(self).__name__}.optimizer_modules(): {', '.join(missing[:3])}"
                             f"{' ...' if len(missing) > 3 else ''} in no optimizer group — add their module to the "
                             "'G', 'D' or 'F' list")
        return groups

    def forward_G(self, G: nn.Module, batch: dict) -> dict:
        """Translate the batch. Returns at least ``fake_B`` [B, C, H, W]."""
        return {"fake_B": self.translate(G, batch["A"], batch, side="A")}

    def discriminator_losses(self, D: nn.Module, batch: dict, out: dict, gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        """LSGAN-style D objective: 0.5 * (loss(D(fake), 0) + loss(D(real_B), 1))."""
        pred_fake = self.discriminate(D, out["fake_B"].detach())
        pred_real = D(batch["B"])
        if isinstance(pred_real, tuple):  # attention D: its map of real_B feeds the identity rows (feedback)
            pred_real, attn = pred_real
            if self.feedback is not None:
                self.feedback.observe(attn, batch, side="B")
        return {"D_fake": 0.5 * gan_loss(pred_fake, False), "D_real": 0.5 * gan_loss(pred_real, True)}

    def generator_losses(self, G: nn.Module, D: nn.Module, batch: dict, out: dict,
                         gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        """Adversarial term only; subclasses add their content terms."""
        pred = D(out["fake_B"])
        if isinstance(pred, tuple):  # attention D: its map of the translation goes to the feedback
            pred, attn = pred
            if self.feedback is not None:
                self.feedback.observe(attn, batch, side="A", hflip=bool(out.get("flipped", False)))
        out["pred_fake"] = pred
        return {"G_GAN": self.lambda_gan * gan_loss(out["pred_fake"], True, for_discriminator=False)}

    def visuals(self, batch: dict, out: dict) -> dict[str, torch.Tensor]:
        """Images for the sample grid, in column order."""
        vis = {"real_A": batch["A"], "fake_B": out["fake_B"], "real_B": batch["B"]}
        if "idt_B" in out:
            vis["idt_B"] = out["idt_B"]
        if self.feedback is not None:
            vis.update(self.feedback.visuals(batch["A"].shape[0]))
        return vis

    def feedback_sources(self, D: nn.Module) -> dict[str, nn.Module]:
        """Discriminators whose maps of real A / B inputs the feedback uses (one-sided methods: the one D)."""
        return {"A": D, "B": D}

    # --- helpers shared by the methods ---------------------------------------------------------------
    def translate(self, G: nn.Module, x: torch.Tensor, batch: dict | None = None, side: str = "A",
                  layers=(), hflip: bool = False):
        """Run G on ``x`` (with the feedback injection when configured; ``hflip``: x is the batch flipped)."""
        if self.feedback is not None:
            x = self.feedback.inject(x, batch, side, hflip=hflip)
        return G(x, layers=layers) if layers else G(x)

    @staticmethod
    def split_translations(fake: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        """``fake`` of G([real_A; real_B]) -> ``{"fake_B": first n rows, "idt_B": the rest (if any)}``."""
        out = {"fake_B": fake[:n]}
        if fake.shape[0] > n:
            out["idt_B"] = fake[n:]
        return out

    @staticmethod
    def discriminate(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """D logits; attention discriminators return (logits, attention) and only the logits are used here."""
        pred = D(x)
        return pred[0] if isinstance(pred, tuple) else pred
