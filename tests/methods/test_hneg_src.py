"""Hneg-SRC (methods/hneg_src.py): relation weights, SRC (JSD), hDCE, gradients, curriculum, configs, training.

The references are written independently here: loops over patches in float64, the published formulas as the
published code writes them (softmax over dim 1 of the relation matrix, softmax-then-divide-by-max weights).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import CONFIGS
from i2i.build import ConfigError, build_discriminator, build_generator, build_method
from i2i.cli.train import run_training
from i2i.losses.gan import GANLoss
from i2i.methods.enco import decoupled_nce_loss
from i2i.methods.hneg_src import (
    HnegSRC,
    hard_decoupled_nce_loss,
    relation_log_weights,
    semantic_relation_jsd,
)
from i2i.models.discriminators import PatchGAN
from i2i.models.generators import ResnetGenerator
from i2i.models.projection import l2_normalize
from i2i.samplers.base import SampleContext

TAU = 0.07


def patches(b=2, n=16, c=8, spread=0.15, noise=0.1, seed=0, dtype=torch.float64):
    """Source z and translation w [B, N, C] at the magnitudes the losses see: patches in 3 semantic clusters
    (within-cluster cosines ~0.9, i.e. logits up to ~14 at τ = 0.07), w close to z (positives ~0.95)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(b, 3, c, generator=g, dtype=dtype)
    labels = torch.randint(0, 3, (b, n), generator=g)
    k = l2_normalize(torch.stack([centres[i, labels[i]] for i in range(b)])
                     + spread * torch.randn(b, n, c, generator=g, dtype=dtype), eps=0.0)
    q = l2_normalize(k + noise * torch.randn(b, n, c, generator=g, dtype=dtype), eps=0.0)
    return q, k


# ---------------------------------------------------------------------------------------------- naive references
def naive_weights(k, gamma):
    """Published SRC_Loss: diagonal -10, softmax over j of s/γ, divided by the row's maximum."""
    b, n, _ = k.shape
    out = torch.zeros(b, n, n, dtype=torch.float64)
    for i in range(b):
        for r in range(n):
            row = torch.tensor([-10.0 if j == r else float(k[i, r] @ k[i, j]) for j in range(n)], dtype=torch.float64)
            sm = torch.softmax(row / gamma, 0)
            out[i, r] = sm / sm.max()
    return out


def naive_jsd(q, k):
    """Published get_jsd: softmax over dim 1 (columns) of the relation matrices, 0.5·(KL(P‖M) + KL(Q‖M)) summed."""
    out = []
    for i in range(q.shape[0]):
        total = 0.0
        p = torch.softmax((k[i] @ k[i].T).double(), 0)
        s = torch.softmax((q[i] @ q[i].T).double(), 0)
        for a in range(p.shape[0]):
            for c in range(p.shape[1]):
                m = 0.5 * (p[a, c] + s[a, c])
                total = total + 0.5 * (p[a, c] * torch.log(p[a, c] / m) + s[a, c] * torch.log(s[a, c] / m))
        out.append(total)
    return torch.stack(out)


def naive_hdce(q, k, gamma, weighting):
    """Per patch: (InfoNCE value with the weighted negatives, decoupled loss whose gradient is taken)."""
    b, n, _ = k.shape
    w = naive_weights(k, gamma)
    values, decoupled = [], 0.0
    for i in range(b):
        for r in range(n):
            pos = q[i, r] @ k[i, r] / TAU
            if weighting == "cosine":  # PatchHDCELoss: l_neg *= weight, then the diagonal is set to -10
                negs = [(-10.0 / TAU) * torch.ones((), dtype=q.dtype) if j == r else w[i, r, j] * (q[i, r] @ k[i, j])
                        / TAU for j in range(n)]
            else:  # importance: negatives drawn with q_j = softmax_{j≠r}(s_rj/γ), weight (n-1)·q_j
                sims = torch.tensor([float(k[i, r] @ k[i, j]) for j in range(n) if j != r], dtype=torch.float64)
                imp = iter((n - 1) * torch.softmax(sims / gamma, 0))
                negs = [(-10.0 / TAU) * torch.ones((), dtype=q.dtype) if j == r else
                        q[i, r] @ k[i, j] / TAU + torch.log(next(imp)) for j in range(n)]
            negs = torch.stack(negs)
            values.append(torch.logsumexp(torch.cat([pos[None], negs]), 0) - pos)
            decoupled = decoupled + torch.logsumexp(negs, 0) - pos
    return torch.stack(values).view(b, n), decoupled


def tiny(**kw):
    torch.manual_seed(0)
    G = ResnetGenerator(ngf=4, n_blocks=2)
    layers = [0, 4, 8]
    return G, HnegSRC(G.feature_channels(layers), layers, num_patches=8, nc=8, **kw)


# ---------------------------------------------------------------------------------------------- the losses
@pytest.mark.parametrize("gamma", [50.0, 10.0, 1.0, 0.05])
def test_relation_weights_equal_the_published_softmax_over_max(gamma):
    _, k = patches()
    got = relation_log_weights(k.float(), gamma).exp()
    torch.testing.assert_close(got.double(), naive_weights(k, gamma), atol=1e-6, rtol=1e-5)
    assert got.requires_grad is False and (got <= 1).all() and torch.equal(got.amax(-1), torch.ones(2, 16))


def test_relation_weights_of_a_tiny_gamma_underflow_to_zero_without_nan():
    _, k = patches()
    w = relation_log_weights(k.float(), 1e-4).exp()
    assert torch.isfinite(w).all() and torch.equal(w.amax(-1), torch.ones(2, 16))
    assert (w == 0).float().mean() > 0.5  # one-hot-like rows (a naive exp(s/γ) would be exp(10_000) = inf)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_src_is_the_sum_over_patches_of_the_jsd_of_the_published_distributions(dtype):
    q, k = patches(n=12)
    q = q.clone().requires_grad_()
    got = semantic_relation_jsd(q.to(dtype), k.to(dtype))
    ref = naive_jsd(q, k)
    torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-4 if dtype == torch.float32 else 1e-9, atol=1e-9)
    (g,) = torch.autograd.grad(got.sum(), q)
    (g_ref,) = torch.autograd.grad(ref.sum(), q)
    torch.testing.assert_close(g, g_ref, rtol=1e-3 if dtype == torch.float32 else 1e-7, atol=1e-7)


def test_src_is_zero_for_equal_relations_and_keeps_precision_for_near_equal_ones():
    q, k = patches(b=1, n=256, c=32)
    same = semantic_relation_jsd(k.float(), k.float())
    assert torch.isfinite(same).all() and same.abs().max() < 1e-5  # log-space: no 0·log 0, no cancellation blow-up
    near = l2_normalize(k + 1e-3 * torch.randn_like(k), eps=0.0)
    ref = semantic_relation_jsd(near, k)  # float64 of the same formula: the near-cancelling case
    got = semantic_relation_jsd(near.float(), k.float()).double()
    assert ref > 0 and (got >= 0).all()
    assert abs(got - ref) / ref < 1e-3  # float32 features: the small divergence keeps its precision


@pytest.mark.parametrize("weighting", ["cosine", "importance"])
@pytest.mark.parametrize("gamma", [50.0, 10.0, 1.0, 0.05])
def test_hdce_has_the_infonce_value_and_the_decoupled_gradient_of_a_naive_loop(weighting, gamma):
    q, k = patches(n=12)
    q64 = q.clone().requires_grad_()
    value_ref, decoupled = naive_hdce(q64, k, gamma, weighting)
    (g_ref,) = torch.autograd.grad(decoupled, q64)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-4)):
        qq = q.to(dtype).clone().requires_grad_()
        kk = k.to(dtype)
        got = hard_decoupled_nce_loss(qq, kk, relation_log_weights(kk, gamma), TAU, weighting=weighting)
        assert got.shape == (2, 12) and torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), value_ref.detach(), rtol=tol, atol=tol)
        (g,) = torch.autograd.grad(got.sum(), qq)
        torch.testing.assert_close(g.double(), g_ref, rtol=10 * tol, atol=10 * tol)


def test_hdce_at_realistic_magnitudes_is_finite_and_matches_float64():
    q, k = patches(b=1, n=256, c=64, spread=0.05, noise=0.05)  # logits up to ~14, many near-ties among negatives
    assert (q * k).sum(-1).min() / TAU > 12
    qq = q.float().requires_grad_()
    for weighting in ("cosine", "importance"):
        for gamma in (50.0, 1.0, 1e-3):  # the published range (50 -> 10, stepped to 1), and far beyond it
            ref = hard_decoupled_nce_loss(q, k, relation_log_weights(k, gamma), TAU, weighting=weighting)
            got = hard_decoupled_nce_loss(qq, k.float(), relation_log_weights(k.float(), gamma), TAU,
                                          weighting=weighting)
            (grad,) = torch.autograd.grad(got.sum(), qq)
            assert torch.isfinite(got).all() and torch.isfinite(grad).all()
            if gamma >= 1.0:  # (at γ = 1e-3 the weights amplify float32 cosine errors by 1/γ: ill-conditioned)
                torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)


def test_without_weights_it_is_the_decoupled_loss_and_unit_weights_give_the_same():
    q, k = patches()
    plain = decoupled_nce_loss(q, k, TAU, "image")
    torch.testing.assert_close(hard_decoupled_nce_loss(q, k, None, TAU), plain)
    unit = hard_decoupled_nce_loss(q, k, torch.zeros(2, 16, 16, dtype=q.dtype), TAU)  # log ω = 0
    torch.testing.assert_close(unit, plain.double(), rtol=1e-5, atol=1e-5)  # (the decoupled loss runs in float32)


# ---------------------------------------------------------------------------------------------- gradients, rows
def test_keys_and_weights_are_detached_and_the_queries_carry_both_gradients():
    _, method = tiny()
    q, k = (t.float().clone().requires_grad_() for t in patches(b=4))
    terms = method.layer_terms(q, k, SampleContext(), groups=2)
    assert set(terms) == {"NCE", "SRC"} and terms["NCE"].shape == terms["SRC"].shape == (4,)
    for name in ("NCE", "SRC"):
        gq, gk = torch.autograd.grad(terms[name].sum(), (q, k), allow_unused=True)
        assert gk is None or torch.count_nonzero(gk) == 0, name
        assert torch.count_nonzero(gq) > 0, name


def test_the_losses_run_in_float32_under_bf16_autocast_with_gradients_reaching_bf16_patches():
    _, method = tiny()
    q, k = (t.float() for t in patches(b=2))
    plain = method.layer_terms(q, k, SampleContext())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = method.layer_terms(q, k, SampleContext())
    for name in plain:  # the same bits: no bf16 matrix product inside
        assert mixed[name].dtype == torch.float32 and torch.equal(mixed[name], plain[name]), name
    qb = q.bfloat16().requires_grad_()
    (grad,) = torch.autograd.grad(sum(v.sum() for v in method.layer_terms(qb, k.bfloat16(), SampleContext()).values()),
                                  qb)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad).all() and torch.count_nonzero(grad) > 0


def test_every_row_takes_its_weights_from_its_own_source_patches():
    _, method = tiny()
    q, k = (t.float() for t in patches(b=4))
    both = method.layer_terms(q, k, SampleContext(), groups=2)
    for half in (slice(0, 2), slice(2, 4)):  # X rows (real_A relations), identity rows (real_B relations)
        alone = method.layer_terms(q[half], k[half], SampleContext(), groups=1)
        for name in both:
            torch.testing.assert_close(both[name][half], alone[name])


def test_src_only_on_the_x_rows_and_hdce_halved_with_the_identity_rows():
    G, method = tiny(lambda_src=0.3, lambda_nce=0.1)
    method.train()
    D = PatchGAN(ndf=4)
    torch.manual_seed(1)
    batch = {"A": torch.randn(2, 3, 32, 32), "B": torch.randn(2, 3, 32, 32)}
    out = method.forward_G(G, batch)
    torch.manual_seed(2)
    terms = method.generator_losses(G, D, batch, out, GANLoss("lsgan"))
    assert {"G_GAN", "NCE", "NCE_Y", "SRC"} <= set(terms)
    torch.manual_seed(2)  # the same patch ids: the terms by hand
    feats_k = list(out["source_feats"])
    feats_q = method.encode(G, torch.cat([out["fake_B"], out["idt_B"]]))
    per_row = method.contrastive_terms(feats_k, feats_q, groups=2)
    torch.testing.assert_close(terms["SRC"], per_row["SRC"][:2].mean())
    torch.testing.assert_close(terms["NCE"], 0.5 * 0.1 * per_row["NCE"][:2].mean())
    torch.testing.assert_close(terms["NCE_Y"], 0.5 * 0.1 * per_row["NCE"][2:].mean())
    params = list(G.parameters())
    grads = torch.autograd.grad(terms["SRC"], params + list(method.heads.parameters()), allow_unused=True)
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads[:len(params)])  # G learns from SRC
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads[len(params):])  # and the heads


def test_gamma_curriculum_is_the_published_formula_and_reaches_the_loss():
    _, method = tiny(gamma=50.0, gamma_min=10.0, n_epochs=200, n_epochs_decay=200, step_gamma_epoch=200)
    for epoch in (1, 100, 200, 201, 400):
        published = 50.0 + (10.0 - 50.0) * epoch / 400
        if epoch > 200:
            published = 1.0
        assert method.gamma_at(epoch) == pytest.approx(published)
    q, k = (t.float() for t in patches())
    for epoch, gamma in ((1, 49.9), (150, 35.0), (300, 1.0)):
        method.set_epoch(epoch)
        assert float(method.current_gamma) == pytest.approx(gamma)
        expect = hard_decoupled_nce_loss(q, k, relation_log_weights(k, gamma), TAU).mean(1)
        torch.testing.assert_close(method.layer_terms(q, k, SampleContext())["NCE"], expect)
    _, flat = tiny(curriculum=False, gamma=7.0, step_gamma_epoch=1)
    assert flat.gamma_at(300) == 7.0
    _, plain = tiny(hard_negatives=False, lambda_src=0.0)
    assert set(plain.layer_terms(q, k, SampleContext())) == {"NCE"}
    torch.testing.assert_close(plain.layer_terms(q, k, SampleContext())["NCE"], decoupled_nce_loss(q, k).mean(1))


# ---------------------------------------------------------------------------------------------- configs, training
@pytest.mark.parametrize("name,data,direction,lambda_src,step", [
    ("horse2zebra", "horse2zebra", "AtoB", 0.05, None), ("cityscapes", "cityscapes", "BtoA", 0.1, 200)])
def test_experiments_carry_the_published_settings(compose, name, data, direction, lambda_src, step):
    cfg = compose(f"experiment=hneg_src_{name}")
    assert (cfg.data.name, cfg.data.direction, cfg.train.n_epochs, cfg.train.n_epochs_decay) == (data, direction,
                                                                                                 200, 200)
    assert cfg.gan_loss.mode == "lsgan" and cfg.train.batch_size == 1
    assert (cfg.optim.lr_g, cfg.optim.lr_d, cfg.optim.lr_f, tuple(cfg.optim.betas)) == (2e-4, 2e-4, 2e-4, (0.5, 0.999))
    assert (cfg.data.load_size, cfg.data.crop_size, cfg.generator.ngf) == (286, 256, 64)
    m = cfg.method
    assert m._target_ == "i2i.methods.hneg_src.HnegSRC" and list(m.nce_layers) == [0, 4, 8, 12, 16]
    assert (m.lambda_gan, m.lambda_nce, m.lambda_src, m.nce_idt) == (1.0, 0.1, lambda_src, True)
    assert (m.gamma, m.gamma_min, m.curriculum, m.step_gamma_epoch) == (50.0, 10.0, True, step)
    assert (m.n_epochs, m.n_epochs_decay) == (200, 200)
    assert (m.tau, m.num_patches, m.nc, m.negatives, m.diagonal, m.flip_equivariance) == (0.07, 256, 256, "image",
                                                                                          -10.0, False)
    assert (m.hard_negatives, m.hneg_weighting) == (True, "cosine")
    assert m.sampler._target_ == "i2i.samplers.random.RandomSampler"


DOC = CONFIGS.parent / "docs" / "hneg_src.md"


def test_the_documented_commands_build_what_they_say(compose):
    lines = [ln.split("#")[0].split()[1:] for ln in DOC.read_text().splitlines() if ln.startswith("train experiment=")]
    assert len(lines) == 5
    built = {}
    for overrides in lines:
        cfg = compose(*overrides, "debug=smoke")
        built[" ".join(overrides)] = build_method(cfg, build_generator(cfg.generator))
    h2z, city = built["experiment=hneg_src_horse2zebra"], built["experiment=hneg_src_cityscapes"]
    assert (h2z.hneg_weighting, h2z.hard_negatives, h2z.lambda_src, h2z.step_gamma_epoch) == ("cosine", True, 0.05, None)
    assert (city.lambda_src, city.step_gamma_epoch) == (0.1, 200)
    assert built["experiment=hneg_src_horse2zebra method.hard_negatives=false"].hard_negatives is False
    assert built["experiment=hneg_src_horse2zebra method.hneg_weighting=importance"].hneg_weighting == "importance"
    assert built["experiment=hneg_src_horse2zebra method.lambda_src=0"].lambda_src == 0


@pytest.mark.parametrize("override,key", [("method.hneg_weighting=exp", "hneg_weighting"), ("method.gamma=0", "gamma"),
                                          ("method.gamma_min=-1", "gamma_min"), ("method.negatives=batch", "negatives")])
def test_a_bad_option_is_one_line_naming_the_key_and_the_fix(compose, override, key):
    cfg = compose("experiment=hneg_src_horse2zebra", "debug=smoke", override)
    with pytest.raises(ConfigError) as err:
        build_method(cfg, build_generator(cfg.generator), build_discriminator(cfg.discriminator))
    msg = str(err.value)
    assert msg.startswith(f"method.{key}=") and "\n" not in msg and ("use" in msg or "e.g." in msg)


def test_smoke_trains_logs_the_terms_and_i2i_test_translates_with_its_checkpoint(compose, tmp_path):
    from i2i.cli.test import run_test

    trainer = run_training(compose("experiment=hneg_src_horse2zebra", "debug=smoke", "train.batch_size=2",
                                   "method.num_patches=64"))  # (N² relations: fewer patches keep it quick)
    assert trainer.step == 2 and isinstance(trainer.method, HnegSRC)
    assert float(trainer.method.current_gamma) == pytest.approx(50.0 - 40.0 / 400)
    record = json.loads((trainer.run_dir / "stats.jsonl").read_text().splitlines()[-1])
    assert {"Loss/G_GAN", "Loss/NCE", "Loss/NCE_Y", "Loss/SRC"} <= set(record)
    assert all(math.isfinite(record[k]) for k in ("Loss/NCE", "Loss/NCE_Y", "Loss/SRC")) and record["Loss/SRC"] > 0
    test_dir = trainer.dataset.dir_A.replace("trainA", "testA")
    cfg = compose(f"ckpt={trainer.run_dir}", "data=folder", f"data.root={test_dir}", "device=cpu",
                  f"out_dir={tmp_path / 'out'}", config="test")
    out = run_test(cfg)
    assert len(list((out / "fake_B").glob("*.png"))) == 2
