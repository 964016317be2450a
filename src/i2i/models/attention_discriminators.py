"""Attention discriminators of ASGIT (Lin et al., WACV 2021, Sec. 3.3): logits and a spatial attention map.

* :class:`PHA` — post hoc attention (Eq. 2): ``M = norm(1/c · Σ_i |a_{t,i}|)``, the channel mean of the absolute
  activations of a chosen conv block of an unchanged PatchGAN, min–max normalised. The paper normalises each map;
  the published code normalises with the min/max of the whole batch (``normalize="batch"``, voidstrike/ASGIT,
  models/networks.py).
* :class:`TAM` — trainable attention module (Eq. 3): a trunk branch T and a mask branch A (RAM-style, plain convs),
  ``E = (A + 1) · T``, logits from E, and ``M = Avg_C(A)``. The published mask branch only fits 128×128 inputs
  (a hard-coded resize to ``s2``); here the coarse path is resized to the skip path's size, so any input whose
  side is a multiple of 8 (≥ 32) works.

Both return :class:`~i2i.models.discriminators.DOutput` with the logits [B, 1, h, w] and the attention
[B, 1, h', w'].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from i2i.models.discriminators import Discriminator, DOutput, PatchGAN
from i2i.models.layers import get_norm_layer, init_weights

NORMALIZE = ("image", "batch", "none")


def minmax(a: torch.Tensor, mode: str = "image", eps: float = 1e-8) -> torch.Tensor:
    """Min–max normalise attention maps.

    Args:
        a: [B, 1, h, w].
        mode: ``image`` (each map to [0, 1], the paper), ``batch`` (one min/max over the whole batch, the
            published code) or ``none``.
        eps: guards constant maps.

    Returns:
        [B, 1, h, w].
    """
    if mode == "none":
        return a
    if mode == "batch":
        lo, hi = a.min(), a.max()
    elif mode == "image":
        flat = a.flatten(1)  # [B, h*w]
        lo, hi = flat.min(1).values[:, None, None, None], flat.max(1).values[:, None, None, None]
    else:
        raise ValueError(f"discriminator.normalize={mode!r}: use one of {', '.join(NORMALIZE)}")
    return (a - lo) / (hi - lo + eps)


class PHA(PatchGAN):
    """PatchGAN whose ``attn_layer``-th conv block also yields a post hoc attention map.

    The network and its state_dict keys are exactly :class:`~i2i.models.discriminators.PatchGAN`'s (a PatchGAN
    checkpoint loads as is). A conv block is a conv with its norm, LeakyReLU and (anti-aliased) blur-pool; the map
    is taken at the block's output — published: the third block, 256×32×32 for a 256 input.

    Args:
        input_nc, ndf, n_layers, norm, antialias, init_type, init_gain: as :class:`PatchGAN`.
        attn_layer: 1-based conv block whose activations form the map (published 3; the paper text says 4).
        normalize: ``image`` | ``batch`` | ``none`` (see :func:`minmax`).
    """

    returns_attention = True

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 antialias: bool = True, attn_layer: int = 3, normalize: str = "image", init_type: str | None = None,
                 init_gain: float = 0.02) -> None:
        super().__init__(input_nc, ndf, n_layers, norm, antialias, init_type, init_gain)
        convs = [i for i, m in enumerate(self.model) if isinstance(m, nn.Conv2d)]
        if not 1 <= attn_layer < len(convs):
            raise ValueError(f"discriminator.attn_layer={attn_layer}: use 1..{len(convs) - 1} "
                             f"(the PatchGAN has {len(convs)} convs, the last one gives the logits)")
        if normalize not in NORMALIZE:
            raise ValueError(f"discriminator.normalize={normalize!r}: use one of {', '.join(NORMALIZE)}")
        self.attn_index = convs[attn_layer] - 1  # last module of the block = the module before the next conv
        self.attn_layer, self.normalize = attn_layer, normalize

    def forward(self, x: torch.Tensor) -> DOutput:
        """[B, C, H, W] -> logits [B, 1, h, w], attention [B, 1, H/2^t, W/2^t] in [0, 1]."""
        h, attn = x, None
        for i, module in enumerate(self.model):
            h = module(h)
            if i == self.attn_index:
                attn = h.abs().mean(1, keepdim=True)  # [B, C_t, h_t, w_t] -> [B, 1, h_t, w_t]
        return DOutput(h, minmax(attn, self.normalize))


class TAM(Discriminator):
    """Discriminator with a trainable attention module (published ``AttnDiscriminator``, size-agnostic).

    Layout (ndf = 64, 256 input): ``fe`` Conv(k4, s2)+LReLU -> 64×128²; trunk 2 × [Conv(s2)+norm+LReLU] -> 256×32²;
    mask branch from ``fe``: 2 × [MaxPool(3, 2, 1), Conv3x3, ReLU] -> 64×32², skip = ReLU(Conv3x3), a coarse
    [MaxPool, Conv3x3, ReLU, Conv3x3, ReLU] resized back to the skip's size and added, then Conv3x3 -> 256,
    [mask_norm, ReLU, Conv1x1, mask_norm, Conv1x1, Sigmoid]; output head on ``(A + 1) · T``:
    Conv(k4, s1)+norm+LReLU, Conv(k4, s1) -> 1×30².

    Args:
        input_nc: image channels.
        ndf: filters of the first conv.
        norm: trunk / head norm (``instance`` | ``batch`` | ``none``).
        mask_norm: norm inside the mask branch (published: BatchNorm whatever ``--norm`` says).
        normalize: attention normalisation (``none``: the paper's plain channel mean of the sigmoid mask;
            ``batch``: the published global min–max; ``image``).
        coarse: run the mid convs of the mask branch one pooling lower (a real coarse path at any size); False
            keeps them at the skip resolution (what the published resize to ``s2 = input/8`` amounts to).
        init_type, init_gain: as :class:`~i2i.models.discriminators.PatchGAN`.
    """

    returns_attention = True

    def __init__(self, input_nc: int = 3, ndf: int = 64, norm: str = "instance", mask_norm: str = "batch",
                 normalize: str = "none", coarse: bool = False, init_type: str | None = None,
                 init_gain: float = 0.02) -> None:
        super().__init__()
        if normalize not in NORMALIZE:
            raise ValueError(f"discriminator.normalize={normalize!r}: use one of {', '.join(NORMALIZE)}")
        nl, ml = get_norm_layer(norm), get_norm_layer(mask_norm)
        bias = norm != "batch"
        c1, c4 = ndf, ndf * 4
        self.normalize, self.coarse = normalize, coarse
        self.fe = nn.Sequential(nn.Conv2d(input_nc, c1, 4, 2, 1), nn.LeakyReLU(0.2, True))
        self.trunk = nn.Sequential(nn.Conv2d(c1, c1 * 2, 4, 2, 1, bias=bias), nl(c1 * 2), nn.LeakyReLU(0.2, True),
                                   nn.Conv2d(c1 * 2, c4, 4, 2, 1, bias=bias), nl(c4), nn.LeakyReLU(0.2, True))
        conv = lambda: nn.Conv2d(c1, c1, 3, 1, 1, bias=False)
        self.down = nn.Sequential(nn.MaxPool2d(3, 2, 1), conv(), nn.ReLU(True),
                                  nn.MaxPool2d(3, 2, 1), conv(), nn.ReLU(True))
        self.skip = nn.Sequential(conv(), nn.ReLU(True))
        self.mid = nn.Sequential(*([nn.MaxPool2d(3, 2, 1)] if coarse else []),
                                 conv(), nn.ReLU(True), conv(), nn.ReLU(True))
        self.up = nn.Conv2d(c1, c4, 3, 1, 1, bias=False)
        self.last = nn.Sequential(ml(c4), nn.ReLU(True), nn.Conv2d(c4, c4, 1, bias=False), ml(c4),
                                  nn.Conv2d(c4, c4, 1, bias=False), nn.Sigmoid())
        self.head = nn.Sequential(nn.Conv2d(c4, c4 * 2, 4, 1, 1, bias=bias), nl(c4 * 2), nn.LeakyReLU(0.2, True),
                                  nn.Conv2d(c4 * 2, 1, 4, 1, 1))
        if init_type is not None:
            init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> DOutput:
        """[B, C, H, W] -> logits [B, 1, H/8 - 2, W/8 - 2], attention [B, 1, H/8, W/8]."""
        f = self.fe(x)                                           # [B, ndf, H/2, W/2]
        trunk = self.trunk(f)                                    # [B, 4ndf, H/8, W/8]
        d = self.down(f)                                         # [B, ndf, H/8, W/8]
        skip, mid = self.skip(d), self.mid(d)
        if mid.shape[-2:] != skip.shape[-2:]:
            mid = F.interpolate(mid, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        mask = self.last(self.up(mid + skip))                    # [B, 4ndf, H/8, W/8] in (0, 1)
        if mask.shape[-2:] != trunk.shape[-2:]:  # odd sizes: pooling and strided convs round differently
            mask = F.interpolate(mask, size=trunk.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.head((mask + 1) * trunk)                   # Eq. 3: E = (A + 1) · T
        return DOutput(logits, minmax(mask.mean(1, keepdim=True), self.normalize))
