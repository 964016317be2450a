"""The start-up summary of ``train`` (rank 0, stderr): device, data, schedule, batch, run dir, sizes, cadences.

Every number is read off the built :class:`~i2i.engine.loop.Trainer` (not recomputed from the config), so the
banner says what the run will actually do.
"""

from __future__ import annotations

import sys

import torch
from torch import nn


def _count(module: nn.Module | None) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


def parameter_counts(trainer) -> dict[str, int]:
    """Parameters of G, D and each of the method's own modules that has any (heads, G_BA, D_A, feedback, ...)."""
    counts = {"G": _count(_unwrap(trainer.G)), "D": _count(_unwrap(trainer.D))}
    method = _unwrap(trainer.method)
    for name, child in method.named_children():
        n = _count(child)
        if n:
            counts[name] = n
    own = sum(p.numel() for p in method.parameters(recurse=False))
    if own:
        counts["method"] = own
    return counts


def cuda_fallback_warning(requested: str, device: torch.device) -> str | None:
    """One loud line when ``device=auto`` lands on the CPU although the installed torch is a CUDA build."""
    if requested != "auto" or device.type != "cpu":
        return None
    if torch.version.cuda is None or torch.cuda.is_available():
        return None
    return (f"i2i: WARNING: device=auto is training on the CPU although torch {torch.__version__} is a CUDA "
            f"{torch.version.cuda} build: no usable GPU is visible (check nvidia-smi, the driver and "
            "CUDA_VISIBLE_DEVICES) — set device=cpu to train on the CPU on purpose, or device=cuda to stop instead")


def _device_text(device: torch.device, amp: str) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{device} ({name}), amp {amp}"
    return f"{device} ({torch.get_num_threads()} threads), amp {amp}"


def _domain_sizes(dataset) -> str:
    a, b = getattr(dataset, "A_paths", None), getattr(dataset, "B_paths", None)
    if a is None or b is None:
        return f"{len(dataset)} items"
    return f"|A| {len(a)}, |B| {len(b)} (train)"


def _schedule_text(trainer) -> str:
    c = trainer.cfg
    full = (c.n_epochs + c.n_epochs_decay) * trainer.steps_per_epoch
    text = f"{c.n_epochs} + {c.n_epochs_decay} epochs (warmup {c.warmup_epochs}) = {full:,} steps"
    if c.max_steps is not None:
        text += f"; max_steps {c.max_steps:,}: {trainer.total_steps:,} steps"
    if trainer.step:
        text += f"; from step {trainer.step:,} (epoch {trainer.epoch})"
    return text


def _eval_text(trainer) -> str:
    every = trainer.cfg.eval_every_epochs
    if not every or trainer.evaluate is None:
        return "off"
    metrics = (trainer.config_dict.get("eval") or {}).get("metrics") or []
    return f"{', '.join(metrics)} every {every} epoch(s) on the test split"


def _ckpt_text(trainer) -> str:
    c = trainer.cfg
    last = f"last.pt every {c.ckpt_every:,} steps and at the end" if c.ckpt_every else "last.pt at the end"
    if not c.save_epoch_every:
        return last + "; no epoch snapshots"
    keep = "all" if c.keep_last_epochs is None else f"the last {c.keep_last_epochs}"
    return f"{last}; epoch_XXXX.pt every {c.save_epoch_every} epoch(s) ({c.epoch_snapshots}, keep {keep})"


def banner_lines(trainer, requested_device: str) -> list[str]:
    """The banner: a warning line (CPU fallback) if any, a title and aligned ``key  value`` lines."""
    c = trainer.cfg
    params = ", ".join(f"{name} {n:,}" for name, n in parameter_counts(trainer).items())
    rows = [
        ("device", _device_text(trainer.device, c.amp)),
        ("data", f"{_domain_sizes(trainer.dataset)}: {trainer.steps_per_epoch:,} steps/epoch"),
        ("schedule", _schedule_text(trainer)),
        ("batch", f"{c.batch_size} x {trainer.world_size} process(es) = {c.batch_size * trainer.world_size}"),
        ("run dir", str(trainer.run_dir)),
        ("params", params),
        ("eval", _eval_text(trainer)),
        ("ckpt", _ckpt_text(trainer)),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"i2i: training {trainer.run_dir.name}"] + [f"  {k:<{width}}  {v}" for k, v in rows]
    warning = cuda_fallback_warning(requested_device, trainer.device)
    return ([warning] if warning else []) + lines


def print_banner(trainer, requested_device: str, file=None) -> None:
    """Print :func:`banner_lines` (to stderr by default)."""
    print("\n".join(banner_lines(trainer, requested_device)), file=file or sys.stderr, flush=True)

