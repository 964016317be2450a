"""QS-Attn query selection and value routing (Hu et al., "QS-Attn: Query-Selected Attention for Contrastive
Learning in I2I Translation", CVPR 2022, Sec. 3.2, Eq. 4-5; Informer max-mean measure, Eq. 6).

On the SOURCE features F [B, C, H, W] of one layer (before the projection head) the attention of every location
i is A(i, ·) = softmax(F_i · Fᵀ) — no projections, no 1/sqrt(C) scaling, as published — over all HW locations
(global, A_g) or over its w×w window with zero padding (local, A_l; padded positions are zero vectors, logit 0).
Each image keeps the N rows with the lowest entropy H(i) = -Σ_j A_ij log A_ij (Eq. 4-5), or N random rows, or
the N largest Informer measures M(i) = max_j(l_ij/sqrt(C)) - mean_j(l_ij/sqrt(C)) (Eq. 6). The kept rows A_QS
route the values: k = A_QS · V_src, q = A_QS · V_fake (cross-domain routing, the paper's model); in the
self-domain ablation q uses the rows of the fake image's own attention at the same ids; with routing off the
features at the selected ids are contrasted directly.

Two implementations with identical results and gradients (the selection is not differentiable):

- ``chunk_size > 0`` (memory-lean): scores are computed per chunk of rows under ``no_grad``, and only the N
  selected rows are rebuilt with gradient; local attention gathers the true w×w neighbours of the selected
  locations only.
- ``chunk_size == 0`` (straightforward, as published): the whole HW×HW (or HW×w²) attention is materialised
  with gradient and the selected rows are indexed out of it. Unlike the published local mode (which reshapes
  ``unfold`` channel-major output as if it were position-major, scrambling keys and values), the values are
  unfolded in their true (C, w²) layout.

Both paths score a row by H = -Σ_j xlogy(A_ij, A_ij) of its float32 (or float64) softmax row, the published formula
(models/networks_global.py of sapphire497/query-selected-attention: ``-log``, ``inf -> 0``, sum; equal up to the
last bit): every term is >= 0, so there is no cancellation, and rows whose other probabilities underflow have
entropy exactly 0. The logits are the same bits on both paths (chunked rows of the same matrix product; the same
shifted window products for local attention), so are the scores, and ids are taken by one stable sort (ties by
ascending id): the two paths select the same ids in the same order. The unscaled logits reach thousands, so the
algebraically equal logsumexp(l) - Σ softmax(l)·l is not used: it cancels to an absolute error of about |l|·eps and
ranks all low-entropy rows by rounding noise.

Attention rows are not detached: the contrastive gradient reaches the source encoding through them; the keys
themselves are detached by the PatchNCE loss. Attention is computed in float32 (autocast off): the unscaled
logits overflow half precision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from i2i.samplers.base import SampleContext, flatten_hw, gather_patches

KINDS = ("global", "local")
SELECTIONS = ("entropy", "random", "max_mean")
DOMAINS = ("cross", "self")


# ---------------------------------------------------------------------------------------------- row scores
def entropy_of_rows(attn: torch.Tensor) -> torch.Tensor:
    """Entropy of probability rows as published: -Σ_j A_ij log A_ij with 0·log 0 = 0. [..., M] -> [...].

    Every term -A log A is >= 0 and carries the relative precision of A, so the sum has no cancellation; on
    the unscaled logits (hundreds to thousands) the form logsumexp(l) - Σ softmax(l)·l would instead lose
    everything below |l|·eps. The published ``-log`` / ``isinf -> 0`` / ``sum`` computation (equal up to the
    last bit).
    """
    return -torch.special.xlogy(attn, attn).sum(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax rows of ``logits``: :func:`entropy_of_rows` of ``softmax(logits)``. [..., M] -> [...].

    Exactly what the straightforward path computes on its whole matrix, so a chunk of rows gets the same bits.
    Relative precision: only the largest probability's term, ≈ s = Σ_{j≠max} A_ij, is lost where s is below
    the float eps (A_max rounds to 1); since H >= s (1 + d) with d the logit gap to the runner-up, the relative
    error stays below about 1/(1 + d). Rows whose probabilities underflow to 0 have entropy exactly 0.
    """
    return entropy_of_rows(logits.softmax(-1))


def max_mean_from_logits(logits: torch.Tensor, channels: int) -> torch.Tensor:
    """Informer's query sparsity measure (Eq. 6): max_j(l_ij/sqrt(C)) - mean_j(l_ij/sqrt(C)). [..., M] -> [...]."""
    scaled = logits / math.sqrt(channels)
    return scaled.amax(-1) - scaled.mean(-1)


def selection_score(logits: torch.Tensor, selection: str, channels: int) -> torch.Tensor:
    """Score that is LARGER for the rows to keep: -entropy or the max-mean measure. [..., M] -> [...]."""
    if selection == "entropy":
        return -entropy_from_logits(logits)
    return max_mean_from_logits(logits, channels)


def top_ids(score: torch.Tensor, n: int) -> torch.Tensor:
    """Ids of the ``n`` largest scores per image, equal scores by ascending id: [B, HW] -> [B, N].

    A stable sort, so ties (e.g. the many rows of exactly zero entropy at the last attention layer) are taken
    identically by both paths. The published ``torch.sort(entropy)`` is not stable: its choice among exact
    ties is arbitrary, and with ties broken by id it is this set.
    """
    return torch.sort(score, dim=1, descending=True, stable=True).indices[:, :n]


# ---------------------------------------------------------------------------------------------- local windows
def local_logits(feat: torch.Tensor, window: int) -> torch.Tensor:
    """Logits of every location against its w×w zero-padded window, one shift at a time (no unfold copy).

    Args:
        feat: [B, C, H, W].
        window: odd window size w.

    Returns:
        [B, HW, w²], neighbour k = dy·w + dx (the unfold kernel order).
    """
    _, _, h, w = feat.shape
    p = window // 2
    padded = F.pad(feat, (p, p, p, p))
    cols = [(feat * padded[:, :, dy:dy + h, dx:dx + w]).sum(1) for dy in range(window) for dx in range(window)]
    return torch.stack(cols, -1).flatten(1, 2)  # [B, H, W, w²] -> [B, HW, w²]


def unfold_neighbours(feat: torch.Tensor, window: int) -> torch.Tensor:
    """All w×w zero-padded neighbourhoods in their true layout: [B, C, H, W] -> [B, HW, w², C]."""
    b, c, h, w = feat.shape
    cols = F.unfold(feat, window, padding=window // 2)  # [B, C*w², HW], ordered (C, w²)
    return cols.view(b, c, window * window, h * w).permute(0, 3, 2, 1)


def neighbour_index(ids: torch.Tensor, height: int, width: int, window: int) -> torch.Tensor:
    """Flat indices of the w×w neighbours of ``ids`` in the zero-padded map (H+2p)×(W+2p).

    Args:
        ids: flat location ids [B, N] in the H×W map.

    Returns:
        [B, N, w²], neighbour k = dy·w + dx.
    """
    p = window // 2
    off = torch.arange(window, device=ids.device)
    dy, dx = off.repeat_interleave(window), off.repeat(window)  # [w²]
    y, x = (ids // width).unsqueeze(-1), (ids % width).unsqueeze(-1)  # [B, N, 1]
    return (y + dy) * (width + 2 * p) + (x + dx)


def gather_neighbours(feat: torch.Tensor, ids: torch.Tensor, window: int) -> torch.Tensor:
    """The w×w zero-padded neighbourhoods of the selected locations only: [B, C, H, W], [B, N] -> [B, N, w², C]."""
    b, c, h, w = feat.shape
    p = window // 2
    flat = flatten_hw(F.pad(feat, (p, p, p, p)))  # [B, (H+2p)(W+2p), C]
    idx = neighbour_index(ids, h, w, window).flatten(1)  # [B, N*w²]
    out = torch.gather(flat, 1, idx.unsqueeze(-1).expand(-1, -1, c))  # [B, N*w², C]
    return out.view(b, ids.shape[1], window * window, c)


# ---------------------------------------------------------------------------------------------- lean path
@torch.no_grad()
def select_ids(feat: torch.Tensor, n: int, selection: str, kind: str, window: int, chunk_size: int) -> torch.Tensor:
    """Per-image ids of the N selected queries, without materialising a whole HW×HW matrix.

    Args:
        feat: source features [B, C, H, W].
        n: number of queries (<= HW).
        selection: ``entropy`` (lowest entropy), ``random`` or ``max_mean`` (largest Informer measure).
        kind: attention the score is computed on, ``global`` or ``local``.
        window: local window size.
        chunk_size: rows per chunk of the global score.

    Returns:
        [B, N] long.
    """
    b, c, h, w = feat.shape
    if selection == "random":
        return torch.rand(b, h * w, device=feat.device).argsort(dim=1)[:, :n]
    if kind == "local":
        score = selection_score(local_logits(feat, window), selection, c)  # [B, HW]
    else:
        x = flatten_hw(feat)  # [B, HW, C]
        score = torch.cat([selection_score(torch.bmm(x[:, s:s + chunk_size], x.transpose(1, 2)), selection, c)
                           for s in range(0, h * w, chunk_size)], 1)  # chunks [B, r, HW] -> [B, HW]
    return top_ids(score, n)


def selected_rows(feat: torch.Tensor, ids: torch.Tensor, kind: str, window: int) -> torch.Tensor:
    """The attention rows of the selected queries only, with gradient.

    Returns:
        [B, N, HW] (global) or [B, N, w²] (local).
    """
    q = gather_patches(feat, ids)  # [B, N, C]
    if kind == "local":
        logits = torch.einsum("bnc,bnkc->bnk", q, gather_neighbours(feat, ids, window))
    else:
        logits = torch.bmm(q, flatten_hw(feat).transpose(1, 2))  # [B, N, HW]
    return logits.softmax(-1)


def apply_rows(rows: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, kind: str, window: int) -> torch.Tensor:
    """Route values through attention rows: [B, N, HW | w²], [B, C, H, W] -> [B, N, C]."""
    if kind == "local":
        return torch.einsum("bnk,bnkc->bnc", rows, gather_neighbours(values, ids, window))
    return torch.bmm(rows, flatten_hw(values))


# ---------------------------------------------------------------------------------------------- straightforward
def full_attention(feat: torch.Tensor, kind: str, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole attention of every location, as published: logits and softmax rows, [B, HW, HW | w²] each."""
    if kind == "local":  # the lean path's shifted products: the same logits to the bit
        logits = local_logits(feat, window)
    else:
        x = flatten_hw(feat)  # [B, HW, C]
        logits = torch.bmm(x, x.transpose(1, 2))
    return logits, logits.softmax(-1)


def route_full(rows: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, kind: str, window: int) -> torch.Tensor:
    """Route values with the unfolded (local) or flat (global) value matrix: -> [B, N, C]."""
    if kind == "local":
        nb = unfold_neighbours(values, window)  # [B, HW, w², C]
        nb = torch.gather(nb, 1, ids[..., None, None].expand(-1, -1, *nb.shape[2:]))  # [B, N, w², C]
        return torch.einsum("bnk,bnkc->bnc", rows, nb)
    return torch.bmm(rows, flatten_hw(values))


def take_rows(attn: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """attn[b, ids[b], :]: [B, HW, M], [B, N] -> [B, N, M]."""
    return torch.gather(attn, 1, ids.unsqueeze(-1).expand(-1, -1, attn.shape[-1]))


# ---------------------------------------------------------------------------------------------- the sampler
class QSAttnSampler:
    """Patch sampler of QS-Attn: ``sampler(feat_k, feat_q, num_patches, ctx) -> (k, q)``, both [B, N, C].

    Args:
        selection: ``entropy`` (paper), ``random`` (Table 3 B/E) or ``max_mean`` (Informer, Table 3 F).
        selection_attention: ``global`` or ``local`` attention for the selection score.
        routing_attention: ``global``, ``local``, or None (no value routing: gather at the ids, Table 3 C).
        routing_domain: ``cross`` (source rows route both domains) or ``self`` (each domain its own rows,
            same ids; Table 3 D/E).
        window: local window w (odd).
        chunk_size: rows per chunk of the global selection score; 0 = straightforward full matrices.
    """

    needs_score_map = False

    def __init__(self, selection: str = "entropy", selection_attention: str = "global",
                 routing_attention: str | None = "global", routing_domain: str = "cross", window: int = 7,
                 chunk_size: int = 512) -> None:
        checks = (("selection", selection, SELECTIONS), ("selection_attention", selection_attention, KINDS),
                  ("routing_attention", routing_attention, KINDS + (None,)), ("routing_domain", routing_domain, DOMAINS))
        for key, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"method.{key}={value!r}: use one of {', '.join(map(str, allowed))}")
        if window < 1 or window % 2 == 0:
            raise ValueError(f"method.window={window}: the local window must be a positive odd number (7 published)")
        if chunk_size < 0:
            raise ValueError(f"method.chunk_size={chunk_size}: use 0 (whole matrix) or a positive row count")
        self.selection, self.selection_attention = selection, selection_attention
        self.routing_attention, self.routing_domain = routing_attention, routing_domain
        self.window, self.chunk_size = window, chunk_size

    def __repr__(self) -> str:
        return (f"QSAttnSampler(selection={self.selection}, selection_attention={self.selection_attention}, "
                f"routing_attention={self.routing_attention}, routing_domain={self.routing_domain}, "
                f"window={self.window}, chunk_size={self.chunk_size})")

    def __call__(self, feat_k: torch.Tensor, feat_q: torch.Tensor, num_patches: int,
                 ctx: SampleContext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, H, W] x 2 -> ([B, N, C], [B, N, C]) routed (or gathered) at per-image ids."""
        with torch.autocast(feat_k.device.type, enabled=False):
            fk, fq = _upcast(feat_k), _upcast(feat_q)
            n = min(num_patches, fk.shape[2] * fk.shape[3])
            if self.chunk_size > 0:
                return self._lean(fk, fq, n)
            return self._straightforward(fk, fq, n)

    def _lean(self, fk: torch.Tensor, fq: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        kind, w = self.routing_attention, self.window
        ids = select_ids(fk, n, self.selection, self.selection_attention, w, self.chunk_size)  # [B, N]
        if kind is None:
            return gather_patches(fk, ids), gather_patches(fq, ids)
        rows_k = selected_rows(fk, ids, kind, w)
        rows_q = rows_k if self.routing_domain == "cross" else selected_rows(fq, ids, kind, w)
        return apply_rows(rows_k, fk, ids, kind, w), apply_rows(rows_q, fq, ids, kind, w)

    def _straightforward(self, fk: torch.Tensor, fq: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        kind, sel, w = self.routing_attention, self.selection_attention, self.window
        logits_k, attn_k = full_attention(fk, kind, w) if kind is not None else (None, None)
        if self.selection == "random":
            ids = torch.rand(fk.shape[0], fk.shape[2] * fk.shape[3], device=fk.device).argsort(dim=1)[:, :n]
        else:
            with torch.no_grad():
                logits, attn = (logits_k, attn_k) if sel == kind else full_attention(fk, sel, w)
                score = (-entropy_of_rows(attn) if self.selection == "entropy"
                         else max_mean_from_logits(logits, fk.shape[1]))  # [B, HW]
            ids = top_ids(score, n)
        if kind is None:
            return gather_patches(fk, ids), gather_patches(fq, ids)
        rows_k = take_rows(attn_k, ids)
        rows_q = rows_k if self.routing_domain == "cross" else take_rows(full_attention(fq, kind, w)[1], ids)
        return route_full(rows_k, fk, ids, kind, w), route_full(rows_q, fq, ids, kind, w)


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half precision -> float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
