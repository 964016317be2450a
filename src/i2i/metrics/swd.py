"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, progressive GAN).

Reference: tkarras/progressive_growing_of_gans ``metrics/sliced_wasserstein.py``, the code EnCo ships as
``util/SWD/cal_sliced_wasserstein.py`` and QS-Attn cites. Per level of a Laplacian pyramid (5x5 binomial
``[1, 4, 6, 4, 1] / 16`` kernel, mirror padding; resolutions from the image size down to 16, 256 -> 16 gives 5
levels) take 128 random 7x7 neighbourhoods per image; normalise each colour channel over all descriptors of that level
and set; project on 4 x 128 random unit directions, sort, and average ``|sorted A - sorted B|``; report ×1e3 per level
and the mean over levels.

Deviations, all documented in docs/metrics.md: images of another size are resized to ``resolution`` (default 256,
the size the EnCo script hard-codes) with antialiased bilinear interpolation; descriptor positions come from a fresh
generator seeded by ``(seed, level)`` for each set and are drawn image by image (so identical sets give SWD 0 and
the result does not depend on the batch size); when the sets differ in size, the larger descriptor set is randomly
subsampled to the smaller (the original asserts equal counts).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

_K1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Depthwise 5x5 binomial filter with mirror (``reflect``) padding: ``[B, C, H, W] -> [B, C, H, W]``."""
    k = (torch.outer(_K1, _K1) * gain).to(x)  # [5, 5]
    w = k.expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), w, groups=x.shape[1])


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown: blur then keep even pixels, ``[B, C, H, W] -> [B, C, H/2, W/2]``."""
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrUp: zero-interleave then blur with gain 4, ``[B, C, H, W] -> [B, C, 2H, 2W]``."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up, 4.0)


def laplacian_pyramid(x: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Band-pass levels, finest first; the last level is the low-pass residual."""
    pyr = [x]
    for _ in range(1, num_levels):
        pyr.append(pyr_down(pyr[-1]))
        pyr[-2] = pyr[-2] - pyr_up(pyr[-1])
    return pyr


def pyramid_resolutions(resolution: int) -> list[int]:
    """``resolution, resolution/2, ...`` while >= 16 (256 -> [256, 128, 64, 32, 16])."""
    if resolution < 16:
        raise ValueError(f"swd resolution={resolution}: must be >= 16.")
    out = []
    while resolution >= 16:
        out.append(resolution)
        resolution //= 2
    return out


class SWDDescriptors:
    """Accumulate normalised 7x7 pyramid descriptors of one image set.

    Args:
        resolution: images are resized to ``resolution x resolution`` (antialiased bilinear) when needed.
        nhood_size, nhoods_per_image: patch size and patches per image per level (7, 128).
        seed: descriptor-position seed; the same seed gives the same positions for every set.
        device: where the pyramid is computed.
    """

    def __init__(self, resolution: int = 256, nhood_size: int = 7, nhoods_per_image: int = 128, seed: int = 0,
                 device: str | torch.device = "cpu"):
        self.resolutions = pyramid_resolutions(resolution)
        self.resolution, self.nhood, self.per_image, self.device = resolution, nhood_size, nhoods_per_image, device
        self._rngs = [np.random.default_rng([seed, lod]) for lod in range(len(self.resolutions))]
        self._desc: list[list[torch.Tensor]] = [[] for _ in self.resolutions]
        self.n = 0

    def update(self, images: Sequence[torch.Tensor]) -> None:
        """Add uint8 ``[3, H, W]`` images."""
        r = self.resolution
        x = []
        for im in images:
            xi = im.to(self.device).unsqueeze(0).float()  # [1, 3, H, W] in 0..255 (scale is normalised away)
            if tuple(xi.shape[-2:]) != (r, r):
                xi = F.interpolate(xi, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
            x.append(xi)
        for lod, level in enumerate(laplacian_pyramid(torch.cat(x), len(self.resolutions))):
            self._desc[lod].append(self._sample(level, self._rngs[lod]).cpu())
        self.n += len(x)

    def _sample(self, level: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Random neighbourhoods, ``[B, C, h, w] -> [B * per_image, C, 7, 7]``."""
        b, c, h, w = level.shape
        half = self.nhood // 2
        yx = [(rng.integers(half, h - half, self.per_image), rng.integers(half, w - half, self.per_image))
              for _ in range(b)]  # image by image: the draws do not depend on the batching
        ys, xs = np.concatenate([p[0] for p in yx]), np.concatenate([p[1] for p in yx])
        ar = torch.arange(-half, half + 1, device=level.device)
        img = torch.arange(b, device=level.device).repeat_interleave(self.per_image)  # [N]
        ys = torch.as_tensor(ys, device=level.device)[:, None] + ar  # [N, 7]
        xs = torch.as_tensor(xs, device=level.device)[:, None] + ar  # [N, 7]
        ch = torch.arange(c, device=level.device)
        return level[img[:, None, None, None], ch[None, :, None, None], ys[:, None, :, None], xs[:, None, None, :]]

    def result(self) -> list[torch.Tensor]:
        """Per level, descriptors normalised per channel over the set and flattened: ``[N, C * 7 * 7]``."""
        out = []
        for chunks in self._desc:
            d = torch.cat(chunks).double()  # [N, C, 7, 7]
            d = (d - d.mean(dim=(0, 2, 3), keepdim=True)) / d.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
            out.append(d.flatten(1).float())
        return out


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, dir_repeats: int = 4, dirs_per_repeat: int = 128,
                       rng: np.random.Generator | None = None, device: str | torch.device = "cpu") -> float:
    """Mean over repeats and directions of ``mean |sort(a @ dir) - sort(b @ dir)|``; ``a [N, D]``, ``b [M, D]``."""
    rng = rng or np.random.default_rng(0)
    if len(a) != len(b):  # subsample the larger set to the smaller one
        n = min(len(a), len(b))
        a, b = [t[torch.as_tensor(np.sort(rng.choice(len(t), n, replace=False)))] if len(t) > n else t for t in (a, b)]
    a, b = a.to(device), b.to(device)
    results = []
    for _ in range(dir_repeats):
        dirs = rng.standard_normal((a.shape[1], dirs_per_repeat))
        dirs = torch.as_tensor(dirs / np.sqrt(np.sum(dirs ** 2, axis=0, keepdims=True)), dtype=torch.float32,
                               device=a.device)
        pa = torch.sort(a @ dirs, dim=0).values  # [N, D] @ [D, dirs] -> [N, dirs]
        pb = torch.sort(b @ dirs, dim=0).values
        results.append((pa - pb).abs().mean().item())
    return float(np.mean(results))


def swd_from_descriptors(desc_a: list[torch.Tensor], desc_b: list[torch.Tensor], resolutions: list[int],
                         dir_repeats: int = 4, dirs_per_repeat: int = 128, seed: int = 0,
                         device: str | torch.device = "cpu") -> tuple[float, dict]:
    """SWD ×1e3: ``(average over levels, {resolution: value})``; projections and sorts run on ``device``."""
    levels = {}
    for lod, (a, b) in enumerate(zip(desc_a, desc_b)):
        rng = np.random.default_rng([seed, lod, 1])
        levels[str(resolutions[lod])] = sliced_wasserstein(a, b, dir_repeats, dirs_per_repeat, rng, device) * 1e3
    return float(np.mean(list(levels.values()))), levels
