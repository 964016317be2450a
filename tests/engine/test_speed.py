"""The fast path computes what the plain path computes: bf16 losses near fp32, compiled step == eager step,
channels_last step == contiguous step, no device value read on the host inside a step (meta-device audit), and
the FLOP count matches its analytic derivation."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from i2i.build import ConfigError, build_trainer
from i2i.engine.speed import compile_mode
from i2i.methods.cut import CUT

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from flops import _call_flops, count_flops, cut_step_flops


class StandIn:
    def __len__(self) -> int:
        return 100

    def set_epoch(self, epoch: int) -> None:
        pass


def make_batch(batch: int, size: int, device: str = "cpu", seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for side in "AB":
        out[side] = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
        out[f"{side}_path"] = [f"{side}{i}.png" for i in range(batch)]
        out[f"{side}_index"] = torch.arange(batch, device=device)
        out[f"{side}_params"] = torch.tensor([[0, 0, size, size, 0]] * batch, device=device)
    return out


def smoke_trainer(compose, experiment: str = "cut_horse2zebra", *overrides: str):
    cfg = compose(f"experiment={experiment}", "debug=smoke", "eval.every_epochs=0", *overrides)
    return build_trainer(cfg, cfg.run_dir, dataset=StandIn())


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("value,graphs,expected", [
    (False, False, None), ("none", False, None), (True, False, "default"), ("default", False, "default"),
    ("max-autotune", False, "max-autotune"), ("none", True, "reduce-overhead"), ("default", True, "reduce-overhead"),
    ("max-autotune-no-cudagraphs", True, "max-autotune")])
def test_compile_mode(value, graphs, expected):
    assert compile_mode(value, graphs) == expected


def test_bad_levers_are_refused_with_the_key(compose):
    with pytest.raises(ConfigError, match="train.compile"):
        smoke_trainer(compose, "cut_horse2zebra", "train.compile=fastest")
    with pytest.raises(ConfigError, match="train.cuda_graphs"):
        smoke_trainer(compose, "cut_horse2zebra", "train.cuda_graphs=true")


# ---------------------------------------------------------------------------------------------- precision
def loss_terms(trainer, batch: dict, autocast: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)  # same patch ids
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        out = trainer.method.forward_G(trainer.G, batch)
        terms = trainer.method.discriminator_losses(trainer.D, batch, out, trainer.gan_loss)
        terms.update(trainer.method.generator_losses(trainer.G, trainer.D, batch, out, trainer.gan_loss))
    return {k: v.detach().float() for k, v in terms.items()}


@pytest.mark.parametrize("experiment", ["cut_horse2zebra", "fastcut_horse2zebra"])
def test_bf16_autocast_losses_are_within_a_few_percent_of_fp32(compose, experiment):
    trainer = smoke_trainer(compose, experiment, "generator.ngf=8", "discriminator.ndf=8", "method.num_patches=64")
    batch = make_batch(2, 32, seed=7)
    fp32, bf16 = loss_terms(trainer, batch, False), loss_terms(trainer, batch, True)
    assert fp32.keys() == bf16.keys() and {"NCE", "G_GAN"} <= fp32.keys()
    for name in fp32:
        assert torch.isfinite(bf16[name])
        assert abs(bf16[name] - fp32[name]) <= 0.03 * abs(fp32[name]) + 2e-3, (name, fp32[name], bf16[name])


# ---------------------------------------------------------------------------------------------- step equality
def step_and_grads(trainer, batch: dict, seed: int = 11) -> tuple[dict, dict]:
    """Loss terms of one step and the gradients it stepped with (G step: G + heads; D step: D)."""
    torch.manual_seed(seed)
    trainer.train_step(batch)
    terms = {k: (v / trainer._count) for k, v in trainer._sums.items()}
    grads = {n: torch.cat([p.grad.contiguous().flatten() for p in net.parameters() if p.grad is not None])
             for n, net in (("G", trainer.G), ("D", trainer.D), ("method", trainer.method))}
    return terms, grads


def assert_same_step(compose, lever: list[str], rtol: float) -> None:
    common = ["generator.ngf=4", "discriminator.ndf=4", "train.amp=none"]
    plain = smoke_trainer(compose, "cut_horse2zebra", *common)
    fast = smoke_trainer(compose, "cut_horse2zebra", *common, *lever)
    batch = make_batch(1, 32, seed=2)
    terms_a, grads_a = step_and_grads(plain, batch)
    terms_b, grads_b = step_and_grads(fast, batch)
    assert terms_a.keys() == terms_b.keys()
    for k in terms_a:
        torch.testing.assert_close(terms_b[k], terms_a[k], rtol=rtol, atol=rtol)
    for k in grads_a:  # relative error of the whole gradient (biases before instance norm have ~0 gradients)
        assert (grads_b[k] - grads_a[k]).norm() <= rtol * grads_a[k].norm(), k


def test_channels_last_step_equals_contiguous_step(compose):
    assert_same_step(compose, ["train.channels_last=true"], rtol=1e-4)


@pytest.mark.slow
def test_compiled_step_equals_eager_step(compose):
    """The whole step with G, D and the NCE loss captured by torch.compile (dynamo + AOTAutograd, ``aot_eager``
    backend: cheap on a CPU; the inductor code generation is checked on the NCE loss below)."""
    from i2i.engine.speed import compile_networks

    torch._dynamo.reset()
    common = ["generator.ngf=4", "discriminator.ndf=4", "train.amp=none"]
    plain, fast = (smoke_trainer(compose, "cut_horse2zebra", *common) for _ in range(2))
    compile_networks(fast.G, fast.D, fast.method, "default", backend="aot_eager")
    batch = make_batch(1, 32, seed=2)
    for _ in range(2):  # the second step runs the cached graphs
        terms_a, grads_a = step_and_grads(plain, batch)
        terms_b, grads_b = step_and_grads(fast, batch)
        for k in terms_a:
            torch.testing.assert_close(terms_b[k], terms_a[k], rtol=1e-5, atol=1e-6)
        for k in grads_a:
            assert (grads_b[k] - grads_a[k]).norm() <= 1e-5 * grads_a[k].norm(), k
    torch._dynamo.reset()


SHAPES = [(3, 14, 14), (8, 8, 8), (16, 4, 4), (16, 4, 4), (16, 4, 4)]  # NCE layers' feature shapes [C, H, W]


def nce_and_grads(method: nn.Module, fk, fq, seed: int):
    torch.manual_seed(seed)
    loss = method.nce_per_image(fk, fq)  # [B]
    params = list(method.parameters())
    grads = torch.autograd.grad(loss.sum(), params + fq)
    return loss.detach(), grads


@pytest.mark.slow  # a subprocess or a long run
def test_inductor_compiled_nce_equals_eager(monkeypatch):
    """Inductor (C++ code generation on the CPU) of the multilayer NCE loss: same loss and gradients."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config, "fallback_random", True)  # eager's RNG stream, so the same patch ids
    torch._dynamo.reset()
    method = CUT([s[0] for s in SHAPES], nce_layers=range(len(SHAPES)), num_patches=12, nc=8)
    compiled = copy.deepcopy(method)
    compiled.nce_per_image = torch.compile(compiled.nce_per_image)
    g = torch.Generator().manual_seed(1)
    fk, fq = ([torch.randn(2, *s, generator=g).requires_grad_() for s in SHAPES] for _ in range(2))
    loss_a, grads_a = nce_and_grads(method, fk, fq, seed=5)
    loss_b, grads_b = nce_and_grads(compiled, fk, fq, seed=5)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_a, grads_b):  # fused float32 kernels: compare ||b - a|| / ||a||
        assert (b - a).norm() <= 1e-5 * a.norm()
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------- host syncs
@pytest.mark.parametrize("experiment", ["cut_horse2zebra", "fastcut_horse2zebra", "qsattn_horse2zebra",
                                        "enco_horse2zebra", "cut_feedback_horse2zebra",
                                        "cyclegan_feedback_horse2zebra"] + [
    pytest.param(name, marks=pytest.mark.slow)  # the newer methods: in the whole suite
    for name in ("dclgan_horse2zebra", "simdcl_horse2zebra", "hneg_src_horse2zebra", "monce_horse2zebra",
                 "negcut_horse2zebra", "fsesim_horse2zebra", "lsesim_horse2zebra")])
def test_step_reads_no_device_value_on_the_host(compose_runnable, experiment, monkeypatch):
    """On the meta device every .item(), .tolist(), bool(tensor), .cpu() or data-dependent shape raises, so a step
    that completes there reads nothing back from the accelerator."""
    autocast = torch.autocast  # torch.autocast("meta") itself is unsupported; samplers that disable it get CPU's
    monkeypatch.setattr(torch, "autocast", lambda dev, *a, **k: autocast("cpu" if dev == "meta" else dev, *a, **k))
    trainer = smoke_trainer(compose_runnable, experiment, "device=meta")
    for _ in range(2):
        trainer.train_step(make_batch(1, 32, device="meta"))
    assert trainer._count == 2 and all(v.device.type == "meta" for v in trainer._sums.values())


# ---------------------------------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("module,shape,expected", [
    (nn.Conv2d(3, 8, 3, padding=1), (2, 3, 10, 10), 2 * 2 * 8 * 10 * 10 * 3 * 3 * 3),
    (nn.Conv2d(4, 8, 4, stride=2, padding=1, groups=2), (1, 4, 8, 8), 2 * 8 * 4 * 4 * 2 * 4 * 4),
    (nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), (1, 4, 5, 5), 2 * 4 * 5 * 5 * 6 * 3 * 3),
    (nn.Linear(5, 7), (3, 4, 5), 2 * 12 * 5 * 7)])
def test_analytic_flops_of_one_call(module, shape, expected):
    x = torch.randn(shape)
    assert _call_flops(module, x, module(x)) == expected
    counted, _ = count_flops(module, x)
    assert counted == expected


@pytest.mark.parametrize("experiment,flipped,overrides", [
    ("cut_horse2zebra", False, []), ("fastcut_horse2zebra", False, []), ("fastcut_horse2zebra", True, []),
    ("cut_horse2zebra", False, ["method.negatives=batch", "train.batch_size=2"]),
    ("cut_horse2zebra", False, ["data.crop_size=256", "data.load_size=256", "generator.ngf=64",
                                "discriminator.ndf=64", "method.num_patches=256", "method.nc=256"])])
def test_counted_step_flops_equal_the_analytic_count(compose, monkeypatch, experiment, flipped, overrides):
    trainer = smoke_trainer(compose, experiment, "device=meta", "method.nc=16", *overrides)
    cfg, m = trainer.config_dict, trainer.config_dict["method"]
    size, batch = cfg["data"]["crop_size"], cfg["train"]["batch_size"]
    data = make_batch(batch, size, device="meta")
    coin = torch.tensor(0.0 if flipped else 0.9)  # FastCUT's coin: torch.rand(()) < 0.5 on the CPU
    monkeypatch.setattr(torch, "rand", lambda *a, **k: coin)
    counted, _ = count_flops(trainer.train_step, data)
    analytic = cut_step_flops(trainer.G, trainer.D, size, batch, m["nce_layers"], m["num_patches"], m["nc"],
                              m["nce_idt"], flipped, m["reuse_source_features"], m["negatives"])
    assert counted == analytic["total"] > 0
