"""The patch-sampler seam.

A sampler (:class:`PatchSampler`) is a callable ``sampler(feat_k, feat_q, num_patches, ctx) -> (k, q)``: it
receives the key features (source image) and query features (translated image) of one layer, both [B, C, H, W],
and returns the patch vectors to contrast, both [B, N, C] (gathered at shared locations, or routed through
attention). Samplers are separate from the loss so that any method can use any sampler (CUT + DAG, QS-Attn + DAG);
a sampler config is a ``_target_`` node (configs/method/sampler/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

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


@runtime_checkable
class PatchSampler(Protocol):
    """What a method may call a sampler with, and what the sampler needs from it.

    Attributes:
        needs_score_map: the sampler reads ``ctx.score_map`` (D's detached logits on the translated image, one
            map per feature row); a method that uses such a sampler must pass it.
    """

    needs_score_map: ClassVar[bool]

    def __call__(self, feat_k: torch.Tensor, feat_q: torch.Tensor, num_patches: int,
                 ctx: SampleContext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and queries [B, C, H, W] each -> patch vectors ([B, N, C], [B, N, C])."""
        ...


def _contiguous_grad(g: torch.Tensor) -> torch.Tensor:
    return g.contiguous()


def flatten_hw(feat: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C] (a view; same values and strides as ``feat.flatten(2).transpose(1, 2)``).

    The gradient that flows back into ``feat`` is made contiguous: the backward of the transpose would otherwise
    hand the producer a channels_last-strided gradient, and on the CPU (torch 2.14) the instance-norm backward
    computes a wrong input gradient (relative error ~1.3) for such a gradient when the batch is 1.
    """
    if feat.requires_grad and torch.is_grad_enabled():  # nothing to fix under no_grad (selection scores)
        feat = feat.view_as(feat)
        feat.register_hook(_contiguous_grad)  # no host sync: a stride check and, if needed, one copy
    return feat.flatten(2).transpose(1, 2)


def gather_patches(feat: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Gather locations of a feature map.

    The gather indexes the [B, C, H*W] layout directly and only the small [B, C, N] result is transposed, so the
    gradient reaching ``feat`` is a contiguous NCHW tensor (see :func:`flatten_hw` for why that matters).

    Args:
        feat: [B, C, H, W].
        ids: flat location ids, [N] (shared by the batch) or [B, N] (per image).

    Returns:
        [B, N, C] (contiguous).
    """
    flat = feat.flatten(2)  # [B, C, HW]
    if ids.dim() == 1:
        picked = flat.index_select(2, ids)  # [B, C, N]
    else:
        picked = torch.gather(flat, 2, ids.unsqueeze(1).expand(-1, flat.shape[1], -1))  # [B, C, N]
    return picked.transpose(1, 2).contiguous()
