"""MoNCE (Zhan, Zhang, Yu, Wu, Lu, "Modulated Contrast for Versatile Image Synthesis", CVPR 2022), on CUT.

CUT (adversarial loss + multilayer patch contrast on X and, as identity, on Y, λ_NCE·0.5·(NCE + NCE_Y)) whose
PatchNCE is replaced by the modulated NCE of :mod:`i2i.losses.monce`: every query's negatives are reweighted by
an optimal-transport plan between the queries and the keys of the same image (Sinkhorn, ε, ``cost_type``), scaled
by the negative-term weight Q. Sampling, projection heads, layers and the X/identity split are CUT's, as in the
published code (fnzhan/MoNCE, CUT_MoNCE/models/cut_model.py ``calculate_MoNCE_loss``, which uses the same loss for
both terms). See docs/monce.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from i2i.losses.monce import COST_TYPES, WEIGHT_SCALES, monce_loss
from i2i.methods.cut import CUT, DEFAULT_NCE_LAYERS
from i2i.samplers.base import SampleContext


class MoNCE(CUT):
    """CUT with the modulated contrastive loss.

    Args:
        feature_channels: channels of the generator at ``nce_layers``.
        nce_layers: generator module indices whose outputs are contrasted.
        eps: Sinkhorn's entropic regularisation ε (published default 1.0; horse2zebra 0.1).
        cost_type: ``hard`` (plan from the cosines: similar negatives weigh more) or ``easy`` (from 1 − cosine).
        neg_term_weight: Q, the weight of the negative term (w = Q·(N−1)·P).
        sinkhorn_iters: Sinkhorn iterations (fixed count).
        detach_plan: hold the OT weights constant; False (published) lets the gradient reach the queries through
            the Sinkhorn iterations.
        weight_scale: ``negatives`` (N−1 counts each row's negatives) or ``num_patches`` (``num_patches − 1``, as
            published, also when a layer has fewer locations or the negatives span the minibatch).
        **kwargs: the :class:`~i2i.methods.cut.CUT` arguments (num_patches, nc, tau, lambda_nce, nce_idt, ...).
    """

    phase_samplers = False  # its contrastive loss does not use generated negatives (method/sampler=negcut)

    def __init__(self, feature_channels: Sequence[int], nce_layers: Sequence[int] = DEFAULT_NCE_LAYERS,
                 eps: float = 1.0, cost_type: str = "hard", neg_term_weight: float = 1.0, sinkhorn_iters: int = 50,
                 detach_plan: bool = False, weight_scale: str = "negatives", **kwargs) -> None:
        kwargs.setdefault("name", "monce")
        super().__init__(feature_channels, nce_layers, **kwargs)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
            raise ValueError(f"method.eps={eps!r}: the entropic regularisation must be a number > 0 — e.g. "
                             "method.eps=0.1 (horse2zebra) or method.eps=1.0 (published default)")
        if cost_type not in COST_TYPES:
            raise ValueError(f"method.cost_type={cost_type!r}: use {' or '.join(COST_TYPES)} — e.g. method.cost_type=hard")
        if not isinstance(neg_term_weight, (int, float)) or isinstance(neg_term_weight, bool) or neg_term_weight < 0:
            raise ValueError(f"method.neg_term_weight={neg_term_weight!r}: must be a number >= 0 — e.g. "
                             "method.neg_term_weight=1.0 (published)")
        if not isinstance(sinkhorn_iters, int) or isinstance(sinkhorn_iters, bool) or sinkhorn_iters < 1:
            raise ValueError(f"method.sinkhorn_iters={sinkhorn_iters!r}: must be an integer >= 1 — e.g. "
                             "method.sinkhorn_iters=50 (published)")
        if weight_scale not in WEIGHT_SCALES:
            raise ValueError(f"method.weight_scale={weight_scale!r}: use {' or '.join(WEIGHT_SCALES)} — e.g. "
                             "method.weight_scale=negatives")
        self.eps, self.cost_type, self.neg_term_weight = float(eps), cost_type, float(neg_term_weight)
        self.sinkhorn_iters, self.detach_plan, self.weight_scale = sinkhorn_iters, bool(detach_plan), weight_scale

    def layer_terms(self, q: torch.Tensor, k: torch.Tensor, ctx: SampleContext,
                    groups: int = 1) -> dict[str, torch.Tensor]:
        """MoNCE of one layer, per row: ``{"NCE": [B]}`` (mean over the patches; CUT weights it by λ_NCE).

        Args:
            q: projected, L2-normalised queries [B, N, C] (rows: X then identity Y).
            k: projected, L2-normalised keys [B, N, C] (detached by the loss, for the plan and the contrast).
            ctx: the layer's position and D's score map (unused).
            groups: how many stacked terms the rows are (a plan never mixes them).
        """
        loss = monce_loss(q, k, self.tau, self.eps, self.cost_type, self.neg_term_weight, self.sinkhorn_iters,
                          self.negatives, self.diagonal, groups, self.detach_plan, self.weight_scale,
                          self.num_patches)  # [B, N]
        return {"NCE": loss.mean(1)}
