"""ASGIT attention feedback: PHA / TAM discriminators, the per-image cache, RHP / alpha injection, test placeholder,
and smoke training of every method x attention x injection x timing."""

from __future__ import annotations

import io
import itertools

import pytest
import torch
from torch import nn

from i2i.build import ConfigError, build_trainer
from i2i.cli.train import run_training
from i2i.methods.feedback import AttentionCache, Feedback, TransferBlock, heatmap
from i2i.models.attention_discriminators import PHA, TAM
from i2i.models.discriminators import PatchGAN


# ---------------------------------------------------------------------------------------------- PHA
def _constructed_activation() -> torch.Tensor:
    """[2, 8, 8, 8] whose channel mean of |a| is known: channel c = (-1)^c · (c + 1) · f_b(y, x)."""
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    f = torch.stack([yy + 2 * xx, 3 * (yy - 4) ** 2 + 1])  # [2, 8, 8], different ranges per image
    signs = torch.tensor([(-1.0) ** c * (c + 1) for c in range(8)])
    return f[:, None] * signs[None, :, None, None]


@pytest.mark.parametrize("normalize", ["image", "batch", "none"])
def test_pha_map_on_a_constructed_activation(normalize):
    d = PHA(input_nc=3, ndf=2, n_layers=3, antialias=False, attn_layer=3, normalize=normalize)
    for i in range(d.attn_index + 1):  # the block's activation is then the constructed input itself
        d.model[i] = nn.Identity()
    a = _constructed_activation()
    _, attn = d(a)
    mean_abs = (a.abs().sum(1, keepdim=True)) / 8  # Eq. 2 by hand: (1/c) Σ_i |a_i|
    assert torch.allclose(mean_abs[:, 0], a[:, 0].abs() * 4.5 / 1)  # Σ (c+1) / 8 = 36 / 8 = 4.5
    if normalize == "image":
        expected = torch.stack([(m - m.min()) / (m.max() - m.min()) for m in mean_abs])
        assert attn[0].amin() == 0 and torch.allclose(attn.flatten(1).amax(1), torch.ones(2))
    elif normalize == "batch":
        expected = (mean_abs - mean_abs.min()) / (mean_abs.max() - mean_abs.min())
        assert attn[0].amax() < 0.999  # image 0 has the smaller range: not stretched to 1
    else:
        expected = mean_abs
    assert attn.shape == (2, 1, 8, 8)
    assert torch.allclose(attn, expected, atol=1e-5)


@pytest.mark.parametrize("antialias", [True, False])
def test_pha_is_a_patchgan_with_the_third_block_map(antialias):
    torch.manual_seed(0)
    plain = PatchGAN(3, ndf=4, antialias=antialias)
    pha = PHA(3, ndf=4, antialias=antialias)
    pha.load_state_dict(plain.state_dict())  # same keys
    x = torch.randn(2, 3, 64, 64)
    logits, attn = pha(x)
    assert torch.equal(logits, plain(x).logits) and plain(x).attention is None
    block = plain.model[: pha.attn_index + 1](x)  # output of the third conv block (4·ndf channels, H/8)
    assert block.shape[1:] == (16, 8, 8) and attn.shape == (2, 1, 8, 8)
    m = block.abs().mean(1, keepdim=True)
    lo, hi = m.amin((2, 3), keepdim=True), m.amax((2, 3), keepdim=True)
    assert torch.allclose(attn, (m - lo) / (hi - lo), atol=1e-5)


# ---------------------------------------------------------------------------------------------- TAM
@pytest.mark.parametrize("size", [64, 128, 256, (64, 96)])
def test_tam_works_at_any_size_and_returns_the_mask_mean(size):
    h, w = (size, size) if isinstance(size, int) else size
    d = TAM(3, ndf=4)
    seen = {}
    d.last.register_forward_hook(lambda m, i, o: seen.setdefault("mask", o))
    logits, attn = d(torch.randn(2, 3, h, w))
    assert logits.shape == (2, 1, h // 8 - 2, w // 8 - 2)
    assert attn.shape == (2, 1, h // 8, w // 8)
    assert torch.allclose(attn, seen["mask"].mean(1, keepdim=True))  # M = Avg_C(A), A in (0, 1)
    assert 0 < attn.min() and attn.max() < 1


def test_tam_output_is_residual_attention_on_the_trunk():
    d = TAM(3, ndf=4).eval()
    x = torch.randn(1, 3, 64, 64)
    grabbed = {}
    d.trunk.register_forward_hook(lambda m, i, o: grabbed.setdefault("T", o))
    d.last.register_forward_hook(lambda m, i, o: grabbed.setdefault("A", o))
    logits, _ = d(x)
    assert torch.allclose(logits, d.head((grabbed["A"] + 1) * grabbed["T"]))  # Eq. 3


# ---------------------------------------------------------------------------------------------- cache
def _params(top, left, load, flip):
    return torch.tensor([[top, left, load, load, int(flip)]])


def test_cache_initial_ones_miss_hit_and_keys():
    cache = AttentionCache(resolution=16)
    ones = cache.read(["a.png"], _params(0, 0, 16, False), (8, 8), (8, 8))
    assert torch.equal(ones, torch.ones(1, 1, 8, 8))  # initialised to ones
    m = torch.rand(1, 1, 8, 8)
    cache.write(["a.png"], _params(4, 2, 16, False), m, (8, 8))
    assert torch.allclose(cache.read(["a.png"], _params(4, 2, 16, False), (8, 8), (8, 8)), m)  # hit
    miss = cache.read(["b.png"], _params(4, 2, 16, False), (8, 8), (8, 8))
    assert torch.equal(miss, torch.ones(1, 1, 8, 8)) and len(cache) == 2  # another path: its own ones
    both = cache.read(["b.png", "a.png"], torch.cat([_params(4, 2, 16, False)] * 2), (8, 8), (8, 8))
    assert torch.allclose(both[1], m[0]) and torch.equal(both[0], torch.ones(1, 8, 8))  # keyed by path, not row


@pytest.mark.parametrize("flip1,flip2", list(itertools.product([False, True], repeat=2)))
def test_cache_is_consistent_with_the_crop_and_flip_applied(flip1, flip2):
    """Write a map at one crop/flip, read at another; compare with a naive full-frame paste and crop."""
    load, crop = 16, 10
    field = torch.rand(load, load)  # a map over the whole resized image
    (t1, l1), (t2, l2) = (1, 5), (4, 2)
    seen = field[t1:t1 + crop, l1:l1 + crop]
    cache = AttentionCache(resolution=load)
    cache.write(["x"], _params(t1, l1, load, flip1), (seen.flip(1) if flip1 else seen)[None, None], (crop, crop))
    full = torch.ones(load, load)  # naive: paste the crop region, everything else still ones
    full[t1:t1 + crop, l1:l1 + crop] = seen
    expected = full[t2:t2 + crop, l2:l2 + crop]
    expected = expected.flip(1) if flip2 else expected
    got = cache.read(["x"], _params(t2, l2, load, flip2), (crop, crop), (crop, crop))[0, 0]
    assert torch.allclose(got, expected, atol=1e-5)


def test_cache_state_round_trips_through_a_weights_only_checkpoint():
    cache = AttentionCache(resolution=8)
    cache.write(["p1", "p2"], torch.cat([_params(0, 0, 8, False)] * 2), torch.rand(2, 1, 8, 8), (8, 8))
    buf = io.BytesIO()
    torch.save(cache.state_dict(), buf)
    buf.seek(0)
    other = AttentionCache(resolution=8)
    other.load_state_dict(torch.load(buf, weights_only=True))
    for key in ("p1", "p2", "p3"):
        p = _params(0, 0, 8, False)
        assert torch.equal(other.read([key], p, (8, 8), (8, 8)), cache.read([key], p, (8, 8), (8, 8)))


# ---------------------------------------------------------------------------------------------- injection
def _batch(n=2, size=32, load=36):
    params = torch.tensor([[1, 2, load, load, 0], [3, 0, load, load, 1]])[:n]
    return {"A": torch.randn(n, 3, size, size), "B": torch.randn(n, 3, size, size),
            "A_path": [f"a{i}" for i in range(n)], "B_path": [f"b{i}" for i in range(n)],
            "A_params": params, "B_params": params.flip(0)}


@pytest.mark.parametrize("injection,channels", [("rhp", 3), ("alpha", 4)])
@pytest.mark.parametrize("size", [32, 36])
def test_rhp_and_alpha_shapes_channels_and_values(injection, channels, size):
    fb = Feedback(injection=injection, transfer_widths=(4, 4), cache_resolution=16)
    batch = _batch(size=size)
    x = batch["A"]
    out = fb.inject(x, batch, side="A")
    assert out.shape == (2, channels, size, size) and fb.extra_channels == channels - 3
    w = fb.transfer(torch.ones(2, 1, round(size / 8), round(size / 8)), (size, size))  # maps start as ones
    assert w.shape == (2, 1, size, size) and 0 < w.min() and w.max() < 1
    if injection == "rhp":
        assert torch.allclose(out, x * (1 + w), atol=1e-6)  # Eq. 4
    else:
        assert torch.equal(out[:, :3], x) and torch.allclose(out[:, 3:], w, atol=1e-6)  # Eq. 5


def test_transfer_block_is_three_transposed_convs_upsampling_by_8():
    t = TransferBlock((64, 128))
    convs = [m for m in t.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 64), (64, 128), (128, 1)] and t.scale == 8
    assert t.model(torch.rand(1, 1, 32, 32)).shape == (1, 1, 256, 256)


def test_identity_rows_and_flipped_inputs_read_their_own_maps():
    fb = Feedback(cache_resolution=4, transfer="upsample")  # whole-image crops, one cache pixel per map pixel
    batch = _batch(load=32)
    batch["A_params"][:, :2] = 0
    m = torch.rand(2, 1, 4, 4)
    fb.observe(m, batch, side="A")
    fb.inject(torch.cat([batch["A"], batch["B"]]), batch, side="A")  # [real_A; real_B] (identity rows)
    M = fb._last["A"]
    assert torch.allclose(M[:2], m, atol=1e-5) and torch.equal(M[2:], torch.ones(2, 1, 4, 4))
    fb.inject(batch["A"].flip(3), batch, side="A", hflip=True)
    assert torch.allclose(fb._vis["attn_M"], m.flip(3), atol=1e-5)  # the map follows the flipped input


def test_same_step_uses_the_detached_map_of_the_real_input():
    D = PHA(3, ndf=4, antialias=False)
    fb = Feedback(timing="same_step", transfer="upsample")
    fb.attach({"A": D, "B": D})
    batch = _batch()
    x = batch["A"].requires_grad_(True)
    out = fb.inject(x, batch, side="A")
    _, attn = D(x)
    assert torch.allclose(out, x * (1 + nn.functional.interpolate(attn, size=(32, 32), mode="bilinear")), atol=1e-5)
    out.sum().backward()
    assert all(p.grad is None for p in D.parameters())  # detached: no gradient into D
    assert fb.cache is None


@pytest.mark.parametrize("placeholder", ["ones", "discriminator"])
def test_test_time_placeholder(placeholder):
    D = TAM(3, ndf=4).eval()
    fb = Feedback(transfer_widths=(4, 4), test_placeholder=placeholder).eval()
    x = torch.randn(1, 3, 64, 64)
    M = torch.ones(1, 1, 8, 8) if placeholder == "ones" else D(x).attention
    assert torch.allclose(fb.test_input(x, D), fb.combine(x, M), atol=1e-6)


def test_heatmap_is_three_channel_in_range():
    h = heatmap(torch.rand(2, 1, 5, 5))
    assert h.shape == (2, 3, 5, 5) and h.min() >= -1 and h.max() <= 1


# ---------------------------------------------------------------------------------------------- through the configs
def test_feedback_without_an_attention_discriminator_is_refused_up_front(compose):
    cfg = compose("experiment=cut_horse2zebra", "debug=smoke", "feedback=pha_rhp", "discriminator=patchgan")
    with pytest.raises(ConfigError, match="needs an attention discriminator.*discriminator=pha"):
        build_trainer(cfg, cfg.run_dir)


#: one combination per method, every attention, injection and timing among them
_INNER_LOOP = {("cut", "pha", "rhp", "previous"), ("fastcut", "tam", "alpha", "same_step"),
               ("qsattn", "pha", "alpha", "same_step"), ("enco", "tam", "rhp", "previous")}


@pytest.mark.parametrize("method,attention,injection,timing", [
    combo if combo in _INNER_LOOP else pytest.param(*combo, marks=pytest.mark.slow)  # the full matrix: slow
    for combo in itertools.product(["cut", "fastcut", "qsattn", "enco"], ["pha", "tam"], ["rhp", "alpha"],
                                   ["previous", "same_step"])])
def test_every_method_trains_with_every_feedback(compose, method, attention, injection, timing):
    cfg = compose(f"experiment={method}_horse2zebra", "debug=smoke", f"feedback={attention}_{injection}",
                  f"feedback.timing={timing}", "feedback.transfer_widths=[4,4]", "feedback.cache_resolution=16")
    trainer = build_trainer(cfg, cfg.run_dir)
    fb = trainer.method.feedback
    assert isinstance(trainer.D, PHA if attention == "pha" else TAM)
    assert trainer.G.model[1].in_channels == (4 if injection == "alpha" else 3)
    assert {id(p) for p in fb.parameters()} <= {id(p) for p in trainer.params_G}  # T is trained with G
    before = [p.detach().clone() for p in fb.parameters()]
    trainer.dataset.set_epoch(1)
    batch = next(iter(trainer.build_loader(trainer.dataset, 1, 0)))
    out = trainer.train_step(batch)  # one step: the map of this visit is written, T gets gradients
    assert any(not torch.equal(a, p) for a, p in zip(before, fb.parameters()))
    if timing == "previous":
        assert batch["A_path"][0] in fb.cache.slots  # the map of this visit was stored under the image's path
        stored = fb.cache.store[fb.cache.slots[batch["A_path"][0]]]
        assert not torch.equal(stored, torch.ones_like(stored))
    vis = trainer.method.visuals(batch, out)
    assert {"attn_M", "attn_TM", "attn_D"} <= set(vis) and vis["attn_TM"].shape[1] == 3


def test_feedback_run_tests_with_both_placeholders(compose, tmp_path):
    from i2i.cli.test import run_test

    trainer = run_training(compose("experiment=cut_feedback_horse2zebra", "debug=smoke", "feedback=pha_alpha",
                                   "train.max_steps=1"))
    state = torch.load(trainer.run_dir / "ckpt" / "last.pt", weights_only=True)
    assert any(k.startswith("feedback.transfer.") for k in state["method"])  # T is in the checkpoint
    assert "feedback.cache._extra_state" in state["method"]
    test_dir = trainer.dataset.dir_A.replace("trainA", "testA")
    for placeholder in ("ones", "discriminator"):
        cfg = compose(f"ckpt={trainer.run_dir}", "data=folder", f"data.root={test_dir}", "device=cpu",
                      f"out_dir={tmp_path / placeholder}", f"feedback_placeholder={placeholder}", config="test")
        out = run_test(cfg)
        assert len(list((out / "fake_B").glob("*.png"))) == 2
