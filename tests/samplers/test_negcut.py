"""NEGCUT's negative generator (samplers/negcut.py) and the phase-sampler seam of CUT (methods/cut.py).

References are written independently here: the contrastive loss with generated negatives and the negative generator
are recomputed with explicit loops in float64; gradient semantics are checked against the gradients of each
phase's own objective; configs against the published options (WeilunWang/NEGCUT).
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from i2i.errors import ConfigError
from i2i.losses.gan import GANLoss
from i2i.losses.patchnce import patch_nce_loss
from i2i.methods.base import Parts
from i2i.methods.cut import CUT
from i2i.models.discriminators import PatchGAN
from i2i.models.generators import ResnetGenerator
from i2i.samplers.base import PhaseSampler, SampleContext
from i2i.samplers.negcut import NegCutSampler

LAYERS = [0, 4, 8, 12, 16]


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def tiny_cut(sampler: NegCutSampler | None = None, channels=(3, 8), nc=16, num_patches=6, **kw) -> CUT:
    torch.manual_seed(0)
    return CUT(list(channels), list(range(len(channels))), num_patches=num_patches, nc=nc,
               sampler=sampler if sampler is not None else NegCutSampler(), **kw)


def feats(channels=(3, 8), b=4, hw=(4, 5), seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, *hw, generator=g, dtype=dtype) for c in channels]


# ---------------------------------------------------------------------------------------------- the loss
def naive_nce_with_negatives(q, k, neg, tau, batch=False, groups=1):
    """-log(e^{q·k/τ} / (e^{q·k/τ} + Σ_j e^{q·n_j/τ})) per patch, one patch at a time, float64."""
    b, n, _ = q.shape
    per = b // groups
    out = torch.zeros(b, n, dtype=torch.float64)
    for i in range(b):
        pool = [neg[i]] if not batch else [neg[j] for j in range(i // per * per, (i // per + 1) * per)]
        for p in range(n):
            pos = math.exp(float(q[i, p].detach() @ k[i, p].detach()) / tau)
            negs = sum(math.exp(float(q[i, p].detach() @ v.detach()) / tau) for nb in pool for v in nb)
            out[i, p] = -math.log(pos / (pos + negs))
    return out


@pytest.mark.parametrize("negatives,groups", [("image", 1), ("image", 2), ("batch", 1), ("batch", 2)])
def test_loss_with_generated_negatives_equals_a_naive_loop(negatives, groups):
    g = torch.Generator().manual_seed(0)
    b, n, m, c, tau = 4, 7, 5, 16, 0.07
    k = unit(torch.randn(b, n, c, generator=g, dtype=torch.float64))
    q = unit(k + 0.6 * torch.randn(b, n, c, generator=g, dtype=torch.float64))  # cos(q, k) around 0.8
    neg = unit(q.mean(1, keepdim=True) + 0.8 * torch.randn(b, m, c, generator=g, dtype=torch.float64))  # hard ones
    got = patch_nce_loss(q, k, tau, negatives, -10.0, groups, generated=neg)
    expect = naive_nce_with_negatives(q, k, neg, tau, negatives == "batch", groups)
    assert 0.5 < float(expect.mean()) < 20  # a realistic, non-saturated loss
    torch.testing.assert_close(got.double(), expect, rtol=1e-5, atol=1e-6)
    without = patch_nce_loss(q, k, tau, negatives, -10.0, groups)  # the optional argument changes nothing else
    torch.testing.assert_close(without, patch_nce_loss(q, k, tau, negatives, -10.0, groups, generated=None))


def test_generated_negatives_of_the_wrong_shape_are_refused():
    q = unit(torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="one set"):
        patch_nce_loss(q, q, generated=unit(torch.randn(2, 4, 6)))


def naive_negatives(method: CUT, fk: torch.Tensor, pos: int, z: torch.Tensor) -> torch.Tensor:
    """Condition = mean over locations of normalised EMA-projected features; n_j = normalise(MLP([c; z_j]))."""
    ema = method.sampler.ema
    lin1, lin2 = getattr(ema, f"mlp_{pos}")[0], getattr(ema, f"mlp_{pos}")[2]
    gen = method.sampler.generators[pos]
    b, c, h, w = fk.shape
    out = torch.zeros(b, z.shape[1], gen[2].weight.shape[0], dtype=torch.float64)
    for i in range(b):
        cond = 0
        for y in range(h):
            for x in range(w):
                v = lin2.weight @ torch.relu(lin1.weight @ fk[i, :, y, x] + lin1.bias) + lin2.bias
                cond = cond + v / (v.norm() + 1e-7) / (h * w)
        for j in range(z.shape[1]):
            v = gen[2].weight @ torch.relu(gen[0].weight @ torch.cat([cond, z[i, j]]) + gen[0].bias) + gen[2].bias
            out[i, j] = v / (v.norm() + 1e-7)
    return out


def test_n_phase_objective_equals_an_independent_computation():
    """-(0.5·λ·(NCE_X + NCE_Y)) and -λ_ms·diversity, mean over layers, with the sampler's own draws replayed."""
    method = tiny_cut(NegCutSampler(lambda_ms=0.5, num_negatives=6, diversity_rows="all")).double()
    fk, fq = feats(seed=1), feats(seed=2)
    torch.manual_seed(7)
    per_row = method.contrastive_terms(fk, fq, groups=2, phase="N")
    torch.manual_seed(7)  # replay: per layer the shared locations (randperm), then the noise (randn)
    nce, ms = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    for pos in range(2):
        b, _, h, w = fk[pos].shape
        ids = torch.randperm(h * w)[:6]
        z = torch.randn(b, 6, 64, dtype=torch.float64)
        neg = naive_negatives(method, fk[pos], pos, z)
        k = method.heads(fk[pos].flatten(2)[:, :, ids].transpose(1, 2), pos)
        q = method.heads(fq[pos].flatten(2)[:, :, ids].transpose(1, 2), pos)
        nce += naive_nce_with_negatives(q, k, neg, 0.07).mean(1) / 2
        for i in range(b):
            ms[i] += -0.5 * sum(abs(float(neg[i, j, d].detach() - neg[i, j + 3, d].detach())) for j in range(3)
                                for d in range(16)) / (3 * 16) / 2
    torch.testing.assert_close(per_row["NCE"].double(), nce, rtol=1e-5, atol=1e-6)  # logits in float32
    torch.testing.assert_close(per_row["N_MS"], ms)
    # the weighted terms N maximises are the G step's: 0.5·λ·(mean X rows + mean identity rows)
    got = {k: float(v.detach()) for k, v in method.weighted_nce(per_row["NCE"], 2).items()}
    assert got == pytest.approx({"NCE": 0.5 * float(nce[:2].mean()), "NCE_Y": 0.5 * float(nce[2:].mean())}, rel=1e-5)


def test_published_diversity_rows_take_the_last_term_only():
    fk, fq = feats(seed=3), feats(seed=4)
    out = {}
    for rows in ("all", "last"):
        method = tiny_cut(NegCutSampler(diversity_rows=rows)).double()
        torch.manual_seed(1)
        out[rows] = method.contrastive_terms(fk, fq, groups=2, phase="N")["N_MS"]
    assert torch.equal(out["last"][:2], torch.zeros(2, dtype=torch.float64))  # X rows: nothing
    torch.testing.assert_close(out["last"].mean(), out["all"][2:].mean())  # = the identity rows' mean


def test_no_sampler_terms_in_the_generator_step():
    method = tiny_cut().double()
    per_row = method.contrastive_terms(feats(seed=3), feats(seed=4), groups=2)
    assert set(per_row) == {"NCE"}


# ---------------------------------------------------------------------------------------------- the EMA copy
def test_ema_copy_is_state_but_no_parameter_and_follows_the_heads():
    method = tiny_cut(NegCutSampler(ema_decay=0.9))
    names = {n for n, _ in method.named_parameters()}
    assert not any(n.startswith("sampler.ema") for n in names)
    assert {"sampler.ema.mlp_0.0.weight", "sampler.updates"} <= set(method.state_dict())
    groups = method.param_groups()  # every parameter in exactly one group; N's under its phase
    assert [id(p) for p in groups["N"]] == [id(p) for p in method.sampler.parameters()]
    assert method.update_order == ("D", "N", "G") and type(method).update_order == ("D", "G")
    ema0 = method.sampler.ema.mlp_0[0].weight.clone()
    assert not torch.allclose(ema0, method.heads.mlp_0[0].weight)  # published: an initialisation of its own
    method.sampler.begin_phase()  # first step: nothing to follow yet
    assert torch.equal(method.sampler.ema.mlp_0[0].weight, ema0)
    with torch.no_grad():
        method.heads.mlp_0[0].weight.add_(1.0)
    method.sampler.begin_phase()
    torch.testing.assert_close(method.sampler.ema.mlp_0[0].weight, 0.9 * ema0 + 0.1 * method.heads.mlp_0[0].weight)
    copied = tiny_cut(NegCutSampler(ema_init="copy"))
    assert torch.equal(copied.sampler.ema.mlp_1[2].weight, copied.heads.mlp_1[2].weight)


@pytest.mark.parametrize("condition", ["heads", "features"])
def test_other_published_conditions(condition):
    method = tiny_cut(NegCutSampler(condition=condition)).double()
    assert method.sampler.ema is None and (len(method.sampler.convs) == 2) == (condition == "features")
    fk = feats(seed=5)
    ctx = SampleContext(layer_pos=1, phase="N")
    method.sampler(fk[1], fk[1], 6, ctx)
    assert ctx.negatives.shape == (4, 6, 16)
    torch.testing.assert_close(ctx.negatives.norm(dim=-1), torch.ones(4, 6, dtype=torch.float64), atol=1e-3, rtol=0)
    if condition == "heads":  # the online heads' mean projection
        expect = method.heads(fk[1].flatten(2).transpose(1, 2), 1).mean(1)
        torch.testing.assert_close(method.sampler.condition_vector(fk[1], 1), expect)


# ---------------------------------------------------------------------------------------------- gradients
def _parts(sampler=None):
    torch.manual_seed(0)
    G, D = ResnetGenerator(ngf=4, n_blocks=1), PatchGAN(ndf=4)
    method = CUT.create(Parts(G=G), num_patches=16,
                        nc=16, sampler=sampler if sampler is not None else NegCutSampler(lambda_ms=0.0))
    g = torch.Generator().manual_seed(1)
    batch = {"A": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, "B": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1}
    return G, D, method, batch


def test_n_phase_trains_only_the_negative_generator_and_maximises_the_loss():
    G, D, method, batch = _parts()
    out = method.forward_G(G, batch)
    torch.manual_seed(3)
    terms = method.phase_losses("N", G, D, batch, out, GANLoss("lsgan"))
    assert set(terms) == {"N_NCE"}
    terms["N_NCE"].backward()
    assert all(p.grad is None for p in [*G.parameters(), *D.parameters(), *method.heads.parameters()])
    grads = [p.grad for p in method.sampler.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # a small step against the phase's gradient raises the contrastive loss (same draws): N is an adversary
    nce = -float(terms["N_NCE"])
    with torch.no_grad():
        for p in method.sampler.parameters():
            p -= 1e-2 * p.grad / (p.grad.norm() + 1e-12)
    method.sampler.updates.zero_()
    torch.manual_seed(3)
    after = -float(method.phase_losses("N", G, D, batch, method.forward_G(G, batch), GANLoss("lsgan"))["N_NCE"])
    assert after > nce > 0


def test_diversity_term_is_minimised_as_minus_the_distance_between_the_two_halves():
    method = tiny_cut(NegCutSampler(lambda_ms=2.0)).double()
    fk = feats(seed=6)
    ctx = SampleContext(layer_pos=0, phase="N")
    method.sampler(fk[0], fk[0], 6, ctx)
    n = ctx.negatives
    torch.testing.assert_close(ctx.terms["N_MS"], -2.0 * (n[:, :3] - n[:, 3:]).abs().mean(dim=(1, 2)))


@pytest.mark.parametrize("condition_gradient", [True, False])
def test_generator_step_negatives_carry_no_gradient_to_n_and_reach_the_source_only_if_published(condition_gradient):
    method = tiny_cut(NegCutSampler(condition_gradient=condition_gradient)).double()
    for p in method.sampler.parameters():  # as the loop freezes a phase's modules outside their phase
        p.requires_grad_(False)
    fk = [f.requires_grad_() for f in feats(seed=8)]
    fq = [f.requires_grad_() for f in feats(seed=9)]
    loss = method.contrastive_terms(fk, fq)["NCE"].mean()
    loss.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fq)  # queries: the generator learns
    assert all(p.grad is not None for p in method.heads.parameters())  # the heads learn
    assert all(p.grad is None for p in method.sampler.parameters())
    # keys are detached by the loss: the source receives gradient only through the negatives' condition
    assert all((f.grad is not None and f.grad.abs().sum() > 0) == condition_gradient for f in fk)


def test_loop_steps_n_with_its_phase_gradient_alone(tmp_path):
    from i2i.engine.loop import LoopConfig, Networks, Trainer

    G, D, method, batch = _parts(NegCutSampler())
    G0, D0, before = copy.deepcopy(G), copy.deepcopy(D), copy.deepcopy(method)
    cfg = LoopConfig(n_epochs=1, n_epochs_decay=0, batch_size=2, tensorboard=False)
    trainer = Trainer(Networks(G, D, method, GANLoss("lsgan")), [None] * 2, lambda *a: [], cfg, tmp_path)
    assert [p for g in trainer.optimizers["opt_N"].param_groups for p in g["params"]] == list(
        method.sampler.parameters())
    torch.manual_seed(11)
    trainer.train_step(batch)
    torch.manual_seed(11)  # replay forward and N phase on the copies (the D step draws nothing)
    terms = before.phase_losses("N", G0, D0, batch, before.forward_G(G0, batch), GANLoss("lsgan"))
    grads = torch.autograd.grad(sum(terms.values()), list(before.sampler.parameters()))
    for p, g in zip(method.sampler.parameters(), grads):  # G's step added nothing to N's gradient
        torch.testing.assert_close(p.grad, g)
    assert all(p.requires_grad for p in method.sampler.parameters())


# ---------------------------------------------------------------------------------------------- configs and runs
@pytest.mark.parametrize("dataset", ["horse2zebra", "cityscapes", "cat2dog"])
def test_experiments_have_the_published_settings(compose, dataset):
    cfg = compose(f"experiment=negcut_{dataset}")
    assert cfg.name == f"negcut_{dataset}" and cfg.data.name == dataset
    assert (cfg.train.n_epochs, cfg.train.n_epochs_decay, cfg.train.batch_size) == (200, 200, 1)
    assert (cfg.optim.lr_g, cfg.optim.lr_d, cfg.optim.lr_f) == (2e-4, 2e-4, 2e-4)  # --lr for N, F, G, D
    m = cfg.method
    assert (m.lambda_nce, m.lambda_gan, m.nce_idt, m.flip_equivariance, m.num_patches, m.nc, m.tau) == (
        1.0, 1.0, True, False, 256, 256, 0.07)
    assert list(m.nce_layers) == LAYERS and m.negatives == "image"
    s = m.sampler
    assert s._target_ == "i2i.samplers.negcut.NegCutSampler"
    assert (s.condition, s.ema_decay, s.ema_init, s.z_dim, s.num_negatives, s.lambda_ms, s.diversity_rows,
            s.condition_gradient, s.per_image, s.phase) == ("ema", 0.9, "random", 64, None, 1.0, "last", True,
                                                            False, "N")


def test_fastnegcut_has_the_published_presets(compose):
    cfg = compose("experiment=fastnegcut_horse2zebra")
    m = cfg.method
    assert (m.lambda_nce, m.nce_idt, m.flip_equivariance) == (10.0, False, True)
    assert (cfg.train.n_epochs, cfg.train.n_epochs_decay) == (150, 50)
    assert m.sampler._target_.endswith("NegCutSampler")


def test_built_method_has_the_published_negative_generator(compose):
    from i2i.build import build_discriminator, build_generator, build_method

    cfg = compose("experiment=negcut_horse2zebra", "generator.ngf=4")
    method = build_method(cfg, build_generator(cfg.generator), build_discriminator(cfg.discriminator))
    assert isinstance(method.sampler, PhaseSampler) and method.update_order == ("D", "N", "G")
    for gen in method.sampler.generators:  # Linear(nc + z, nc) - ReLU - Linear(nc, nc)
        assert (gen[0].in_features, gen[0].out_features, gen[2].out_features) == (256 + 64, 256, 256)
    assert len(method.sampler.generators) == 5 and method.sampler.ema.mlp_4[2].weight.shape == (256, 256)


def test_bad_options_name_the_key_and_the_fix(compose):
    from i2i.build import build_discriminator, build_generator, build_method

    with pytest.raises(ValueError, match=r"method\.sampler\.condition='mean': use one of ema, heads, features"):
        NegCutSampler(condition="mean")
    for overrides, message in [(["method.sampler.ema_decay=1.5"], r"method\.sampler\.ema_decay=1\.5: .*\[0, 1\]"),
                               (["method.lambda_nce=0"], r"method\.lambda_nce=0: .*set method\.lambda_nce > 0")]:
        cfg = compose("experiment=negcut_horse2zebra", "generator.ngf=4", *overrides)
        with pytest.raises(ConfigError, match=message):
            build_method(cfg, build_generator(cfg.generator), build_discriminator(cfg.discriminator))


@pytest.mark.parametrize("experiment, owner", [("monce_horse2zebra", "MoNCE"), ("hneg_src_horse2zebra", "HnegSRC"),
                                               ("dclgan_horse2zebra", "DCLGAN"), ("enco_horse2zebra", "EnCo")])
def test_methods_with_their_own_contrastive_loss_refuse_the_negative_generator(compose, experiment, owner):
    """A method whose loss would ignore the generated negatives (N would train on nothing) says so up front."""
    from i2i.build import build_discriminator, build_generator, build_method

    cfg = compose(f"experiment={experiment}", "method/sampler=negcut", "debug=smoke")
    with pytest.raises(ConfigError, match=rf"method\.sampler.*(NegCutSampler|EnCo).*{owner}.*method/sampler=(random|dag)"):
        build_method(cfg, build_generator(cfg.generator), build_discriminator(cfg.discriminator))


@pytest.mark.slow  # builds and steps a QS-Attn trainer (about 10 s on a loaded CPU)
def test_negative_generator_goes_on_qsattn_non_attention_layers(compose, tmp_path):
    from i2i.build import build_discriminator, build_generator, build_method
    from i2i.engine.loop import LoopConfig, Networks, Trainer

    cfg = compose("experiment=qsattn_horse2zebra", "method/sampler=negcut", "debug=smoke")
    G, D = build_generator(cfg.generator), build_discriminator(cfg.discriminator)
    method = build_method(cfg, G, D)
    assert method.update_order == ("D", "N", "G") and isinstance(method.sampler, NegCutSampler)
    assert [method.sampler_for(p) is method.sampler for p in range(5)] == [True] * 3 + [False] * 2
    trainer = Trainer(Networks(G, D, method, GANLoss("lsgan")), [None], lambda *a: [],
                      LoopConfig(n_epochs=1, n_epochs_decay=0, batch_size=1, tensorboard=False), tmp_path)
    before = [p.detach().clone() for p in method.sampler.generators[0].parameters()]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    trainer.train_step({"A": x[:1], "B": x[1:]})
    assert {"N_NCE", "N_MS", "NCE", "NCE_Y"} <= trainer._sums.keys()
    assert any(not torch.equal(a, p) for a, p in zip(before, method.sampler.generators[0].parameters()))


@pytest.mark.slow  # a 2-step run and a translation (about 20 s)
def test_smoke_training_checkpoints_opt_n_and_i2i_test_translates(compose, tmp_path):
    from i2i.cli.test import run_test
    from i2i.cli.train import run_training

    trainer = run_training(compose("experiment=negcut_horse2zebra", "debug=smoke"))
    assert trainer.step == 2 and "opt_N" in trainer.optimizers
    record = json.loads((trainer.run_dir / "stats.jsonl").read_text().splitlines()[-1])
    assert {"Loss/N_NCE", "Loss/N_MS", "Loss/NCE", "Loss/NCE_Y", "LR/N"} <= set(record)
    state = torch.load(trainer.run_dir / "ckpt" / "last.pt", weights_only=True)
    assert state["opt_N"]["state"] and int(state["method"]["sampler.updates"]) == 2
    assert "sampler.ema.mlp_0.0.weight" in state["method"]  # the moving-average copy is state
    test_dir = trainer.dataset.dir_A.replace("trainA", "testA")  # inference needs G only, not N
    cfg = compose(f"ckpt={trainer.run_dir}", "data=folder", f"data.root={test_dir}", "device=cpu",
                  f"out_dir={tmp_path / 'out'}", config="test")
    assert len(list((run_test(cfg) / "fake_B").glob("*.png"))) == 2


@pytest.mark.slow  # three short runs
def test_resume_gives_exactly_the_state_of_an_uninterrupted_run(compose):
    from i2i.cli.train import run_training

    common = ["experiment=negcut_horse2zebra", "debug=smoke", "train.deterministic=true", "train.ckpt_every=0"]
    straight = run_training(compose(*common, "name=straight", "train.max_steps=3"))
    run_training(compose(*common, "name=split", "train.max_steps=2"))
    resumed = run_training(compose(*common, "name=split", "resume=auto", "train.max_steps=3"))
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("method", "G", "D"):  # incl. N, its moving-average copy and its update count
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for pid, s in a["opt_N"]["state"].items():
        assert torch.equal(s["exp_avg"], b["opt_N"]["state"][pid]["exp_avg"])
