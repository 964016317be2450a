"""CUT and FastCUT (Park et al., ECCV 2020): adversarial loss + multilayer PatchNCE (Eq. 5).

CUT:     L_GAN + λ·0.5·(PatchNCE(X) + PatchNCE(Y))    with λ = 1 and the identity term on Y (nce_idt).
FastCUT: L_GAN + λ·PatchNCE(X)                         with λ = 10 and flip-equivariance augmentation.

As in the published code (taesungp/contrastive-unpaired-translation, models/cut_model.py): queries are the
generator's encoder features of the
translated image, keys those of the source image, both sampled at the same locations; the NCE term is the
mean over layers of the mean per-patch loss. Two speed-ups keep the maths: the keys reuse the features of
the main generator pass (``reuse_source_features``; exact for per-sample normalisation — it is switched off
automatically for the step when flip equivariance flipped the input), and fake_B and idt_B are encoded in one
pass.

A sampler that owns a phase (:class:`~i2i.samplers.base.PhaseSampler`, e.g. NEGCUT's negative generator) is bound to
the projection heads, its phase runs before the generator's step (``update_order`` D, <phase>, G) and minimises
``-(the weighted contrastive terms, computed with its negatives on detached patches) + its own terms``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from i2i.losses.gan import GANLoss
from i2i.losses.patchnce import patch_nce_loss
from i2i.methods.base import Method, Parts
from i2i.methods.feedback import Side
from i2i.models.projection import ProjectionHeads
from i2i.samplers.base import PatchSampler, PhaseSampler, SampleContext
from i2i.samplers.random import RandomSampler

#: generator module indices contrasted by default: padded RGB, two pre-norm convs, resblocks 1 and 5 (ResNet-9)
DEFAULT_NCE_LAYERS = (0, 4, 8, 12, 16)


class CUT(Method):
    """Contrastive unpaired translation (also FastCUT by its settings).

    Args:
        feature_channels: channels of the generator at ``nce_layers`` (from ``G.feature_channels``).
        nce_layers: generator module indices whose outputs are contrasted.
        num_patches: patches per image per layer (N).
        nc: projection head width (0 = no MLP).
        tau: temperature.
        lambda_gan: adversarial weight.
        lambda_nce: PatchNCE weight λ.
        nce_idt: add PatchNCE on (real_B, G(real_B)) and combine 0.5·(NCE + NCE_Y).
        flip_equivariance: FastCUT's random horizontal flip of G's input, with query features flipped back.
        negatives: ``image`` (published default) or ``batch`` (``nce_includes_all_negatives_from_minibatch``).
        diagonal: cosine written for each query's own key among its negatives (published: -10).
        sampler: patch sampler for every layer (default: uniform random, CUT). A
            :class:`~i2i.samplers.base.PhaseSampler` is bound to the heads and trained in its own phase.
        reuse_source_features: take the keys from the main G pass instead of re-encoding the source.
        init_type: projection head init.
        init_gain: projection head init gain.
        name: the method's name.

    Attributes:
        phase_samplers: whether a sampler that trains a network of its own against the contrastive loss (a
            :class:`~i2i.samplers.base.PhaseSampler`) can be used; a subclass whose contrastive loss is not CUT's
            (its own ``layer_terms`` or ``generator_losses``) sets it to False unless it feeds that sampler.
    """

    phase_samplers: bool = True

    def __init__(self, feature_channels: Sequence[int], nce_layers: Sequence[int] = DEFAULT_NCE_LAYERS,
                 num_patches: int = 256, nc: int = 256, tau: float = 0.07, lambda_gan: float = 1.0,
                 lambda_nce: float = 1.0, nce_idt: bool = True, flip_equivariance: bool = False,
                 negatives: str = "image", diagonal: float = -10.0, sampler: PatchSampler | None = None,
                 reuse_source_features: bool = True, init_type: str = "xavier", init_gain: float = 0.02,
                 name: str = "cut") -> None:
        super().__init__(lambda_gan, name)
        if len(feature_channels) != len(nce_layers):
            raise ValueError("feature_channels and nce_layers must have the same length")
        self.nce_layers = list(nce_layers)
        self.num_patches, self.tau, self.lambda_nce = num_patches, tau, lambda_nce
        self.nce_idt, self.flip_equivariance = nce_idt, flip_equivariance
        self.negatives, self.diagonal = negatives, diagonal
        self.sampler = sampler if sampler is not None else RandomSampler()
        if not isinstance(self.sampler, PatchSampler):
            raise ValueError(f"method.sampler={sampler!r} is not a patch sampler: select one with "
                             "method/sampler=random or method/sampler=dag")
        self.reuse_source_features = reuse_source_features
        self.heads = ProjectionHeads(feature_channels, nc, init_type, init_gain)
        if self.sampler_phase is not None and not self.phase_samplers:
            raise ValueError(f"method.sampler: {type(self.sampler).__name__} trains its network against CUT's "
                             f"contrastive loss, which {type(self).__name__} replaces or extends in its own way — "
                             "use method/sampler=random (or dag)")
        if self.sampler_phase is not None:  # its network learns in a phase of its own, before the generator's step
            if lambda_nce <= 0:
                raise ValueError(f"method.lambda_nce={lambda_nce}: the sampler trains against the contrastive loss, "
                                 "which is off — set method.lambda_nce > 0 or use method/sampler=random")
            self.sampler.bind(self.heads, init_type, init_gain)
            order = list(type(self).update_order)
            order.insert(order.index("G"), self.sampler_phase)
            self.update_order = tuple(order)

    @classmethod
    def create(cls, parts: Parts, **options) -> CUT:
        """The projection heads are sized by G's channels at ``nce_layers``; they start as G does (init)."""
        layers = [int(i) for i in options.pop("nce_layers", DEFAULT_NCE_LAYERS)]
        try:
            channels = parts.G.feature_channels(layers)
        except ValueError as e:
            raise ValueError(f"method.nce_layers={layers}: {e}") from None
        options.setdefault("init_type", parts.init_type)
        options.setdefault("init_gain", parts.init_gain)
        return cls(channels, layers, **options)

    def optimizer_modules(self) -> dict[str, list[nn.Module | None]]:
        """The projection heads with the method's own Adam (``optim.lr_f``)."""
        groups = super().optimizer_modules()
        groups["F"].append(self.heads)
        if self.sampler_phase is not None:  # a sampler's own network: stepped by its phase's optimizer
            groups[self.sampler_phase] = [self.sampler]
        return groups

    @property
    def sampler_phase(self) -> str | None:
        """The name of the sampler's own phase (a :class:`~i2i.samplers.base.PhaseSampler`), else None."""
        return self.sampler.phase if isinstance(self.sampler, PhaseSampler) else None

    def sampler_for(self, layer_pos: int):
        """The sampler used at a layer position (QS-Attn overrides this for its attention layers)."""
        return self.sampler

    def forward_G(self, G: nn.Module, batch: dict) -> dict:
        real_A, real_B = batch["A"], batch["B"]
        n = real_A.shape[0]
        real = torch.cat([real_A, real_B]) if self.nce_idt and self.training else real_A  # [B or 2B, C, H, W]
        # the coin is tossed on the CPU generator: no device synchronisation
        flipped = bool(self.flip_equivariance and self.training and torch.rand(()) < 0.5)
        if flipped:
            real = real.flip(3)
        reuse = self.reuse_source_features and not flipped and self.lambda_nce > 0
        if reuse:
            fake, feats = self.translate(G, real, batch, side=Side.A, layers=self.nce_layers, hflip=flipped)
        else:
            fake, feats = self.translate(G, real, batch, side=Side.A, hflip=flipped), None
        return {**self.split_translations(fake, n), "flipped": flipped, "source_feats": feats}

    def generator_losses(self, G: nn.Module, D: nn.Module, batch: dict, out: dict,
                         gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        terms, pred_fake = self.adversarial_terms(D, batch, out, gan_loss)
        if self.lambda_nce <= 0:
            return terms
        n = batch["A"].shape[0]
        feats_k, feats_q = self.contrastive_features(G, batch, out)
        score = pred_fake.logits.detach()  # [B, 1, h, w]
        if "idt_B" in out and self.sampler.needs_score_map:  # DAG on the identity half: D(idt_B)
            with torch.no_grad():
                score = torch.cat([score, D(out["idt_B"].detach()).logits])  # [2B, 1, h, w]
        # X and Y are separate terms: with batch negatives each draws negatives from its own images only
        per_row = self.contrastive_terms(feats_k, feats_q, score_map=score, groups=2 if "idt_B" in out else 1)
        for name, losses in per_row.items():  # [B or 2B] each
            if name != "NCE":  # a subclass's own term, weighted by it: on the X rows
                terms[name] = losses[:n].mean()
                continue
            terms.update(self.weighted_nce(losses, n))
        return terms

    def phase_losses(self, phase: str, G: nn.Module, D: nn.Module, batch: dict, out: dict,
                     gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        """The sampler's own phase: ``{"<phase>_NCE": -(NCE + NCE_Y as in the G step), **the sampler's terms}``.

        The patches are constants here (features encoded without gradient, projected patches detached, as the
        published NEGCUT code detaches q and k); only what the sampler generates carries gradient, to its own
        parameters. Its terms (``ctx.terms``, per row) are averaged over the layers and all rows.
        """
        if phase != self.sampler_phase:
            return super().phase_losses(phase, G, D, batch, out, gan_loss)
        self.sampler.begin_phase()
        n, has_idt = batch["A"].shape[0], "idt_B" in out
        with torch.no_grad():
            feats_k, feats_q = self.contrastive_features(G, batch, out)
            score = None
            if self.sampler.needs_score_map:
                fakes = torch.cat([out["fake_B"], out["idt_B"]]) if has_idt else out["fake_B"]
                score = D(fakes.detach()).logits  # [B or 2B, 1, h, w]
        feats_k, feats_q = [f.detach() for f in feats_k], [f.detach() for f in feats_q]
        per_row = self.contrastive_terms(feats_k, feats_q, score_map=score, groups=2 if has_idt else 1, phase=phase)
        terms = {f"{phase}_NCE": -sum(self.weighted_nce(per_row["NCE"], n).values())}
        terms.update({name: losses.mean() for name, losses in per_row.items() if name != "NCE"})
        return terms

    def contrastive_features(self, G: nn.Module, batch: dict, out: dict) -> tuple[list, list]:
        """Key (source) and query (translation) features at ``nce_layers``, each [B or 2B, C_l, H_l, W_l]."""
        has_idt = "idt_B" in out
        fakes = torch.cat([out["fake_B"], out["idt_B"]]) if has_idt else out["fake_B"]
        feats_q = self.encode(G, fakes, batch, hflip=out["flipped"])
        if out["flipped"]:
            feats_q = [f.flip(3) for f in feats_q]
        feats_k = out["source_feats"]
        if feats_k is None:
            sources = torch.cat([batch["A"], batch["B"]]) if has_idt else batch["A"]
            feats_k = self.encode(G, sources, batch)
        return feats_k, feats_q

    def weighted_nce(self, losses: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        """Per-row contrastive losses [B or 2B] -> ``{"NCE": λ·mean X[, "NCE_Y": ...]}`` (0.5·λ each with identity)."""
        has_idt = losses.shape[0] > n
        weight = 0.5 * self.lambda_nce if has_idt else self.lambda_nce
        terms = {"NCE": weight * losses[:n].mean()}
        if has_idt:
            terms["NCE_Y"] = weight * losses[n:].mean()
        return terms

    def encode(self, G: nn.Module, x: torch.Tensor, batch: dict | None = None,
               hflip: bool = False) -> list[torch.Tensor]:
        """Encoder features of ``x`` at ``nce_layers`` (the decoder is skipped; ``hflip``: x is flipped)."""
        if self.feedback is not None:
            x = self.feedback.inject(x, batch, side=Side.ENCODE, hflip=hflip)
        return G(x, layers=self.nce_layers, encode_only=True)

    def compile_modules(self, **options) -> None:
        """``train.compile``: the whole multilayer contrastive loss (sampler, projection heads and loss) as one
        compiled region, on top of the default (the heads, any second network)."""
        super().compile_modules(**options)
        self.contrastive_terms = torch.compile(self.contrastive_terms, **options)

    def contrastive_terms(self, feats_k: list[torch.Tensor], feats_q: list[torch.Tensor],
                          score_map: torch.Tensor | None = None, groups: int = 1,
                          phase: str = "G") -> dict[str, torch.Tensor]:
        """Mean over layers of :meth:`layer_terms`: ``{name: per-row loss [B]}`` (``"NCE"`` at least).

        ``groups``: the batch is that many stacked terms (CUT: the X rows, then the identity rows; see
        :func:`~i2i.losses.patchnce.patch_nce_loss`). ``phase``: ``"G"``, or the sampler's own phase: then the
        projected patches are detached and the terms are ``"NCE"`` and the sampler's own (``ctx.terms``).
        """
        totals: dict[str, torch.Tensor] = {}
        for pos, (fk, fq) in enumerate(zip(feats_k, feats_q)):
            ctx = SampleContext(layer_pos=pos, score_map=score_map, phase=phase, groups=groups)
            k, q = self.sampler_for(pos)(fk, fq, self.num_patches, ctx)  # [B, N, C] each
            k, q = self.heads(k, pos), self.heads(q, pos)
            if phase != "G":
                k, q = k.detach(), q.detach()
            terms = self.layer_terms(q, k, ctx, groups)
            if phase != "G":
                terms = {"NCE": terms["NCE"], **ctx.terms}
            for name, value in terms.items():
                totals[name] = totals[name] + value if name in totals else value
        return {name: total / len(feats_k) for name, total in totals.items()}

    def nce_per_image(self, feats_k: list[torch.Tensor], feats_q: list[torch.Tensor],
                      score_map: torch.Tensor | None = None, groups: int = 1) -> torch.Tensor:
        """The contrastive loss per image, mean over layers and patches: [B]."""
        return self.contrastive_terms(feats_k, feats_q, score_map, groups)["NCE"]

    def layer_terms(self, q: torch.Tensor, k: torch.Tensor, ctx: SampleContext,
                    groups: int = 1) -> dict[str, torch.Tensor]:
        """The loss terms of one layer, per row: ``{"NCE": [B]}`` (PatchNCE, mean over the patches).

        The seam for a new contrastive loss: override it to replace PatchNCE (return its per-row loss under
        ``"NCE"``; CUT weights it by λ_NCE and splits the X and identity rows) or to add terms of the same
        features (any other name: already weighted, CUT logs the mean over the X rows).

        Args:
            q: projected, L2-normalised queries [B, N, C] (translations; rows: X then identity Y).
            k: projected, L2-normalised keys [B, N, C] (sources, not yet detached).
            ctx: the layer's position, D's score map and, from a sampler that generates them, the negatives
                (``ctx.negatives`` [B, M, C]: used instead of the other keys).
            groups: how many stacked terms the rows are.
        """
        return {"NCE": patch_nce_loss(q, k, self.tau, self.negatives, self.diagonal, groups,
                                      generated=ctx.negatives).mean(1)}
