"""Streaming float64 feature statistics (mean, covariance) for FID.

Reference: pytorch-fid ``calculate_activation_statistics``: ``mu = np.mean(act, 0)``, ``sigma = np.cov(act,
rowvar=False)`` (float64, ``N - 1`` denominator). Here the same quantities are accumulated batch by batch from sums
and outer-product sums of features shifted by the first feature vector (which keeps the float64 cancellation small),
so memory does not grow with N and the result does not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FeatureStats:
    """Statistics of one image set: ``mu [D]``, ``sigma [D, D]`` (float64), ``n``, optional ``features [N, D]``."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray | None = None


class StreamingStats:
    """Accumulate ``[B, D]`` feature batches; ``result()`` gives mean and unbiased covariance in float64.

    Args:
        keep_features: also keep every feature row (float32) for KID and precision/recall.
    """

    def __init__(self, keep_features: bool = True):
        self.keep_features = keep_features
        self.n = 0
        self._shift = self._sum = self._outer = None
        self._feats: list[np.ndarray] = []

    def update(self, feats: np.ndarray) -> None:
        """Add a batch ``[B, D]``."""
        feats = np.asarray(feats)
        if feats.ndim != 2:
            raise ValueError(f"features of shape {feats.shape}: expected [B, D].")
        if self._shift is None:
            d = feats.shape[1]
            self._shift = feats[0].astype(np.float64)
            self._sum, self._outer = np.zeros(d), np.zeros((d, d))
        x = feats.astype(np.float64) - self._shift  # [B, D]
        self._sum += x.sum(0)
        self._outer += x.T @ x  # [D, B] @ [B, D] -> [D, D]
        self.n += len(x)
        if self.keep_features:
            self._feats.append(feats.astype(np.float32))

    def result(self) -> FeatureStats:
        """Mean ``[D]`` and covariance ``[D, D]`` with the ``N - 1`` denominator (``np.cov``)."""
        if self.n < 2:
            raise ValueError(f"{self.n} image(s): FID statistics need at least 2 images.")
        m = self._sum / self.n  # mean of the shifted features
        sigma = (self._outer - self.n * np.outer(m, m)) / (self.n - 1)
        sigma = (sigma + sigma.T) / 2
        feats = np.concatenate(self._feats) if self.keep_features else None
        return FeatureStats(mu=m + self._shift, sigma=sigma, n=self.n, features=feats)


def stats_from_features(feats: np.ndarray) -> FeatureStats:
    """One-shot statistics of ``[N, D]`` features (same code path as streaming)."""
    s = StreamingStats(keep_features=True)
    s.update(feats)
    return s.result()
