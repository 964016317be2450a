"""DCLGAN / SimDCL: paper settings, dual PatchNCE and similarity loss against naive loops, what is detached,
smoke training, i2i-test with the written checkpoint and with a published G_A file, option errors."""

from __future__ import annotations

import copy
import json
import math
from collections import OrderedDict

import pytest
import torch

from i2i.build import ConfigError, build_discriminator, build_generator, build_method
from i2i.cli.train import run_training
from i2i.losses.gan import GANLoss
from i2i.methods.base import Parts
from i2i.methods.dclgan import DCLGAN, SimDCL
from i2i.models.discriminators import PatchGAN
from i2i.models.generators import ResnetGenerator


class FixedSampler:
    """Deterministic stand-in for the random sampler: a fixed permutation per layer position, shared by the batch
    (so a naive computation can gather the same locations)."""

    needs_score_map = False

    def ids(self, feat, num_patches, pos):
        g = torch.Generator().manual_seed(100 + pos)
        hw = feat.shape[2] * feat.shape[3]
        return torch.randperm(hw, generator=g)[:min(num_patches, hw)]

    def __call__(self, feat_k, feat_q, num_patches, ctx=None):
        ids = self.ids(feat_k, num_patches, ctx.layer_pos)
        pick = lambda f: f.flatten(2)[:, :, ids].transpose(1, 2)
        return pick(feat_k), pick(feat_q)


def tiny(cls=DCLGAN, **kw):
    torch.manual_seed(0)
    make_G = lambda: ResnetGenerator(ngf=4, n_blocks=5)  # layer 16: residual block 5
    make_D = lambda: PatchGAN(ndf=4)
    parts = Parts(G=make_G(), D=make_D(), new_generator=make_G, new_discriminator=make_D)
    kw = {"num_patches": 12, "nc": 8, "sampler": FixedSampler(), "pool_size": 0, **kw}
    return parts.G, parts.D, cls.create(parts, **kw)


def batch(b=1, size=32):
    return {"A": torch.rand(b, 3, size, size) * 2 - 1, "B": torch.rand(b, 3, size, size) * 2 - 1}


# ------------------------------------------------------------------------------------------ (a) settings
@pytest.mark.parametrize("name,data,direction,epochs", [
    ("horse2zebra", "horse2zebra", "AtoB", 200), ("cityscapes", "cityscapes", "BtoA", 200),
    ("cat2dog", "cat2dog", "AtoB", 100), ("vangogh2photo", "vangogh2photo", "AtoB", 100),
    ("orange2apple", "apple2orange", "BtoA", 200)])
def test_dclgan_experiments_carry_the_paper_settings(compose, name, data, direction, epochs):
    cfg = compose(f"experiment=dclgan_{name}")
    assert (cfg.data.name, cfg.data.direction) == (data, direction)
    assert (cfg.train.n_epochs, cfg.train.n_epochs_decay, cfg.train.batch_size) == (epochs, epochs, 1)
    assert (cfg.optim.lr_g, cfg.optim.lr_d, cfg.optim.lr_f, list(cfg.optim.betas)) == (1e-4, 1e-4, 1e-4, [0.5, 0.999])
    assert cfg.gan_loss.mode == "hinge" and (cfg.data.load_size, cfg.data.crop_size) == (286, 256)
    assert cfg.generator.n_blocks == 9 and cfg.generator.init_type == "xavier"
    m = cfg.method
    assert m._target_ == "i2i.methods.dclgan.DCLGAN" and list(m.nce_layers) == [4, 8, 12, 16]
    assert (m.lambda_gan, m.lambda_nce, m.lambda_idt, m.tau, m.num_patches, m.nc) == (1.0, 2.0, 1.0, 0.07, 256, 256)
    assert (m.pool_size, m.negatives, m.published_weighting, m.generator_hinge_margin) == (50, "image", False, False)
    assert m.sampler._target_ == "i2i.samplers.random.RandomSampler"


@pytest.mark.parametrize("name", ["horse2zebra", "cat2dog", "cityscapes"])
def test_simdcl_experiments_carry_the_paper_settings(compose, name):
    cfg = compose(f"experiment=simdcl_{name}")
    assert cfg.data.name == name and (cfg.train.n_epochs, cfg.train.n_epochs_decay) == (100, 100)
    assert (cfg.optim.lr_g, cfg.optim.lr_d, cfg.optim.lr_f) == (2e-4, 2e-4, 2e-4) and cfg.gan_loss.mode == "hinge"
    m = cfg.method
    assert m._target_ == "i2i.methods.dclgan.SimDCL" and list(m.nce_layers) == [4, 8, 12, 16]
    assert (m.lambda_nce, m.lambda_idt, m.lambda_sim, m.sim_dim, m.sim_reduction) == (2.0, 1.0, 10.0, 64, "sum")


def test_networks_go_to_the_right_optimizers_and_D_is_updated_first():
    _, _, method = tiny(SimDCL)
    groups = {k: {id(p) for p in v} for k, v in method.param_groups().items()}
    assert groups["G"] == {id(p) for p in method.G_BA.parameters()}
    assert groups["D"] == {id(p) for p in method.D_A.parameters()}
    own = [method.heads, method.heads_Y, method.sim_nets]
    assert groups["F"] == {id(p) for m in own for p in m.parameters()}
    assert method.update_order == ("D", "G") and len(method.sim_nets) == 4


# ------------------------------------------------------------------------------------------ (b) naive losses
def naive_head(x, mlp):
    """Linear-ReLU-Linear then x / (|x| + 1e-7), in float64: [N, C] -> [N, nc]."""
    w1, b1, w2, b2 = (t.detach().double() for t in (mlp[0].weight, mlp[0].bias, mlp[2].weight, mlp[2].bias))
    y = torch.relu(x @ w1.T + b1) @ w2.T + b2
    return y / (y.norm(dim=-1, keepdim=True) + 1e-7)


def naive_nce(q, k, tau=0.07, diagonal=-10.0):
    """Mean over patches of -log e^(q_i·k_i/τ) / (e^(q_i·k_i/τ) + e^(diagonal/τ) + Σ_{j≠i} e^(q_i·k_j/τ))."""
    total = 0.0
    for i in range(q.shape[0]):
        logits = [float(q[i] @ k[i]) / tau] + [(diagonal if j == i else float(q[i] @ k[j])) / tau
                                               for j in range(k.shape[0])]
        m = max(logits)
        total += m + math.log(sum(math.exp(v - m) for v in logits)) - logits[0]
    return total / q.shape[0]


def naive_direction(feats_k, feats_q, heads_k, heads_q, sampler, num_patches):
    """Per image: mean over layers of the naive PatchNCE of gathered, projected patches. Returns [B] float64."""
    b = feats_k[0].shape[0]
    out = torch.zeros(b, dtype=torch.float64)
    for pos, (fk, fq) in enumerate(zip(feats_k, feats_q)):
        ids = sampler.ids(fk, num_patches, pos)
        for i in range(b):
            k = naive_head(fk[i].double().flatten(1)[:, ids].T, getattr(heads_k, f"mlp_{pos}"))
            q = naive_head(fq[i].double().flatten(1)[:, ids].T, getattr(heads_q, f"mlp_{pos}"))
            out[i] += naive_nce(q, k) / len(feats_k)
    return out


def test_contrast_equals_a_naive_loop_on_generator_sized_features():
    """Unnormalised features in the hundreds (as before instance norm), a duplicated location (a tie between a
    positive and a negative) and two images: the per-image loss of one direction equals the float64 loop."""
    _, _, method = tiny()
    torch.manual_seed(1)
    shapes = [(8, 32, 32), (16, 16, 16), (16, 8, 8), (16, 8, 8)]
    feats_k = [torch.randn(2, *s) * 300 + 50 for s in shapes]
    feats_q = [fk * 0.5 + torch.randn_like(fk) * 100 for fk in feats_k]
    feats_k[2][:, :, 0, 1] = feats_k[2][:, :, 0, 0]  # a repeated key
    per_row, keys = method.contrast(feats_k, feats_q, method.heads, method.heads_Y)
    ref = naive_direction(feats_k, feats_q, method.heads, method.heads_Y, method.sampler, 12)
    torch.testing.assert_close(per_row["NCE"].double(), ref, rtol=1e-4, atol=1e-5)
    assert [k.shape for k in keys] == [torch.Size([2, 12, 8])] * 4


def test_each_direction_embeds_the_source_by_its_own_generator_and_the_translation_by_the_other():
    G, D, method = tiny(lambda_idt=0.0)
    bt = batch()
    out = method.forward_G(G, bt)
    terms = method.generator_losses(G, D, bt, out, GANLoss("lsgan"))
    enc = lambda net, x: net(x, layers=method.nce_layers, encode_only=True)
    with torch.no_grad():
        nce_X = naive_direction(enc(G, bt["A"]), enc(method.G_BA, G(bt["A"])), method.heads, method.heads_Y,
                                method.sampler, 12)
        nce_Y = naive_direction(enc(method.G_BA, bt["B"]), enc(G, method.G_BA(bt["B"])), method.heads_Y,
                                method.heads, method.sampler, 12)
    torch.testing.assert_close(terms["NCE"].double(), 2.0 * nce_X.mean(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms["NCE_BA"].double(), 2.0 * nce_Y.mean(), rtol=1e-4, atol=1e-5)
    assert set(terms) == {"G_GAN", "G_GAN_BA", "NCE", "NCE_BA"}


@pytest.mark.parametrize("published", [False, True])
def test_objective_weights_paper_and_published(published):
    G, D, method = tiny(published_weighting=published)
    bt = batch()
    out = method.forward_G(G, bt)
    terms = method.generator_losses(G, D, bt, out, GANLoss("hinge"))
    w = 0.5 if published else 1.0
    with torch.no_grad():
        expected = {"G_GAN": -D(G(bt["A"])).logits.mean(), "G_GAN_BA": -method.D_A(method.G_BA(bt["B"])).logits.mean(),
                    "idt_B": (G(bt["B"]) - bt["B"]).abs().mean(), "idt_A": (method.G_BA(bt["A"]) - bt["A"]).abs().mean()}
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], w * value, rtol=1e-4, atol=1e-6)
    assert torch.allclose(out["idt_B"], G(bt["B"]), atol=1e-5)  # the identity rows of the one G pass


def test_dag_sampling_scores_each_direction_by_its_own_discriminator():
    from i2i.samplers.dag import DAGSampler

    G, D, method = tiny(SimDCL, sampler=DAGSampler(k=2, beta=0.5))
    maps = []
    sample = method.sampler.__call__
    method.sampler = lambda fk, fq, n, ctx: (maps.append(ctx.score_map), sample(fk, fq, n, ctx))[1]
    bt = batch()
    out = method.forward_G(G, bt)
    terms = method.generator_losses(G, D, bt, out, GANLoss("hinge"))
    assert len(maps) == 8 and all(torch.isfinite(v) for v in terms.values())
    with torch.no_grad():
        assert all(torch.equal(m, D(out["fake_B"]).logits) for m in maps[:4])  # PatchNCE_X: D_Y(G(x))
        assert all(torch.equal(m, method.D_A(out["fake_A"]).logits) for m in maps[4:])  # PatchNCE_Y: D_X(F(y))
    assert not any(m.requires_grad for m in maps)


def test_generator_hinge_margin_is_the_published_clipped_form():
    G, D, method = tiny(generator_hinge_margin=True)
    bt = batch()
    out = method.forward_G(G, bt)
    terms = method.generator_losses(G, D, bt, out, GANLoss("hinge"))
    with torch.no_grad():
        expected = torch.relu(1 - D(G(bt["A"])).logits).mean()
    torch.testing.assert_close(terms["G_GAN"], expected, rtol=1e-5, atol=1e-6)


def naive_mapping(net, x):
    """The light network in float64: conv3x3/2 - ReLU - mean - Linear - ReLU - Linear - L2 norm. [L, N, nc] -> [dim]."""
    m = copy.deepcopy(net.model).double()
    conv, lin1, lin2 = m[0], m[4], m[6]
    y = torch.relu(torch.nn.functional.conv2d(x[None].double(), conv.weight, conv.bias, stride=2)).mean((2, 3))[0]
    y = lin2.weight @ torch.relu(lin1.weight @ y + lin1.bias) + lin2.bias
    return y / (y.norm() + 1e-7)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_similarity_loss_equals_a_naive_computation(reduction):
    """Eq. 6: |H_xr(real X) − H_xf(fake X)|₁ + |H_yr(real Y) − H_yf(fake Y)|₁, real = the NCE keys, fake = fresh
    locations; summed over the 64 dims (paper) or averaged (published), then the mean over two images."""
    _, _, method = tiny(SimDCL, sim_reduction=reduction)
    torch.manual_seed(2)
    L, n, nc = 4, 12, 8
    proj_X = [torch.nn.functional.normalize(torch.randn(2, n + 3 * (i == 0), nc), dim=-1) for i in range(L)]
    proj_Y = [torch.nn.functional.normalize(torch.randn(2, n, nc), dim=-1) for _ in range(L)]
    channels = method.heads.in_channels  # [8, 16, 16, 16]
    queries_A = [torch.randn(2, c, 8, 8) * 200 for c in channels]  # F_enc(G(x)), unnormalised
    queries_B = [torch.randn(2, c, 8, 8) * 200 for c in channels]  # G_enc(F(y))
    torch.manual_seed(3)
    sim = method.patch_terms(proj_X, proj_Y, queries_A, queries_B)["SIM"]
    torch.manual_seed(3)  # the same fresh locations: fake X first (G_enc(F(y)), H_X), then fake Y
    ids_X = [torch.randperm(64)[:n] for _ in range(L)]
    ids_Y = [torch.randperm(64)[:n] for _ in range(L)]
    nets = method.sim_nets
    total = 0.0
    for i in range(2):
        real_X = torch.stack([k[i, :n].double() for k in proj_X])
        real_Y = torch.stack([k[i].double() for k in proj_Y])
        fake_X = torch.stack([naive_head(f[i].double().flatten(1)[:, ids].T, getattr(method.heads, f"mlp_{p}"))
                              for p, (f, ids) in enumerate(zip(queries_B, ids_X))])
        fake_Y = torch.stack([naive_head(f[i].double().flatten(1)[:, ids].T, getattr(method.heads_Y, f"mlp_{p}"))
                              for p, (f, ids) in enumerate(zip(queries_A, ids_Y))])
        for a, b in ((naive_mapping(nets["xr"], real_X), naive_mapping(nets["xf"], fake_X)),
                     (naive_mapping(nets["yr"], real_Y), naive_mapping(nets["yf"], fake_Y))):
            d = [abs(float(u) - float(v)) for u, v in zip(a.detach(), b.detach())]
            total += (sum(d) if reduction == "sum" else sum(d) / len(d)) / 2
    assert sim.item() == pytest.approx(10.0 * total, rel=1e-4)


# ------------------------------------------------------------------------------------------ (c) gradients
def test_nce_keys_and_their_head_get_no_gradient_queries_and_theirs_do():
    _, _, method = tiny()
    torch.manual_seed(4)
    feats_k = [torch.randn(1, c, s, s, requires_grad=True) for c, s in ((8, 32), (16, 16), (16, 8), (16, 8))]
    feats_q = [torch.randn(1, c, s, s, requires_grad=True) for c, s in ((8, 32), (16, 16), (16, 8), (16, 8))]
    per_row, _ = method.contrast(feats_k, feats_q, method.heads, method.heads_Y)
    per_row["NCE"].sum().backward()
    assert all(f.grad is None for f in feats_k)
    assert all(p.grad is None for p in method.heads.parameters())  # H_X embeds the keys here
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats_q)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.heads_Y.parameters())


def test_nce_of_G_trains_G_and_only_the_encoder_of_the_other_generator():
    G, D, method = tiny(lambda_idt=0.0)
    bt = batch()
    out = method.forward_G(G, bt)
    method.generator_losses(G, D, bt, out, GANLoss("lsgan"))["NCE"].backward()
    last = max(method.nce_layers)
    assert all(p.grad is not None for p in G.parameters() if p.requires_grad)  # through G(x)
    for i, module in enumerate(method.G_BA.model):
        grads = [p.grad for p in module.parameters()]
        if i <= last:
            assert all(g is not None for g in grads), i  # F_enc embeds G(x)
        else:
            assert all(g is None for g in grads), i  # F's decoder is not in the term
    assert all(p.grad is None for p in method.heads.parameters())  # H_X: the detached keys z = H_X(G_enc(x))


def test_similarity_loss_reaches_the_real_side_and_every_light_network():
    G, D, method = tiny(SimDCL, lambda_idt=0.0)
    bt = batch()
    out = method.forward_G(G, bt)
    keys = [f.detach().requires_grad_(True) for f in out["source_feats_A"]]
    out["source_feats_A"] = keys
    method.generator_losses(G, D, bt, out, GANLoss("lsgan"))["SIM"].backward()
    assert all(k.grad is not None and k.grad.abs().sum() > 0 for k in keys)  # real x: not detached (published)
    for net in method.sim_nets.values():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(p.grad is not None for p in method.heads.parameters())


def test_discriminator_step_sees_detached_fakes_of_both_generators():
    G, D, method = tiny()
    bt = batch()
    out = method.forward_G(G, bt)
    terms = method.discriminator_losses(D, bt, out, GANLoss("hinge"))
    assert set(terms) == {"D_B_fake", "D_B_real", "D_A_fake", "D_A_real"}
    sum(terms.values()).backward()
    assert all(p.grad is None for p in list(G.parameters()) + list(method.G_BA.parameters()))
    assert all(p.grad is not None for p in list(D.parameters()) + list(method.D_A.parameters()))
    with torch.no_grad():
        expected = torch.relu(1 + method.D_A(method.G_BA(bt["B"])).logits).mean()  # D_X on F(y), hinge
    torch.testing.assert_close(terms["D_A_fake"], 0.5 * expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ (d, e) runs
@pytest.mark.parametrize("experiment", ["dclgan_horse2zebra", "simdcl_horse2zebra"])
def test_smoke_training_and_i2i_test_with_its_checkpoint(compose, tmp_path, experiment):
    from i2i.cli.test import run_test

    trainer = run_training(compose(f"experiment={experiment}", "debug=smoke"))
    assert trainer.step == 2 and type(trainer.method).__name__ == ("SimDCL" if "simdcl" in experiment else "DCLGAN")
    record = json.loads((trainer.run_dir / "stats.jsonl").read_text().splitlines()[-1])
    expected = {"Loss/G_GAN", "Loss/G_GAN_BA", "Loss/NCE", "Loss/NCE_BA", "Loss/idt_A", "Loss/idt_B",
                "Loss/D_A_real", "Loss/D_B_fake"} | ({"Loss/SIM"} if "simdcl" in experiment else set())
    assert expected <= set(record)
    assert all(math.isfinite(record[k]) for k in expected)
    if "simdcl" in experiment:
        return  # i2i-test reads only G: once is enough
    test_dir = trainer.dataset.dir_A.replace("trainA", "testA")
    out = run_test(compose(f"ckpt={trainer.run_dir}", "data=folder", f"data.root={test_dir}", "device=cpu",
                           f"out_dir={tmp_path / 'out'}", config="test"))
    assert len(list((out / "fake_B").glob("*.png"))) == 2


def test_i2i_test_translates_with_a_published_G_A_file(compose, tmp_path):
    """The published checkpoint of G: X→Y, ``latest_net_G_A.pth``, is a CUT-format ResNet state_dict."""
    from i2i.cli.test import run_test
    from i2i.data.synthetic import make_synthetic_dataset

    torch.manual_seed(0)
    G = ResnetGenerator(ngf=4, n_blocks=9)
    torch.save(OrderedDict(G.state_dict()), tmp_path / "latest_net_G_A.pth")
    make_synthetic_dataset(tmp_path / "data", seed=0, size=32, n_train=1, n_test=2)
    out = run_test(compose(f"ckpt={tmp_path / 'latest_net_G_A.pth'}", "data=folder",
                           f"data.root={tmp_path / 'data' / 'testA'}", "device=cpu", f"out_dir={tmp_path / 'out'}",
                           config="test"))
    assert len(list((out / "fake_B").glob("*.png"))) == 2


# ------------------------------------------------------------------------------------------ (f) errors
@pytest.mark.parametrize("experiment,override,key", [
    ("dclgan_horse2zebra", "method.negatives=internal", "method.negatives"),
    ("dclgan_horse2zebra", "method.pool_size=-1", "method.pool_size"),
    ("dclgan_horse2zebra", "method.nce_layers=[4,99]", "method.nce_layers"),
    ("simdcl_horse2zebra", "method.nc=0", "method.nc"),
    ("simdcl_horse2zebra", "method.sim_reduction=max", "method.sim_reduction")])
def test_a_bad_option_is_one_line_naming_the_key(compose, experiment, override, key):
    cfg = compose(f"experiment={experiment}", "debug=smoke", override)
    with pytest.raises(ConfigError) as e:
        build_method(cfg, build_generator(cfg.generator), build_discriminator(cfg.discriminator))
    message = str(e.value)
    assert message.startswith(f"{key}=") and "\n" not in message and ("use" in message or "set" in message)


def test_discriminator_feedback_is_refused_with_the_fix():
    _, D, method = tiny()
    with pytest.raises(ValueError, match="feedback=none"):
        method.feedback_sources(D)
