"""Discriminative attention-guided (DAG) negative sampling (Cai et al., EnCo, arXiv 2022, Algorithm 1).

For each image and layer, with K = ``num_patches`` anchors:

1. attention map: the discriminator's logits on the translated image (detached, ``ctx.score_map``
   [B, 1, h, w]) are bilinearly resized (``align_corners=False``) to the feature map size;
2. oversampling: k·K candidate locations are drawn uniformly without replacement;
3. ranking: the candidates are sorted by score, ascending;
4. importance sampling: the lowest β·K (the "most fake" under LSGAN, whose fake target is 0) and the highest
   (1−β)·K candidates are kept.

The same per-image ids index the keys (encoder / source features) and the queries, so positives stay
spatially aligned. Works for any method that passes ``SampleContext.score_map`` (EnCo, CUT, QS-Attn).

Notes against the published code (enco2 = XiudingCai/PyTorch-EnCo, ``cam_mlp_sample_s``; enco1 =
XiudingCai/EnCo-pytorch, ``PatchSampleWithDAGF``, both in models/networks.py): Algorithm 1 writes the high half as
``indices[(beta - 1) * K:]``, which for β = 1 would keep *all* candidates; here the high half is empty for
β = 1 (K anchors in total, as the text says). enco2's ``cam_mlp_sample_s`` keeps the highest (1−β)·K as here;
enco1 instead draws that half uniformly at random.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from i2i.samplers.base import SampleContext, gather_patches

#: ``draw(batch, hw, m, device) -> [batch, m]`` distinct location ids per image
CandidateDraw = Callable[[int, int, int, torch.device], torch.Tensor]


def uniform_candidates(batch: int, hw: int, m: int, device: torch.device) -> torch.Tensor:
    """``m`` distinct uniformly random locations out of ``hw``, independently per image: [batch, m]."""
    return torch.rand(batch, hw, device=device).argsort(dim=1)[:, :m]


def resize_scores(score_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of D's logits to a feature map size: [B, 1, h, w] -> [B, H*W] (float32)."""
    resized = F.interpolate(score_map.float(), size=size, mode="bilinear", align_corners=False)  # [B, 1, H, W]
    return resized.flatten(1)


class DAGSampler:
    """Algorithm 1 as a patch sampler (``method.sampler=dag``).

    Args:
        k: oversampling ratio (k·K candidates; ≥ 1). Paper default 4.
        beta: importance sampling ratio in [0, 1]: the share of the K anchors taken from the lowest scores.
            Paper default 0.5.
        candidates: draw of the candidate locations (injectable for tests); default uniform per image.
    """

    needs_score_map = True

    def __init__(self, k: float = 4, beta: float = 0.5, candidates: CandidateDraw | None = None) -> None:
        if k < 1:
            raise ValueError(f"method.sampler.k={k}: the oversampling ratio must be >= 1 (paper: 4)")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"method.sampler.beta={beta}: the importance ratio must lie in [0, 1] (paper: 0.5)")
        self.k, self.beta = k, beta
        self.candidates = candidates or uniform_candidates

    def sample_ids(self, scores: torch.Tensor, num_patches: int) -> torch.Tensor:
        """Per-image location ids from flat scores.

        Args:
            scores: [B, HW] attention score of every location.
            num_patches: K.

        Returns:
            [B, K'] ids with K' = min(K, HW): the lowest round(β·K') and the highest K' − round(β·K') of the
            min(k·K', HW) candidates.
        """
        b, hw = scores.shape
        n = min(num_patches, hw)
        m = min(int(self.k * n), hw)
        cand = self.candidates(b, hw, m, scores.device)  # [B, m]
        order = torch.sort(scores.gather(1, cand), dim=1, stable=True).indices  # ascending, [B, m]
        ranked = cand.gather(1, order)  # candidates from lowest to highest score
        n_low = round(self.beta * n)
        return torch.cat([ranked[:, :n_low], ranked[:, m - (n - n_low):]], dim=1)  # [B, n]

    def __call__(self, feat_k: torch.Tensor, feat_q: torch.Tensor, num_patches: int,
                 ctx: SampleContext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, H, W] x 2 -> ([B, N, C], [B, N, C]) gathered at the DAG locations."""
        score_map = ctx.score_map if ctx is not None else None
        if score_map is None:
            raise ValueError("DAG sampling needs the discriminator's output on the translated image "
                             "(SampleContext.score_map); this method does not provide it — use method.sampler=random")
        b, _, h, w = feat_k.shape
        if score_map.shape[0] != b:
            raise ValueError(f"DAG score map has batch {score_map.shape[0]} but the features have batch {b}: "
                             "the method must pass one score map per feature row")
        ids = self.sample_ids(resize_scores(score_map.detach(), (h, w)), num_patches)  # [B, N]
        return gather_patches(feat_k, ids), gather_patches(feat_q, ids)
