"""EnCo: encoder–decoder pairs of one generator pass, pair validation, identity schedule and weighting, experiments."""

from __future__ import annotations

import json
import shlex

import pytest
import torch

from conftest import CONFIGS
from i2i.build import ConfigError, build_discriminator, build_generator, build_method
from i2i.cli.train import run_training
from i2i.losses.gan import GANLoss
from i2i.losses.patchnce import patch_nce_loss
from i2i.methods.enco import DEFAULT_PAIRS, EnCo, decoupled_nce_loss, pair_channels
from i2i.models.discriminators import PatchGAN
from i2i.models.generators import ResnetGenerator
from i2i.models.projection import l2_normalize
from i2i.samplers.dag import DAGSampler
from i2i.samplers.random import RandomSampler

ARCHS = [dict(ngf=4, n_blocks=9), dict(ngf=8, n_blocks=6), dict(ngf=4, n_blocks=4, antialias=False, antialias_up=False)]
CANDIDATE_PAIRS = [(3, 28), (7, 24), (13, 18), (3, 25), (7, 21), (13, 16), (6, 21), (11, 16), (3, 24), (12, 20)]


def tiny(n_blocks=9, **kw):
    torch.manual_seed(0)
    G = ResnetGenerator(ngf=4, n_blocks=n_blocks, **kw)
    method = EnCo(pair_channels(G, DEFAULT_PAIRS, 32), num_patches=8, nc=8, idt_epochs=3)
    return G, PatchGAN(ndf=4), method


def batch(b=2):
    return {"A": torch.randn(b, 3, 32, 32), "B": torch.randn(b, 3, 32, 32)}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pair", CANDIDATE_PAIRS)
def test_pair_validation_agrees_with_a_real_forward(arch, pair):
    G = ResnetGenerator(**arch)
    if pair[1] >= len(G.model):
        with pytest.raises(ValueError, match="modules"):
            pair_channels(G, [pair], 32)
        return
    _, feats = G(torch.randn(1, 3, 32, 32), layers=list(pair))  # naive: run it
    if feats[0].shape == feats[1].shape:
        assert pair_channels(G, [pair], 32) == [feats[0].shape[1]]
    else:
        with pytest.raises(ValueError, match=rf"pair \[{pair[0]}, {pair[1]}\] has shapes .*ngf={arch['ngf']}"):
            pair_channels(G, [pair], 32)


def test_default_pairs_fit_resnet9_and_not_resnet6_and_malformed_pairs_are_refused():
    assert pair_channels(ResnetGenerator(ngf=8, n_blocks=9), DEFAULT_PAIRS, 32) == [8, 16, 32]
    with pytest.raises(ValueError, match=r"layers with the shape of 3: \[.*25"):
        pair_channels(ResnetGenerator(ngf=8, n_blocks=6), DEFAULT_PAIRS, 32)
    for bad in ([], [(28, 3)], [(3, 28, 5)]):
        with pytest.raises(ValueError, match="encoder < decoder"):
            pair_channels(ResnetGenerator(ngf=4), bad, 32)


@pytest.mark.parametrize("override,ok", [("generator=resnet_6blocks", False),
                                         ("method.pairs=[[3,25],[7,21],[13,16]]", False),
                                         ("method.pairs=[[7,24]]", True)])
def test_builder_checks_pairs_up_front_naming_method_pairs(compose, override, ok):
    cfg = compose("experiment=enco_horse2zebra", "debug=smoke", override)
    G = build_generator(cfg.generator)
    if ok:
        assert len(build_method(cfg, G).pairs) == 1
    else:
        with pytest.raises(ConfigError, match=r"^method\.pairs=\[\[.*has shapes"):
            build_method(cfg, G)


def test_one_generator_pass_gives_queries_and_keys():
    G, D, method = tiny()
    calls, seen = [], {}
    G.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    for idx in (3, 7, 13, 18, 24, 28):
        G.model[idx].register_forward_hook(lambda m, i, o, idx=idx: seen.__setitem__(idx, o))
    bt = batch()
    out = method.forward_G(G, bt)
    terms = method.generator_losses(G, D, bt, out, GANLoss("lsgan"))
    assert calls == [4]  # a single pass, on cat(real_A, real_B); no re-encoding of the output
    for (e, d), fe, fd in zip(DEFAULT_PAIRS, out["enc_feats"], out["dec_feats"]):
        assert fe is not None and torch.equal(fe, seen[e][:2]) and torch.equal(fd, seen[d][:2])
    assert torch.allclose(out["idt_B"], G(bt["B"]), atol=1e-5)  # the identity image is the same pass's second half
    assert set(terms) == {"G_GAN", "NCE", "IDT"}


@pytest.mark.parametrize("shared", [True, False])
def test_keys_are_detached_and_queries_carry_the_gradient(shared):
    torch.manual_seed(0)
    method = EnCo([4, 8], pairs=[(3, 28), (7, 24)], num_patches=6, nc=8, shared_head=shared)
    enc = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 8, 4, 4, requires_grad=True)]
    dec = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 8, 4, 4, requires_grad=True)]
    method.nce_per_image(enc, dec, torch.randn(2, 1, 3, 3)).sum().backward()
    assert all(e.grad is None for e in enc)  # the encoder side gets nothing from the key path
    assert all(d.grad is not None and d.grad.abs().sum() > 0 for d in dec)
    assert all(p.grad is not None for p in method.heads.parameters())
    if not shared:  # two heads: only the encoder features are detached, so the key head is trained too
        assert method.heads_k is not None
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.heads_k.parameters())


def naive_infonce(q, k, tau=0.07, diagonal=-10.0):
    """Internal-negative InfoNCE written out: -log e^(q_i·k_i/τ) / (e^(q_i·k_i/τ) + Σ_j e^(s_ij/τ)). [B, N]."""
    sim = q @ k.transpose(1, 2)  # [B, N, N]
    eye = torch.eye(q.shape[1], dtype=torch.bool)
    neg = torch.where(eye, torch.full_like(sim, diagonal), sim)
    logits = torch.cat([sim.diagonal(dim1=1, dim2=2).unsqueeze(-1), neg], -1) / tau
    return torch.logsumexp(logits, -1) - logits[..., 0]


def test_separate_key_head_gets_the_gradient_of_the_loss_and_nothing_else_changes():
    """Two heads with equal weights: the same loss and query-side gradients as one shared head; the key head's
    gradient is the gradient of InfoNCE through the projected keys (published two-projector mode)."""
    from i2i.samplers.random import RandomSampler

    torch.manual_seed(0)
    enc = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    dec = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 8, 4, 4, requires_grad=True)]
    results = {}
    for shared in (True, False):
        torch.manual_seed(1)
        m = EnCo([4, 8], pairs=[(3, 28), (7, 24)], num_patches=6, nc=8, shared_head=shared,
                 sampler=RandomSampler(per_image=True))
        if not shared:
            m.heads_k.load_state_dict(m.heads.state_dict())
        torch.manual_seed(2)
        loss = m.nce_per_image(enc, dec).sum()
        grads = torch.autograd.grad(loss, dec + list(m.parameters()), allow_unused=True)
        results[shared] = (m, loss, grads[:2], grads[2:])
    (m1, l1, d1, p1), (m2, l2, d2, p2) = results[True], results[False]
    torch.testing.assert_close(l1, l2)
    for a, b in zip(d1, d2):
        torch.testing.assert_close(a, b)
    n_heads = len(list(m1.heads.parameters()))
    for a, b in zip(p1[:n_heads], p2[:n_heads]):
        torch.testing.assert_close(a, b)
    # the key head's gradient, from the naive loss on the same patches
    torch.manual_seed(2)
    loss = 0.0
    for pos, (fe, fd) in enumerate(zip(enc, dec)):
        k, q = m2.sampler(fe, fd.detach(), 6, None)
        loss = loss + naive_infonce(m2.heads(q, pos).detach(), m2.heads_k(k, pos)).mean(1)
    ref = torch.autograd.grad((loss / 2).sum(), list(m2.heads_k.parameters()))
    for a, b in zip(p2[n_heads:], ref):
        assert a is not None and a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_dag_score_map_is_D_of_fake_B_detached():
    G, D, method = tiny()
    maps = []
    sample = method.sampler.__call__
    method.sampler = lambda fk, fq, n, ctx: (maps.append(ctx.score_map), sample(fk, fq, n, ctx))[1]
    bt = batch()
    out = method.forward_G(G, bt)
    method.generator_losses(G, D, bt, out, GANLoss("lsgan"))
    assert len(maps) == 3
    for m in maps:
        assert not m.requires_grad and torch.equal(m, D(out["fake_B"]).logits.detach())


@pytest.mark.parametrize("published", [False, True])
def test_identity_stops_after_n_epochs_and_the_weighting_switches(published):
    G, D, method = tiny()
    method.published_weighting = published
    method.nce_per_image = lambda *a, **k: torch.full((2,), 3.0)  # isolate the weighting
    bt = batch()
    for epoch, idt in ((1, True), (3, True), (4, False), (9, False)):
        method.set_epoch(epoch)
        out = method.forward_G(G, bt)
        terms = method.generator_losses(G, D, bt, out, GANLoss("lsgan"))
        w = 0.5 if (published and idt) else 1.0
        assert ("idt_B" in out) == idt and ("IDT" in terms) == idt
        assert terms["NCE"].item() == pytest.approx(w * 2.0 * 3.0)
        if idt:
            l1 = (out["idt_B"] - bt["B"]).abs().mean()
            assert terms["IDT"].item() == pytest.approx(w * 10.0 * l1.item(), rel=1e-5)
    method.eval()
    method.set_epoch(1)
    assert "idt_B" not in method.forward_G(G, bt)  # no identity pass outside training


def test_decoupled_loss_has_the_infonce_value_and_the_decoupled_gradient():
    torch.manual_seed(0)
    q = l2_normalize(torch.randn(2, 6, 5)).requires_grad_(True)
    k = l2_normalize(torch.randn(2, 6, 5))
    loss = decoupled_nce_loss(q, k, 0.07)
    assert torch.allclose(loss, patch_nce_loss(q, k, 0.07))
    (grad,) = torch.autograd.grad(loss.sum(), q)
    q2 = q.detach().clone().requires_grad_(True)
    naive = 0.0
    for b in range(2):
        for i in range(6):
            negs = torch.stack([q2[b, i] @ k[b, j] / 0.07 for j in range(6) if j != i])
            naive = naive + torch.logsumexp(negs, 0) - q2[b, i] @ k[b, i] / 0.07
    (grad_naive,) = torch.autograd.grad(naive, q2)
    assert torch.allclose(grad, grad_naive, atol=1e-4)


@pytest.mark.parametrize("name,data,direction,epochs", [
    ("horse2zebra", "horse2zebra", "AtoB", 200), ("cityscapes", "cityscapes", "BtoA", 200),
    ("cat2dog", "cat2dog", "AtoB", 100), ("winter2summer", "summer2winter_yosemite", "BtoA", 100),
    ("photo2vangogh", "vangogh2photo", "BtoA", 100)])
def test_experiments_carry_the_paper_settings(compose, name, data, direction, epochs):
    cfg = compose(f"experiment=enco_{name}")
    assert (cfg.data.name, cfg.data.direction) == (data, direction)
    assert (cfg.train.n_epochs, cfg.train.n_epochs_decay, cfg.train.warmup_epochs) == (epochs, epochs, 20)
    assert (cfg.optim.lr_g, cfg.optim.lr_d, cfg.optim.lr_f) == (5e-5, 2e-4, 5e-5)
    m = cfg.method
    assert cfg.gan_loss._target_.endswith("GANLoss") and cfg.gan_loss.mode == "lsgan"
    assert [list(p) for p in m.pairs] == [[3, 28], [7, 24], [13, 18]] and m.idt_epochs == epochs
    assert (m.lambda_nce, m.lambda_idt, m.tau, m.num_patches, m.shared_head) == (2.0, 10.0, 0.07, 256, True)
    assert (m.sampler._target_, m.sampler.k, m.sampler.beta) == ("i2i.samplers.dag.DAGSampler", 4, 0.5)


def test_enco_smoke_trains_with_warmup_ttur_and_identity(compose):
    trainer = run_training(compose("experiment=enco_horse2zebra", "debug=smoke"))
    assert trainer.step == 2 and isinstance(trainer.method, EnCo)
    assert isinstance(trainer.method.sampler, DAGSampler)
    record = json.loads((trainer.run_dir / "stats.jsonl").read_text().splitlines()[-1])
    assert {"Loss/G_GAN", "Loss/NCE", "Loss/IDT"} <= set(record)
    assert record["LR/G"] == pytest.approx(5e-5 / 20) and record["LR/D"] == pytest.approx(2e-4 / 20)
    assert record["LR/F"] == pytest.approx(5e-5 / 20)


DOCS = (CONFIGS.parent / "docs" / "enco.md")
TABLE_ROWS = [  # (overrides as written in docs/enco.md, expected (pairs, sampler, k, beta, shared_head))
    ("'method.pairs=[[7,24]]'", ([(7, 24)], DAGSampler, 4, 0.5, True)),
    ("'method.pairs=[[3,28],[7,24]]'", ([(3, 28), (7, 24)], DAGSampler, 4, 0.5, True)),
    ("'method.pairs=[[7,24],[13,18]]'", ([(7, 24), (13, 18)], DAGSampler, 4, 0.5, True)),
    ("method/sampler=random", (list(DEFAULT_PAIRS), RandomSampler, None, None, True)),
    ("method.shared_head=false", (list(DEFAULT_PAIRS), DAGSampler, 4, 0.5, False)),
    ("method.sampler.k=1 method.sampler.beta=0.0", (list(DEFAULT_PAIRS), DAGSampler, 1, 0.0, True)),
    ("method.sampler.beta=0.75", (list(DEFAULT_PAIRS), DAGSampler, 4, 0.75, True)),
    ("method.sampler.beta=1.0", (list(DEFAULT_PAIRS), DAGSampler, 4, 1.0, True)),
    ("method.sampler.k=2", (list(DEFAULT_PAIRS), DAGSampler, 2, 0.5, True)),
    ("method.sampler.k=8", (list(DEFAULT_PAIRS), DAGSampler, 8, 0.5, True)),
]


@pytest.mark.parametrize("overrides,expected", TABLE_ROWS)
def test_documented_table_overrides_build_the_ablation(compose, overrides, expected):
    assert f"`{overrides}`" in DOCS.read_text()
    cfg = compose("experiment=enco_cat2dog", "debug=smoke", *shlex.split(overrides))
    method = build_method(cfg, build_generator(cfg.generator), build_discriminator(cfg.discriminator))
    pairs, sampler_cls, k, beta, shared = expected
    assert method.pairs == pairs and type(method.sampler) is sampler_cls
    assert (method.heads_k is None) == shared
    if k is not None:
        assert (method.sampler.k, method.sampler.beta) == (k, beta)


def test_published_flip_augment_flips_A_and_B_independently_and_G_sees_the_flipped_images():
    G, _, method = tiny()
    method.flip_augment = True
    torch.manual_seed(3)
    seen = set()
    for _ in range(12):
        bt = batch(1)
        orig = {k: bt[k].clone() for k in ("A", "B")}
        out = method.forward_G(G, bt)
        flips = tuple(not torch.equal(bt[k], orig[k]) for k in ("A", "B"))
        for key, flipped in zip(("A", "B"), flips):
            assert torch.equal(bt[key], orig[key].flip(3) if flipped else orig[key])
        assert torch.allclose(out["fake_B"], G(bt["A"]), atol=1e-5)
        seen.add(flips)
    assert seen == {(False, False), (False, True), (True, False), (True, True)}
