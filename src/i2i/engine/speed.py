"""Speed levers of the training step (measured by ``scripts/benchmark.py``, docs/benchmarks.md).

Each lever is a ``train.*`` key, applied once to the built networks by :func:`apply_levers`:

- ``channels_last``: NHWC weights (and inputs, :func:`step_begin`) for the convolutions.
- ``compile``: ``torch.compile`` of G and D in place (``Module.compile``: state_dict keys unchanged) and of what
  the method compiles of its own (``Method.compile_modules``: e.g. CycleGAN's ``G_BA``/``D_A``, CUT's whole
  multilayer NCE loss).
- ``cuda_graphs``: CUDA graphs through ``torch.compile(mode="reduce-overhead")`` (static shapes per call site);
  every step is marked with ``torch.compiler.cudagraph_mark_step_begin``.

The other levers live where they act: bf16 autocast (``train.amp``, engine/loop.py), fused Adam
(``optim.fused``), one generator pass for real A + real B and reuse of its features (methods/cut.py), and the
data pipeline (``train.num_workers``, ``train.prefetch_factor``, pinned memory, ``non_blocking`` copies).
"""

from __future__ import annotations

import torch
from torch import nn

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(compile: str | bool | None, cuda_graphs: bool = False) -> str | None:
    """The ``torch.compile`` mode for ``train.compile`` / ``train.cuda_graphs`` (None: stay eager).

    ``cuda_graphs`` turns ``none``/``default`` into ``reduce-overhead`` and ``max-autotune-no-cudagraphs``
    into ``max-autotune`` (which captures graphs on CUDA).
    """
    mode = {False: "none", None: "none", True: "default", "false": "none", "true": "default"}.get(compile, compile)
    if mode not in COMPILE_MODES:
        raise ValueError(f"train.compile={compile!r}: use one of {', '.join(COMPILE_MODES)} (or false)")
    if cuda_graphs:
        mode = {"none": "reduce-overhead", "default": "reduce-overhead",
                "max-autotune-no-cudagraphs": "max-autotune"}.get(mode, mode)
    return None if mode == "none" else mode


def to_channels_last(*modules: nn.Module) -> None:
    """Convert the 4-D parameters and buffers of ``modules`` to channels_last in place (same Parameter objects)."""
    for module in modules:
        module.to(memory_format=torch.channels_last)


def channels_last_batch(batch: dict) -> dict:
    """The batch with every 4-D tensor in channels_last layout (values unchanged)."""
    return {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.dim() == 4 else v
            for k, v in batch.items()}


def step_begin(batch: dict, channels_last: bool = False, cuda_graphs: bool = False) -> dict:
    """Per-step preparation for the levers: NHWC inputs; a new CUDA-graph step (outputs of the previous step's
    graphs may be overwritten from here on)."""
    if cuda_graphs:
        torch.compiler.cudagraph_mark_step_begin()
    return channels_last_batch(batch) if channels_last else batch


def compile_networks(G: nn.Module, D: nn.Module, method: nn.Module, mode: str, backend: str = "inductor") -> None:
    """``torch.compile`` in place: G, D and what the method compiles of its own (``Method.compile_modules``)."""
    options = {"backend": backend} if backend != "inductor" else {"mode": mode}
    G.compile(**options)
    D.compile(**options)
    method.compile_modules(**options)


def apply_levers(G: nn.Module, D: nn.Module, method: nn.Module, channels_last: bool = False,
                 compile: str | bool | None = "none", cuda_graphs: bool = False) -> None:
    """Apply the speed levers to built networks (after ``.to(device)``, before the step runs)."""
    mode = compile_mode(compile, cuda_graphs)
    if channels_last:
        to_channels_last(G, D, method)
    if mode is not None:
        compile_networks(G, D, method, mode)
