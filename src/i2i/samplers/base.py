"""The patch-sampler seam.

A sampler (:class:`PatchSampler`) is a callable ``sampler(feat_k, feat_q, num_patches, ctx) -> (k, q)``: it
receives the key features (source image) and query features (translated image) of one layer, both [B, C, H, W],
and returns the patch vectors to contrast, both [B, N, C] (gathered at shared locations, or routed through
attention). Samplers are separate from the loss so that any method can use any sampler (CUT + DAG, QS-Attn + DAG);
a sampler config is a ``_target_`` node (configs/method/sampler/).

A sampler may also generate the negatives of the contrastive loss: it puts them in ``ctx.negatives`` and the
method's loss contrasts every query with them instead of with the other keys. A sampler that owns a network
trained in an optimisation phase of its own (:class:`PhaseSampler`, e.g. NEGCUT's negative generator) is bound
to the method's projection heads once, and is trained to maximise the method's contrastive loss plus the terms it
puts in ``ctx.terms`` during that phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class SampleContext:
    """What a sampler may need besides the features.

    Attributes:
        layer_pos: position of the layer in the method's layer list.
        score_map: discriminator logits on the translated image, detached, [B, 1, h, w] (DAG), or None.
        phase: the optimisation phase the loss is computed for: ``"G"`` (the generator's step) or the name of a
            :class:`PhaseSampler`'s own phase.
        groups: the feature rows are that many stacked terms (CUT: the X rows, then the identity rows).
        negatives: set by a sampler that generates negatives: projected, L2-normalised vectors [B, M, C'] in the
            space of the projected queries; the loss contrasts each query with its image's M vectors instead of
            with the other keys. None: the other keys are the negatives.
        terms: set by a :class:`PhaseSampler` in its own phase only: its own loss terms of this layer, per row
            [B], already weighted (e.g. a diversity regulariser); the method adds them to the phase's objective.
    """

    layer_pos: int = 0
    score_map: torch.Tensor | None = None
    phase: str = "G"
    groups: int = 1
    negatives: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


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


@runtime_checkable
class PhaseSampler(PatchSampler, Protocol):
    """A sampler with a network of its own, trained in an optimisation phase of its own (an ``nn.Module``).

    A method that supports it (CUT and its subclasses) binds it to its projection heads, adds :attr:`phase` to its
    ``update_order`` before ``"G"``, steps the sampler's parameters by that phase's optimizer and, in the phase,
    minimises ``-(its contrastive loss computed with the sampler's negatives) + the sampler's ctx.terms``, with
    the patches themselves detached. During the generator's step (``ctx.phase == "G"``) the sampler's
    parameters are frozen and it adds no terms.

    Attributes:
        phase: the name of its phase in ``update_order`` (an identifier other than "D", "G" and "F").
    """

    phase: str

    def bind(self, heads: nn.Module, init_type: str = "xavier", init_gain: float = 0.02) -> None:
        """Called once by the method's constructor with its projection heads (``heads(x [..., C_l], layer_pos)
        -> [..., C']``, attributes ``in_channels`` and ``nc``) and its initialisation; the heads stay the
        method's (not a submodule of the sampler)."""
        ...

    def begin_phase(self) -> None:
        """Called once per training step at the start of the sampler's phase (e.g. a moving-average update)."""
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
