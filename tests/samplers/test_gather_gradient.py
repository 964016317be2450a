"""Patch gathers hand the generator a correct gradient at batch 1.

On the CPU, torch's instance-norm backward returns a wrong input gradient (relative error ~1.3) when the batch
is 1 and the incoming gradient is channels_last-strided, which is what the backward of a transposed
[B, HW, C] patch gather produces. These tests compare the generator gradients of batch-1 training with a
reference whose gathers index the NCHW layout directly (written here, independently of the package).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import i2i.samplers.random as random_sampler
from i2i.losses.gan import GANLoss
from i2i.methods.cut import CUT
from i2i.models.discriminators import PatchGAN
from i2i.models.generators import ResnetGenerator
from i2i.samplers.base import flatten_hw, gather_patches
from i2i.samplers.dag import DAGSampler

LAYERS = (0, 4, 8, 12, 13)  # 12, 13: residual blocks, whose output ends in an instance norm


def reference_gather(feat, ids):
    """[B, C, H, W], ids [N] or [B, N] -> [B, N, C], indexing [B, C, HW] (contiguous gradient)."""
    flat = feat.flatten(2)  # [B, C, HW]
    if ids.dim() == 1:
        return flat[:, :, ids].transpose(1, 2)
    return torch.stack([flat[i][:, ids[i]] for i in range(feat.shape[0])]).transpose(1, 2)


def cosine(a, b):
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def generator_grads(G, method, batch, D):
    G.zero_grad(set_to_none=True)
    out = method.forward_G(G, batch)
    method.generator_losses(G, D, batch, out, GANLoss("lsgan"))["NCE"].backward()
    return torch.cat([p.grad.flatten() for p in G.parameters() if p.grad is not None])


@pytest.mark.parametrize("sampler", ["random", "dag"])
def test_fastcut_batch1_generator_gradient_equals_the_float64_contiguous_reference(sampler, monkeypatch):
    # float64 on both sides (the fault does not depend on the dtype), so that DAG ranks identical scores
    torch.manual_seed(0)
    G, D = ResnetGenerator(ngf=8, n_blocks=2).double(), PatchGAN(ndf=4).double()  # instance norm, as published
    method = CUT(G.feature_channels(LAYERS), nce_layers=LAYERS, num_patches=32, nc=16, lambda_nce=10.0,
                 nce_idt=False, sampler=DAGSampler() if sampler == "dag" else None).double()
    batch = {"A": torch.rand(1, 3, 32, 32, dtype=torch.float64) * 2 - 1,
             "B": torch.rand(1, 3, 32, 32, dtype=torch.float64) * 2 - 1}

    torch.manual_seed(1)
    ours = generator_grads(G, method, batch, D)

    G64, method64, D64 = copy.deepcopy(G), copy.deepcopy(method), copy.deepcopy(D)
    monkeypatch.setattr(random_sampler, "gather_patches", reference_gather)
    monkeypatch.setattr("i2i.samplers.dag.gather_patches", reference_gather)
    torch.manual_seed(1)  # the same patch ids
    ref = generator_grads(G64, method64, batch, D64)
    assert cosine(ours, ref) > 0.9999999
    torch.testing.assert_close(ours, ref)


def test_attention_through_flatten_hw_at_batch1_gets_the_reference_gradient():
    """QS-Attn's attention (``bmm`` on ``flatten_hw``) after an instance norm, at batch 1."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 16, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 5, 256, dtype=torch.float64)
    ours = torch.autograd.grad((torch.bmm(w, flatten_hw(F.instance_norm(x))) ** 2).sum(), x)[0]
    ref = torch.autograd.grad((torch.bmm(F.instance_norm(x).flatten(2), w.transpose(1, 2)) ** 2).sum(), x)[0]
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("shape", [(1, 8, 16, 16), (3, 8, 7, 5)])
@pytest.mark.parametrize("per_image", [False, True])
def test_gather_values_are_unchanged(shape, per_image):
    torch.manual_seed(0)
    feat = torch.randn(*shape)
    hw = shape[2] * shape[3]
    ids = torch.rand(shape[0], hw).argsort(1)[:, :9] if per_image else torch.randperm(hw)[:9]
    transposed = feat.flatten(2).transpose(1, 2)  # [B, HW, C]
    naive = transposed[:, ids] if not per_image else torch.stack([transposed[i, ids[i]] for i in range(shape[0])])
    assert torch.equal(gather_patches(feat, ids), naive)
