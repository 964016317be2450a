"""Specifications of the Laplacian-pyramid sliced Wasserstein distance (Karras et al. 2018 protocol)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from i2i.metrics.swd import (
    SWDDescriptors,
    laplacian_pyramid,
    pyr_down,
    pyr_up,
    pyramid_resolutions,
    swd_from_descriptors,
)

_G = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def test_pyr_down_up_match_scipy_mirror_convolution():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    ref_down = ndimage.convolve(x.numpy(), _G[None, None], mode="mirror")[:, :, ::2, ::2]
    np.testing.assert_allclose(pyr_down(x).numpy(), ref_down, atol=1e-12)
    y = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    up = np.zeros((2, 3, 16, 16))
    up[:, :, ::2, ::2] = y.numpy()
    np.testing.assert_allclose(pyr_up(y).numpy(), ndimage.convolve(up, 4 * _G[None, None], mode="mirror"), atol=1e-12)


def test_pyramid_levels_shapes_and_reconstruction():
    assert pyramid_resolutions(256) == [256, 128, 64, 32, 16]
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    pyr = laplacian_pyramid(x, 3)
    assert [tuple(p.shape) for p in pyr] == [(2, 3, 64, 64), (2, 3, 32, 32), (2, 3, 16, 16)]
    rec = pyr[-1]
    for band in reversed(pyr[:-1]):  # collapsing the pyramid gives the image back
        rec = band + pyr_up(rec)
    torch.testing.assert_close(rec, x)


def _images(n, seed, size=32, shift=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(3, size, size, generator=g) * 200 + shift).to(torch.uint8) for _ in range(n)]


def _desc(images, batch, resolution=32):
    acc = SWDDescriptors(resolution, seed=3)
    for i in range(0, len(images), batch):
        acc.update(images[i:i + batch])
    return acc.result()


def test_descriptors_shapes_normalised_and_batch_independent():
    imgs = _images(6, 0)
    d1, d4 = _desc(imgs, 1), _desc(imgs, 4)
    assert [tuple(d.shape) for d in d1] == [(6 * 128, 147), (6 * 128, 147)]
    for a, b in zip(d1, d4):
        torch.testing.assert_close(a, b)
        chans = a.view(-1, 3, 49).transpose(0, 1).reshape(3, -1)
        torch.testing.assert_close(chans.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(chans.std(1, unbiased=False), torch.ones(3), atol=1e-5, rtol=0)


def test_swd_zero_on_identical_and_positive_on_different():
    res = pyramid_resolutions(32)
    a = _desc(_images(6, 0), 2)
    avg, levels = swd_from_descriptors(a, _desc(_images(6, 0), 3), res)
    assert avg == 0.0 and set(levels) == {"32", "16"}
    smooth = [torch.nn.functional.avg_pool2d(im[None].float(), 3, 1, 1)[0].to(torch.uint8) for im in _images(6, 1)]
    avg_diff, levels_diff = swd_from_descriptors(a, _desc(smooth, 2), res)
    assert avg_diff > 0 and all(v > 0 for v in levels_diff.values())
    assert avg_diff == pytest.approx(np.mean(list(levels_diff.values())))


def test_swd_other_image_size_is_resized_and_unequal_counts_subsampled():
    res = pyramid_resolutions(32)
    big = _desc(_images(4, 0, size=48), 2)  # resized to 32
    assert big[0].shape == (4 * 128, 147)
    avg, _ = swd_from_descriptors(_desc(_images(6, 1), 3), big, res)
    assert np.isfinite(avg) and avg > 0
