"""Single-folder dataset for inference.

The published test path needs both domains (``KeyError: 'B'``, CUT #45) and resizes every image to
a 256 square. Here a folder (or a list of folders, e.g. ``root/testA``, or single files) of source
images is enough; images keep their size and are padded (reflect, replicate where the image is
too small to reflect) up to a multiple of ``size_multiple`` so the ResNet generator's two stride-2
stages divide evenly, and at least to :data:`MIN_SIZE` so any image down to 1x1 translates;
:func:`crop_to_size` cuts the output back to the input size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from i2i.data.errors import DataError
from i2i.data.images import check_channels, is_image_file, list_images, load_image, to_tensor
from i2i.data.transforms import make_multiple
from i2i.data.validate import check_images

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]

#: smallest padded side the ResNet generator runs on: its first 7x7 conv reflect-pads by 3 (needs >= 4 px) and its
#: residual blocks reflect-pad by 1 at a quarter of the size (needs >= 2 px there, so >= 8 px at the input)
MIN_SIZE = 8


def collect_images(roots: PathOrPaths, max_dataset_size: int | None = None) -> list[str]:
    """Image files of one or more folders (recursive, sorted per folder) or image files, in order.

    Raises:
        DataError: a missing path, a non-image file, or no images at all.
    """
    roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    if not roots:
        raise DataError("data.root: empty list of folders — set data.root to a folder of images")
    paths: list[str] = []
    for root in roots:
        root = os.fspath(root)
        if os.path.isdir(root):
            found = list_images(root)
            if not found:
                raise DataError(f"{root}: no images found — add images or fix data.root")
            paths.extend(found)
        elif os.path.isfile(root) and is_image_file(root):
            paths.append(root)
        elif os.path.exists(root):
            raise DataError(f"{root}: not an image file or folder — set data.root to a folder of images")
        else:
            raise DataError(f"{root}: not found — set data.root to an existing folder of images")
    return paths if max_dataset_size is None else paths[:max_dataset_size]


def padded_size(size: int, multiple: int, min_size: int = 1) -> int:
    """The smallest multiple of ``multiple`` that is >= ``size`` and >= ``min_size``."""
    target = max(size, min_size)
    return target + (-target) % multiple


def pad_to_multiple(x: torch.Tensor, multiple: int, min_size: int = 1) -> torch.Tensor:
    """Pad [..., H, W] at the bottom and right up to multiples of ``multiple`` (and at least ``min_size``).

    Each side is reflect-padded, or replicate-padded when the image is too small to reflect (pad >= size),
    so any size from 1x1 up works.
    """
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, multiple, min_size) - h, padded_size(w, multiple, min_size) - w
    x = x.unsqueeze(0)  # [C, H, W] -> [1, C, H, W]
    for pad, size, sides in ((ph, h, (0, 0, 0, ph)), (pw, w, (0, pw, 0, 0))):
        if pad:
            x = F.pad(x, sides, mode="reflect" if pad < size else "replicate")
    return x.squeeze(0)  # [1, C, H', W'] -> [C, H', W']


def crop_to_size(x: torch.Tensor, h: int | torch.Tensor, w: int | torch.Tensor) -> torch.Tensor:
    """Cut [..., H', W'] back to the top-left [..., h, w] (undo :func:`pad_to_multiple`).

    ``h`` and ``w`` may be 0-dim or 1-element tensors (e.g. ``batch['orig_size'][0]`` with
    batch size 1); this reads them on the host, so call it outside any timed GPU step.
    """
    return x[..., : int(h), : int(w)]


class ImageFolderDataset(Dataset):
    """Source-domain images for inference; no domain B needed.

    Args:
        root: a folder (searched recursively), an image file, or a list of those (e.g.
            ``[root/testA]``).
        channels: 1, 3 or 4 (see :func:`i2i.data.images.load_image`).
        size_multiple: H and W are reflect-padded up to a multiple of this (4 for the ResNet
            generator with two down-samplings).
        min_size: the padded H and W are at least this (:data:`MIN_SIZE`, the ResNet generator's smallest
            input; images down to 1x1 are replicate-padded up to it).
        resize: ``None`` keeps the size; an int resizes to a ``resize x resize`` square (BICUBIC, the
            published test preprocessing with load_size = crop_size), then makes the size a multiple
            of 4 (published ``__make_power_2``).
        max_dataset_size: keep at most this many images (``None``: all).
        validate: check every file header up front.

    Items: 'A' float32 [C, H', W'] in [-1, 1]; 'A_path' str; 'orig_size' LongTensor [2] = (h, w) of
    the image before padding (crop the output back with :func:`crop_to_size`); 'file_size'
    LongTensor [2] = (h, w) of the file (differs from 'orig_size' only when ``resize`` is set).
    Different sizes do not collate in a DataLoader (:func:`i2i.engine.translate.size_batches` batches
    consecutive images of one size).
    """

    def __init__(
        self,
        root: PathOrPaths,
        channels: int = 3,
        size_multiple: int = 4,
        resize: int | None = None,
        max_dataset_size: int | None = None,
        validate: bool = True,
        min_size: int = MIN_SIZE,
    ) -> None:
        check_channels(channels)
        if size_multiple < 1 or (resize is not None and resize < 1):
            raise DataError(f"size_multiple={size_multiple}, resize={resize}: must be positive")
        self.paths = collect_images(root, max_dataset_size)
        self.channels, self.size_multiple, self.resize, self.min_size = channels, size_multiple, resize, min_size
        if validate:
            check_images(self.paths, channels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        img = load_image(path, self.channels)
        file_w, file_h = img.size
        if self.resize is not None:
            img = make_multiple(img.resize((self.resize, self.resize), Image.BICUBIC), 4)
        x = to_tensor(img)  # [C, h, w]
        h, w = x.shape[-2:]
        return {
            "A": pad_to_multiple(x, self.size_multiple, self.min_size),  # [C, H', W']
            "A_path": path,
            "orig_size": torch.tensor([h, w], dtype=torch.long),
            "file_size": torch.tensor([file_h, file_w], dtype=torch.long),
        }
