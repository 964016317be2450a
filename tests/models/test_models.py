"""Generator, discriminator and projection heads: shapes, parameter counts and the published state_dict keys."""

from __future__ import annotations

import pytest
import torch

from i2i.models.discriminators import PatchGAN
from i2i.models.generators import ResnetGenerator
from i2i.models.layers import Downsample, Upsample, binomial_filter
from i2i.models.projection import ProjectionHeads


def published_generator_keys(n_blocks: int = 9, antialias: bool = True) -> list[str]:
    """The published ResnetGenerator key list (taesungp/contrastive-unpaired-translation, models/networks.py
    ``ResnetGenerator``), written out independently of our code."""
    keys = ["model.1.weight", "model.1.bias"]
    if antialias:
        keys += ["model.4.weight", "model.4.bias", "model.7.filt", "model.8.weight", "model.8.bias", "model.11.filt"]
        first = 12
    else:
        keys += ["model.4.weight", "model.4.bias", "model.7.weight", "model.7.bias"]
        first = 10
    for b in range(first, first + n_blocks):
        keys += [f"model.{b}.conv_block.{i}.{p}" for i in (1, 5) for p in ("weight", "bias")]
    up = first + n_blocks
    if antialias:
        keys += [f"model.{up}.filt", f"model.{up + 1}.weight", f"model.{up + 1}.bias", f"model.{up + 4}.filt",
                 f"model.{up + 5}.weight", f"model.{up + 5}.bias", f"model.{up + 9}.weight", f"model.{up + 9}.bias"]
    else:
        keys += [f"model.{up}.weight", f"model.{up}.bias", f"model.{up + 3}.weight", f"model.{up + 3}.bias",
                 f"model.{up + 7}.weight", f"model.{up + 7}.bias"]
    return keys


def test_generator_parameter_count_and_keys():
    G = ResnetGenerator()
    assert sum(p.numel() for p in G.parameters()) == 11_378_179
    sd = G.state_dict()
    assert len(sd) == 52
    assert list(sd) == published_generator_keys(9, True)
    assert list(sd)[-2:] == ["model.30.weight", "model.30.bias"]
    assert sd["model.7.filt"].shape == (128, 1, 3, 3) and sd["model.21.filt"].shape == (256, 1, 4, 4)
    assert sd["model.12.conv_block.5.weight"].shape == (256, 256, 3, 3)


def test_cyclegan_generator_keys():
    G = ResnetGenerator(antialias=False, antialias_up=False)
    assert sum(p.numel() for p in G.parameters()) == 11_378_179
    assert len(G.model) == 28
    sd = G.state_dict()
    assert len(sd) == 48 and list(sd) == published_generator_keys(9, False)
    assert sd["model.19.weight"].shape == (256, 128, 3, 3)  # ConvTranspose (in, out, k, k)


def test_alpha_generator_adds_first_conv_channel():
    assert (sum(p.numel() for p in ResnetGenerator(input_nc=4).parameters())
            - sum(p.numel() for p in ResnetGenerator().parameters())) == 3_136


def test_discriminator_parameter_count_shapes_and_keys():
    for antialias, keys in ((True, [0, 3, 7, 11, 14]), (False, [0, 2, 5, 8, 11])):
        D = PatchGAN(antialias=antialias)
        assert sum(p.numel() for p in D.parameters()) == 2_764_737
        assert D(torch.zeros(1, 3, 256, 256)).logits.shape == (1, 1, 30, 30)
        weights = [k for k in D.state_dict() if k.endswith(".weight")]
        assert weights == [f"model.{i}.weight" for i in keys]
    assert [k for k in PatchGAN().state_dict() if k.endswith("filt")] == ["model.2.filt", "model.6.filt", "model.10.filt"]


def test_projection_heads_published_size_and_keys():
    F = ProjectionHeads([3, 128, 256, 256, 256], nc=256)
    assert sum(p.numel() for p in F.parameters()) == 560_384
    assert set(F.state_dict()) == {f"mlp_{i}.{j}.{p}" for i in range(5) for j in (0, 2) for p in ("weight", "bias")}
    out = F(torch.randn(7, 128), 1)
    assert out.shape == (7, 256)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(7), atol=1e-3, rtol=0)  # eps 1e-7 vs tiny init


def test_nce_layer_shapes_match_published():
    G = ResnetGenerator()
    assert G.feature_shapes([0, 4, 8, 12, 16], 256) == [(3, 262, 262), (128, 256, 256), (256, 128, 128),
                                                         (256, 64, 64), (256, 64, 64)]
    x = torch.randn(1, 3, 64, 64)
    feats = G(x, layers=[0, 4, 8, 12, 16], encode_only=True)
    assert [tuple(f.shape[1:]) for f in feats] == G.feature_shapes([0, 4, 8, 12, 16], 64)
    fake, feats2 = G(x, layers=[16, 4])
    assert fake.shape == x.shape and torch.equal(feats2[0], feats[4]) and torch.equal(feats2[1], feats[1])


def test_no_antialias_layer_indices_point_elsewhere():
    G = ResnetGenerator(antialias=False, antialias_up=False)
    assert G.feature_shapes([4, 8], 256) == [(128, 128, 128), (256, 64, 64)]


@pytest.mark.parametrize("n_down", [0, 1, 3])
def test_downsampling_stages_set_the_bottleneck(n_down):
    G = ResnetGenerator(ngf=4, n_blocks=1, n_downsampling=n_down)
    first_block = 4 + 4 * n_down  # pad, conv, norm, ReLU, then conv, norm, ReLU, blur-pool per stage
    assert type(G.model[first_block]).__name__ == "ResnetBlock"
    assert G.feature_shapes([first_block], (48, 40)) == [(4 * 2**n_down, 48 // 2**n_down, 40 // 2**n_down)]
    assert G(torch.randn(1, 3, 48, 40)).shape == (1, 3, 48, 40)


def test_one_stage_generator_parameter_count():
    # 7x7 3->4, 3x3 4->8 (stage), one block of two 3x3 8->8, transposed 3x3 8->4, 7x7 4->3 (weights + biases)
    expected = (3 * 4 * 49 + 4) + (4 * 8 * 9 + 8) + 2 * (8 * 8 * 9 + 8) + (8 * 4 * 9 + 4) + (4 * 3 * 49 + 3)
    G = ResnetGenerator(ngf=4, n_blocks=1, n_downsampling=1, antialias=False, antialias_up=False)
    assert sum(p.numel() for p in G.parameters()) == expected == 2_939
    with pytest.raises(ValueError, match="n_downsampling=-1"):
        ResnetGenerator(n_downsampling=-1)


@pytest.mark.parametrize("size", [(64, 64), (36, 52), (128, 96)])
def test_generator_output_size_equals_input_size(size):
    G = ResnetGenerator(ngf=4, n_blocks=2)
    assert G(torch.randn(2, 3, *size)).shape == (2, 3, *size)


def test_grayscale_and_rgba_channels():
    for c in (1, 4):
        G, D = ResnetGenerator(c, c, ngf=4, n_blocks=1), PatchGAN(c, ndf=4)
        y = G(torch.randn(1, c, 32, 32))
        assert y.shape == (1, c, 32, 32) and D(y).logits.shape[1] == 1


def test_antialias_filters_are_binomial():
    torch.testing.assert_close(binomial_filter(3), torch.tensor([[1., 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    torch.testing.assert_close(binomial_filter(4), torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    x = torch.randn(2, 5, 16, 12)
    assert Downsample(5)(x).shape == (2, 5, 8, 6) and Upsample(5)(x).shape == (2, 5, 32, 24)
    # a constant image stays constant through the blur (filters sum to 1, resp. stride² after upsampling)
    c = torch.full((1, 2, 8, 8), 0.3)
    torch.testing.assert_close(Downsample(2)(c), torch.full((1, 2, 4, 4), 0.3))
    torch.testing.assert_close(Upsample(2)(c), torch.full((1, 2, 16, 16), 0.3))
