"""Data-parallel training under ``torchrun``: process group, gradient averaging, rank-0 duties, RNG per rank.

Design (docs/distributed.md): every process holds a full copy of G, D and the method's modules, trains on its own
slice of every global batch (:class:`i2i.data.sampler.EpochSampler`), and after each ``backward`` the gradients of
exactly the parameters the step's optimizers update are averaged across processes with a few flattened
``all_reduce`` calls (:class:`GradientSync`). This replaces ``DistributedDataParallel``'s hooks, which only fire when a
module is *called* — the methods reach their projection heads through ``Method.generator_losses``, call D several
times per step and G in encoder-only mode (partial graphs), all of which DDP handles only with
``find_unused_parameters``/``static_graph`` caveats. Averaging the gradient of per-process mean losses is the
gradient of the global mean when every process has the same batch size (the sampler guarantees it), so one step of
W processes with batch b equals one step of one process with batch W·b for per-image losses.

The collectives are asynchronous on NCCL (``Work.wait`` only orders the CUDA stream): no host-device
synchronisation is added to the training step.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from i2i.data.sampler import derive_seed
from i2i.engine.state import capture_rng, restore_rng

#: bytes per flattened all_reduce bucket (several buckets are in flight at once)
BUCKET_BYTES = 32 * 2**20


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its node, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        """True when more than one process trains (a process group exists)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes samples, evaluates and checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op for one process)."""
        if not self.enabled:
            return
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()


def launch_info(environ: dict | None = None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the variables ``torchrun`` sets (RANK, WORLD_SIZE, LOCAL_RANK)."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    rank = int(env.get("RANK", "0"))
    local = int(env.get("LOCAL_RANK", str(rank)))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE — launch with torchrun")
    return rank, world, local


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group ``torchrun`` describes (idempotent); one process: no group, ``device`` unchanged.

    Backend NCCL on CUDA (each process uses ``cuda:<LOCAL_RANK>``), Gloo on the CPU. The collective timeout is
    ``$I2I_DIST_TIMEOUT_MIN`` minutes (default 60: rank 0 may evaluate while the others wait).

    Args:
        device: the configured device (``resolve_device(cfg.device)``); ``cuda:N`` with N > 0 is refused under
            torchrun, where the local rank picks the GPU.
    """
    rank, world, local = launch_info()
    if world == 1:
        return DistEnv(0, 1, 0, device)
    if device.type == "cuda":
        if device.index not in (None, 0) and device.index != local:
            raise ValueError(f"device={device} under torchrun: each process uses cuda:<LOCAL_RANK> — set "
                             "device=auto or device=cuda")
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but only {torch.cuda.device_count()} GPU(s) are visible: lower "
                             "--nproc_per_node to the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        minutes = float(os.environ.get("I2I_DIST_TIMEOUT_MIN", "60"))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=minutes))
    return DistEnv(rank, world, local, device)


def cleanup() -> None:
    """Leave the process group (no-op when none exists)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first(env: DistEnv) -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (e.g. generating or caching files)."""
    if not env.is_main:
        env.barrier()
    yield
    if env.is_main:
        env.barrier()


def broadcast_modules(modules: Iterable[nn.Module], src: int = 0) -> None:
    """Copy every parameter and buffer of ``modules`` from rank ``src`` to all ranks (identical initial weights)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for module in modules:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src)


def rank_seed(seed: int, rank: int) -> int:
    """Seed of the global RNG streams (patch sampling, flips, image pools) of rank ``rank`` > 0.

    Rank 0 keeps the stream of a one-process run seeded with ``seed``.
    """
    return derive_seed("rank", seed, rank)


def convert_step(step: int, old_global_batch: int, new_global_batch: int, n: int) -> int:
    """Global step of a checkpoint written with another global batch, in the units of the new one.

    The epoch is kept; the position inside it is converted by samples consumed (rounded down: at most
    ``new_global_batch - 1`` samples of the epoch are seen again).

    Args:
        step: saved global step.
        old_global_batch: ``batch_size × world_size`` of the run that wrote it.
        new_global_batch: the same product now.
        n: dataset length (``len(dataset)``, unchanged).
    """
    if old_global_batch == new_global_batch:
        return step
    old_spe, new_spe = n // old_global_batch, n // new_global_batch
    epochs, pos = divmod(step, old_spe)
    return epochs * new_spe + min(pos * old_global_batch // new_global_batch, new_spe - 1)


class GradientSync:
    """Average the gradients of the given parameters over all processes (flattened, bucketed all_reduce).

    A parameter that requires grad but got none on this process contributes zeros (buffers keep the same layout on
    every rank, so a data-dependent unused parameter cannot hang the job) and receives the average.
    Cost: one flatten and one unflatten copy of the gradients per phase, and no overlap with ``backward``
    (DDP overlaps bucket reductions with it); for a 11M-parameter G that is ~45 MB per step per direction.

    Args:
        world_size: number of processes.
        bucket_bytes: size of one flattened bucket.
        group: process group (default: the world).
    """

    def __init__(self, world_size: int, bucket_bytes: int = BUCKET_BYTES, group=None) -> None:
        self.world_size, self.bucket_bytes, self.group = world_size, bucket_bytes, group

    def buckets(self, params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Consecutive runs of same-device, same-dtype parameters of at most ``bucket_bytes`` each."""
        out: list[list[torch.Tensor]] = []
        size = 0
        for p in params:
            nbytes = p.numel() * p.element_size()
            same_kind = bool(out) and (out[-1][0].device, out[-1][0].dtype) == (p.device, p.dtype)
            if not same_kind or size + nbytes > self.bucket_bytes:
                out.append([])
                size = 0
            out[-1].append(p)
            size += nbytes
        return out

    def __call__(self, params: Iterable[torch.Tensor]) -> None:
        """All-reduce (mean) the ``.grad`` of ``params`` that require grad; order must match on every rank."""
        params = [p for p in params if p.requires_grad]
        pending = []
        for bucket in self.buckets(params):
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in bucket])
            flat.div_(self.world_size)
            pending.append((bucket, flat, dist.all_reduce(flat, group=self.group, async_op=True)))
        for bucket, flat, work in pending:
            work.wait()  # NCCL: the current stream waits, the host does not
            offset = 0
            for p in bucket:
                view = flat[offset: offset + p.numel()].view_as(p)
                offset += p.numel()
                if p.grad is None:
                    p.grad = view.clone()
                else:
                    p.grad.copy_(view)


def optimizer_params(optimizers: Iterable[torch.optim.Optimizer]) -> list[torch.Tensor]:
    """Parameters of ``optimizers`` in group order (identical on every rank)."""
    return [p for opt in optimizers for group in opt.param_groups for p in group["params"]]


class Communicator:
    """What the training loop needs from the process group (the Trainer builds one from its :class:`DistEnv`).

    Args:
        env: this process's :class:`DistEnv` (``world_size`` > 1).
        seed: run seed (RNG streams of ranks without a saved state on resume).
    """

    def __init__(self, env: DistEnv, seed: int = 0) -> None:
        self.env, self.seed = env, seed
        self.rank, self.world_size = env.rank, env.world_size
        self.grad_sync = GradientSync(env.world_size)

    def sync_grads(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Average the gradients of every parameter the optimizers are about to step."""
        self.grad_sync(optimizer_params(optimizers))

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean over processes of ``t`` (a new tensor)."""
        t = t.clone()
        dist.all_reduce(t)
        return t / self.world_size

    def first_step(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise smallest non-negative value over processes (-1 where every process has -1)."""
        big = torch.iinfo(t.dtype).max
        t = torch.where(t < 0, torch.full_like(t, big), t)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return torch.where(t == big, torch.full_like(t, -1), t)

    def broadcast_object(self, obj, src: int = 0):
        """``obj`` of rank ``src`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src, device=self.env.device if self.env.device.type == "cuda" else None)
        return box[0]

    def gather_rng(self) -> list[dict]:
        """Every rank's RNG state (:func:`capture_rng`), in rank order, on every rank."""
        out: list = [None] * self.world_size
        dist.all_gather_object(out, capture_rng())
        return out

    def restore_rng(self, state: dict, step: int) -> None:
        """Give this rank its own RNG stream after a checkpoint was loaded (which restored rank 0's).

        A rank with a saved state (``state['rng_ranks']``) continues it exactly; a rank the writing run did not
        have (more processes now) starts a stream seeded by ``(seed, rank, step)``.
        """
        saved = state.get("rng_ranks") or []
        if self.rank < len(saved):
            restore_rng(saved[self.rank])
        elif self.rank > 0:
            s = derive_seed("rank-resume", self.seed, self.rank, step)
            random.seed(s)
            np.random.seed(s % 2**32)
            torch.manual_seed(s)

    def barrier(self) -> None:
        self.env.barrier()
