"""Unpaired two-domain dataset (published ``UnalignedDataset``, taesungp/contrastive-unpaired-translation,
data/unaligned_dataset.py).

Published behaviour kept: folders ``<root>/<phase>A`` and ``<root>/<phase>B`` (testA/testB fall back
to valA/valB), files found recursively and sorted, ``len = max(|A|, |B|)``, ``A = A[i % |A|]``, ``B``
a uniformly random index (``serial_batches``: ``i % |B|``), A and B transformed independently
(separate crop and flip), the "no crop during LR decay" switch (published: load_size := crop_size
once the epoch exceeds ``n_epochs``) — here the explicit ``no_crop_after_epoch``, applied by
:meth:`UnpairedDataset.set_epoch`.

Changes on purpose:

- ``channels`` drives the decoding (published: always RGB; CUT #57).
- ALL randomness (B index, crops, flips) is a function of ``(seed, epoch, index)`` — never global
  RNG state — so batches do not depend on the number of workers and a resumed run is exact.
- ``direction='BtoA'`` swaps the folders here (published: the model swaps the tensors). The source
  domain is then iterated in order and the target drawn at random; the sampled pairs are
  distributed alike.
- ``max_dataset_size`` caps the SORTED list (published caps before sorting).
- Layout and files are validated up front with one-line errors (:mod:`i2i.data.validate`).
"""

from __future__ import annotations

import os
import random
import warnings

import torch
from torch.utils.data import Dataset

from i2i.data.errors import DataError
from i2i.data.images import check_channels, list_images, load_image
from i2i.data.sampler import derive_seed
from i2i.data.transforms import check_preprocess, transform_image
from i2i.data.validate import check_images, check_unpaired_root, domain_dir

ON_ERROR = ("raise", "skip")


class UnpairedDataset(Dataset):
    """Unpaired images of two domains with deterministic, index-addressed augmentation.

    Args:
        root: dataset folder with ``trainA/ trainB/ testA/ testB/`` (``data.root``).
        phase: 'train' or 'test' (or any ``<phase>A``/``<phase>B`` pair).
        direction: 'AtoB' or 'BtoA' (BtoA: folder B becomes the returned 'A').
        channels: 1, 3 or 4 (see :func:`i2i.data.images.load_image`).
        load_size: resize size before cropping (published 286).
        crop_size: random crop size (published 256).
        preprocess: see :data:`i2i.data.transforms.PREPROCESS_MODES`.
        flip: random horizontal flip.
        serial_batches: B index = ``i % |B|`` instead of random.
        max_dataset_size: cap on images per domain (``None``: all).
        seed: run seed; with the epoch and the index it determines every random choice.
        on_error: 'raise' -> :class:`DataError` on a file that fails to decode; 'skip' -> use the next
            file of that domain (``(j + 1) % n``, deterministic) and report the file in the sample's
            ``"skipped"`` entry; :meth:`note_skipped` (called by the loader in the main process) warns once
            per file for the whole run and counts it in :attr:`skipped`.
        validate: check the layout and decode every file up front (with ``on_error='skip'`` bad
            files are only warned about).
        no_crop_after_epoch: published "no crop during LR decay": from the epoch after this one on,
            load_size := crop_size (:meth:`set_epoch`); ``None``: always crop.
        name: the dataset's name (run names, the start-up banner).

    Attributes:
        skipped: number of distinct files that failed to load and were skipped so far in this run, as
            reported to the main process (:meth:`note_skipped`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        phase: str = "train",
        direction: str = "AtoB",
        channels: int = 3,
        load_size: int = 286,
        crop_size: int = 256,
        preprocess: str = "resize_and_crop",
        flip: bool = True,
        serial_batches: bool = False,
        max_dataset_size: int | None = None,
        seed: int = 0,
        on_error: str = "raise",
        validate: bool = True,
        no_crop_after_epoch: int | None = None,
        name: str | None = None,
    ) -> None:
        check_channels(channels)
        check_preprocess(preprocess, load_size, crop_size)
        if on_error not in ON_ERROR:
            raise DataError(f"data.on_error={on_error!r}: unknown — use 'raise' or 'skip'")
        if validate:
            check_unpaired_root(root, phases=(phase,), direction=direction)
        dirs = [domain_dir(root, phase, d) for d in ("A", "B")]
        if direction == "BtoA":
            dirs.reverse()
        self.root, self.phase, self.direction = os.fspath(root), phase, direction
        self.dir_A, self.dir_B = (os.fspath(d) for d in dirs)
        self.A_paths = list_images(self.dir_A, max_dataset_size)
        self.B_paths = list_images(self.dir_B, max_dataset_size)
        if not self.A_paths or not self.B_paths:
            empty = self.dir_A if not self.A_paths else self.dir_B
            raise DataError(f"{empty}: no images found — add images or fix data.root")
        self.channels, self.load_size, self.crop_size = channels, load_size, crop_size
        self.preprocess, self.flip, self.serial_batches = preprocess, flip, serial_batches
        self.seed, self.on_error = seed, on_error
        self.epoch, self.no_crop, self.skipped = 0, False, 0
        self.no_crop_after_epoch, self.name = no_crop_after_epoch, name or os.path.basename(self.root)
        self._bad: set[str] = set()  # files this process will not try again
        self._reported: set[str] = set()  # files already warned about (main process)
        self._new_bad: list[str] = []  # problems found while producing the current sample
        if validate:
            min_size = crop_size if preprocess == "crop" else None
            mode = "raise" if on_error == "raise" else "warn"
            check_images(self.A_paths + self.B_paths, channels, min_size, on_error=mode)

    def __len__(self) -> int:
        return max(len(self.A_paths), len(self.B_paths))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random choices ``__getitem__`` makes (call before building a loader).

        Also the data phase: after epoch ``no_crop_after_epoch`` images are resized to the crop size
        (:meth:`set_no_crop`).
        """
        self.epoch = int(epoch)
        if self.no_crop_after_epoch is not None:
            self.set_no_crop(self.epoch > self.no_crop_after_epoch)

    def set_no_crop(self, flag: bool) -> None:
        """Published "no crop during LR decay": when True, load_size := crop_size.

        With ``resize_and_crop`` the image is resized straight to ``crop_size`` (the crop is then the
        whole image); flipping still applies. :meth:`set_epoch` calls this when the data phase
        changes (published: epochs after ``n_epochs``); call it before building the epoch's loader.
        """
        self.no_crop = bool(flag)

    def _rng(self, index: int, stream: str) -> random.Random:
        return random.Random(derive_seed(self.seed, self.epoch, index, stream))

    def _load(self, paths: list[str], j: int, rng_state: object) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Load and transform ``paths[j]`` (or, with on_error='skip', the next good file)."""
        load_size = self.crop_size if self.no_crop else self.load_size
        rng = random.Random()
        for attempt in range(len(paths)):
            jj = (j + attempt) % len(paths)
            path = paths[jj]
            if path in self._bad:
                continue
            rng.setstate(rng_state)  # the same draws whichever file ends up used
            try:
                img = load_image(path, self.channels)
                x, params = transform_image(
                    img, rng, preprocess=self.preprocess, load_size=load_size,
                    crop_size=self.crop_size, flip=self.flip, path=path,
                )
                return x, params.as_tensor(), jj
            except DataError as err:
                if self.on_error == "raise":
                    raise
                self._bad.add(path)
                self._new_bad.append(f"{path}\t{err}")
        raise DataError(f"{os.path.dirname(paths[j])}: every image failed to load — fix or replace the files")

    def __getitem__(self, index: int) -> dict:
        """Sample ``index`` of the current epoch.

        Returns:
            dict with 'A', 'B' (float32 [C, H, W] in [-1, 1]), 'A_path', 'B_path' (str), 'A_index',
            'B_index' (int, the files actually used), 'A_params', 'B_params' (LongTensor [5] =
            top, left, load_h, load_w, flipped), 'skipped' (str: ``<path>`` TAB ``<problem>`` per file skipped
            for this sample, one per line; empty when none).
        """
        index = int(index)
        self._new_bad = []
        n_a, n_b = len(self.A_paths), len(self.B_paths)
        b_index = index % n_b if self.serial_batches else self._rng(index, "B_index").randrange(n_b)
        a, a_params, a_idx = self._load(self.A_paths, index % n_a, self._rng(index, "A").getstate())
        b, b_params, b_idx = self._load(self.B_paths, b_index, self._rng(index, "B").getstate())
        return {
            "A": a, "B": b,
            "A_path": self.A_paths[a_idx], "B_path": self.B_paths[b_idx],
            "A_index": a_idx, "B_index": b_idx,
            "A_params": a_params, "B_params": b_params,
            "skipped": "\n".join(self._new_bad),
        }

    def note_skipped(self, problems: list[str]) -> None:
        """Main process: warn once per file (for the whole run) about files that failed to load and were skipped.

        Args:
            problems: ``<path>`` TAB ``<one-line problem>`` lines, from the samples' ``"skipped"`` entries; workers of
                later epochs copy this dataset and do not try these files again.
        """
        for line in problems:
            path, _, problem = line.partition("\t")
            if not line or path in self._reported:
                continue
            self._reported.add(path)
            self._bad.add(path)
            self.skipped += 1
            warnings.warn(f"skipping {problem}", stacklevel=2)

    def __repr__(self) -> str:
        return (
            f"UnpairedDataset(root={self.root!r}, phase={self.phase!r}, direction={self.direction!r}, "
            f"|A|={len(self.A_paths)}, |B|={len(self.B_paths)}, preprocess={self.preprocess!r}, "
            f"load_size={self.load_size}, crop_size={self.crop_size}, no_crop={self.no_crop})"
        )
