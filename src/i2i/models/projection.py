"""Per-layer projection heads of PatchNCE (``PatchSampleF`` with ``netF=mlp_sample`` in the CUT code).

Each selected generator layer gets ``Linear(C_l, nc) - ReLU - Linear(nc, nc)``; outputs are L2-normalised.
Unlike the published code the heads are built eagerly from the generator's known feature channels, so the
optimizer exists before the first batch (no "data-dependent initialisation").
State-dict keys match the published ``mlp_<i>.0/2.weight|bias``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from i2i.models.layers import init_weights


def l2_normalize(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """x / (||x||_2 + eps) along the last dim, as the published ``Normalize(2)``."""
    return x / (x.norm(p=2, dim=-1, keepdim=True) + eps)


class ProjectionHeads(nn.Module):
    """One two-layer MLP per feature layer.

    Args:
        in_channels: channels of each selected generator layer.
        nc: hidden and output width (256 in the papers); ``nc=0`` means no MLP (``netF=sample``), only L2 norm.
        init_type: weight init (published: xavier).
        init_gain: init gain (published: 0.02).
    """

    def __init__(self, in_channels: Sequence[int], nc: int = 256, init_type: str = "xavier",
                 init_gain: float = 0.02) -> None:
        super().__init__()
        self.in_channels, self.nc = list(in_channels), nc
        for i, c in enumerate(self.in_channels):
            if nc > 0:
                setattr(self, f"mlp_{i}", nn.Sequential(nn.Linear(c, nc), nn.ReLU(), nn.Linear(nc, nc)))
        init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor, layer_pos: int) -> torch.Tensor:
        """Project and normalise patch vectors of one layer: [..., C_l] -> [..., nc]."""
        if self.nc > 0:
            x = getattr(self, f"mlp_{layer_pos}")(x)
        return l2_normalize(x)
