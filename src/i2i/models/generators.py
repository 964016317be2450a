"""ResNet generator of CUT / CycleGAN (Johnson et al. 2016), with the published module order and state_dict keys.

The module sequence ``self.model`` reproduces the published ``ResnetGenerator`` index for index
(taesungp/contrastive-unpaired-translation, models/networks.py), so ``layers=[0, 4, 8, 12, 16]`` selects the same
features as the CUT code and official ``latest_net_G.pth``
files load without conversion. Anti-aliased down/up-sampling is on by default (CUT, QS-Attn, EnCo); with both
switched off the network is the classic CycleGAN generator used by ASGIT.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from i2i.models.layers import Downsample, Upsample, get_norm_layer, init_weights


def _pad(padding_type: str, size: int) -> tuple[list[nn.Module], int]:
    if padding_type == "reflect":
        return [nn.ReflectionPad2d(size)], 0
    if padding_type == "replicate":
        return [nn.ReplicationPad2d(size)], 0
    if padding_type == "zero":
        return [], size
    raise ValueError(f"padding_type={padding_type!r} is not supported: use reflect, replicate or zero")


class ResnetBlock(nn.Module):
    """``x + conv_block(x)`` with two 3x3 convs (no ReLU after the addition).

    ``conv_block`` indices match the published block: 0 pad, 1 conv, 2 norm, 3 ReLU, [dropout], pad, conv, norm.
    """

    def __init__(self, dim: int, padding_type: str, norm_layer, use_dropout: bool, use_bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(2):
            pad, p = _pad(padding_type, 1)
            layers += pad + [nn.Conv2d(dim, dim, 3, padding=p, bias=use_bias), norm_layer(dim)]
            if i == 0:
                layers.append(nn.ReLU(True))
                if use_dropout:
                    layers.append(nn.Dropout(0.5))
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Encoder - residual blocks - decoder generator.

    Args:
        input_nc: input channels (3 for RGB; 4 when an attention map is fed as a 4th channel).
        output_nc: output channels.
        ngf: filters of the first conv.
        n_blocks: residual blocks (9 for 256x256, 6 for 128x128 in the published code).
        n_downsampling: stride-2 stages before the blocks (and upsampling stages after them); the published code
            has 2. With 1 the blocks run at half resolution on ``2 * ngf`` channels: the same FLOPs per block as
            2 stages at ``4 * ngf``, finer outlines, a smaller receptive field.
        norm: ``instance`` | ``batch`` | ``none``.
        antialias: blur-pool downsampling (CUT default); False gives stride-2 convs.
        antialias_up: blurred upsampling (CUT default); False gives transposed convs.
        use_dropout: dropout in the residual blocks (published default: off).
        padding_type: ``reflect`` | ``replicate`` | ``zero`` for the residual blocks.
        init_type: initialise the weights as the published ``init_weights`` (``xavier`` | ``normal`` | ``kaiming`` |
            ``orthogonal``); None keeps PyTorch's default initialisation.
        init_gain: gain / std of that initialisation.

    Shape:
        [B, input_nc, H, W] -> [B, output_nc, H, W] for H, W divisible by ``2**n_downsampling`` (4 by default).
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", antialias: bool = True, antialias_up: bool = True,
                 use_dropout: bool = False, padding_type: str = "reflect", init_type: str | None = None,
                 init_gain: float = 0.02, n_downsampling: int = 2) -> None:
        super().__init__()
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__", "init_type", "init_gain")}
        if n_blocks < 0:
            raise ValueError(f"generator.n_blocks={n_blocks} must be >= 0")
        if n_downsampling < 0:
            raise ValueError(f"generator.n_downsampling={n_downsampling} must be >= 0")
        self.input_nc, self.output_nc, self.ngf, self.n_blocks = input_nc, output_nc, ngf, n_blocks
        self.n_downsampling = n_downsampling
        norm_layer = get_norm_layer(norm)
        use_bias = norm == "instance" or norm == "none"
        model: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=use_bias),
                                  norm_layer(ngf), nn.ReLU(True)]
        for i in range(n_downsampling):  # downsampling
            c_in, c_out = ngf * 2**i, ngf * 2 ** (i + 1)
            if antialias:
                model += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=use_bias), norm_layer(c_out), nn.ReLU(True),
                          Downsample(c_out)]
            else:
                model += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=use_bias), norm_layer(c_out),
                          nn.ReLU(True)]
        dim = ngf * 2**n_downsampling
        model += [ResnetBlock(dim, padding_type, norm_layer, use_dropout, use_bias) for _ in range(n_blocks)]
        for i in range(n_downsampling):  # upsampling
            c_in, c_out = ngf * 2 ** (n_downsampling - i), ngf * 2 ** (n_downsampling - 1 - i)
            if antialias_up:
                model += [Upsample(c_in), nn.Conv2d(c_in, c_out, 3, padding=1, bias=use_bias), norm_layer(c_out),
                          nn.ReLU(True)]
            else:
                model += [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=use_bias),
                          norm_layer(c_out), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*model)
        if init_type is not None:
            init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor, layers: Sequence[int] = (), encode_only: bool = False):
        """Translate ``x`` and optionally return intermediate features.

        Args:
            x: [B, input_nc, H, W] in [-1, 1].
            layers: indices into ``self.model`` whose outputs are returned, in the given order.
            encode_only: stop after the last requested layer and return only the features.

        Returns:
            ``fake`` if ``layers`` is empty; ``feats`` if ``encode_only``; otherwise ``(fake, feats)``.
        """
        if not layers:
            return self.model(x)
        wanted = {layer: pos for pos, layer in enumerate(layers)}
        last = max(wanted)
        if last >= len(self.model) or min(wanted) < 0:
            raise ValueError(f"layers {list(layers)} out of range: the generator has {len(self.model)} modules")
        feats: list[torch.Tensor | None] = [None] * len(layers)
        h = x
        for idx, module in enumerate(self.model):
            h = module(h)
            if idx in wanted:
                feats[wanted[idx]] = h
            if encode_only and idx == last:
                return feats
        return h, feats

    def feature_shapes(self, layers: Sequence[int], size: int | tuple[int, int] = 256,
                       input_nc: int | None = None) -> list[tuple[int, int, int]]:
        """(C, H, W) of each requested layer for a ``size`` input, from a shape-only (meta) dry run."""
        h, w = (size, size) if isinstance(size, int) else size
        probe = torch.empty(1, input_nc or self.input_nc, h, w, device="meta")
        with torch.device("meta"):
            shadow = ResnetGenerator(**self.config)  # same architecture, no storage
        feats = _meta_forward(shadow.model, probe, layers)
        return [tuple(f.shape[1:]) for f in feats]

    def feature_channels(self, layers: Sequence[int]) -> list[int]:
        """Channels of each requested layer (known before any data is seen: projection heads are built eagerly)."""
        return [c for c, _, _ in self.feature_shapes(layers, 64)]


def _meta_forward(model: nn.Sequential, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
    """Run a meta-device ``model`` on a meta tensor (shapes only, no compute)."""
    wanted = set(layers)
    missing = {i for i in wanted if not 0 <= i < len(model)}
    if missing:
        raise ValueError(f"layers {sorted(missing)} out of range: the generator has {len(model)} modules")
    out: dict[int, torch.Tensor] = {}
    for idx, module in enumerate(model[: max(wanted) + 1]):
        x = module(x)
        if idx in wanted:
            out[idx] = x
    return [out[i] for i in layers]
