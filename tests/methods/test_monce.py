"""MoNCE (losses/monce.py, methods/monce.py): Sinkhorn plan, modulated NCE, gradients, configs, training, testing.

The references are written out independently: a plain-loop exp-domain Sinkhorn in float64 (the published update
order), and the modulated InfoNCE query by query.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import CONFIGS
from i2i.build import ConfigError, build_generator, build_method
from i2i.cli.train import run_training
from i2i.losses.monce import monce_log_weights, monce_loss, sinkhorn_log
from i2i.losses.patchnce import patch_nce_loss
from i2i.methods.monce import MoNCE
from i2i.models.projection import l2_normalize
from i2i.samplers.base import SampleContext

LAYERS = [0, 4, 8, 12, 16]


# ---------------------------------------------------------------------------------------------- naive references
def naive_sinkhorn(K: torch.Tensor, iters: int) -> torch.Tensor:
    """Exp-domain Sinkhorn on one [n, m] kernel, entry by entry: u_i = (m/n) / Σ_j K_ij v_j, v_j = 1 / Σ_i u_i K_ij."""
    n, m = K.shape
    u, v = [1.0] * n, [1.0] * m
    for _ in range(iters):
        u = [(m / n) / sum(K[i, j] * v[j] for j in range(m)) for i in range(n)]
        v = [1.0 / sum(u[i] * K[i, j] for i in range(n)) for j in range(m)]
    return torch.stack([torch.stack([u[i] * K[i, j] * v[j] for j in range(m)]) for i in range(n)])


def naive_plan(K: torch.Tensor, iters: int) -> torch.Tensor:
    """The same iteration with whole-vector products (for 256 x 256 kernels)."""
    n, m = K.shape
    v = torch.ones(m, dtype=K.dtype)
    for _ in range(iters):
        u = (m / n) / (K @ v)
        v = 1.0 / (K.T @ u)
    return u[:, None] * K * v[None, :]


def naive_monce(q, k, tau=0.07, eps=0.1, cost="hard", Q=1.0, iters=50, diagonal=-10.0, detach_plan=False):
    """Per image and query: -log e^(s_ii/τ) / (e^(s_ii/τ) + e^(d/τ) + Σ_{j≠i} (Q(N−1)P_ij + 1e-8) e^(s_ij/τ)). [B, N]."""
    k = k.detach()
    out = []
    for b in range(q.shape[0]):
        s = q[b] @ k[b].T  # [N, N]
        n = s.shape[0]
        base = (s.detach() if detach_plan else s)
        base = base if cost == "hard" else 1.0 - base
        eye = torch.eye(n, dtype=torch.bool)
        P = naive_plan(torch.exp(torch.where(eye, torch.full_like(base, diagonal), base) / eps), iters)
        rows = []
        for i in range(n):
            neg = sum((Q * (n - 1) * P[i, j] + 1e-8) * torch.exp(s[i, j] / tau) for j in range(n) if j != i)
            pos = torch.exp(s[i, i] / tau)
            rows.append(-torch.log(pos / (pos + math.exp(diagonal / tau) + neg)))
        out.append(torch.stack(rows))
    return torch.stack(out)


def unit(*shape, seed=0, dtype=torch.float64):
    return l2_normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype))


def correlated(b, n, c, seed=0, noise=0.3, dtype=torch.float64):
    """Queries close to their keys, as after some training (cosines spread over [-1, 1])."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(b, n, c, generator=g, dtype=dtype)
    return l2_normalize(k + noise * torch.randn(b, n, c, generator=g, dtype=dtype)), l2_normalize(k)


# ---------------------------------------------------------------------------------------------- Sinkhorn
def test_log_domain_sinkhorn_equals_the_plain_loop_and_has_the_published_marginals():
    g = torch.Generator().manual_seed(0)
    log_k = 3 * torch.randn(2, 7, 7, generator=g, dtype=torch.float64)
    for iters in (1, 3, 50):
        ours = sinkhorn_log(log_k, iters).exp()
        for b in range(2):
            torch.testing.assert_close(ours[b], naive_sinkhorn(log_k[b].exp(), iters), rtol=1e-10, atol=1e-12)
    P = sinkhorn_log(log_k, 50).exp()
    torch.testing.assert_close(P.sum(1), torch.ones(2, 7, dtype=torch.float64))  # columns: exact after the v-update
    torch.testing.assert_close(P.sum(2), torch.ones(2, 7, dtype=torch.float64), rtol=0, atol=1e-3)  # rows: ≈


def test_sinkhorn_at_cosine_over_tau_magnitudes_and_256x256_plans_stays_finite_in_float32():
    """Costs cos/τ (|.| up to 1/0.07 ≈ 14.3) at ε = 0.1 give exp(143): past float32, where the naive iteration
    overflows; the log-domain one must still match the float64 reference."""
    q, k = correlated(1, 256, 32, seed=1, noise=0.5)
    cost = (q[0] @ k[0].T) / 0.07  # [256, 256], in [-14.3, 14.3]
    log_k = cost / 0.1
    assert log_k.abs().max() > 100
    assert not torch.isfinite(naive_plan(log_k.float().exp(), 50)).all()  # exp-domain float32: inf/nan
    ref = naive_plan(log_k.exp(), 50)  # float64 holds e^143
    ours = sinkhorn_log(log_k.float()[None], 50)[0]
    assert torch.isfinite(ours).all()
    mass = ref > 1e-30  # compare where the reference has mass, and log values there
    torch.testing.assert_close(ours.double()[mass], ref.log()[mass], rtol=0, atol=2e-3)
    torch.testing.assert_close(ours.exp().sum(0).double(), torch.ones(256, dtype=torch.float64), rtol=0, atol=1e-4)


def test_ties_give_the_uniform_plan_and_monce_reduces_to_patchnce():
    """Every key equal (all cosines of a row tied): P = 1/(N−1) off the diagonal, w = Q(N−1)P = 1 (+1e-8)."""
    q = unit(2, 16, 8)
    k = unit(1, 1, 8, seed=3).expand(2, 16, 8).contiguous()
    log_w = monce_log_weights(torch.bmm(q, k.transpose(1, 2)), eps=0.1)
    off = ~torch.eye(16, dtype=torch.bool)
    torch.testing.assert_close(log_w[:, off], torch.full((2, 240), math.log(1 + 1e-8), dtype=torch.float64),
                               rtol=0, atol=1e-9)
    torch.testing.assert_close(monce_loss(q, k, eps=0.1).float(), patch_nce_loss(q, k), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(monce_loss(q, k, eps=0.1, neg_term_weight=2.0) > patch_nce_loss(q, k),
                               torch.ones(2, 16, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("cost,eps,Q", [("hard", 0.1, 1.0), ("easy", 0.1, 1.0), ("hard", 1.0, 0.5), ("easy", 0.05, 2.0)])
def test_monce_equals_the_naive_loss_on_realistic_features(cost, eps, Q):
    q, k = correlated(2, 24, 16, seed=2)
    ref = naive_monce(q, k, eps=eps, cost=cost, Q=Q)
    torch.testing.assert_close(monce_loss(q, k, 0.07, eps, cost, Q), ref, rtol=1e-9, atol=1e-9)
    # float32, the training dtype
    ours32 = monce_loss(q.float(), k.float(), 0.07, eps, cost, Q)
    torch.testing.assert_close(ours32.double(), ref, rtol=1e-4, atol=1e-4)


def test_monce_at_256_patches_in_float32_matches_float64():
    q, k = correlated(2, 256, 64, seed=4, noise=0.4)
    ref = monce_loss(q, k, eps=0.1)
    ours = monce_loss(q.float(), k.float(), eps=0.1)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-4)
    ref_naive = naive_monce(q[:1, :64], k[:1, :64], eps=0.1)  # one naive 64-patch image
    torch.testing.assert_close(monce_loss(q[:1, :64], k[:1, :64], eps=0.1), ref_naive, rtol=1e-9, atol=1e-9)


def test_hard_weighting_raises_the_loss_over_patchnce_and_easy_lowers_it():
    q, k = correlated(2, 32, 16, seed=5)
    nce = patch_nce_loss(q, k).mean()
    assert monce_loss(q, k, eps=0.1, cost_type="hard").mean() > nce > monce_loss(q, k, eps=0.1, cost_type="easy").mean()


def test_degenerate_inputs_stay_finite():
    q, k = correlated(2, 8, 4, seed=6)
    q = q.clone()
    q[0, 3] = 0.0  # an all-zero query (a constant feature normalised): a row of zero cosines
    q.requires_grad_(True)
    for kw in (dict(eps=0.1), dict(eps=1e-3), dict(eps=0.1, diagonal=-math.inf), dict(eps=0.1, neg_term_weight=0.0)):
        loss = monce_loss(q, k, **kw)
        (grad,) = torch.autograd.grad(loss.sum(), q)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), kw
    one_q, one_k = q[:, :1].detach(), k[:, :1]  # one patch: no negatives to weight
    torch.testing.assert_close(monce_loss(one_q, one_k).float(), patch_nce_loss(one_q, one_k))


def test_batch_negatives_plan_spans_the_term_and_never_mixes_x_and_identity_rows():
    q, k = correlated(4, 6, 8, seed=7)
    both = monce_loss(q, k, eps=0.1, negatives="batch", groups=2)
    for half in (slice(0, 2), slice(2, 4)):
        torch.testing.assert_close(both[half], monce_loss(q[half], k[half], eps=0.1, negatives="batch"))
    # one plan over the 12 patches of a term: the naive per-image loss on the flattened term
    flat = naive_monce(q[:2].reshape(1, 12, 8), k[:2].reshape(1, 12, 8), eps=0.1)
    torch.testing.assert_close(both[:2], flat.reshape(2, 6), rtol=1e-9, atol=1e-9)


def test_published_weight_scale_uses_the_configured_num_patches():
    q, k = correlated(1, 10, 8, seed=8)
    sim = torch.bmm(q, k.transpose(1, 2))
    paper = monce_log_weights(sim, 0.1)  # N−1 = 9
    published = monce_log_weights(sim, 0.1, scale=255)  # num_patches − 1
    off = ~torch.eye(10, dtype=torch.bool)
    w_paper, w_pub = paper.exp()[:, off] - 1e-8, published.exp()[:, off] - 1e-8
    torch.testing.assert_close(w_pub, w_paper * 255 / 9, rtol=1e-7, atol=1e-12)
    a = monce_loss(q, k, eps=0.1, weight_scale="num_patches", num_patches=256)
    b = monce_loss(q, k, eps=0.1, weight_scale="num_patches", num_patches=10)
    torch.testing.assert_close(b, monce_loss(q, k, eps=0.1))  # equal when the layer has num_patches locations
    assert (a > b).all()


# ---------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("detach_plan", [False, True])
def test_gradient_reaches_queries_through_the_plan_unless_detached_and_never_the_keys(detach_plan):
    q0, k0 = correlated(2, 8, 6, seed=9)
    q = q0.clone().requires_grad_(True)
    k = k0.clone().requires_grad_(True)
    loss = monce_loss(q, k, eps=0.1, detach_plan=detach_plan).sum()
    loss.backward()
    assert k.grad is None  # keys detached, for the plan and for the contrast
    qn = q0.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(naive_monce(qn, k0, eps=0.1, detach_plan=detach_plan).sum(), qn)
    torch.testing.assert_close(q.grad, ref, rtol=1e-7, atol=1e-9)
    qo = q0.clone().requires_grad_(True)  # the other semantics gives another gradient
    (other,) = torch.autograd.grad(naive_monce(qo, k0, eps=0.1, detach_plan=not detach_plan).sum(), qo)
    assert (q.grad - other).abs().max() > 1e-3


def test_differentiable_plan_keeps_about_one_plan_for_backward_not_one_per_iteration():
    """The 50 iterations are recomputed in the backward pass: what autograd keeps is a few [b, N, N] tensors."""
    q0, k = correlated(2, 64, 16, seed=11, dtype=torch.float32)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    q = q0.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = monce_loss(q, k, eps=0.1, iters=50).sum()
    loss.backward()
    plan_bytes = 2 * 64 * 64 * 4
    assert sum(seen.values()) < 12 * plan_bytes  # not ~100 plans (two per iteration)
    assert q.grad is not None and torch.isfinite(q.grad).all()


# ---------------------------------------------------------------------------------------------- the method
def test_layer_terms_is_monce_with_the_methods_options_and_reaches_the_heads():
    torch.manual_seed(0)
    m = MoNCE([4, 8], [0, 4], eps=0.2, cost_type="easy", neg_term_weight=0.5, sinkhorn_iters=7, num_patches=6, nc=8)
    q, k = correlated(2, 6, 8, seed=10, dtype=torch.float32)
    terms = m.layer_terms(q, k, SampleContext(), groups=1)
    assert set(terms) == {"NCE"}
    torch.testing.assert_close(terms["NCE"], monce_loss(q, k, 0.07, 0.2, "easy", 0.5, 7).mean(1))
    fk = [torch.randn(2, 4, 5, 5), torch.randn(2, 8, 5, 5)]
    fq = [f.clone().requires_grad_(True) for f in fk]
    m.nce_per_image(fk, fq).sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fq)
    assert all(p.grad is not None for p in m.heads.parameters())


def test_experiments_and_method_carry_the_published_settings(compose):
    m = compose("method=monce").method
    assert m._target_ == "i2i.methods.monce.MoNCE" and m.name == "monce"
    assert (m.eps, m.cost_type, m.neg_term_weight, m.sinkhorn_iters) == (1.0, "hard", 1.0, 50)  # train_options.py
    assert (m.detach_plan, m.weight_scale) == (False, "negatives")
    for exp, data, direction, eps, lam in (("monce_horse2zebra", "horse2zebra", "AtoB", 0.1, 1.0),
                                           ("monce_cityscapes", "cityscapes", "BtoA", 1.0, 1.0),
                                           ("monce_winter2summer", "summer2winter_yosemite", "BtoA", 1.0, 2.0)):
        cfg = compose(f"experiment={exp}")
        m, t = cfg.method, cfg.train
        assert cfg.name == exp and (cfg.data.name, cfg.data.direction) == (data, direction)
        assert (m.eps, m.cost_type, m.neg_term_weight, m.sinkhorn_iters, m.lambda_nce) == (eps, "hard", 1.0, 50, lam)
        assert (list(m.nce_layers), m.num_patches, m.nc, m.tau, m.diagonal) == (LAYERS, 256, 256, 0.07, -10.0)
        assert (m.nce_idt, m.flip_equivariance, m.negatives, m.lambda_gan) == (True, False, "image", 1.0)
        assert (t.batch_size, t.n_epochs, t.n_epochs_decay) == (12, 200, 200)
        assert (cfg.optim.lr_g, cfg.optim.lr_d, cfg.optim.lr_f, list(cfg.optim.betas)) == (2e-4, 2e-4, 2e-4, [0.5, 0.999])
        assert cfg.gan_loss.mode == "lsgan" and cfg.generator.n_blocks == 9


@pytest.mark.parametrize("override,message", [
    ("method.cost_type=medium", r"^method\.cost_type='medium': use hard or easy — e\.g\. method\.cost_type=hard$"),
    ("method.eps=0", r"^method\.eps=0: .* > 0 — e\.g\. method\.eps=0\.1"),
    ("method.neg_term_weight=-1", r"^method\.neg_term_weight=-1: must be a number >= 0 — e\.g\."),
    ("method.sinkhorn_iters=0", r"^method\.sinkhorn_iters=0: must be an integer >= 1 — e\.g\. method\.sinkhorn_iters=50"),
    ("method.weight_scale=all", r"^method\.weight_scale='all': use negatives or num_patches"),
])
def test_bad_options_give_one_line_naming_the_key_and_the_fix(compose, override, message):
    cfg = compose("experiment=monce_horse2zebra", "debug=smoke", override)
    with pytest.raises(ConfigError, match=message) as err:
        build_method(cfg, build_generator(cfg.generator))
    assert "\n" not in str(err.value)


@pytest.mark.slow  # two training steps through the whole stack, then i2i-test
def test_smoke_trains_and_i2i_test_translates_with_its_checkpoint(compose, tmp_path):
    from i2i.cli.test import run_test

    trainer = run_training(compose("experiment=monce_horse2zebra", "debug=smoke"))
    assert trainer.step == 2 and isinstance(trainer.method, MoNCE) and trainer.method.eps == 0.1
    record = json.loads((trainer.run_dir / "stats.jsonl").read_text().splitlines()[-1])
    assert {"Loss/G_GAN", "Loss/NCE", "Loss/NCE_Y"} <= set(record)
    assert all(math.isfinite(record[k]) for k in ("Loss/NCE", "Loss/NCE_Y"))
    test_dir = trainer.dataset.dir_A.replace("trainA", "testA")
    cfg = compose(f"ckpt={trainer.run_dir}", "data=folder", f"data.root={test_dir}", "device=cpu",
                  f"out_dir={tmp_path / 'out'}", config="test")
    out = run_test(cfg)
    assert len(list((out / "fake_B").glob("*.png"))) == 2


DOC = CONFIGS.parent / "docs" / "monce.md"


@pytest.mark.parametrize("override,attr,value", [("method.cost_type=easy", "cost_type", "easy"),
                                                 ("method.detach_plan=true", "detach_plan", True),
                                                 ("method.weight_scale=num_patches", "weight_scale", "num_patches")])
def test_documented_overrides_build_the_documented_variant(compose, override, attr, value):
    assert override in DOC.read_text()
    cfg = compose("experiment=monce_horse2zebra", "debug=smoke", override)
    assert getattr(build_method(cfg, build_generator(cfg.generator)), attr) == value
