"""Building blocks shared by the generators and discriminators.

Anti-aliased down/up-sampling follows Zhang, "Making Convolutional Networks Shift-Invariant Again" (ICML 2019),
in the form the CUT code uses (taesungp/contrastive-unpaired-translation, models/networks.py
``Downsample``/``Upsample``): the binomial filters are registered as persistent buffers
named ``filt`` so that published state_dicts load key for key.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


def binomial_filter(size: int) -> torch.Tensor:
    """2-D binomial filter of ``size`` taps, normalised to sum 1.

    Returns:
        Tensor of shape [size, size].
    """
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    filt = torch.outer(row, row)
    return (filt / filt.sum()).float()


class Downsample(nn.Module):
    """Blur then subsample by 2: reflect pad 1, depthwise 3x3 binomial conv with stride 2.

    Shape:
        [B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)]
    """

    def __init__(self, channels: int, filt_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.channels, self.stride = channels, stride
        self.pad = nn.ReflectionPad2d((filt_size - 1) // 2)
        self.register_buffer("filt", binomial_filter(filt_size)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(x), self.filt, stride=self.stride, groups=x.shape[1])


class Upsample(nn.Module):
    """Upsample by 2 with a blurred transposed conv: replicate pad 1, depthwise 4x4 binomial (x stride²), crop.

    Shape:
        [B, C, H, W] -> [B, C, 2H, 2W]
    """

    def __init__(self, channels: int, filt_size: int = 4, stride: int = 2) -> None:
        super().__init__()
        self.channels, self.stride, self.filt_size = channels, stride, filt_size
        self.pad_size = (filt_size - 1) // 2
        self.pad = nn.ReplicationPad2d(1)
        filt = binomial_filter(filt_size) * stride**2
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(self.pad(x), self.filt, stride=self.stride, padding=1 + self.pad_size,
                                 groups=x.shape[1])[:, :, 1:, 1:]
        if self.filt_size % 2 == 0:
            out = out[:, :, :-1, :-1]
        return out


def get_norm_layer(norm: str):
    """Return a constructor ``f(num_features) -> nn.Module`` for ``instance``, ``batch`` or ``none``.

    Instance norm has no affine parameters and no running statistics (published default), so it adds no
    state_dict keys.
    """
    if norm == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm == "none":
        return lambda _channels: nn.Identity()
    raise ValueError(f"norm={norm!r} is not supported: use instance, batch or none")


def init_weights(net: nn.Module, init_type: str = "xavier", gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights in place as the published ``init_weights`` does; biases to 0.

    Args:
        net: the network.
        init_type: ``normal`` | ``xavier`` | ``kaiming`` | ``orthogonal``.
        gain: std for ``normal``, gain for ``xavier`` and ``orthogonal``.

    Returns:
        The same network.
    """

    def init_fn(m: nn.Module) -> None:
        name = m.__class__.__name__
        weight = getattr(m, "weight", None)
        if isinstance(weight, torch.Tensor) and ("Conv" in name or "Linear" in name):
            if init_type == "normal":
                nn.init.normal_(weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                nn.init.orthogonal_(weight, gain=gain)
            else:
                raise ValueError(f"init_type={init_type!r} is not supported: use normal, xavier, kaiming or orthogonal")
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif name == "BatchNorm2d" and weight is not None:
            nn.init.normal_(weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    return net.apply(init_fn)
