"""Uniform random patch sampling of CUT (taesungp/contrastive-unpaired-translation, models/networks.py
``PatchSampleF``): the same N locations for query and key."""

from __future__ import annotations

import torch

from i2i.samplers.base import SampleContext, gather_patches


class RandomSampler:
    """Sample ``num_patches`` random locations without replacement.

    Args:
        per_image: draw different locations for every image (True) or one set shared by the batch, as the
            published code does (False, default).
    """

    needs_score_map = False

    def __init__(self, per_image: bool = False) -> None:
        self.per_image = per_image

    def sample_ids(self, feat: torch.Tensor, num_patches: int) -> torch.Tensor:
        """Location ids, [N] or [B, N] (N = min(num_patches, H*W))."""
        b, _, h, w = feat.shape
        n = min(num_patches, h * w)
        if self.per_image:
            return torch.rand(b, h * w, device=feat.device).argsort(dim=1)[:, :n]
        return torch.randperm(h * w, device=feat.device)[:n]

    def __call__(self, feat_k: torch.Tensor, feat_q: torch.Tensor, num_patches: int,
                 ctx: SampleContext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, H, W] x 2 -> ([B, N, C], [B, N, C]) at shared locations."""
        ids = self.sample_ids(feat_k, num_patches)
        return gather_patches(feat_k, ids), gather_patches(feat_q, ids)
