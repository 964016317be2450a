"""Deterministic, resumable, rank-aware epoch sampling.

The published code shuffles with the DataLoader's global-RNG sampler and ``drop_last=True``; a
restarted run re-reads the epoch from its start and multi-GPU runs use DataParallel. Here:

- the permutation of epoch ``e`` is ``torch.randperm(n)`` from a generator seeded by ``(seed, e)``,
- batches are cut from it over the GLOBAL batch (``batch_size * world_size``) with drop_last,
- rank ``r`` takes slice ``[r * batch_size, (r + 1) * batch_size)`` of every global batch,
- ``start_step`` skips the first global steps without loading them (exact resume).

Together with :class:`i2i.data.unaligned.UnpairedDataset` (randomness a function of
``(seed, epoch, index)``), a batch depends only on (seed, epoch, step, rank, world_size), never on
the number of workers or on where a run was interrupted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Sampler

from i2i.data.errors import DataError


class TrainingDataset(Protocol):
    """What the training loader needs of a dataset besides ``__len__`` / ``__getitem__``.

    :class:`i2i.data.unaligned.UnpairedDataset` implements it; a training dataset subclasses it (or implements
    both methods).
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict: ...

    def set_epoch(self, epoch: int) -> None:
        """Called before each epoch's loader is built (epoch-dependent augmentation, e.g. the no-crop phase)."""

    def note_skipped(self, problems: list[str]) -> None:
        """Called in the main process with the files a loader worker skipped (``data.on_error=skip``)."""


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a stable hash of ``parts`` (same on every process, Python and OS)."""
    digest = hashlib.blake2b(repr(tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Global steps in an epoch of ``n`` samples: ``n // (batch_size * world_size)`` (drop_last)."""
    return n // (batch_size * world_size)


class EpochSampler(Sampler[int]):
    """Indices of one epoch for one rank, starting at global step ``start_step``.

    Args:
        n: dataset length.
        batch_size: per-rank batch size.
        seed: run seed.
        epoch: epoch number (the permutation is a function of ``(seed, epoch)``).
        rank: this process's rank.
        world_size: number of processes.
        start_step: first global step of the epoch to yield (resume).
        shuffle: permute (``False``: serial order 0..n-1, published ``serial_batches``).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        shuffle: bool = True,
    ) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise DataError(
                f"train.batch_size={batch_size}, rank={rank}, world_size={world_size}: need batch_size >= 1 "
                f"and 0 <= rank < world_size"
            )
        if start_step < 0:
            raise DataError(f"start_step={start_step}: must be >= 0")
        self.steps = steps_per_epoch(n, batch_size, world_size)
        if self.steps == 0:
            raise DataError(
                f"dataset of {n} images is smaller than one global batch ({batch_size} x {world_size} ranks) — "
                f"lower train.batch_size or add images"
            )
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world_size, self.start_step, self.shuffle = rank, world_size, start_step, shuffle

    def permutation(self) -> torch.Tensor:
        """LongTensor [n]: the epoch's order of dataset indices (identical on every rank)."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(derive_seed("epoch_perm", self.seed, self.epoch))
        return torch.randperm(self.n, generator=g)  # CPU: avoids the CUDA randperm bug (CUT #83)

    def __iter__(self) -> Iterator[int]:
        perm = self.permutation()
        gbs = self.batch_size * self.world_size
        # [steps * gbs] -> [steps, world_size, batch_size] -> this rank's [steps, batch_size]
        grid = perm[: self.steps * gbs].view(self.steps, self.world_size, self.batch_size)[:, self.rank]
        return iter(grid[self.start_step :].reshape(-1).tolist())

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.batch_size


def _seed_worker(worker_id: int) -> None:
    """Seed the global RNGs of a worker from torch's per-worker seed (for any third-party code).

    The datasets of this package never use global RNGs; this only keeps stray ``random``/numpy
    calls reproducible.
    """
    import random
    import signal

    import numpy as np

    # Ctrl-C / SIGTERM sent to the whole process group: the main process stops at a step boundary and shuts
    # the workers down itself (they also exit when the main process dies)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


class EpochLoader:
    """The batches of one epoch, from a DataLoader that always shuts its workers down.

    Iterating it yields the DataLoader's batches. It also

    - hands the files a dataset skipped (``data.on_error=skip``; the ``"skipped"`` entry of a sample, see
      :meth:`i2i.data.unaligned.UnpairedDataset.note_skipped`) to the main process's dataset, which warns once
      per file for the whole run, whatever the number of workers;
    - shuts the worker processes down as soon as iteration ends, also on an exception. Workers ignore
      SIGTERM (see :func:`_seed_worker`); left to the garbage collector, a worker kept alive by an exception's
      traceback would make interpreter shutdown wait on it forever.
    """

    def __init__(self, loader: DataLoader, dataset: TrainingDataset) -> None:
        self.loader, self.dataset = loader, dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        it = iter(self.loader)
        try:
            for batch in it:
                skipped = batch.pop("skipped", None)
                if skipped:
                    self.dataset.note_skipped([line for text in skipped for line in text.splitlines()])
                yield batch
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)  # what the iterator's __del__ calls; idempotent
            if shutdown is not None:
                shutdown()


def build_loader(
    dataset: TrainingDataset,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    epoch: int = 0,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    shuffle: bool = True,
) -> EpochLoader:
    """The batches of one epoch (build one per epoch).

    Calls ``dataset.set_epoch(epoch)`` BEFORE the loader exists, so workers
    (not persistent: they copy the dataset at ``iter(loader)``) see the right epoch; call
    ``set_no_crop`` likewise before building. The loader gets its own ``torch.Generator`` so that
    creating an iterator does not consume the global torch RNG (which would make a resumed run
    diverge from an uninterrupted one).

    Args:
        dataset: map-style dataset.
        batch_size: per-rank batch size.
        num_workers: loader processes (0: load in the main process).
        seed, epoch, start_step, rank, world_size, shuffle: see :class:`EpochSampler`.
        pin_memory: pin batches (CUDA training).
        prefetch_factor: batches prefetched per worker (ignored when ``num_workers == 0``).

    Returns:
        :class:`EpochLoader` yielding ``steps_per_epoch - start_step`` batches of exactly ``batch_size``.
    """
    dataset.set_epoch(epoch)
    sampler = EpochSampler(len(dataset), batch_size, seed, epoch, rank, world_size, start_step, shuffle)
    extra = {"prefetch_factor": prefetch_factor} if num_workers > 0 and prefetch_factor else {}
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,  # the sampler already yields whole batches only
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(derive_seed("loader", seed, epoch, rank)),
        persistent_workers=False,
        **extra,
    )
    return EpochLoader(loader, dataset)
