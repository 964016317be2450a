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


def test_grouped_batch_negatives_equal_the_naive_loop_per_group():
    torch.manual_seed(1)
    q = F.normalize(torch.randn(4, 5, 6, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(4, 5, 6, dtype=torch.float64), dim=-1)
    ours = patch_nce_loss(q, k, 0.07, "batch", -10.0, groups=2)
    naive = torch.cat([naive_patchnce(q[:2], k[:2], 0.07, "batch", -10.0),
                       naive_patchnce(q[2:], k[2:], 0.07, "batch", -10.0)])
    torch.testing.assert_close(ours.double(), naive, rtol=1e-5, atol=1e-6)
    # groups do not change internal negatives
    torch.testing.assert_close(patch_nce_loss(q, k, 0.07, "image", -10.0, groups=2), patch_nce_loss(q, k))


def test_cut_batch_negatives_keep_the_x_and_y_terms_apart():
    """NCE and NCE_Y with ``negatives=batch``: each term's queries see only its own images' keys (published:
    one ``calculate_NCE_loss`` call per term), checked against the naive loop on the same patches."""
    from i2i.losses.gan import GANLoss
    from i2i.methods.cut import CUT
    from i2i.models.discriminators import PatchGAN
    from i2i.models.generators import ResnetGenerator

    torch.manual_seed(0)
    G, D = ResnetGenerator(ngf=4, n_blocks=2), PatchGAN(ndf=4)
    layers = (0, 4, 8)
    method = CUT(G.feature_channels(layers), nce_layers=layers, num_patches=6, nc=8, negatives="batch")
    batch = {"A": torch.randn(2, 3, 32, 32), "B": torch.randn(2, 3, 32, 32)}
    out = method.forward_G(G, batch)
    state = torch.get_rng_state()
    terms = method.generator_losses(G, D, batch, out, GANLoss("lsgan"))

    # the same patch ids (same RNG stream), then each term alone through the naive loop
    torch.set_rng_state(state)
    feats_q = G(torch.cat([out["fake_B"], out["idt_B"]]), layers=list(layers), encode_only=True)
    feats_k = G(torch.cat([batch["A"], batch["B"]]), layers=list(layers), encode_only=True)
    per_term = {"NCE": torch.zeros(()), "NCE_Y": torch.zeros(())}
    for pos, (fk, fq) in enumerate(zip(feats_k, feats_q)):
        k, q = method.sampler(fk, fq, 6, None)
        k, q = method.heads(k, pos), method.heads(q, pos)
        for name, half in (("NCE", slice(0, 2)), ("NCE_Y", slice(2, 4))):
            per_term[name] = per_term[name] + naive_patchnce(q[half].detach().double(), k[half].detach().double(),
                                                             0.07, "batch", -10.0).mean()
    for name in per_term:
        torch.testing.assert_close(terms[name].double(), 0.5 * per_term[name] / len(layers), rtol=1e-5, atol=1e-6)


def test_layer_terms_seam_replaces_the_loss_and_adds_terms():
    """A subclass's ``layer_terms``: its "NCE" replaces PatchNCE (weighted λ_NCE, halved with the identity rows);
    another name is logged as the mean over the X rows, unweighted, averaged over the layers."""
    from i2i.methods.cut import CUT
    from i2i.models.discriminators import PatchGAN
    from i2i.models.generators import ResnetGenerator

    class Seam(CUT):
        def layer_terms(self, q, k, ctx, groups=1):
            rows = torch.arange(q.shape[0], dtype=q.dtype)  # [2B]: 0, 1 (X rows), 2, 3 (identity rows)
            return {"NCE": rows + ctx.layer_pos, "extra": 10.0 * rows + 0 * q.sum()}

    torch.manual_seed(0)
    G, D = ResnetGenerator(ngf=4, n_blocks=2), PatchGAN(ndf=4)
    layers = (0, 4, 8)
    method = Seam(G.feature_channels(layers), nce_layers=layers, num_patches=6, nc=8, lambda_nce=2.0)
    batch = {"A": torch.randn(2, 3, 32, 32), "B": torch.randn(2, 3, 32, 32)}
    terms = method.generator_losses(G, D, batch, method.forward_G(G, batch), GANLoss("lsgan"))
    # NCE: 0.5 * λ * mean over X rows of (row + mean layer pos 1) = 0.5 * 2 * (0.5 + 1); NCE_Y: rows 2, 3
    assert terms["NCE"].item() == pytest.approx(1.5)
    assert terms["NCE_Y"].item() == pytest.approx(3.5)
    assert terms["extra"].item() == pytest.approx(5.0)
    assert set(terms) == {"G_GAN", "NCE", "NCE_Y", "extra"}
