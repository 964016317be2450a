"""FLOPs of a training iteration, counted two ways.

1. :func:`count_flops` runs a callable (e.g. ``Trainer.train_step``) under
   :class:`torch.utils.flop_counter.FlopCounterMode`, which adds the FLOPs of every matrix-unit op that the
   step really executes (convolution forward/backward, mm/addmm/bmm, attention) from its shapes. On the
   ``meta`` device nothing is computed, so a 256x256 step is counted in seconds on a CPU.
2. :func:`cut_step_flops` derives the same number analytically for CUT/FastCUT from the convolution and linear
   shapes of G and D (found by forward hooks on a meta copy) and the autograd rules of a CUT step:

   - every conv/linear costs ``2 * MACs`` forward; its backward costs the same again for the input gradient
     (when the input requires grad) and again for the weight gradient (when the weight is trained);
   - G's main pass over the [2B] (real A, real B) batch: forward, weight gradients, input gradients for every
     conv but the first (the images do not require grad);
   - G's encoder pass over [2B] (fake B, idt B) up to the last NCE layer: forward, weight and input gradients;
   - D step: D on fake B (detached) and on real B — forward, weight gradients, input gradients but the first;
   - G step: D on fake B with D frozen — forward and input gradients only;
   - per NCE layer: the projection MLP on keys (forward) and queries (forward + both gradients) and the
     [N x N] similarity bmm (forward + the query gradient; keys are detached).

Elementwise ops (norms, activations, losses, Adam) are not counted by either; they are memory-bound and are
timed, not counted. A test asserts that 1 and 2 agree exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


# ---------------------------------------------------------------------------------------------- counted
def count_flops(fn: Callable, *args, **kwargs) -> tuple[int, dict[str, int]]:
    """Run ``fn(*args, **kwargs)`` under FlopCounterMode.

    Returns:
        (total FLOPs, FLOPs per aten op name).
    """
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


# ---------------------------------------------------------------------------------------------- analytic
@dataclass
class MatCall:
    """One conv/linear call seen in a forward pass.

    Attributes:
        name: module path.
        flops: forward FLOPs (2 x multiply-adds).
        trained: whether it has a trained weight (the blur filters of anti-aliasing are buffers).
    """

    name: str
    flops: int
    trained: bool


def _call_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Forward FLOPs of one call, from shapes only."""
    from i2i.models.layers import Downsample, Upsample

    if isinstance(module, nn.Conv2d):  # 2 * B * C_out * H_out * W_out * (C_in / groups) * kh * kw
        return 2 * out.numel() * module.weight[0].numel()
    if isinstance(module, nn.ConvTranspose2d):  # every input pixel meets the whole [C_out/g, kh, kw] filter
        return 2 * inp.numel() * module.weight[0].numel()
    if isinstance(module, Downsample):  # depthwise k x k conv on the padded input, stride 2
        return 2 * out.numel() * module.filt[0].numel()
    if isinstance(module, Upsample):  # depthwise transposed conv on the (replicate-)padded input
        b, c, h, w = inp.shape
        return 2 * b * c * (h + 2) * (w + 2) * module.filt[0].numel()
    if isinstance(module, nn.Linear):
        return 2 * inp.numel() // module.in_features * module.in_features * module.out_features
    raise TypeError(type(module).__name__)


def mat_calls(model: nn.Module, shape: Sequence[int], **forward_kwargs) -> list[MatCall]:
    """Conv/linear calls of ``model(torch.empty(shape), **forward_kwargs)`` in execution order (on a meta copy).

    Args:
        model: network (any device; it is copied to ``meta``).
        shape: input shape, e.g. [B, 3, 256, 256].
        forward_kwargs: extra forward arguments (``layers=..., encode_only=True``).
    """
    from i2i.models.layers import Downsample, Upsample

    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, Downsample, Upsample)
    meta = copy.deepcopy(model).to("meta")
    calls: list[MatCall] = []
    hooks = []
    for name, mod in meta.named_modules():
        if isinstance(mod, kinds):
            trained = isinstance(getattr(mod, "weight", None), nn.Parameter)
            hook = lambda m, i, o, n=name, t=trained: calls.append(MatCall(n, _call_flops(m, i[0], o), t))
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        meta(torch.empty(*shape, device="meta"), **forward_kwargs)
    for h in hooks:
        h.remove()
    return calls


def train_flops(calls: Sequence[MatCall], input_grad: bool = True, weight_grad: bool = True) -> int:
    """Forward + backward FLOPs of a pass whose calls are ``calls``.

    Args:
        input_grad: the pass's input requires grad (else the first call computes no input gradient).
        weight_grad: weights are trained in this backward (False: frozen network, input gradients only).
    """
    total = sum(c.flops for c in calls)  # forward
    total += sum(c.flops for i, c in enumerate(calls) if input_grad or i > 0)  # input gradients
    if weight_grad:
        total += sum(c.flops for c in calls if c.trained)
    return total


def nce_flops(shapes: Sequence[Sequence[int]], images: int, num_patches: int, nc: int,
              negatives: str = "image", terms: int = 1) -> int:
    """Projection heads + similarity matrices of PatchNCE over all layers (forward and backward).

    Args:
        shapes: feature shapes (C, H, W) of the NCE layers.
        images: images contrasted (2B with identity NCE).
        num_patches: patches per image per layer (capped by H*W).
        nc: projection width (0: no MLP).
        negatives: ``image`` or ``batch``.
        terms: independent terms stacked in ``images`` (2 with identity NCE); batch negatives stay in their term.
    """
    total = 0
    for c, h, w in shapes:
        n = min(num_patches, h * w)
        rows = images * n
        width = nc if nc > 0 else c
        head = 2 * rows * (c * nc + nc * nc) if nc > 0 else 0  # one forward of the MLP on the queries
        total += 4 * head  # queries fwd + keys fwd + queries' weight and input gradients
        sim = 2 * rows * n * width if negatives == "image" else 2 * rows * (rows // terms) * width
        total += 2 * sim  # forward + gradient w.r.t. the queries (keys detached)
    return total


def cut_step_flops(G: nn.Module, D: nn.Module, size: int, batch: int, nce_layers: Sequence[int],
                   num_patches: int = 256, nc: int = 256, nce_idt: bool = True, flipped: bool = False,
                   reuse_source_features: bool = True, negatives: str = "image", channels: int = 3) -> dict[str, int]:
    """Analytic FLOPs of one CUT / FastCUT training iteration (see the module docstring).

    Args:
        flipped: FastCUT's coin came up (the keys then need their own encoder pass, forward only).

    Returns:
        ``{"G", "D", "NCE", "total"}`` FLOPs.
    """
    images = 2 * batch if nce_idt else batch
    layers = list(nce_layers)
    shape = (images, channels, size, size)
    g_main = mat_calls(G, shape)
    g_enc = mat_calls(G, shape, layers=layers, encode_only=True)
    d = mat_calls(D, (batch, channels, size, size))
    g = train_flops(g_main, input_grad=False) + train_flops(g_enc, input_grad=True)
    if flipped or not reuse_source_features:
        g += sum(c.flops for c in g_enc)  # keys re-encoded, forward only (detached in the loss)
    d_total = 2 * train_flops(d, input_grad=False) + train_flops(d, input_grad=True, weight_grad=False)
    feat_shapes = G.feature_shapes(layers, size)
    nce = nce_flops(feat_shapes, images, num_patches, nc, negatives, terms=2 if nce_idt else 1)
    return {"G": g, "D": d_total, "NCE": nce, "total": g + d_total + nce}
