"""Improved precision and recall (Kynkäänniemi et al. 2019), as NVlabs stylegan2-ada ``metrics/precision_recall.py``.

Each set's manifold is the union of balls around its features with radius = distance to the k-th nearest other
sample (k = 3). Precision: fraction of fake features inside the real manifold. Recall: fraction of real features
inside the fake manifold. Pairwise distances are computed in float64, in row chunks.
"""

from __future__ import annotations

import numpy as np
import torch


def knn_radii(feats: torch.Tensor, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """Distance of each row to its k-th nearest neighbour in the same set (self excluded): ``[N, D] -> [N]``."""
    if len(feats) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images per set (got {len(feats)}).")
    return torch.cat([torch.cdist(feats[i:i + chunk], feats).kthvalue(k + 1, dim=1).values
                      for i in range(0, len(feats), chunk)])


def inside_manifold(query: torch.Tensor, ref: torch.Tensor, ref_radii: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """``[Q]`` bool: whether each query row lies within some reference ball."""
    return torch.cat([(torch.cdist(query[i:i + chunk], ref) <= ref_radii[None]).any(dim=1)
                      for i in range(0, len(query), chunk)])


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """``(precision, recall)`` of ``fake [N, D]`` against ``real [M, D]``."""
    real_t, fake_t = torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(fake, dtype=torch.float64)
    precision = inside_manifold(fake_t, real_t, knn_radii(real_t, k, chunk), chunk).double().mean().item()
    recall = inside_manifold(real_t, fake_t, knn_radii(fake_t, k, chunk), chunk).double().mean().item()
    return float(precision), float(recall)
