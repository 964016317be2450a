"""A frozen VGG-16 feature extractor (Simonyan & Zisserman 2015) read from a user-given weights file.

The weights are torchvision's ``vgg16`` state_dict (``features.<i>.weight`` / ``features.<i>.bias``); a file with
only the ``features.*`` entries works as well. Nothing is downloaded. The convolution weights are held as
non-persistent buffers, not parameters: no optimizer sees them, no gradient is computed for them (the gradient
still flows through them to the input), they move with ``.to(device)`` and they are left out of every
``state_dict`` (a checkpoint never carries the 138M-parameter network; it is read from the file again).

Layers are named by the ReLU whose output they are (``relu3_1`` = ``features[11]``), as published code names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: torchvision's VGG-16 ``features``: conv output channels, "M" = 2x2 max-pool (configuration "D")
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
#: ImageNet statistics the torchvision weights were trained with (inputs in [0, 1], per channel)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_table() -> tuple[dict[str, int], dict[str, int], list[tuple[int, int, int]]]:
    """``(relu name -> features index, relu name -> channels, [(features index, in, out) of every conv])``."""
    index, block, conv_in, relu = 0, 1, 3, 0
    index_of: dict[str, int] = {}
    channels_of: dict[str, int] = {}
    convs: list[tuple[int, int, int]] = []
    for v in VGG16_CFG:
        if v == "M":
            index, block, relu = index + 1, block + 1, 0
            continue
        convs.append((index, conv_in, v))
        relu += 1
        index_of[f"relu{block}_{relu}"], channels_of[f"relu{block}_{relu}"] = index + 1, v
        index, conv_in = index + 2, v
    return index_of, channels_of, convs


#: ``relu<block>_<k>`` -> index of that ReLU in ``features`` (relu1_1: 1, relu3_1: 11, relu4_1: 18, relu4_3: 22)
RELU_INDEX, RELU_CHANNELS, _CONVS = _layer_table()


class VGG16Features(nn.Module):
    """VGG-16 ``features`` up to the deepest requested ReLU, frozen, always in eval mode.

    Args:
        layers: ReLU names whose outputs :meth:`forward` returns, e.g. ``("relu3_1", "relu4_1", "relu4_3")``.

    Raises:
        ValueError: an unknown layer name.
    """

    def __init__(self, layers: Sequence[str]) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in RELU_INDEX]
        if unknown or not layers:
            raise ValueError(f"VGG-16 layer {unknown[0] if unknown else '(none)'!r}: use ReLU names "
                             f"{', '.join(RELU_INDEX)}")
        self.layers = list(layers)
        self.depth = max(RELU_INDEX[name] for name in layers) + 1  # features[:depth] is run
        self.convs = [(i, c_in, c_out) for i, c_in, c_out in _CONVS if i < self.depth]
        for i, c_in, c_out in self.convs:
            self.register_buffer(f"w{i}", torch.zeros(c_out, c_in, 3, 3), persistent=False)
            self.register_buffer(f"b{i}", torch.zeros(c_out), persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def channels(self, name: str) -> int:
        """Channels of the ReLU output ``name``."""
        return RELU_CHANNELS[name]

    def train(self, mode: bool = True) -> VGG16Features:
        """Always eval: the extractor is fixed (``mode`` is ignored)."""
        return super().train(False)

    def load_torchvision(self, state: dict) -> None:
        """Copy the needed ``features.<i>.weight/bias`` of a torchvision ``vgg16`` state_dict into the buffers.

        Raises:
            ValueError: an entry is missing or has the wrong shape (the file is not a VGG-16).
        """
        for i, _, _ in self.convs:
            for kind, short in (("weight", "w"), ("bias", "b")):
                key, target = f"features.{i}.{kind}", getattr(self, f"{short}{i}")
                value = state.get(key)
                if not isinstance(value, torch.Tensor) or value.shape != target.shape:
                    got = "missing" if not isinstance(value, torch.Tensor) else f"shape {tuple(value.shape)}"
                    raise ValueError(f"{key} is {got}, a torchvision vgg16 has {tuple(target.shape)}")
                target.copy_(value.to(target.dtype))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the VGG input (ImageNet-normalised [0, 1] images): [B, 3, H, W]; one channel is
        repeated to three."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return ((x + 1) * 0.5 - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """VGG input [B, 3, H, W] (see :meth:`normalize`) -> the outputs of :attr:`layers`, in that order."""
        wanted = {RELU_INDEX[name]: name for name in self.layers}
        found: dict[str, torch.Tensor] = {}
        convs = {i: (getattr(self, f"w{i}"), getattr(self, f"b{i}")) for i, _, _ in self.convs}
        i = 0
        while i < self.depth:
            if i in convs:  # conv (i) then its ReLU (i + 1)
                x = F.relu(F.conv2d(x, *convs[i], padding=1))
                i += 1
                if i in wanted:
                    found[wanted[i]] = x
            else:  # max-pool
                x = F.max_pool2d(x, 2, 2)
            i += 1
        return [found[name] for name in self.layers]


def load_vgg16(path: str | Path | None, layers: Sequence[str], key: str = "method.vgg_weights") -> VGG16Features:
    """The frozen extractor for ``layers`` with the weights of the file ``path``.

    Args:
        path: a torchvision ``vgg16`` state_dict saved with ``torch.save`` (whole network or ``features.*`` only).
        layers: ReLU names to return.
        key: the config key that names the file (for the messages).

    Raises:
        ValueError: one line naming ``key`` and the fix: the path is unset, missing, unreadable or not a VGG-16.
    """
    fix = ("save it once on a machine with internet: python -c \"import torch, torchvision; torch.save(torchvision."
           "models.vgg16(weights='IMAGENET1K_V1').state_dict(), 'vgg16.pth')\" and set "
           f"{key}=/path/to/vgg16.pth")
    if path is None or str(path) == "":
        raise ValueError(f"{key} is not set: the spatially-correlative loss needs ImageNet VGG-16 weights — {fix}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"{key}={path}: no such file — {fix}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and OS errors all mean: not a readable state dict
        raise ValueError(f"{key}={path}: not a readable weights_only state dict ({type(e).__name__}) — {fix}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{key}={path}: holds a {type(state).__name__}, not a state dict — {fix}")
    net = VGG16Features(layers)
    try:
        net.load_torchvision(state)
    except ValueError as e:
        raise ValueError(f"{key}={path}: not a torchvision vgg16 state dict ({e}) — {fix}") from None
    return net
