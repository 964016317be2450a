"""Kernel Inception Distance (Bińkowski et al. 2018), as torch-fidelity ``metric_kid.py`` / clean-fid.

Unbiased MMD² with the cubic polynomial kernel ``k(x, y) = (x·y / d + 1)^3``, averaged over ``n_subsets`` random
subsets of ``subset_size`` rows drawn without replacement from each set (``subset_size`` capped at the smaller set, as
clean-fid does; torch-fidelity refuses instead). Reported ×100 as mean ± std over subsets (the ASGIT tables).

ASGIT's two variants (Sec. 4.1.3): *target-KID* is KID(fake, target domain); *fused-KID* is KID(fake, target ∪
source), the reference set being the union of both domains' features (the paper says "between synthesized images and
both domains" and gives no formula; the union is our reading, documented in docs/metrics.md).
"""

from __future__ import annotations

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """``(x yᵀ / d + coef0)^degree``: ``[m, D], [n, D] -> [m, n]`` (float64)."""
    return (x.astype(np.float64) @ y.astype(np.float64).T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD² from kernel matrices of equal-size sets (``m = n``), torch-fidelity ``mmd2(..., "unbiased")``.

    ``(Σ_{i≠j} k_xx + Σ_{i≠j} k_yy) / (m (m-1)) - 2 Σ k_xy / m²``.
    """
    m = k_xx.shape[0]
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kid(feats_fake: np.ndarray, feats_real: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """KID ×100: ``(mean, std)`` of the unbiased MMD² over subsets.

    Args:
        feats_fake, feats_real: ``[N1, D]``, ``[N2, D]``.
        n_subsets: number of random subsets.
        subset_size: rows per subset, capped at ``min(N1, N2)``.
        seed: subset sampling seed (deterministic).
    """
    n1, n2 = len(feats_fake), len(feats_real)
    m = min(subset_size, n1, n2)
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per set (got {n1} fake, {n2} real).")
    rng = np.random.RandomState(seed)
    mmds = np.empty(n_subsets)
    for i in range(n_subsets):
        x = feats_fake[rng.choice(n1, m, replace=False)]
        y = feats_real[rng.choice(n2, m, replace=False)]
        mmds[i] = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y))
    return float(mmds.mean() * 100), float(mmds.std() * 100)
