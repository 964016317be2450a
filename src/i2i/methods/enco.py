"""EnCo (Cai et al., "Constraining Multi-scale Pairwise Features between Encoder and Decoder Using Contrastive
Learning for Unpaired Image-to-Image Translation", arXiv 2022): Eq. 1-5 with DAG sampling (Algorithm 1).

One generator pass gives, for every same-scale pair (h_l, h_l̄), the encoder feature h_l (keys: positive and
negatives, detached) and the decoder feature h_l̄ (queries). Both go through one shared two-layer projection
head per pair and PatchNCE (τ = 0.07); nothing is re-encoded. The objective (Eq. 5)::

    L = L_GAN (LSGAN) + λ_NCE · mean_pairs PatchNCE + λ_IDT · ||G(y) − y||_1   (identity: first n_epochs only)

The identity image comes from the same pass: G runs on cat(real_A, real_B) while the term is active, and only
the real_A rows enter the contrastive loss. ``published_weighting`` reproduces the published code, which
multiplies (λ_NCE·L_NCE + λ_IDT·L_IDT) by 0.5 while the identity term is active (XiudingCai/PyTorch-EnCo,
models/enco_model.py ``compute_G_loss``);
``decoupled`` its PatchHDCELoss (InfoNCE value, decoupled-contrastive gradient). See docs/enco.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from i2i.losses.gan import GANLoss
from i2i.losses.patchnce import patch_nce_loss
from i2i.methods.base import Method, Parts
from i2i.methods.feedback import Side
from i2i.models.projection import ProjectionHeads
from i2i.samplers.base import PatchSampler, PhaseSampler, SampleContext
from i2i.samplers.dag import DAGSampler

DEFAULT_PAIRS = ((3, 28), (7, 24), (13, 18))


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def pair_channels(G: nn.Module, pairs: Sequence[Sequence[int]], size: int | tuple[int, int] = 256) -> list[int]:
    """Check that every (encoder, decoder) pair has equal feature shapes and return their channels.

    Args:
        G: a generator with ``feature_shapes(layers, size)`` (``ResnetGenerator``).
        pairs: (encoder index, decoder index) module indices.
        size: input crop size.

    Returns:
        Channels of each pair.

    Raises:
        ValueError: a malformed or mismatched pair (the message lists valid partners).
    """
    pairs = [tuple(int(i) for i in p) for p in pairs]
    if not pairs or any(len(p) != 2 or p[0] >= p[1] for p in pairs):
        raise ValueError("give a non-empty list of [encoder, decoder] module indices with encoder < decoder, "
                         "e.g. [[3, 28], [7, 24], [13, 18]]")
    n_modules = len(G.model)
    all_shapes = G.feature_shapes(range(n_modules), size)
    channels = []
    for enc, dec in pairs:
        if dec >= n_modules:
            raise ValueError(f"pair [{enc}, {dec}]: the generator has {n_modules} modules (indices 0..{n_modules - 1})")
        if all_shapes[enc] != all_shapes[dec]:
            partners = [i for i in range(enc + 1, n_modules) if all_shapes[i] == all_shapes[enc]]
            cfg = getattr(G, "config", {})
            arch = ", ".join(f"{k}={cfg[k]}" for k in ("ngf", "n_blocks", "antialias", "antialias_up") if k in cfg)
            raise ValueError(f"pair [{enc}, {dec}] has shapes {_fmt(all_shapes[enc])} vs {_fmt(all_shapes[dec])} "
                             f"for this generator ({arch}, crop {size}); layers with the shape of {enc}: {partners}")
        channels.append(all_shapes[enc][0])
    return channels


def decoupled_nce_loss(q: torch.Tensor, k: torch.Tensor, tau: float = 0.07, negatives: str = "image",
                       diagonal: float = -10.0, detach_keys: bool = True) -> torch.Tensor:
    """Published enco2 ``PatchHDCELoss``: the value of InfoNCE, the gradient of the decoupled loss.

    v = logsumexp_j(q·k_j⁻/τ) − q·k⁺/τ (positive left out of the denominator); loss = CE.detach() + e^(v−v.detach()) − 1.

    Args:
        q: [B, N, C] L2-normalised queries.
        k: [B, N, C] L2-normalised keys (detached here).
        tau: temperature.
        negatives: ``image`` or ``batch``.
        diagonal: cosine written for a query's own key among the negatives.
        detach_keys: stop the gradient at ``k`` (see :func:`~i2i.losses.patchnce.patch_nce_loss`).

    Returns:
        Per-patch loss [B, N].
    """
    b, n, c = q.shape
    k = k.detach() if detach_keys else k
    ce = patch_nce_loss(q, k, tau, negatives, diagonal)  # [B, N]
    l_pos = (q * k).sum(-1)  # [B, N]
    qq, kk = (q.reshape(1, b * n, c), k.reshape(1, b * n, c)) if negatives == "batch" else (q, k)
    l_neg = torch.bmm(qq, kk.transpose(1, 2))  # [b', N', N']
    eye = torch.eye(l_neg.shape[-1], device=q.device, dtype=torch.bool)
    l_neg = l_neg.masked_fill(eye, diagonal).reshape(b, n, -1).float()  # [B, N, N']
    v = torch.logsumexp(l_neg / tau, dim=-1) - l_pos.float() / tau  # [B, N]
    return ce.detach() + torch.exp(v - v.detach()) - 1.0


class EnCo(Method):
    """Encoder–decoder pairwise contrastive translation.

    Args:
        feature_channels: channels of each pair (from :func:`pair_channels`).
        pairs: (encoder, decoder) generator module indices; default the anti-aliased ResNet-9 pairs.
        num_patches: anchors per image per pair (K).
        nc: projection head width.
        tau: temperature.
        lambda_gan: adversarial weight.
        lambda_nce: λ_NCE (paper 2).
        lambda_idt: λ_IDT of the L1 identity term (paper 10); 0 disables it.
        idt_epochs: the identity term is active for epochs 1..idt_epochs (paper: the first n_epochs); None = always.
        published_weighting: multiply (NCE + IDT) by 0.5 while the identity term is active, as the published code.
        shared_head: one projection head per pair for queries and keys (paper); False = two heads (Table 3 E).
        decoupled: published PatchHDCELoss gradient instead of InfoNCE's.
        flip_augment: published ``--flip_equivariance``: flip real_A and real_B horizontally, independently,
            each with probability 0.5 per step (an extra augmentation, not FastCUT's equivariance).
        negatives: ``image`` (internal negatives) or ``batch``.
        diagonal: cosine written for a query's own key among the negatives.
        sampler: patch sampler (default DAG with k=4, β=0.5).
        init_type: projection head init.
        init_gain: projection head init gain.
        name: the method's name.
    """

    def __init__(self, feature_channels: Sequence[int], pairs: Sequence[Sequence[int]] = DEFAULT_PAIRS,
                 num_patches: int = 256, nc: int = 256, tau: float = 0.07, lambda_gan: float = 1.0,
                 lambda_nce: float = 2.0, lambda_idt: float = 10.0, idt_epochs: int | None = None,
                 published_weighting: bool = False, shared_head: bool = True, decoupled: bool = False,
                 flip_augment: bool = False, negatives: str = "image", diagonal: float = -10.0,
                 sampler: PatchSampler | None = None, init_type: str = "xavier", init_gain: float = 0.02,
                 name: str = "enco") -> None:
        super().__init__(lambda_gan, name)
        self.pairs = [tuple(int(i) for i in p) for p in pairs]
        if len(feature_channels) != len(self.pairs):
            raise ValueError("feature_channels and pairs must have the same length")
        self.enc_layers = [e for e, _ in self.pairs]
        self.dec_layers = [d for _, d in self.pairs]
        self.num_patches, self.tau = num_patches, tau
        self.lambda_nce, self.lambda_idt, self.idt_epochs = lambda_nce, lambda_idt, idt_epochs
        self.published_weighting, self.decoupled, self.flip_augment = published_weighting, decoupled, flip_augment
        self.negatives, self.diagonal = negatives, diagonal
        self.sampler = sampler if sampler is not None else DAGSampler()
        if not isinstance(self.sampler, PatchSampler) or isinstance(self.sampler, PhaseSampler):
            raise ValueError(f"method.sampler={type(self.sampler).__name__}: EnCo takes a patch sampler without a "
                             "network of its own — select one with method/sampler=dag or method/sampler=random")
        self.heads = ProjectionHeads(feature_channels, nc, init_type, init_gain)  # queries (and keys if shared)
        self.heads_k = None if shared_head else ProjectionHeads(feature_channels, nc, init_type, init_gain)

    @classmethod
    def create(cls, parts: Parts, **options) -> EnCo:
        """Checks that every pair has equal shapes at the training crop size and sizes the heads by them."""
        pairs = [[int(i) for i in p] for p in options.pop("pairs", DEFAULT_PAIRS)]
        try:
            channels = pair_channels(parts.G, pairs, parts.data.crop_size)
        except ValueError as e:
            raise ValueError(f"method.pairs={pairs}: {e} — set method.pairs to same-shape pairs") from None
        options.setdefault("init_type", parts.init_type)
        options.setdefault("init_gain", parts.init_gain)
        return cls(channels, pairs, **options)

    def optimizer_modules(self) -> dict[str, list[nn.Module | None]]:
        """The projection heads (queries' and, when separate, keys') with the method's own Adam (``optim.lr_f``)."""
        groups = super().optimizer_modules()
        groups["F"] += [self.heads, self.heads_k]
        return groups

    @property
    def identity_active(self) -> bool:
        """Whether the identity term (and the same-pass translation of real_B) is on this epoch."""
        on_epoch = self.idt_epochs is None or self.epoch <= self.idt_epochs
        return self.training and self.lambda_idt > 0 and on_epoch

    def _flip_batch(self, batch: dict) -> None:
        """Published extra augmentation; the coins are tossed on the CPU generator (no device sync)."""
        for key in ("A", "B"):
            if bool(torch.rand(()) < 0.5):
                batch[key] = batch[key].flip(3)  # the loop's later calls (D step, visuals) see the same images
                params = batch.get(f"{key}_params")
                if params is not None:  # keep the recorded flip true (the feedback cache reads it)
                    batch[f"{key}_params"] = torch.cat([params[:, :4], 1 - params[:, 4:5]], dim=1)

    def forward_G(self, G: nn.Module, batch: dict) -> dict:
        if self.flip_augment and self.training:
            self._flip_batch(batch)
        real_A = batch["A"]
        n = real_A.shape[0]
        real = torch.cat([real_A, batch["B"]]) if self.identity_active else real_A  # [B or 2B, C, H, W]
        if self.lambda_nce > 0:
            fake, feats = self.translate(G, real, batch, side=Side.A, layers=self.enc_layers + self.dec_layers)
            p = len(self.pairs)
            out = {"enc_feats": [f[:n] for f in feats[:p]], "dec_feats": [f[:n] for f in feats[p:]]}
        else:
            fake, out = self.translate(G, real, batch, side=Side.A), {}
        out.update(self.split_translations(fake, n))
        return out

    def generator_losses(self, G: nn.Module, D: nn.Module, batch: dict, out: dict,
                         gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        terms, pred_fake = self.adversarial_terms(D, batch, out, gan_loss)
        has_idt = "idt_B" in out
        weight = 0.5 if (self.published_weighting and has_idt) else 1.0
        if self.lambda_nce > 0:
            nce = self.nce_per_image(out["enc_feats"], out["dec_feats"], pred_fake.logits.detach())  # [B]
            terms["NCE"] = weight * self.lambda_nce * nce.mean()
        if has_idt:
            terms["IDT"] = weight * self.lambda_idt * F.l1_loss(out["idt_B"], batch["B"])
        return terms

    def nce_per_image(self, feats_enc: list[torch.Tensor], feats_dec: list[torch.Tensor],
                      score_map: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over pairs and anchors of the contrastive loss, per image: [B].

        Args:
            feats_enc: encoder features per pair, [B, C_l, H_l, W_l] (keys; detached here, before the head).
            feats_dec: decoder features per pair, same shapes (queries).
            score_map: D(fake_B) detached, [B, 1, h, w] (for DAG).
        """
        loss_fn = decoupled_nce_loss if self.decoupled else patch_nce_loss
        # shared head: projected keys detached (published PatchHDCELoss); separate heads: only the encoder
        # features are, so the key head is trained too (published --two_F, PairwisePatchNCELoss)
        separate = self.heads_k is not None
        heads_k = self.heads_k if separate else self.heads
        total = 0.0
        for pos, (fe, fd) in enumerate(zip(feats_enc, feats_dec)):
            ctx = SampleContext(layer_pos=pos, score_map=score_map)
            k, q = self.sampler(fe.detach(), fd, self.num_patches, ctx)  # [B, N, C] each
            q, k = self.heads(q, pos), heads_k(k, pos)
            total = total + loss_fn(q, k, self.tau, self.negatives, self.diagonal, detach_keys=not separate).mean(1)
        return total / len(feats_enc)
