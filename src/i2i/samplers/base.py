"""The patch-sampler seam.

A sampler is a callable ``sampler(feat_k, feat_q, num_patches, ctx) -> (k, q)``: it receives the key features
(source image) and query features (translated image) of one layer, both [B, C, H, W], and returns the patch
vectors to contrast, both [B, N, C] (gathered at shared locations, or routed through attention). Samplers
are separate from the loss so that any method can use any sampler (CUT + DAG, QS-Attn + DAG).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SampleContext:
    """What a sampler may need besides the features.

    Attributes:
        layer_pos: position of the layer in the method's layer list.
        score_map: discriminator logits on the translated image, detached, [B, 1, h, w] (DAG), or None.
    """

    layer_pos: int = 0
    score_map: torch.Tensor | None = None


def flatten_hw(feat: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C]."""
    return feat.flatten(2).transpose(1, 2)


def gather_patches(feat: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Gather locations of a feature map.

    Args:
        feat: [B, C, H, W].
        ids: flat location ids, [N] (shared by the batch) or [B, N] (per image).

    Returns:
        [B, N, C].
    """
    flat = flatten_hw(feat)  # [B, HW, C]
    if ids.dim() == 1:
        return flat[:, ids]
    return torch.gather(flat, 1, ids.unsqueeze(-1).expand(-1, -1, flat.shape[-1]))
