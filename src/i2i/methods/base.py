"""The method seam: everything a translator is trained with besides the loop.

A method owns its trainable modules and returns named, already weighted loss terms; the loop sums them,
steps the optimizers and never branches on which method it runs. One step of the loop is::

    out = method.forward_G(G, batch)                      # translations (with grad)
    D step:  sum(method.discriminator_losses(D, batch, out, gan_loss).values())
    G step:  sum(method.generator_losses(G, D, batch, out, gan_loss).values())

(``update_order`` says which of the two steps comes first.) This module is the whole contract a new method meets
(docs/extending.md walks through one):

========================  ==================================================================================
hook                      what it does (shapes: images [B, C, H, W] in [-1, 1], D logits [B, 1, h, w])
========================  ==================================================================================
``create(parts, **opts)`` classmethod: build the method from :class:`Parts` (the loop's G and D, factories for
                          further networks, the data spec) and its YAML options; derives channels and shapes
                          from G itself. Default: ``cls(**opts)``.
``optimizer_modules()``   required: the method's own modules by optimizer (``"G"``, ``"D"``, ``"F"``); every
                          parameter must be listed exactly once (:meth:`param_groups` checks).
``forward_G(G, batch)``   the translations, at least ``{"fake_B": [B, C, H, W]}``.
``discriminator_losses``  ``(D, batch, out, gan_loss) -> {name: scalar}``; the fakes must be detached.
``generator_losses``      ``(G, D, batch, out, gan_loss) -> {name: scalar}``; :meth:`adversarial_terms` gives the
                          GAN term and D's output on ``fake_B``.
``visuals(batch, out)``   images for the sample grid, in column order.
``set_epoch(epoch)``      called before the first step of every (1-based) epoch.
``feedback_sources(D)``   the discriminators of domain A and B inputs (discriminator feedback).
``update_order``          ``("D", "G")`` (CUT) or ``("G", "D")`` (CycleGAN); a method may add phases of its own.
``phase_losses``          ``(phase, G, D, batch, out, gan_loss) -> {name: scalar}`` for such a phase (e.g. ``"N"``:
                          a negative generator trained against the contrastive loss); its modules are listed
                          under the phase's name in ``optimizer_modules()`` and stepped by their own Adam.
``compile_modules(**kw)`` speed lever ``train.compile``: compile the method's own networks in place (default:
                          every child module with parameters, except the feedback block).
``inference_state_dict()``  what inference needs of the method's state (default: the feedback block's).
========================  ==================================================================================

Discriminators return :class:`~i2i.models.discriminators.DOutput` (logits and an optional attention map); patch
samplers follow :class:`~i2i.samplers.base.PatchSampler`. Optional feedback (discriminator attention fed to the
generator input, ASGIT) plugs in through :meth:`Method.translate`, which every method uses to run G, with a
:class:`~i2i.methods.feedback.Side` naming which images G translates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from i2i.losses.gan import GANLoss
from i2i.methods.feedback import Side
from i2i.models.discriminators import DOutput

#: the optimizers a method's modules can be stepped by (``optim.lr_g``, ``optim.lr_d``, ``optim.lr_f``); a method's
#: own phases (names in ``update_order`` besides "D" and "G") add one optimizer each, at ``optim.lr_f``
OPTIMIZERS = ("G", "D", "F")
#: the loop's two built-in phases
BUILTIN_PHASES = ("D", "G")


@dataclass(frozen=True)
class DataSpec:
    """What a method may need to know about the training images.

    Attributes:
        channels: image channels C.
        crop_size: side of the training crops (the feature shapes of G follow from it).
    """

    channels: int = 3
    crop_size: int = 256


@dataclass(frozen=True)
class Parts:
    """What :meth:`Method.create` receives (the builder makes one; tests can make their own).

    Attributes:
        G: the loop's generator (A -> B), built and initialised.
        D: the loop's discriminator (domain B), built and initialised.
        data: the training images' spec.
        new_generator: builds another generator like G (same config, initialised), e.g. a B -> A generator.
        new_discriminator: builds another discriminator like D, e.g. one for domain A.
        init_type: initialisation of the method's own modules (the generator's ``init_type``).
        init_gain: its gain.
    """

    G: nn.Module
    D: nn.Module | None = None
    data: DataSpec = DataSpec()
    new_generator: Callable[[], nn.Module] | None = None
    new_discriminator: Callable[[], nn.Module] | None = None
    init_type: str = "xavier"
    init_gain: float = 0.02


class Method(nn.Module):
    """Base class: the contract of a method and the behaviour of a plain unpaired GAN.

    Args:
        lambda_gan: weight of the generator's adversarial term.
        name: the method's name (run names, the start-up banner).

    Attributes:
        update_order: ``("D", "G")`` as CUT (D first, then G with the updated D) or ``("G", "D")`` as CycleGAN.
            Any other name is a phase of the method's own (:meth:`phase_losses`), e.g. ``("D", "N", "G")``.
        feedback: optional input-injection module (set by the builder), see ``i2i.methods.feedback``.
    """

    update_order: tuple[str, ...] = ("D", "G")

    def __init__(self, lambda_gan: float = 1.0, name: str | None = None) -> None:
        super().__init__()
        self.lambda_gan = lambda_gan
        self.name = name or type(self).__name__.lower()
        self.feedback: nn.Module | None = None
        self.epoch = 1

    @classmethod
    def create(cls, parts: Parts, **options) -> Method:
        """Build the method from the run's networks and its config options (``method.*`` without ``_target_``).

        Override to derive constructor arguments from ``parts`` (feature channels of G, extra networks). A
        ``ValueError`` should name the offending ``method.<key>``; the builder turns it into one config-error line.
        """
        return cls(**options)

    # --- what the loop calls -------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Called at the start of every (1-based) epoch, before its first step."""
        self.epoch = epoch

    def optimizer_modules(self) -> dict[str, list[nn.Module | None]]:
        """The method's own trainable modules, by the optimizer that steps them.

        ``"G"``: stepped with the generator's Adam (a second generator, the feedback transfer block); ``"D"``: with
        the discriminator's (a second discriminator); ``"F"``: by the method's own Adam (projection heads, learning
        rate ``optim.lr_f``); the name of one of the method's own phases (:attr:`extra_phases`): stepped after that
        phase's :meth:`phase_losses`, by an Adam of its own at ``optim.lr_f``. Every module with parameters must be
        listed exactly once (``None`` entries are
        skipped): :meth:`param_groups` refuses a parameter that is in no group or in two, so a new module cannot
        end up in the wrong optimizer silently. Subclasses extend the lists of ``super().optimizer_modules()``.
        """
        return {"G": [self.feedback], "D": [], "F": []}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimizer (``{"G": [...], "D": [...], "F": [...]}``), from :meth:`optimizer_modules`.

        Raises:
            ValueError: a parameter of the method is in no group, or in more than one, or a group is unknown.
        """
        declared = self.optimizer_modules()
        known = OPTIMIZERS + self.extra_phases
        unknown = sorted(set(declared) - set(known))
        if unknown:
            raise ValueError(f"{type(self).__name__}.optimizer_modules(): unknown optimizer {unknown[0]!r} — use "
                             f"{', '.join(repr(o) for o in known)} (a phase of its own must be in update_order)")
        bad = sorted(set(self.update_order) & {"F"}) or [p for p in self.update_order if not p.isidentifier()]
        if bad or len(set(self.update_order)) != len(self.update_order) or \
                not set(BUILTIN_PHASES) <= set(self.update_order):
            raise ValueError(f"{type(self).__name__}.update_order={tuple(self.update_order)}: list 'D' and 'G' once "
                             "each, and phases of its own by distinct names other than 'F'")
        groups = {name: [p for m in declared.get(name, []) if m is not None for p in m.parameters()]
                  for name in known}
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

    @property
    def extra_phases(self) -> tuple[str, ...]:
        """The method's own phases: the names in :attr:`update_order` besides ``"D"`` and ``"G"``."""
        return tuple(p for p in self.update_order if p not in BUILTIN_PHASES)

    def phase_losses(self, phase: str, G: nn.Module, D: nn.Module, batch: dict, out: dict,
                     gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        """The loss terms of one of the method's own phases (``{name: scalar}``).

        The loop backpropagates their sum and steps only that phase's optimizer (the modules listed under the
        phase's name); the discriminator's and other phases' parameters are frozen meanwhile, and the phase's
        own are frozen during the D and G steps. Inputs taken from ``out`` should be detached where G must not
        learn from the phase (gradients reaching G here are discarded before G's step anyway).
        """
        raise NotImplementedError(f"{type(self).__name__} lists phase {phase!r} in update_order but does not "
                                  "define phase_losses")

    def forward_G(self, G: nn.Module, batch: dict) -> dict:
        """Translate the batch. Returns at least ``fake_B`` [B, C, H, W]."""
        return {"fake_B": self.translate(G, batch["A"], batch, side=Side.A)}

    def discriminator_losses(self, D: nn.Module, batch: dict, out: dict, gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        """LSGAN-style D objective: 0.5 * (loss(D(fake), 0) + loss(D(real_B), 1))."""
        pred_fake = D(out["fake_B"].detach()).logits
        real = D(batch["B"])
        if real.attention is not None and self.feedback is not None:  # its map of real_B feeds the identity rows
            self.feedback.observe(real.attention, batch, side=Side.B)
        return {"D_fake": 0.5 * gan_loss(pred_fake, False), "D_real": 0.5 * gan_loss(real.logits, True)}

    def generator_losses(self, G: nn.Module, D: nn.Module, batch: dict, out: dict,
                         gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        """Adversarial term only; subclasses add their content terms (see :meth:`adversarial_terms`)."""
        terms, _ = self.adversarial_terms(D, batch, out, gan_loss)
        return terms

    def visuals(self, batch: dict, out: dict) -> dict[str, torch.Tensor]:
        """Images for the sample grid, in column order."""
        vis = {"real_A": batch["A"], "fake_B": out["fake_B"], "real_B": batch["B"]}
        if "idt_B" in out:
            vis["idt_B"] = out["idt_B"]
        if self.feedback is not None:
            vis.update(self.feedback.visuals(batch["A"].shape[0]))
        return vis

    def feedback_sources(self, D: nn.Module) -> dict[Side, nn.Module]:
        """Discriminators whose maps of real A / B inputs the feedback uses (one-sided methods: the one D)."""
        return {Side.A: D, Side.B: D}

    def compile_modules(self, **options) -> None:
        """``train.compile``: ``torch.compile`` the method's own networks in place (``Module.compile``: their
        state_dict keys stay the same). ``options`` are ``torch.compile``'s (``mode`` or ``backend``).

        Default: every direct child with parameters except the feedback block (a second G or D, projection
        heads). Override to compile a larger region, e.g. a whole loss computation.
        """
        for name, child in self.named_children():
            if name != "feedback" and any(True for _ in child.parameters()):
                child.compile(**options)

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """The part of the method's state inference needs (feedback runs: the feedback module; see
        build.build_test_feedback).

        Inference-only checkpoints (epoch snapshots) keep this as their ``method`` entry. Default: the
        ``feedback.*`` entries of :meth:`state_dict` (empty without feedback).
        """
        return {k: v for k, v in self.state_dict().items() if k.startswith("feedback.")}

    # --- helpers shared by the methods ---------------------------------------------------------------
    def adversarial_terms(self, D: nn.Module, batch: dict, out: dict,
                          gan_loss: GANLoss) -> tuple[dict[str, torch.Tensor], DOutput]:
        """The generator's GAN term on ``out["fake_B"]`` and D's output on it (DAG sampling reuses its logits).

        An attention map of D goes to the feedback (the translation of the A images).

        Returns:
            (``{"G_GAN": scalar}``, ``D(fake_B)``).
        """
        pred = D(out["fake_B"])
        if pred.attention is not None and self.feedback is not None:
            self.feedback.observe(pred.attention, batch, side=Side.A, hflip=bool(out.get("flipped", False)))
        return {"G_GAN": self.lambda_gan * gan_loss(pred.logits, True, for_discriminator=False)}, pred

    def translate(self, G: nn.Module, x: torch.Tensor, batch: dict | None = None, side: Side = Side.A,
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
