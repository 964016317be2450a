"""Generators saved by the published code (``latest_net_G.pth``): plain state_dicts with ``model.<i>.…`` keys.

Our :class:`~i2i.models.generators.ResnetGenerator` has the same keys, so such a file loads as it is; this module
only strips a DataParallel ``module.`` prefix (CUT PR #111) and infers the architecture from the keys and shapes
(as ``BaseModel.save_networks`` writes them, taesungp/contrastive-unpaired-translation, models/base_model.py): ngf
and input/output channels from the first/last conv, anti-aliasing from the ``filt``
buffers, the block count from the ``conv_block`` indices, the number of stride-2 stages from the widest conv (ngf
doubles per stage; the published code always has 2), batch norm from running statistics, dropout from the
position of the second block conv.
"""

from __future__ import annotations

import math
import re

import torch


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a leading ``module.`` (DataParallel/DDP) from every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def infer_generator_kwargs(state: dict[str, torch.Tensor]) -> dict:
    """ResnetGenerator keyword arguments that reproduce ``state``'s keys and shapes.

    Raises:
        ValueError: the dict is not a ResNet generator state_dict.
    """
    if "model.1.weight" not in state:
        raise ValueError("not a ResNet generator state_dict (no model.1.weight): expected a latest_net_G.pth "
                         "written by the CUT / FastCUT / QS-Attn / EnCo / CycleGAN code")
    first = state["model.1.weight"]
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
    convs = {int(k.split(".")[1]): v for k, v in state.items() if re.match(r"model\.\d+\.weight$", k) and v.dim() == 4}
    last_idx = max(convs)
    ngf = int(first.shape[0])
    widest = max(int(w.shape[0]) for i, w in convs.items() if i != last_idx)  # ngf * 2**n_downsampling
    n_down = max(round(math.log2(widest / ngf)), 0)
    antialias = "model.7.filt" in state or n_down == 0  # without stages the flags change nothing: the defaults
    after_blocks = blocks[-1] + 1 if blocks else 4 + n_down * (4 if antialias else 3)
    return {
        "input_nc": int(first.shape[1]),
        "output_nc": int(state[f"model.{last_idx}.weight"].shape[0]),
        "ngf": ngf,
        "n_blocks": len(blocks),
        "n_downsampling": n_down,
        "norm": "batch" if any(k.endswith("running_mean") for k in state) else "instance",
        "antialias": antialias,
        "antialias_up": f"model.{after_blocks}.filt" in state or n_down == 0,
        "use_dropout": any(".conv_block.6.weight" in k and v.dim() == 4 for k, v in state.items()),  # conv, not BN
    }
