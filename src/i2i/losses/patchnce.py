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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_nce_loss(q: torch.Tensor, k: torch.Tensor, tau: float = 0.07, negatives: str = "image",
                   diagonal: float = -10.0, groups: int = 1, detach_keys: bool = True) -> torch.Tensor:
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

    Returns:
        Loss per patch, [B, N].
    """
    if negatives not in ("image", "batch"):
        raise ValueError(f"negatives={negatives!r}: use 'image' or 'batch'")
    b, n, c = q.shape
    k = k.detach() if detach_keys else k
    l_pos = (q * k).sum(-1, keepdim=True)  # [B, N, 1]
    if negatives == "batch":  # [groups, (B/groups)*N, C]: every patch of the term's images
        q, k = q.reshape(groups, -1, c), k.reshape(groups, -1, c)
    l_neg = torch.bmm(q, k.transpose(1, 2))  # [b', N', N']
    eye = torch.eye(l_neg.shape[-1], device=q.device, dtype=torch.bool)
    l_neg = l_neg.masked_fill(eye, diagonal).reshape(b, n, -1)  # [B, N, N']
    logits = torch.cat([l_pos, l_neg], dim=-1).float() / tau  # [B, N, 1+N']
    target = torch.zeros(b * n, dtype=torch.long, device=q.device)
    return F.cross_entropy(logits.reshape(b * n, -1), target, reduction="none").reshape(b, n)
