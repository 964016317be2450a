"""Specifications of the pure metric functions: Fréchet distance, KID, precision/recall, streaming statistics."""

import numpy as np
import pytest
import torch

from i2i.metrics.fid import frechet_distance
from i2i.metrics.kid import kid, mmd2_unbiased, polynomial_kernel
from i2i.metrics.prdc import precision_recall
from i2i.metrics.stats import StreamingStats


def test_frechet_identical_is_zero():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    sigma = a @ a.T + np.eye(5)
    mu = rng.standard_normal(5)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_frechet_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    s1, s2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_equal_covariance_is_squared_mean_difference():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 4))
    sigma = a @ a.T
    mu1, mu2 = rng.standard_normal(4), rng.standard_normal(4)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-6, abs=1e-8)


def test_frechet_singular_product_uses_offset_and_stays_finite():
    # rank-1 covariances: sqrtm of the singular product is handled by the eps fallback or is finite already
    v = np.array([[1.0], [2.0], [0.0]])
    s = v @ v.T
    d = frechet_distance(np.zeros(3), s, np.ones(3), s)
    assert np.isfinite(d) and d == pytest.approx(3.0, abs=1e-3)


def test_frechet_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def _naive_mmd2(x, y):
    m, d = len(x), x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_mmd2_matches_naive_double_loop():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((7, 4)), rng.standard_normal((7, 4)) + 0.5
    got = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y))
    assert got == pytest.approx(_naive_mmd2(x, y), rel=1e-10)
    # one subset covering both whole sets is a permutation of them: KID x100 = 100 * MMD²
    mean, std = kid(x, y, n_subsets=1, subset_size=7)
    assert mean == pytest.approx(100 * _naive_mmd2(x, y), rel=1e-10) and std == 0.0


def test_kid_near_zero_same_distribution_and_positive_when_shifted():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((200, 8)), rng.standard_normal((200, 8))
    same, same_std = kid(a, b, n_subsets=20, subset_size=100)
    shifted, _ = kid(a, b + 1.0, n_subsets=20, subset_size=100)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 10 * max(abs(same), same_std)
    assert kid(a, a, n_subsets=5, subset_size=200)[0] == pytest.approx(
        100 * mmd2_unbiased(polynomial_kernel(a, a), polynomial_kernel(a, a), polynomial_kernel(a, a)), rel=1e-9)


def test_kid_subset_size_capped_and_deterministic():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((12, 3)), rng.standard_normal((30, 3))
    assert kid(a, b, n_subsets=4, subset_size=1000, seed=7) == kid(a, b, n_subsets=4, subset_size=1000, seed=7)
    with pytest.raises(ValueError, match="at least 2"):
        kid(a[:1], b)


def _naive_pr(real, fake, k):
    def radii(s):
        return [sorted(np.linalg.norm(s - p, axis=1))[k] for p in s]  # index k skips self (distance 0)
    rr, rf = radii(real), radii(fake)
    prec = np.mean([any(np.linalg.norm(f - r) <= rr[i] for i, r in enumerate(real)) for f in fake])
    rec = np.mean([any(np.linalg.norm(r - f) <= rf[i] for i, f in enumerate(fake)) for r in real])
    return prec, rec


@pytest.mark.parametrize("chunk", [3, 1024])
def test_precision_recall_matches_naive(chunk):
    rng = np.random.default_rng(6)
    real, fake = rng.standard_normal((25, 5)), rng.standard_normal((20, 5)) * 1.5 + 0.7
    got = precision_recall(real, fake, k=3, chunk=chunk)
    assert got == pytest.approx(_naive_pr(real, fake, 3))
    assert 0 < got[0] < 1 and 0 < got[1] < 1
    assert precision_recall(real, real, k=3) == (1.0, 1.0)


@pytest.mark.parametrize("batch", [1, 3, 7, 40])
def test_streaming_stats_equal_numpy_and_independent_of_batch(batch):
    rng = np.random.default_rng(7)
    feats = (rng.standard_normal((40, 6)) * 3 + 10).astype(np.float32)
    st = StreamingStats(keep_features=True)
    for i in range(0, 40, batch):
        st.update(feats[i:i + batch])
    r = st.result()
    np.testing.assert_allclose(r.mu, feats.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(r.sigma, np.cov(feats.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12)
    assert r.n == 40 and np.array_equal(r.features, feats)


def test_streaming_stats_need_two_images():
    st = StreamingStats()
    st.update(torch.zeros(1, 3).numpy())
    with pytest.raises(ValueError, match="at least 2"):
        st.result()
