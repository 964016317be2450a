"""PatchNCE equals a naive per-patch loop; GAN objectives equal their formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from i2i.losses.gan import GANLoss
from i2i.losses.patchnce import patch_nce_loss


def naive_patchnce(q, k, tau, negatives, diagonal):
    """Loop over every query: -log softmax of [q·k_i, q·k_j (j != i, same image or whole batch)] / tau."""
    b, n, _ = q.shape
    out = torch.zeros(b, n, dtype=torch.float64)
    for bi in range(b):
        for i in range(n):
            pos = float(q[bi, i] @ k[bi, i])
            pool = [(bj, j) for bj in (range(b) if negatives == "batch" else [bi]) for j in range(n)]
            logits = [pos] + [diagonal if (bj, j) == (bi, i) else float(q[bi, i] @ k[bj, j]) for bj, j in pool]
            logits = [v / tau for v in logits]
            m = max(logits)
            out[bi, i] = -(logits[0] - m - math.log(sum(math.exp(v - m) for v in logits)))
    return out


@pytest.mark.parametrize("negatives", ["image", "batch"])
def test_patchnce_equals_naive_loop(negatives):
    torch.manual_seed(0)
    q = F.normalize(torch.randn(3, 7, 5, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(3, 7, 5, dtype=torch.float64), dim=-1)
    ours = patch_nce_loss(q, k, tau=0.07, negatives=negatives, diagonal=-10.0)
    assert ours.shape == (3, 7)
    torch.testing.assert_close(ours.double(), naive_patchnce(q, k, 0.07, negatives, -10.0), rtol=1e-5, atol=1e-6)


def test_keys_are_detached_and_queries_get_gradient():
    q = F.normalize(torch.randn(2, 4, 3), dim=-1).requires_grad_()
    k = F.normalize(torch.randn(2, 4, 3), dim=-1).requires_grad_()
    patch_nce_loss(q, k).mean().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0 and k.grad is None


def test_batch_size_comes_from_the_tensors():
    q = F.normalize(torch.randn(5, 4, 3), dim=-1)
    assert patch_nce_loss(q, q).shape == (5, 4)  # any batch, no configured batch size involved
    per_image = patch_nce_loss(q, q)
    torch.testing.assert_close(per_image[2:3], patch_nce_loss(q[2:3], q[2:3]))  # images do not interact


@pytest.mark.parametrize("mode", ["lsgan", "vanilla", "hinge", "nonsaturating", "wgangp"])
def test_gan_losses(mode):
    pred = torch.tensor([[-1.5, 0.2], [0.7, 2.0]])
    loss = GANLoss(mode)
    sig = torch.sigmoid(pred)
    expected = {
        "lsgan": (((pred - 1) ** 2).mean(), (pred**2).mean()),
        "vanilla": (-torch.log(sig).mean(), -torch.log(1 - sig).mean()),
        "hinge": (torch.relu(1 - pred).mean(), torch.relu(1 + pred).mean()),
        "nonsaturating": (F.softplus(-pred).mean(), F.softplus(pred).mean()),
        "wgangp": (-pred.mean(), pred.mean()),
    }[mode]
    torch.testing.assert_close(loss(pred, True), expected[0])
    torch.testing.assert_close(loss(pred, False), expected[1])
    if mode == "hinge":
        torch.testing.assert_close(loss(pred, True, for_discriminator=False), -pred.mean())


def test_unknown_gan_mode_is_one_clear_error():
    with pytest.raises(ValueError, match="gan_loss.mode='lsgann'"):
        GANLoss("lsgann")
