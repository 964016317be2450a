"""MoNCE (Zhan et al., "Modulated Contrast for Versatile Image Synthesis", CVPR 2022): the modulated NCE loss.

InfoNCE whose negatives are reweighted by an optimal-transport plan between the queries and the keys::

    L_i = -log  e^(q_i·k_i/τ) / ( e^(q_i·k_i/τ) + Σ_{j≠i} w_ij e^(q_i·k_j/τ) + e^(d/τ) )
    w   = Q · (N−1) · P + 1e-8,    P = Sinkhorn(exp(S/ε)),   S_ij = q_i·k_j ("hard") or 1 − q_i·k_j ("easy")

(d: the cosine CUT writes for a query's own key among its negatives, -10). P has unit row and column sums (each
query's weights over its N−1 negatives average Q), so w ≡ 1 is PatchNCE.

As in the published code (fnzhan/MoNCE, CUT_MoNCE/models/monce.py and models/sinkhorn.py): the keys are
detached (for the plan and for the loss), the queries are not (the gradient reaches them through the plan too,
unless ``detach_plan``), the diagonal of S is written with the same cosine d before dividing by ε, 50 Sinkhorn
iterations (u-update, then v-update, from v = 1), and 1e-8 is added to w before its logarithm. ``log(w)`` is added
to the negative logits (the published code adds τ·log(w) to the cosines before dividing by τ: the same number).

The Sinkhorn iterations run in the log domain, so any ε works: exp(S/ε) of cosines/τ-sized costs at ε = 0.1 is
e^143, past float32's range, while its logarithm is not. The iteration count is fixed (no data-dependent stopping
test, no host-device synchronisation). When the plan carries a gradient, the iterations are checkpointed: the
backward pass recomputes them from log K instead of keeping two [b, n, n] tensors per iteration.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

#: cost types: how the cosines S of the plan are formed ("hard" favours similar negatives, "easy" dissimilar ones)
COST_TYPES = ("hard", "easy")
#: what N−1 in w = Q·(N−1)·P counts: the row's negatives (paper) or the configured num_patches − 1 (published)
WEIGHT_SCALES = ("negatives", "num_patches")
#: the published floor added to w before its logarithm
WEIGHT_FLOOR = 1e-8


def sinkhorn_log(log_k: torch.Tensor, iters: int = 50) -> torch.Tensor:
    """Log of the Sinkhorn scaling of a kernel K = exp(log_k) to unit row and column sums, in the log domain.

    The published iteration (rows then columns, ``iters`` times, from v = 1) on log u and log v::

        log u_i = log(n_cols / n_rows) − logsumexp_j(log K_ij + log v_j)
        log v_j = − logsumexp_i(log K_ij + log u_i)
        log P_ij = log u_i + log K_ij + log v_j

    After the last column update the columns sum to 1 exactly; the rows to n_cols/n_rows up to the convergence
    reached in ``iters`` steps.

    Args:
        log_k: log-kernel [b, n, m] (finite, or -inf for entries that get no mass; every row and column needs a
            finite entry).
        iters: number of row/column updates (fixed).

    Returns:
        log P [b, n, m].
    """
    if iters < 1:
        raise ValueError(f"iters={iters}: Sinkhorn needs at least one iteration")
    b, n, m = log_k.shape
    log_a = math.log(m / n)
    log_v = log_k.new_zeros(b, 1, m)  # [b, 1, m]
    for _ in range(iters):
        log_u = log_a - torch.logsumexp(log_k + log_v, dim=2, keepdim=True)  # [b, n, 1]
        log_v = -torch.logsumexp(log_k + log_u, dim=1, keepdim=True)  # [b, 1, m]
    return log_u + log_k + log_v


def monce_log_weights(sim: torch.Tensor, eps: float = 0.1, cost_type: str = "hard", neg_term_weight: float = 1.0,
                      iters: int = 50, diagonal: float = -10.0, scale: float | None = None) -> torch.Tensor:
    """log w of the negatives, w = Q · scale · P + 1e-8 with P the Sinkhorn plan of exp(S / ε).

    Args:
        sim: cosines q_i·k_j [b, n, n] (queries in rows, keys in columns; what the plan may depend on).
        eps: entropic regularisation ε.
        cost_type: ``hard`` (S = q·k) or ``easy`` (S = 1 − q·k).
        neg_term_weight: Q.
        iters: Sinkhorn iterations.
        diagonal: value written into S for each query's own key (its positive) before dividing by ε.
        scale: what P is multiplied by besides Q; None = n − 1, the number of negatives of a row.

    Returns:
        log w [b, n, n] (the diagonal is meaningless: the loss overwrites it).
    """
    n = sim.shape[-1]
    s = sim if cost_type == "hard" else 1.0 - sim
    eye = torch.eye(n, device=sim.device, dtype=torch.bool)
    log_k = s.masked_fill(eye, diagonal) / eps  # [b, n, n]
    if log_k.requires_grad:  # keep only log K for the backward pass and recompute the iterations there
        log_p = checkpoint(sinkhorn_log, log_k, iters, use_reentrant=False, preserve_rng_state=False)
    else:
        log_p = sinkhorn_log(log_k, iters)
    factor = neg_term_weight * (n - 1 if scale is None else scale)
    log_qp = log_p + math.log(factor) if factor > 0 else torch.full_like(log_p, -math.inf)  # log(Q·scale·P)
    return torch.logaddexp(log_qp, torch.full_like(log_p, math.log(WEIGHT_FLOOR)))


def monce_loss(q: torch.Tensor, k: torch.Tensor, tau: float = 0.07, eps: float = 0.1, cost_type: str = "hard",
               neg_term_weight: float = 1.0, iters: int = 50, negatives: str = "image", diagonal: float = -10.0,
               groups: int = 1, detach_plan: bool = False, weight_scale: str = "negatives",
               num_patches: int | None = None) -> torch.Tensor:
    """Per-patch MoNCE loss.

    Args:
        q: queries [B, N, C], L2-normalised (translations).
        k: keys [B, N, C], L2-normalised (sources; detached here).
        tau: temperature τ.
        eps: Sinkhorn's entropic regularisation ε.
        cost_type: ``hard`` or ``easy`` (see :func:`monce_log_weights`).
        neg_term_weight: Q, the weight of the negative term.
        iters: Sinkhorn iterations.
        negatives: ``image`` (one plan per image, over its N patches) or ``batch`` (one plan over the patches of
            every image of the term).
        diagonal: cosine written for each query's own key, in the plan's S and among the loss's negatives.
        groups: number of equal, consecutive slices of the batch that are separate terms (batch negatives and
            the plan stay inside a slice), as :func:`~i2i.losses.patchnce.patch_nce_loss`.
        detach_plan: hold the weights constant (no gradient through the Sinkhorn iterations).
        weight_scale: ``negatives`` (N−1 = the negatives of a row) or ``num_patches`` (``num_patches − 1``, the
            configured value, as published).
        num_patches: the configured patches per image (for ``weight_scale="num_patches"``).

    Returns:
        Loss per patch, [B, N].
    """
    if negatives not in ("image", "batch"):
        raise ValueError(f"negatives={negatives!r}: use 'image' or 'batch'")
    if cost_type not in COST_TYPES or weight_scale not in WEIGHT_SCALES:
        raise ValueError(f"cost_type={cost_type!r}, weight_scale={weight_scale!r}: use one of {COST_TYPES} and "
                         f"one of {WEIGHT_SCALES}")
    b, n, c = q.shape
    dtype = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):  # the plan is sensitive to the cosines: float32 at least
        q, k = q.to(dtype), k.detach().to(dtype)
        l_pos = (q * k).sum(-1, keepdim=True) / tau  # [B, N, 1]
        qq, kk = (q.reshape(groups, -1, c), k.reshape(groups, -1, c)) if negatives == "batch" else (q, k)
        sim = torch.bmm(qq, kk.transpose(1, 2))  # [b', N', N']
        if sim.shape[-1] > 1:  # a lone patch has no negatives to weight
            scale = None if weight_scale == "negatives" else (num_patches or n) - 1
            log_w = monce_log_weights(sim.detach() if detach_plan else sim, eps, cost_type, neg_term_weight, iters,
                                      diagonal, scale)
        else:
            log_w = torch.zeros_like(sim)
        eye = torch.eye(sim.shape[-1], device=q.device, dtype=torch.bool)
        l_neg = (sim / tau + log_w).masked_fill(eye, diagonal / tau).reshape(b, n, -1)  # [B, N, N']
        logits = torch.cat([l_pos, l_neg], dim=-1)  # [B, N, 1 + N']
        return torch.logsumexp(logits, dim=-1) - logits[..., 0]
