"""Published generator files load as they are and translate exactly like the published architecture."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from i2i.build import load_generator
from i2i.compat.published import infer_generator_kwargs, strip_module_prefix
from i2i.models.generators import ResnetGenerator
from i2i.models.layers import init_weights
from i2i.utils.images import to_uint8


def _inorm(h):
    return F.instance_norm(h, eps=1e-5)


def published_forward(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """The published anti-aliased ResnetGenerator written as plain functional ops as
    taesungp/contrastive-unpaired-translation, models/networks.py defines it."""
    n_blocks = len({k.split(".")[1] for k in sd if ".conv_block." in k})
    h = F.relu(_inorm(F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), sd["model.1.weight"], sd["model.1.bias"])))
    for conv, filt in ((4, 7), (8, 11)):  # conv s1 -> IN -> ReLU -> blur-pool (reflect pad 1, stride 2)
        h = F.relu(_inorm(F.conv2d(h, sd[f"model.{conv}.weight"], sd[f"model.{conv}.bias"], padding=1)))
        h = F.conv2d(F.pad(h, (1, 1, 1, 1), mode="reflect"), sd[f"model.{filt}.filt"], stride=2, groups=h.shape[1])
    for b in range(12, 12 + n_blocks):
        r = F.conv2d(F.pad(h, (1, 1, 1, 1), mode="reflect"), sd[f"model.{b}.conv_block.1.weight"],
                     sd[f"model.{b}.conv_block.1.bias"])
        r = F.relu(_inorm(r))
        r = F.conv2d(F.pad(r, (1, 1, 1, 1), mode="reflect"), sd[f"model.{b}.conv_block.5.weight"],
                     sd[f"model.{b}.conv_block.5.bias"])
        h = h + _inorm(r)
    up = 12 + n_blocks
    for filt, conv in ((up, up + 1), (up + 4, up + 5)):  # replicate pad 1, blurred conv-transpose, crop, conv
        h = F.conv_transpose2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), sd[f"model.{filt}.filt"], stride=2,
                               padding=2, groups=h.shape[1])[:, :, 1:, 1:][:, :, :-1, :-1]
        h = F.relu(_inorm(F.conv2d(h, sd[f"model.{conv}.weight"], sd[f"model.{conv}.bias"], padding=1)))
    last = up + 9
    return torch.tanh(F.conv2d(F.pad(h, (3, 3, 3, 3), mode="reflect"), sd[f"model.{last}.weight"],
                               sd[f"model.{last}.bias"]))


def _random_generator(**kw) -> ResnetGenerator:
    torch.manual_seed(0)
    return init_weights(ResnetGenerator(**kw), "normal", 0.1)  # larger weights than the 0.02 init: a real test


def test_same_output_as_published_architecture_to_one_grey_level():
    G = _random_generator(ngf=16, n_blocks=9).eval()
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        ours, ref = G(x), published_forward(G.state_dict(), x)
    diff = (to_uint8(ours).int() - to_uint8(ref).int()).abs().max().item()
    assert diff <= 1
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [dict(ngf=8, n_blocks=9), dict(ngf=16, n_blocks=6),
                                dict(ngf=8, n_blocks=3, antialias=False, antialias_up=False),
                                dict(ngf=8, n_blocks=2, input_nc=4), dict(ngf=8, n_blocks=2, input_nc=1, output_nc=1),
                                dict(ngf=8, n_blocks=2, norm="batch"), dict(ngf=8, n_blocks=2, use_dropout=True),
                                dict(ngf=8, n_blocks=0, antialias=False), dict(ngf=8, n_blocks=0, antialias_up=False),
                                dict(ngf=8, n_blocks=2, n_downsampling=1), dict(ngf=8, n_blocks=0, n_downsampling=1),
                                dict(ngf=4, n_blocks=1, n_downsampling=3, antialias=False, norm="batch"),
                                dict(ngf=8, n_blocks=1, n_downsampling=0)])
def test_architecture_is_inferred_from_the_file(kw):
    G = _random_generator(**kw)
    inferred = infer_generator_kwargs(G.state_dict())
    expected = {"input_nc": 3, "output_nc": 3, "norm": "instance", "antialias": True, "antialias_up": True,
                "use_dropout": False, "n_downsampling": 2, **kw}
    assert inferred == expected


@pytest.mark.parametrize("prefix", ["", "module."])
def test_published_file_loads_and_translates(tmp_path, prefix):
    G = _random_generator(ngf=8, n_blocks=4).eval()
    sd = OrderedDict((prefix + k, v.clone()) for k, v in G.state_dict().items())
    path = tmp_path / "latest_net_G.pth"
    torch.save(sd, path)  # the published save_networks writes a plain OrderedDict of CPU tensors
    loaded, info = load_generator(path)
    assert info["source"] == "published" and info["generator"]["ngf"] == 8 and info["generator"]["n_blocks"] == 4
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), G(x))


def test_strip_module_prefix_only_when_all_keys_have_it():
    assert strip_module_prefix({"module.a": 1, "module.b": 2}) == {"a": 1, "b": 2}
    assert strip_module_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}


def test_non_generator_state_dict_is_refused_clearly(tmp_path):
    from i2i.engine.state import CheckpointError

    path = tmp_path / "latest_net_D.pth"
    torch.save({"model.0.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="latest_net_D.pth: not a ResNet generator"):
        load_generator(path)
