"""PatchNCE (Park et al., "Contrastive Learning for Unpaired Image-to-Image Translation", ECCV 2020, Eq. 2-3).

For every query patch q_i (from the translated image) the positive is the key k_i at the same location of the
source image, the negatives are the other sampled keys. As in the published code (taesungp/
contrastive-unpaired-translation, models/patchnce.py): keys are detached, logits are cosines / tau, and a query's
own key is removed from the negatives by writing
-10 into the cosine diagonal (not -inf) before dividing by tau. Negatives come from the same image ("internal
negatives", the paper's choice) or from the whole minibatch (``negatives="batch"``). With ``groups > 1`` the
minibatch is a stack of independent terms (CUT's X and identity Y terms evaluated in one call): batch negatives
then come from the query's own term only, as when the published code evaluates each term in its own call. The
batch size comes from the tensors, never from a configured value (CUT #67).

Given ``generated`` negatives (NEGCUT: vectors produced by a negative generator, [B, M, C]), a query's negatives are
the M vectors of its own image (or, with ``negatives="batch"``, of every image of its term) instead of the other
keys; there is then no own key among them and no diagonal is written (as the published NEGCUT code,
WeilunWang/NEGCUT, models/losses.py ``LearnedPatchNCELoss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_nce_loss(q: torch.Tensor, k: torch.Tensor, tau: float = 0.07, negatives: str = "image",
                   diagonal: float = -10.0, groups: int = 1, detach_keys: bool = True,
                   generated: torch.Tensor | None = None) -> torch.Tensor:
    """Per-patch InfoNCE loss.

    Args:
        q: queries [B, N, C], L2-normalised.
        k: keys [B, N, C], L2-normalised (detached here).
        tau: temperature.
        negatives: ``image`` (other patches of the same image) or ``batch`` (all patches of the minibatch).
        diagonal: cosine written for each query's own key among the negatives.
        groups: number of equal, consecutive slices of the batch that are separate terms; with ``batch``
            negatives a query sees only the keys of its own slice. B must be divisible by it.
        detach_keys: stop the gradient at ``k`` (CUT). ``False`` lets it reach whatever produced ``k`` (EnCo's
            separate key head, whose input features the caller detaches).
        generated: optional negatives [B, M, C] (L2-normalised, not detached here) that replace the other keys.

    Returns:
        Loss per patch, [B, N].
    """
    if negatives not in ("image", "batch"):
        raise ValueError(f"negatives={negatives!r}: use 'image' or 'batch'")
    b, n, c = q.shape
    k = k.detach() if detach_keys else k
    l_pos = (q * k).sum(-1, keepdim=True)  # [B, N, 1]
    if generated is not None:
        l_neg = _generated_logits(q, generated, negatives == "batch", groups)  # [B, N, M']
        return _info_nce(l_pos, l_neg, tau)
    if negatives == "batch":  # [groups, (B/groups)*N, C]: every patch of the term's images
        q, k = q.reshape(groups, -1, c), k.reshape(groups, -1, c)
    l_neg = torch.bmm(q, k.transpose(1, 2))  # [b', N', N']
    eye = torch.eye(l_neg.shape[-1], device=q.device, dtype=torch.bool)
    l_neg = l_neg.masked_fill(eye, diagonal).reshape(b, n, -1)  # [B, N, N']
    return _info_nce(l_pos, l_neg, tau)


def _generated_logits(q: torch.Tensor, generated: torch.Tensor, batch: bool, groups: int) -> torch.Tensor:
    """Cosines of every query with its negatives: [B, N, C], [B, M, C] -> [B, N, M] (or [B, N, (B/groups)*M])."""
    b, n, c = q.shape
    if generated.shape[0] != b or generated.shape[2] != c:
        raise ValueError(f"generated negatives of shape {tuple(generated.shape)} do not fit queries of shape "
                         f"{tuple(q.shape)}: one set [M, C] per image is needed")
    if batch:  # [groups, (B/groups)*N, C] against [groups, (B/groups)*M, C]
        return torch.bmm(q.reshape(groups, -1, c), generated.reshape(groups, -1, c).transpose(1, 2)).reshape(b, n, -1)
    return torch.bmm(q, generated.transpose(1, 2))


def _info_nce(l_pos: torch.Tensor, l_neg: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-entropy with the positive at index 0: [B, N, 1], [B, N, M] -> loss per patch [B, N]."""
    b, n = l_pos.shape[:2]
    logits = torch.cat([l_pos, l_neg], dim=-1).float() / tau  # [B, N, 1+M]
    target = torch.zeros(b * n, dtype=torch.long, device=l_pos.device)
    return F.cross_entropy(logits.reshape(b * n, -1), target, reduction="none").reshape(b, n)
