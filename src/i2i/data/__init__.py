"""Data: unpaired two-domain folders, single-folder inference, transforms, validation, sampling,
synthetic demo domains. Plain typed arguments only: no config objects below build.py."""

from i2i.data.errors import DataError
from i2i.data.folder import ImageFolderDataset, collect_images, crop_to_size, pad_to_multiple
from i2i.data.images import IMG_EXTENSIONS, is_image_file, list_images, load_image, to_pil, to_tensor
from i2i.data.sampler import EpochSampler, build_loader, derive_seed, steps_per_epoch
from i2i.data.synthetic import blob_mask, make_synthetic_dataset, render_domain
from i2i.data.transforms import PREPROCESS_MODES, TransformParams, make_multiple, transform_image, transform_pil
from i2i.data.unaligned import UnpairedDataset
from i2i.data.validate import check_images, check_unpaired_root, domain_dir, find_bad_images

__all__ = [
    "IMG_EXTENSIONS",
    "PREPROCESS_MODES",
    "DataError",
    "EpochSampler",
    "ImageFolderDataset",
    "TransformParams",
    "UnpairedDataset",
    "blob_mask",
    "build_loader",
    "check_images",
    "check_unpaired_root",
    "collect_images",
    "crop_to_size",
    "derive_seed",
    "domain_dir",
    "find_bad_images",
    "is_image_file",
    "list_images",
    "load_image",
    "make_multiple",
    "make_synthetic_dataset",
    "pad_to_multiple",
    "render_domain",
    "steps_per_epoch",
    "to_pil",
    "to_tensor",
    "transform_image",
    "transform_pil",
]
