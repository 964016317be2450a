"""DCLGAN and SimDCL (Han, Shoeiby, Petersson, Armin, "Dual Contrastive Learning for Unsupervised Image-to-Image
Translation", CVPR Workshops 2021).

Two generators G: X→Y (the loop's G) and F: Y→X (``G_BA``), two discriminators D_Y (the loop's D) and D_X
(``D_A``), and two projection heads: H_X embeds the encoder features of G (``heads``), H_Y those of F
(``heads_Y``). Each direction contrasts its source, embedded by its own generator's encoder, with its translation,
embedded by the *other* generator's encoder (Sec. 3.2, Eq. 4-5)::

    PatchNCE_X:  keys  z = H_X(G_enc(x)),     queries ẑ = H_Y(F_enc(G(x)))
    PatchNCE_Y:  keys  z = H_Y(F_enc(y)),     queries ẑ = H_X(G_enc(F(y)))

    DCLGAN (Eq. 8):  λ_GAN (L_GAN(G, D_Y) + L_GAN(F, D_X)) + λ_NCE (PatchNCE_X + PatchNCE_Y)
                     + λ_idt (‖F(x) − x‖₁ + ‖G(y) − y‖₁)
    SimDCL (Eq. 9):  DCLGAN + λ_sim L_sim   (Eq. 6, :class:`SimDCL`)

As in the published code (JunlinHan/DCLGAN, models/dcl_model.py ``calculate_NCE_loss1/2``) keys and queries of a
direction are sampled at the same locations, the keys are detached, and the term is the mean over layers of the mean
per-patch loss. D is updated before G. The published code's departures from the paper (an overall factor 0.5 on
the generator objective, no image pool, the generator's hinge term, SimDCL's weights and L1 reduction) are reachable
by keys; docs/dclgan.md lists them.

Names: the loop's D (``D_B_*`` terms) judges domain B = Y, ``D_A`` judges A = X; ``idt_B`` = G(y), ``idt_A`` = F(x)
(the published code calls these netD_A / netD_B and idt_A / idt_B the other way round).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from i2i.losses.gan import GANLoss
from i2i.methods.base import Method, Parts
from i2i.methods.cut import CUT
from i2i.methods.cyclegan import CycleGAN, ImagePool
from i2i.methods.feedback import Side
from i2i.models.layers import init_weights
from i2i.models.projection import ProjectionHeads, l2_normalize
from i2i.samplers.base import PatchSampler, SampleContext, gather_patches
from i2i.samplers.random import RandomSampler

#: the encoder layers of the paper (Appendix A.1.1: both downsampling convs, residual blocks 1 and 5 of ResNet-9)
DCL_NCE_LAYERS = (4, 8, 12, 16)


class DCLGAN(CUT):
    """Dual contrastive learning: two generators, two discriminators, two embeddings, L1 identity.

    Args:
        feature_channels: channels of the generators at ``nce_layers`` (from ``G.feature_channels``).
        nce_layers: encoder module indices contrasted (paper and published: 4, 8, 12, 16).
        G_BA: the second generator F: B→A (:meth:`create` builds it like the loop's G).
        D_A: the discriminator of domain A (built like the loop's D).
        num_patches: patches per image per layer (256).
        nc: projection head width (256).
        tau: temperature (0.07).
        lambda_gan: λ_GAN of each direction (1).
        lambda_nce: λ_NCE of each direction (2).
        lambda_idt: λ_idt of the L1 identity terms (1); 0 switches the identity translations off.
        pool_size: fake-image history per discriminator (paper Appendix A.1.2: 50; published code: 0).
        published_weighting: multiply every generator term by 0.5 as the published ``compute_G_loss``
            (SimDCL: all but the similarity term).
        generator_hinge_margin: with ``gan_loss=hinge`` the generator's term is mean(relu(1 − D(G(x)))) as the
            published ``GANLoss`` (the discriminator's real-side form); False: −mean(D(G(x))) (Geometric GAN,
            the paper's reference [29]).
        negatives: ``image`` (paper: the other patches of the same image) or ``batch`` (published
            ``PatchNCELoss``: every patch of the minibatch; the same at batch size 1).
        diagonal: cosine written for each query's own key among its negatives (published -10).
        sampler: patch sampler for every layer (default: uniform random, shared by the batch, as published).
        reuse_source_features: take the keys from the generators' main passes (exact for instance norm) instead of
            re-encoding the real images.
        init_type: projection head init.
        init_gain: projection head init gain.
        name: the method's name.
    """

    phase_samplers = False  # its contrastive loss does not use generated negatives (method/sampler=negcut)

    update_order = ("D", "G")

    def __init__(self, feature_channels: Sequence[int], nce_layers: Sequence[int] = DCL_NCE_LAYERS, *,
                 G_BA: nn.Module, D_A: nn.Module, num_patches: int = 256, nc: int = 256, tau: float = 0.07,
                 lambda_gan: float = 1.0, lambda_nce: float = 2.0, lambda_idt: float = 1.0, pool_size: int = 50,
                 published_weighting: bool = False, generator_hinge_margin: bool = False, negatives: str = "image",
                 diagonal: float = -10.0, sampler: PatchSampler | None = None, reuse_source_features: bool = True,
                 init_type: str = "xavier", init_gain: float = 0.02, name: str = "dclgan") -> None:
        if negatives not in ("image", "batch"):
            raise ValueError(f"method.negatives={negatives!r}: use image (the paper's internal negatives) or batch "
                             "(the published code's minibatch negatives)")
        if not isinstance(pool_size, int) or pool_size < 0:
            raise ValueError(f"method.pool_size={pool_size!r}: use a whole number >= 0 (paper 50, published code 0)")
        super().__init__(feature_channels, nce_layers, num_patches=num_patches, nc=nc, tau=tau,
                         lambda_gan=lambda_gan, lambda_nce=lambda_nce, nce_idt=False, flip_equivariance=False,
                         negatives=negatives, diagonal=diagonal, sampler=sampler,
                         reuse_source_features=reuse_source_features, init_type=init_type, init_gain=init_gain,
                         name=name)
        self.G_BA, self.D_A = G_BA, D_A
        # self.heads (from CUT) is H_X, published netF1; H_Y, published netF2, embeds F's encoder features
        self.heads_Y = ProjectionHeads(feature_channels, nc, init_type, init_gain)
        self.lambda_idt = lambda_idt
        self.pool_A, self.pool_B = ImagePool(pool_size), ImagePool(pool_size)
        self.published_weighting, self.generator_hinge_margin = published_weighting, generator_hinge_margin

    @classmethod
    def create(cls, parts: Parts, **options) -> DCLGAN:
        """``G_BA`` and ``D_A`` are built like the loop's G and D; the heads are sized by G at ``nce_layers``."""
        options.setdefault("nce_layers", DCL_NCE_LAYERS)
        try:
            return super().create(parts, G_BA=parts.new_generator(), D_A=parts.new_discriminator(), **options)
        except ValueError as e:
            if str(e).startswith("method.nce_layers="):  # CUT's message says what is wrong; add the fix
                raise ValueError(f"{e} — set method.nce_layers to encoder layers of G (paper: [4, 8, 12, 16])") from None
            raise

    def optimizer_modules(self) -> dict[str, list[nn.Module | None]]:
        """``G_BA`` with the generator Adam, ``D_A`` with the discriminator Adam (as published), H_X and H_Y with
        the method's own (``optim.lr_f``)."""
        groups = super().optimizer_modules()
        groups["G"].append(self.G_BA)
        groups["D"].append(self.D_A)
        groups["F"].append(self.heads_Y)
        return groups

    def feedback_sources(self, D: nn.Module) -> dict[Side, nn.Module]:
        """Discriminator feedback is not defined for DCLGAN (neither paper nor published code has it)."""
        raise ValueError(f"{type(self).__name__} does not support discriminator feedback — use feedback=none")

    def compile_modules(self, **options) -> None:
        """``train.compile``: the networks (default) and the per-direction contrastive loss."""
        Method.compile_modules(self, **options)
        self.contrast = torch.compile(self.contrast, **options)

    @property
    def needs_patches(self) -> bool:
        """Whether the generator step samples and projects patches (PatchNCE on)."""
        return self.lambda_nce > 0

    # --- the generator step ----------------------------------------------------------------------------
    def forward_G(self, G: nn.Module, batch: dict) -> dict:
        real_A, real_B = batch["A"], batch["B"]
        n = real_A.shape[0]
        idt = self.lambda_idt > 0 and self.training
        # one pass per generator: [real; identity input] (exact for per-sample normalisation)
        x_G = torch.cat([real_A, real_B]) if idt else real_A  # [B or 2B, C, H, W]
        x_F = torch.cat([real_B, real_A]) if idt else real_B
        reuse = self.reuse_source_features and self.needs_patches and self.training
        out: dict = {"source_feats_A": None, "source_feats_B": None}
        if reuse:
            fake_G, feats_G = G(x_G, layers=self.nce_layers)
            fake_F, feats_F = self.G_BA(x_F, layers=self.nce_layers)
            out["source_feats_A"] = [f[:n] for f in feats_G]  # G_enc(x)
            out["source_feats_B"] = [f[:n] for f in feats_F]  # F_enc(y)
        else:
            fake_G, fake_F = G(x_G), self.G_BA(x_F)
        out["fake_B"], out["fake_A"] = fake_G[:n], fake_F[:n]
        if idt:
            out["idt_B"], out["idt_A"] = fake_G[n:], fake_F[n:]  # G(y) ≈ y, F(x) ≈ x
        return out

    def _adversarial(self, gan_loss: GANLoss, pred: torch.Tensor) -> torch.Tensor:
        return gan_loss(pred, True, for_discriminator=self.generator_hinge_margin)

    def generator_losses(self, G: nn.Module, D: nn.Module, batch: dict, out: dict,
                         gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        w = 0.5 if self.published_weighting else 1.0
        pred_B = D(out["fake_B"]).logits  # D_Y(G(x)) [B, 1, h, w]
        pred_A = self.D_A(out["fake_A"]).logits  # D_X(F(y))
        terms = {"G_GAN": w * self.lambda_gan * self._adversarial(gan_loss, pred_B),
                 "G_GAN_BA": w * self.lambda_gan * self._adversarial(gan_loss, pred_A)}
        if self.needs_patches:
            keys_A = out["source_feats_A"] or self.encode(G, batch["A"])
            keys_B = out["source_feats_B"] or self.encode(self.G_BA, batch["B"])
            queries_A = self.encode(self.G_BA, out["fake_B"])  # F_enc(G(x)): G(x) is in domain Y
            queries_B = self.encode(G, out["fake_A"])  # G_enc(F(y))
            nce_X, proj_X = self.contrast(keys_A, queries_A, self.heads, self.heads_Y, pred_B.detach())
            nce_Y, proj_Y = self.contrast(keys_B, queries_B, self.heads_Y, self.heads, pred_A.detach())
            if self.lambda_nce > 0:
                for suffix, per_row in (("", nce_X), ("_BA", nce_Y)):
                    for name, losses in per_row.items():  # [B] each; a subclass's own layer term is its own weight
                        weight = w * self.lambda_nce if name == "NCE" else 1.0
                        terms[name + suffix] = weight * losses.mean()
            terms.update(self.patch_terms(proj_X, proj_Y, queries_A, queries_B))
        if "idt_B" in out:
            terms["idt_B"] = w * self.lambda_idt * F.l1_loss(out["idt_B"], batch["B"])
            terms["idt_A"] = w * self.lambda_idt * F.l1_loss(out["idt_A"], batch["A"])
        return terms

    def contrast(self, feats_k: list[torch.Tensor], feats_q: list[torch.Tensor], heads_k: ProjectionHeads,
                 heads_q: ProjectionHeads, score_map: torch.Tensor | None = None
                 ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """One direction's PatchNCE: mean over layers of :meth:`~i2i.methods.cut.CUT.layer_terms`.

        Args:
            feats_k: the source's encoder features per layer, [B, C_l, H_l, W_l] (embedded by its own generator).
            feats_q: the translation's, same shapes (embedded by the other generator).
            heads_k: the head of the keys' embedding (H_X for x, H_Y for y).
            heads_q: the head of the queries' embedding.
            score_map: the translation's discriminator logits, detached, [B, 1, h, w] (for DAG sampling).

        Returns:
            (``{name: per-row loss [B]}``, the projected keys per layer [B, N_l, nc], not detached).
        """
        totals: dict[str, torch.Tensor] = {}
        keys = []
        for pos, (fk, fq) in enumerate(zip(feats_k, feats_q)):
            ctx = SampleContext(layer_pos=pos, score_map=score_map)
            k, q = self.sampler_for(pos)(fk, fq, self.num_patches, ctx)  # [B, N, C_l] each, same locations
            k, q = heads_k(k, pos), heads_q(q, pos)  # [B, N, nc], L2-normalised
            keys.append(k)
            for name, value in self.layer_terms(q, k, ctx).items():  # PatchNCE detaches k
                totals[name] = totals[name] + value if name in totals else value
        return {name: total / len(feats_k) for name, total in totals.items()}, keys

    def patch_terms(self, proj_X: list[torch.Tensor], proj_Y: list[torch.Tensor], queries_A: list[torch.Tensor],
                    queries_B: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Further terms of the same embeddings (SimDCL's similarity loss); DCLGAN: none.

        Args:
            proj_X: H_X(G_enc(x)) per layer [B, N_l, nc] (the keys of PatchNCE_X, not detached).
            proj_Y: H_Y(F_enc(y)) per layer (the keys of PatchNCE_Y).
            queries_A: F_enc(G(x)) per layer [B, C_l, H_l, W_l] (unprojected).
            queries_B: G_enc(F(y)) per layer.
        """
        return {}

    # --- the discriminator step (CycleGAN's: both discriminators, each through its image pool) ---------
    discriminator_losses = CycleGAN.discriminator_losses

    def visuals(self, batch: dict, out: dict) -> dict[str, torch.Tensor]:
        vis = {"real_A": batch["A"], "fake_B": out["fake_B"]}
        if "idt_B" in out:
            vis["idt_B"] = out["idt_B"]
        vis.update({"real_B": batch["B"], "fake_A": out["fake_A"]})
        if "idt_A" in out:
            vis["idt_A"] = out["idt_A"]
        return vis


class MappingNet(nn.Module):
    """One of SimDCL's four light networks (Appendix A.1.3; published ``MappingF``, models/networks.py).

    The projected patches of the L layers, stacked as an L-channel map of N patches × nc features, go through
    Conv3×3(L → dim, stride 2) - ReLU - global average pool - Linear(dim, dim) - ReLU - Linear(dim, dim) and are
    L2-normalised.

    Args:
        n_layers: L.
        dim: output width (64).
        init_type: weight init.
        init_gain: its gain.
    """

    def __init__(self, n_layers: int, dim: int = 64, init_type: str = "xavier", init_gain: float = 0.02) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(n_layers, dim, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, N, nc] -> [B, dim]."""
        return l2_normalize(self.model(x))


class SimDCL(DCLGAN):
    """DCLGAN plus the similarity loss (Sec. 3.3, Eq. 6)::

        L_sim = ‖H_xr(H_X(G_enc(x))) − H_xf(H_X(G_enc(F(y))))‖₁ + ‖H_yr(H_Y(F_enc(y))) − H_yf(H_Y(F_enc(G(x))))‖₁

    Real and fake images of one domain, embedded by that domain's encoder and head, are mapped to 64-dim vectors by
    four light networks (:class:`MappingNet`) and pulled together. The real patches are the PatchNCE keys (not
    detached); the fake ones are drawn at fresh random locations, as published (``simdcl_model.py``
    ``calculate_Sim_loss_all``), so the two sides do not show the same locations (Appendix B.1).

    Args:
        lambda_sim: λ_sim (10).
        sim_dim: width of the light networks' vectors (64).
        sim_reduction: ``sum`` over the vector (the paper's ‖·‖₁^sum) or ``mean`` (the published ``L1Loss('sum')``
            passes 'sum' as the legacy ``size_average`` argument, which means mean); then mean over the batch.
        **kwargs: the :class:`DCLGAN` arguments.
    """

    def __init__(self, *args, lambda_sim: float = 10.0, sim_dim: int = 64, sim_reduction: str = "sum",
                 name: str = "simdcl", **kwargs) -> None:
        super().__init__(*args, name=name, **kwargs)
        if sim_reduction not in ("sum", "mean"):
            raise ValueError(f"method.sim_reduction={sim_reduction!r}: use sum (paper) or mean (published code)")
        if self.heads.nc < 3:
            raise ValueError(f"method.nc={self.heads.nc}: SimDCL stacks the projected patches of all layers, so the "
                             "heads need a common width of at least 3 — set method.nc (published 256)")
        if self.num_patches < 3:
            raise ValueError(f"method.num_patches={self.num_patches}: the light networks need at least 3 patches "
                             "per layer — set method.num_patches (published 256)")
        self.lambda_sim, self.sim_reduction = lambda_sim, sim_reduction
        init = dict(init_type=kwargs.get("init_type", "xavier"), init_gain=kwargs.get("init_gain", 0.02))
        L = len(self.nce_layers)
        # H_xr, H_xf, H_yr, H_yf (published netF3, netF6, netF5, netF4)
        self.sim_nets = nn.ModuleDict({k: MappingNet(L, sim_dim, **init) for k in ("xr", "xf", "yr", "yf")})
        self.fresh_sampler = RandomSampler()

    def optimizer_modules(self) -> dict[str, list[nn.Module | None]]:
        """The light networks with the heads' Adam (Appendix A.1.4: all six updated together)."""
        groups = super().optimizer_modules()
        groups["F"].append(self.sim_nets)
        return groups

    @property
    def needs_patches(self) -> bool:
        return self.lambda_nce > 0 or self.lambda_sim > 0

    def _fresh(self, feats: list[torch.Tensor], heads: ProjectionHeads, n: int) -> torch.Tensor:
        """n patches per layer at new random locations, projected and stacked: [B, L, n, nc]."""
        return torch.stack([heads(gather_patches(f, self.fresh_sampler.sample_ids(f, n)), pos)
                            for pos, f in enumerate(feats)], dim=1)

    def patch_terms(self, proj_X, proj_Y, queries_A, queries_B) -> dict[str, torch.Tensor]:
        if self.lambda_sim <= 0:
            return {}
        n = min(k.shape[1] for k in proj_X + proj_Y)  # equal counts per layer (fewer where a map is small)
        real_X = torch.stack([k[:, :n] for k in proj_X], dim=1)  # H_X(G_enc(x))  [B, L, n, nc]
        real_Y = torch.stack([k[:, :n] for k in proj_Y], dim=1)  # H_Y(F_enc(y))
        fake_X = self._fresh(queries_B, self.heads, n)  # H_X(G_enc(F(y)))
        fake_Y = self._fresh(queries_A, self.heads_Y, n)  # H_Y(F_enc(G(x)))
        nets = self.sim_nets
        sim = (self.l1(nets["xr"](real_X), nets["xf"](fake_X)) + self.l1(nets["yr"](real_Y), nets["yf"](fake_Y)))
        return {"SIM": self.lambda_sim * sim}

    def l1(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """‖a − b‖₁ per row ([B, dim] -> [B], summed or averaged over dim), mean over the batch."""
        diff = (a - b).abs()
        return (diff.sum(-1) if self.sim_reduction == "sum" else diff.mean(-1)).mean()
