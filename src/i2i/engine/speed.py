"""Speed levers of the training step (measured by ``scripts/benchmark.py``, docs/benchmarks.md).

Each lever is a ``train.*`` key, applied once to the built networks by :func:`apply_levers`:

- ``channels_last``: NHWC weights (and inputs, :func:`step_begin`) for the convolutions.
- ``compile``: ``torch.compile`` of G, D (and the method's other networks of the same classes, e.g. CycleGAN's
  ``G_BA``/``D_A``) in place (``Module.compile``: state_dict keys unchanged) and of the method's multilayer NCE
  loss (sampler + projection heads + PatchNCE).
- ``cuda_graphs``: CUDA graphs through ``torch.compile(mode="reduce-overhead")`` (static shapes per call site);
  every step is marked with ``torch.compiler.cudagraph_mark_step_begin``.
- ``group_layers``: :class:`GroupedNCE` — NCE layers that share a feature shape and a uniform random sampler
  (CUT's layers 8, 12, 16 of a ResNet-9: [256, 64, 64]) run their projection heads and PatchNCE as one batched
  call instead of one call per layer. Same RNG draws, same gathered patches; equal to the per-layer path up to
  float rounding of the batched matmul.

The other levers live where they act: bf16 autocast (``train.amp``, engine/loop.py), fused Adam
(``optim.fused``), one generator pass for real A + real B and reuse of its features (methods/cut.py), and the
data pipeline (``train.num_workers``, ``train.prefetch_factor``, pinned memory, ``non_blocking`` copies).
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """``torch.compile`` in place: G, D, the method's networks of the same classes, and its NCE loss."""
    kinds = (type(G), type(D))
    nets = [G, D] + [m for m in method.children() if isinstance(m, kinds)]
    options = {"backend": backend} if backend != "inductor" else {"mode": mode}
    for net in nets:
        net.compile(**options)
    if callable(getattr(method, "nce_per_image", None)):
        method.nce_per_image = torch.compile(method.nce_per_image, **options)


def apply_levers(G: nn.Module, D: nn.Module, method: nn.Module, channels_last: bool = False,
                 compile: str | bool | None = "none", cuda_graphs: bool = False, group_layers: bool = False) -> None:
    """Apply the speed levers to built networks (after ``.to(device)``, before the step runs)."""
    mode = compile_mode(compile, cuda_graphs)
    if channels_last:
        to_channels_last(G, D, method)
    if group_layers:
        GroupedNCE.install(method)
    if mode is not None:
        compile_networks(G, D, method, mode)


# ---------------------------------------------------------------------------------------------- grouped NCE
class GroupedNCE:
    """``CUT.nce_per_image`` with same-shape layers batched (installed on a method instance).

    Layers are walked in order; a layer whose sampler is a plain :class:`~i2i.samplers.random.RandomSampler`
    only draws its ids there (so the RNG stream is the per-layer one), any other layer (QS-Attn attention
    layers, DAG) runs the per-layer code at once. The drawn layers are then grouped by (feature shape,
    sampler, head width): patches gathered per layer and stacked ``[L, B, N, C]``, the heads applied as
    batched matmuls of the stacked weights, PatchNCE called once on ``[L*B, N, nc]``.
    """

    def __init__(self, method: nn.Module) -> None:
        self.method = method

    @staticmethod
    def applicable(method: nn.Module) -> bool:
        """Only methods that use CUT's own multilayer NCE (not EnCo's pairs, not an override)."""
        from i2i.methods.cut import CUT

        return isinstance(method, CUT) and type(method).nce_per_image is CUT.nce_per_image

    @classmethod
    def install(cls, method: nn.Module) -> bool:
        """Replace ``method.nce_per_image`` on this instance; returns whether it was applicable."""
        if not cls.applicable(method):
            return False
        method.nce_per_image = cls(method)
        return True

    def __call__(self, feats_k: list[torch.Tensor], feats_q: list[torch.Tensor],
                 score_map: torch.Tensor | None = None, groups: int = 1) -> torch.Tensor:
        """Mean over layers and patches of the PatchNCE loss, per image: [B] (as ``CUT.nce_per_image``)."""
        from i2i.samplers.base import SampleContext, gather_patches
        from i2i.samplers.random import RandomSampler

        m = self.method
        per_layer: dict[int, torch.Tensor] = {}
        drawn: dict[int, torch.Tensor] = {}
        for pos, (fk, fq) in enumerate(zip(feats_k, feats_q)):
            sampler = m.sampler_for(pos)
            if type(sampler) is RandomSampler:
                drawn[pos] = sampler.sample_ids(fk, m.num_patches)  # [N] or [B, N]
            else:
                per_layer[pos] = self._one_layer(pos, fk, fq, score_map, SampleContext, groups)
        by_shape: dict[tuple, list[int]] = {}
        for pos in drawn:
            key = (tuple(feats_k[pos].shape), id(m.sampler_for(pos)), m.heads.in_channels[pos], feats_k[pos].dtype)
            by_shape.setdefault(key, []).append(pos)
        for positions in by_shape.values():
            k = torch.stack([gather_patches(feats_k[p], drawn[p]) for p in positions])  # [L, B, N, C]
            q = torch.stack([gather_patches(feats_q[p], drawn[p]) for p in positions])
            per_layer.update(zip(positions, self._group_loss(positions, k, q, groups).unbind(0)))
        total = 0.0
        for pos in range(len(feats_k)):  # the per-layer path's summation order
            total = total + per_layer[pos]
        return total / len(feats_k)

    def _one_layer(self, pos: int, fk: torch.Tensor, fq: torch.Tensor, score_map, context,
                   groups: int) -> torch.Tensor:
        from i2i.losses.patchnce import patch_nce_loss

        m = self.method
        k, q = m.sampler_for(pos)(fk, fq, m.num_patches, context(layer_pos=pos, score_map=score_map))
        k, q = m.heads(k, pos), m.heads(q, pos)
        return patch_nce_loss(q, k, m.tau, m.negatives, m.diagonal, groups).mean(1)  # [B]

    def _group_loss(self, positions: Sequence[int], k: torch.Tensor, q: torch.Tensor,
                    groups: int) -> torch.Tensor:
        """[L, B, N, C] x 2 -> per-layer, per-image loss [L, B]."""
        from i2i.losses.patchnce import patch_nce_loss

        m = self.method
        layers, b, n, _ = k.shape
        k, q = self._heads(positions, torch.cat([k, q], 1)).split(b, 1)  # one MLP pass: [L, 2B, N, nc] -> 2 x [L, B, N, nc]
        c = k.shape[-1]
        if m.negatives == "batch":  # one "image" of (B/groups)*N patches per layer and term == batch negatives
            rows = layers * groups
            loss = patch_nce_loss(q.reshape(rows, -1, c), k.reshape(rows, -1, c), m.tau, "image", m.diagonal)
        else:
            loss = patch_nce_loss(q.reshape(layers * b, n, c), k.reshape(layers * b, n, c), m.tau, "image", m.diagonal)
        return loss.reshape(layers, b, n).mean(2)

    def _heads(self, positions: Sequence[int], x: torch.Tensor) -> torch.Tensor:
        """Each layer's MLP on its slice, as batched matmuls; then L2 normalisation. [L, B, N, C] -> [L, B, N, nc]."""
        from i2i.models.projection import l2_normalize

        heads = self.method.heads
        if heads.nc > 0:
            layers, b, n, c = x.shape
            mlps = [getattr(heads, f"mlp_{p}") for p in positions]
            h = x.reshape(layers, b * n, c)
            for i in (0, 2):  # Linear - ReLU - Linear
                w = torch.stack([mlp[i].weight for mlp in mlps]).transpose(1, 2)  # [L, C_in, C_out]
                bias = torch.stack([mlp[i].bias for mlp in mlps]).unsqueeze(1)  # [L, 1, C_out]
                h = torch.baddbmm(bias.to(h.dtype), h, w.to(h.dtype))
                h = torch.relu(h) if i == 0 else h
            x = h.reshape(layers, b, n, -1)
        return l2_normalize(x)
