"""F-LSeSim (Zheng, Cham & Cai, CVPR 2021): the spatially-correlative loss, with fixed or learned features.

The structure of an image is described by self-similarity maps (paper Sec. 3.1, Eq. 1): for a query location i
of a feature map f, ``S_i = f_i^T f_*`` holds the similarity of f_i to every feature f_* of a window around it.
The generator is asked to keep the maps of its source in its translation (Sec. 3.1, Eq. 2):

    L = L_GAN + λ_spatial · d(S(x), S(G(x)))        d: 1 - cos (``loss_mode=cos``) or L1 (``loss_mode=l1``)

averaged over the query locations and the VGG-16 layers ``layers``. FSeSim computes the maps on fixed VGG-16
features; LSeSim puts a learned 1x1-conv head on each layer (Sec. 3.2) and trains the heads in a phase of their
own (``S``, before D and G, as the published ``optimize_parameters``) with a patch-wise InfoNCE objective on the
maps (Sec. 3.2, Eq. 3): the map of a source patch should match the map of the same patch in a positive image
(the translation, detached, and, with ``augment``, a colour-jittered copy of the source) and not the maps of
other patches or of another image (the B image, flipped). In G's step the heads are frozen but differentiable.

Published code: lyndonzheng/F-LSeSim, models/sc_model.py (``SCModel``: phases, ``Spatial_Loss``, the VGG input
normalisation), models/losses.py (``PatchSim``, ``SpatialCorrelativeLoss``, ``VGG16``), options/train_options.py
and scripts/train_sc.sh (settings). Its choices that the paper does not spell out (the dot-product maps with
``tanh``, the top-quarter mask, smooth L1) are the defaults here and keys; docs/flsesim.md lists them. The
paper's section and equation numbers are given as the paper is organised and were not checked against its text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import ColorJitter

from i2i.losses.gan import GANLoss
from i2i.methods.base import Method, Parts
from i2i.methods.cyclegan import ImagePool
from i2i.methods.feedback import Side
from i2i.models.layers import init_weights
from i2i.models.vgg import RELU_INDEX, VGG16Features, load_vgg16

#: published ``--attn_layers 4,7,9`` (positions among the 13 ReLU outputs of VGG-16): relu3_1, relu4_1, relu4_3
DEFAULT_LAYERS = ("relu3_1", "relu4_1", "relu4_3")
#: the generator's distances between self-similarity maps
LOSS_MODES = ("cos", "l1")


# ---------------------------------------------------------------------------------------------- the loss
def sample_locations(feat: torch.Tensor, num_patches: int) -> torch.Tensor:
    """``num_patches`` distinct query locations of a map [B, C, H, W] (all when it has fewer): flat ids [N]
    shared by the batch (as published), drawn on the map's device."""
    n = feat.shape[2] * feat.shape[3]
    return torch.randperm(n, device=feat.device)[:min(num_patches, n)]


def window_ids(ids: torch.Tensor, height: int, width: int, size: int) -> torch.Tensor:
    """Flat ids of the ``size`` x ``size`` window around each location, shifted to lie inside the map: [N, size²].

    The window starts ``size // 2`` before the location along each axis and is clamped to the map.
    """
    top = (ids // width - size // 2).clamp(0, height - size)  # [N]
    left = (ids % width - size // 2).clamp(0, width - size)
    steps = torch.arange(size, device=ids.device)
    rows, cols = top[:, None] + steps, left[:, None] + steps  # [N, size] each
    return (rows[:, :, None] * width + cols[:, None, :]).flatten(1)  # [N, size*size]


def self_similarity(feat: torch.Tensor, ids: torch.Tensor, patch_size: int, use_norm: bool) -> torch.Tensor:
    """Self-similarity maps (paper Eq. 1) of the query locations ``ids``: [B, C, H, W] -> [B, N, K].

    The features are centred per channel over the map; then either L2-normalised per location (``use_norm``:
    cosine similarities) or divided by sqrt(C) with the dot products squashed by ``tanh(s / 10)`` (published
    default). Keys are the ``patch_size`` window around each query (K = patch_size²), or the whole map
    (K = H·W) when the window is not smaller than the map along both axes.
    """
    _, c, h, w = feat.shape
    feat = feat - feat.mean(dim=(2, 3), keepdim=True)
    feat = F.normalize(feat, dim=1) if use_norm else feat / math.sqrt(c)
    flat = feat.flatten(2)  # [B, C, H*W]
    query = flat[:, :, ids].transpose(1, 2)  # [B, N, C]
    if patch_size < h and patch_size < w:
        keys = flat[:, :, window_ids(ids, h, w, patch_size)]  # [B, C, N, K]
        sim = torch.einsum("bnc,bcnk->bnk", query, keys)
    else:
        sim = query @ flat  # [B, N, H*W]
    return sim if use_norm else torch.tanh(sim / 10)


def structure_distance(sim_src: torch.Tensor, sim_tgt: torch.Tensor, mode: str = "cos",
                       keep_top: float | None = 0.25, smooth: bool = True) -> torch.Tensor:
    """d(S_x, S_y) of paper Eq. 2 for maps [B, N, K]: a scalar (mean over the queries; ``l1``: over the entries).

    Args:
        sim_src: maps of the source image.
        sim_tgt: maps of the translation.
        mode: ``cos`` (1 - cosine of the two maps of a query) or ``l1`` (entry-wise).
        keep_top: published: only the entries at least as large as the translation map's ``int(K·keep_top)+1``-th
            largest are compared (the rest are zeroed in both maps), and the L1 mode scales the maps by
            K / int(K·keep_top). ``None``: the whole maps.
        smooth: smooth L1 (β = 1) instead of L1 for the distance (published: smooth unless ``use_norm``).
    """
    k = sim_src.shape[-1]
    scale = 1.0
    if keep_top is not None:
        num = max(int(k * keep_top), 1)
        threshold = sim_tgt.topk(min(num + 1, k), dim=-1).values[..., -1:]  # [B, N, 1]
        keep = sim_tgt >= threshold
        sim_src, sim_tgt, scale = sim_src * keep, sim_tgt * keep, k / num
    distance = F.smooth_l1_loss if smooth else F.l1_loss
    if mode == "l1":
        return distance(scale * sim_src, scale * sim_tgt)
    cos = F.cosine_similarity(sim_src, sim_tgt, dim=-1)  # [B, N]
    return distance(torch.ones_like(cos), cos)


def contrastive_loss(sim_src: torch.Tensor, sim_pos: torch.Tensor, sim_neg: torch.Tensor,
                     tau: float) -> torch.Tensor:
    """Patch-wise InfoNCE on self-similarity maps (paper Eq. 3, published ``compare_sim``): a scalar.

    Maps [B, N, K] are L2-normalised along K. Query i of the source has its positive in map i of ``sim_pos``;
    the logits of a row are ``[src_i·pos_j, src_i·neg_j, pos_i·neg_j]`` over j (3N entries, / tau) and the
    target is the first block's entry i: the other patches of the positive image and every patch of the
    negative image are negatives. Mean over the B·N rows.
    """
    src, pos, neg = (F.normalize(s, dim=-1) for s in (sim_src, sim_pos, sim_neg))
    b, n, _ = src.shape
    logits = torch.cat([src @ pos.transpose(1, 2), src @ neg.transpose(1, 2), pos @ neg.transpose(1, 2)], -1)
    target = torch.arange(n, device=src.device).expand(b, n)  # [B, N]
    return F.cross_entropy(logits.flatten(0, 1) / tau, target.flatten())


class SimilarityHeads(nn.Module):
    """LSeSim's learned features: per VGG layer ``Conv1x1(C, M) - ReLU - Conv1x1(M, M)``, M = max(32, C // 4)
    (published ``SpatialCorrelativeLoss.create_conv``; built eagerly here from the layers' channels).

    Args:
        channels: channels C of each VGG layer.
        init_type: weight init (published: normal).
        init_gain: its gain (published: 0.02).
    """

    def __init__(self, channels: Sequence[int], init_type: str = "normal", init_gain: float = 0.02) -> None:
        super().__init__()
        for i, c in enumerate(channels):  # state_dict keys as the published netF: conv_<i>.0/2.weight|bias
            m = max(32, c // 4)
            setattr(self, f"conv_{i}", nn.Sequential(nn.Conv2d(c, m, 1), nn.ReLU(), nn.Conv2d(m, m, 1)))
        init_weights(self, init_type, init_gain)

    def forward(self, feat: torch.Tensor, layer_pos: int) -> torch.Tensor:
        """[B, C, H, W] -> [B, M, H, W] with the head of layer position ``layer_pos``."""
        return getattr(self, f"conv_{layer_pos}")(feat)


# ---------------------------------------------------------------------------------------------- the method
def check_options(layers: Sequence[str], loss_mode: str, patch_size: int, keep_top: float | None, learned: bool,
                  augment: bool, jitter: Sequence[float], pool_size: int) -> None:
    """Refuse an option that cannot work: one ``ValueError`` naming ``method.<key>`` and the fix."""
    if not layers or any(name not in RELU_INDEX for name in layers):
        raise ValueError(f"method.layers={list(layers)}: VGG-16 ReLU names expected — use some of "
                         f"{', '.join(RELU_INDEX)} (published: {', '.join(DEFAULT_LAYERS)})")
    if loss_mode == "info":
        raise ValueError("method.loss_mode=info: the contrastive objective trains the learned heads "
                         "(method=lsesim); the generator's distance is method.loss_mode=cos or l1")
    if loss_mode not in LOSS_MODES:
        raise ValueError(f"method.loss_mode={loss_mode!r}: use cos or l1")
    if not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"method.patch_size={patch_size!r}: a window side >= 1 (published 64)")
    if keep_top is not None and not 0 < keep_top < 1:
        raise ValueError(f"method.keep_top={keep_top!r}: a fraction in (0, 1) (published 0.25) or null (whole maps)")
    if augment and not learned:
        raise ValueError("method.augment=true only feeds the learned heads' objective — set method.learned=true "
                         "(method=lsesim) or method.augment=false")
    if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
        raise ValueError(f"method.jitter={list(jitter)}: [brightness, contrast, saturation, hue] >= 0 with hue "
                         "<= 0.5 (published [0.5, 0.5, 0.5, 0.3])")
    if not isinstance(pool_size, int) or pool_size < 0:
        raise ValueError(f"method.pool_size={pool_size!r}: an image count >= 0 (published 50)")


class FLSeSim(Method):
    """GAN + spatially-correlative loss; FSeSim (fixed VGG features) or LSeSim (``heads``: learned features).

    Args:
        vgg: the frozen VGG-16 extractor (its ``layers`` are the loss's layers).
        heads: LSeSim's learned heads (one per layer), trained in phase ``S``; ``None``: FSeSim.
        num_patches: query locations per layer (``--patch_nums``).
        patch_size: key window side (``--patch_size``).
        loss_mode: the generator's distance, ``cos`` or ``l1``.
        use_norm: cosine-similarity maps and an L1 distance; ``False``: tanh dot-product maps and smooth L1.
        keep_top: fraction of the translation's largest map entries compared (``None``: all).
        tau: temperature of the heads' contrastive objective.
        augment: add a colour-jittered copy of the A and B images to the heads' objective (positive / negative).
        jitter: ``ColorJitter`` brightness, contrast, saturation, hue of that copy.
        lambda_gan: adversarial weight.
        lambda_spatial: weight of the spatially-correlative loss on (real_A, fake_B).
        lambda_spatial_idt: weight of the same loss on (real_B, G(real_B)).
        lambda_identity: weight of the L1 identity term ‖G(real_B) − real_B‖₁.
        pool_size: fake-image history of the discriminator.
        name: the method's name.
    """

    def __init__(self, vgg: VGG16Features, heads: SimilarityHeads | None = None, num_patches: int = 256,
                 patch_size: int = 64, loss_mode: str = "cos", use_norm: bool = False, keep_top: float | None = 0.25,
                 tau: float = 0.07, augment: bool = False, jitter: Sequence[float] = (0.5, 0.5, 0.5, 0.3),
                 lambda_gan: float = 1.0, lambda_spatial: float = 10.0, lambda_spatial_idt: float = 0.0,
                 lambda_identity: float = 0.0, pool_size: int = 50, name: str = "fsesim") -> None:
        super().__init__(lambda_gan, name)
        check_options(vgg.layers, loss_mode, patch_size, keep_top, heads is not None, augment, jitter, pool_size)
        self.vgg, self.heads = vgg, heads
        self.num_patches, self.patch_size, self.loss_mode = num_patches, patch_size, loss_mode
        self.use_norm, self.keep_top, self.tau = use_norm, keep_top, tau
        self.augment, self.jitter = augment, ColorJitter(*jitter)
        self.lambda_spatial, self.lambda_spatial_idt = lambda_spatial, lambda_spatial_idt
        self.lambda_identity = lambda_identity
        self.pool = ImagePool(pool_size)
        self.update_order = ("S", "D", "G") if heads is not None else ("D", "G")

    @classmethod
    def create(cls, parts: Parts, vgg_weights: str | None = None, layers: Sequence[str] = DEFAULT_LAYERS,
               learned: bool = False, head_init_type: str = "normal", head_init_gain: float = 0.02,
               **options) -> FLSeSim:
        """Check the options, read the VGG-16 from ``vgg_weights`` and, for LSeSim, build the heads."""
        layers = list(layers)
        check_options(layers, options.get("loss_mode", "cos"), options.get("patch_size", 64),
                      options.get("keep_top", 0.25), learned, options.get("augment", False),
                      options.get("jitter", (0.5, 0.5, 0.5, 0.3)), options.get("pool_size", 50))
        if parts.data.channels not in (1, 3):
            raise ValueError(f"the VGG-16 reads RGB (or grey) images, not data.channels={parts.data.channels} — "
                             "use data.channels=3")
        vgg = load_vgg16(vgg_weights, layers)
        heads = SimilarityHeads([vgg.channels(n) for n in layers], head_init_type, head_init_gain) if learned else None
        return cls(vgg, heads, **options)

    def optimizer_modules(self) -> dict[str, list[nn.Module | None]]:
        """LSeSim's heads under their own phase ``S`` (Adam at ``optim.lr_f``); the VGG has no parameters."""
        groups = super().optimizer_modules()
        if self.heads is not None:
            groups["S"] = [self.heads]
        return groups

    # --- the loss ------------------------------------------------------------------------------------
    def spatial_loss(self, source: torch.Tensor, target: torch.Tensor,
                     other: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the layers of the map distance of (source, target) images [B, C, H, W] in [-1, 1]; with
        ``other`` (negatives) the heads' contrastive objective with ``target`` as the positives."""
        images = [source, target] + ([other] if other is not None else [])
        feats = [self.vgg(self.vgg.normalize(x)) for x in images]  # per image: one [B, C_l, H_l, W_l] per layer
        total = source.new_zeros(())
        with torch.autocast(source.device.type, enabled=False):  # the maps in float32
            for pos, layer_feats in enumerate(zip(*feats)):
                layer_feats = [f.float() for f in layer_feats]
                if self.heads is not None:
                    layer_feats = [self.heads(f, pos) for f in layer_feats]
                ids = sample_locations(layer_feats[0], self.num_patches)
                sims = [self_similarity(f, ids, self.patch_size, self.use_norm) for f in layer_feats]
                if other is None:
                    total = total + structure_distance(*sims, self.loss_mode, self.keep_top, not self.use_norm)
                else:
                    total = total + contrastive_loss(*sims, self.tau)
        return total / len(self.vgg.layers)

    def colour_jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Each image [C, H, W] of x [B, C, H, W] in [-1, 1] with its own random colour jitter (published
        ``transform_aug``: brightness, contrast, saturation, hue in random order); grey images become RGB."""
        x01 = (_rgb(x) + 1) * 0.5
        return torch.stack([self.jitter(img) for img in x01]) * 2 - 1

    # --- the steps -----------------------------------------------------------------------------------
    def forward_G(self, G: nn.Module, batch: dict) -> dict:
        """fake_B = G(real_A) and, with an identity term, idt_B = G(real_B) in the same pass."""
        real_A = batch["A"]
        idt = self.training and (self.lambda_identity > 0 or self.lambda_spatial_idt > 0)
        real = torch.cat([real_A, batch["B"]]) if idt else real_A  # [B or 2B, C, H, W]
        return self.split_translations(self.translate(G, real, batch, side=Side.A), real_A.shape[0])

    def phase_losses(self, phase: str, G: nn.Module, D: nn.Module, batch: dict, out: dict,
                     gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        """Phase ``S``: the heads' contrastive objective on real images (published ``backward_F``).

        Positive of real_A: the detached translation (and, with ``augment``, a jittered real_A); negative: real_B
        (and a jittered real_B), flipped vertically and horizontally.
        """
        real_A, real_B, fake = _rgb(batch["A"]), _rgb(batch["B"]), _rgb(out["fake_B"].detach())
        source, positive, negative = real_A, fake, real_B
        if self.augment:
            source = torch.cat([real_A, real_A])
            positive = torch.cat([fake, self.colour_jitter(real_A)])
            negative = torch.cat([real_B, self.colour_jitter(real_B)])
        return {"S_contrastive": self.spatial_loss(source, positive, negative.flip((2, 3)))}

    def discriminator_losses(self, D: nn.Module, batch: dict, out: dict, gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        """The LSGAN-style D objective with D's fakes drawn through the 50-image history pool (published)."""
        return super().discriminator_losses(D, batch, {**out, "fake_B": self.pool.query(out["fake_B"].detach())},
                                            gan_loss)

    def generator_losses(self, G: nn.Module, D: nn.Module, batch: dict, out: dict,
                         gan_loss: GANLoss) -> dict[str, torch.Tensor]:
        terms, _ = self.adversarial_terms(D, batch, out, gan_loss)
        if self.lambda_spatial > 0:
            terms["G_spatial"] = self.lambda_spatial * self.spatial_loss(batch["A"], out["fake_B"])
        if "idt_B" in out and self.lambda_spatial_idt > 0:
            terms["G_spatial_idt"] = self.lambda_spatial_idt * self.spatial_loss(batch["B"], out["idt_B"])
        if "idt_B" in out and self.lambda_identity > 0:
            terms["idt_B"] = self.lambda_identity * F.l1_loss(out["idt_B"], batch["B"])
        return terms


def _rgb(x: torch.Tensor) -> torch.Tensor:
    """[B, 1 or 3, H, W] -> [B, 3, H, W] (a grey channel repeated)."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
