"""PatchGAN discriminator (Isola et al. 2017) with the published CUT module order and state_dict keys.

With ``antialias=True`` (CUT, QS-Attn, EnCo default) each stride-2 conv becomes a stride-1 conv, LeakyReLU and a
blur-pool ``Downsample`` (taesungp/contrastive-unpaired-translation, models/networks.py ``NLayerDiscriminator``);
with ``antialias=False`` it is the classic 70x70 PatchGAN.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import nn

from i2i.models.layers import Downsample, get_norm_layer, init_weights


class DOutput(NamedTuple):
    """What every discriminator returns.

    Attributes:
        logits: real/fake logits (no sigmoid), [B, 1, h, w].
        attention: spatial attention map in [0, 1], [B, 1, h', w'], from an attention discriminator
            (``returns_attention``); None otherwise.
    """

    logits: torch.Tensor
    attention: torch.Tensor | None = None


class Discriminator(nn.Module):
    """Base of the discriminators: ``forward(x [B, C, H, W]) -> DOutput``.

    Attributes:
        returns_attention: whether :attr:`DOutput.attention` is set (what discriminator feedback needs).
    """

    returns_attention: ClassVar[bool] = False


class PatchGAN(Discriminator):
    """N-layer PatchGAN returning a map of real/fake logits (no sigmoid).

    Args:
        input_nc: input channels.
        ndf: filters of the first conv.
        n_layers: number of downsampling conv blocks (3 is the published ``basic`` D).
        norm: ``instance`` | ``batch`` | ``none``.
        antialias: blur-pool downsampling.
        init_type: initialise the weights as the published ``init_weights`` (``xavier`` | ``normal`` | ``kaiming`` |
            ``orthogonal``); None keeps PyTorch's default initialisation.
        init_gain: gain / std of that initialisation.

    Shape:
        [B, input_nc, 256, 256] -> [B, 1, 30, 30] (n_layers 3, either variant).
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 antialias: bool = True, init_type: str | None = None, init_gain: float = 0.02) -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = norm != "batch"
        kw, padw = 4, 1
        if antialias:
            seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kw, 1, padw), nn.LeakyReLU(0.2, True), Downsample(ndf)]
        else:
            seq = [nn.Conv2d(input_nc, ndf, kw, 2, padw), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            if antialias:
                seq += [nn.Conv2d(ndf * prev, ndf * mult, kw, 1, padw, bias=use_bias), norm_layer(ndf * mult),
                        nn.LeakyReLU(0.2, True), Downsample(ndf * mult)]
            else:
                seq += [nn.Conv2d(ndf * prev, ndf * mult, kw, 2, padw, bias=use_bias), norm_layer(ndf * mult),
                        nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, kw, 1, padw, bias=use_bias), norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, kw, 1, padw)]
        self.model = nn.Sequential(*seq)
        if init_type is not None:
            init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> DOutput:
        """[B, C, H, W] -> logits [B, 1, h, w] (no attention)."""
        return DOutput(self.model(x))
