"""F-LSeSim (methods/flsesim.py, models/vgg.py): published settings, the spatially-correlative loss and the heads'
contrastive objective against naive float64 loops, what learns in which phase, training, testing and the errors.

The VGG-16 is a randomly initialised one: only its ``features.*`` entries (torchvision's key names) are saved, once
per module."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.vgg import cfgs, make_layers

from i2i.build import build_discriminator, build_generator, build_method
from i2i.cli.train import run_training
from i2i.errors import ConfigError
from i2i.losses.gan import GANLoss
from i2i.methods.flsesim import (
    DEFAULT_LAYERS,
    FLSeSim,
    contrastive_loss,
    self_similarity,
    structure_distance,
)
from i2i.models.vgg import RELU_INDEX, VGG16Features, load_vgg16

#: debug=smoke at 24 px, two training images (an epoch of two steps): the VGG-16 is the expensive part
SMOKE = ("debug=smoke", "data.synthetic.size=26", "data.synthetic.n_train=2", "data.load_size=26", "data.crop_size=24")


@pytest.fixture(scope="module")
def vgg_state() -> dict:
    """torchvision's VGG-16 ``features`` (random weights) under the full model's key names."""
    torch.manual_seed(0)
    return {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory, vgg_state) -> str:
    path = tmp_path_factory.mktemp("vgg") / "vgg16_features.pth"
    torch.save(vgg_state, path)
    return str(path)


def _method(compose, vgg_file, experiment="fsesim_horse2zebra", *overrides):
    cfg = compose(f"experiment={experiment}", *SMOKE, f"method.vgg_weights={vgg_file}", *overrides)
    G, D = build_generator(cfg.generator), build_discriminator(cfg.discriminator)
    return G, D, build_method(cfg, G, D)


# ------------------------------------------------------------------------------------------ (a) published settings
@pytest.mark.parametrize("name,learned", [("fsesim", False), ("lsesim", True)])
def test_experiments_carry_the_published_settings(compose, name, learned):
    cfg = compose(f"experiment={name}_horse2zebra")
    m, g, d, o, t, data = cfg.method, cfg.generator, cfg.discriminator, cfg.optim, cfg.train, cfg.data
    assert m._target_ == "i2i.methods.flsesim.FLSeSim" and m.name == name and m.vgg_weights is None
    # models/sc_model.py options, scripts/train_sc.sh (--lambda_spatial 10 --attn_layers 4,7,9 --loss_mode cos
    # --patch_size 64 --gan_mode lsgan; LSeSim: --learned_attn --augment)
    assert list(m.layers) == ["relu3_1", "relu4_1", "relu4_3"] and tuple(m.layers) == DEFAULT_LAYERS
    assert (m.num_patches, m.patch_size, m.loss_mode, m.use_norm, m.tau) == (256, 64, "cos", False, 0.07)
    assert (m.lambda_gan, m.lambda_spatial, m.lambda_spatial_idt, m.lambda_identity) == (1.0, 10.0, 0.0, 0.0)
    assert (m.learned, m.augment) == (learned, learned) and m.keep_top == 0.25 and m.pool_size == 50
    assert list(m.jitter) == [0.5, 0.5, 0.5, 0.3] and (m.head_init_type, m.head_init_gain) == ("normal", 0.02)
    # options/train_options.py, base_options.py: lr 1e-4 for G, D and the heads, Adam(0.5, 0.999), 200 + 200 epochs
    assert (o.lr_g, o.lr_d, o.lr_f, list(o.betas)) == (1e-4, 1e-4, 1e-4, [0.5, 0.999])
    assert (t.n_epochs, t.n_epochs_decay, t.warmup_epochs, t.batch_size) == (200, 200, 0, 1)
    assert cfg.gan_loss.mode == "lsgan"
    assert (g.n_blocks, g.ngf, g.norm, g.antialias, g.antialias_up, g.use_dropout, g.init_type) == \
        (9, 64, "instance", True, True, False, "xavier")
    assert (d._target_.endswith("PatchGAN"), d.n_layers, d.ndf, d.norm) == (True, 3, 64, "instance")
    assert (data.load_size, data.crop_size, data.flip, data.no_crop_after_epoch) == (286, 256, True, None)


def test_published_layer_positions_are_relu3_1_relu4_1_relu4_3_of_torchvision_features():
    names = list(RELU_INDEX)  # the 13 ReLU outputs in order, as the published VGG16 returns them
    assert len(names) == 13 and [names[i] for i in (4, 7, 9)] == list(DEFAULT_LAYERS)
    with torch.device("meta"):
        features = make_layers(cfgs["D"])
    assert all(isinstance(features[i], torch.nn.ReLU) for i in RELU_INDEX.values())
    assert [RELU_INDEX[n] for n in DEFAULT_LAYERS] == [11, 18, 22]


def test_extractor_equals_torchvision_features_and_has_no_parameters_or_state(vgg_state):
    net = VGG16Features(DEFAULT_LAYERS)
    net.load_torchvision(vgg_state)
    ref = make_layers(cfgs["D"])
    ref.load_state_dict({k[len("features."):]: v for k, v in vgg_state.items()})
    x = torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        h, expected = x, []
        for i, layer in enumerate(ref[:23]):
            h = layer(h)
            if i in (11, 18, 22):
                expected.append(h.clone())
        got = net(x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, expected))
    assert list(net.parameters()) == [] and net.state_dict() == {}
    net.train()
    assert not net.training


# ------------------------------------------------------------------------------------------ (b) the loss, naive
def _naive_maps(feat, ids, patch, use_norm):
    """Self-similarity maps by loops over the batch and the query patches, float64: [B][N] lists of [K]."""
    feat = feat.double()
    b_, c, h, w = feat.shape
    maps = []
    for b in range(b_):
        f = feat[b] - feat[b].reshape(c, -1).mean(1)[:, None, None]
        if use_norm:
            f = f / f.norm(dim=0, keepdim=True).clamp_min(1e-12)
        else:
            f = f / math.sqrt(c)
        rows = []
        for i in ids.tolist():
            y, x = divmod(i, w)
            q = f[:, y, x]
            if patch < h and patch < w:
                y0 = min(max(y - patch // 2, 0), h - patch)
                x0 = min(max(x - patch // 2, 0), w - patch)
                keys = [f[:, yy, xx] for yy in range(y0, y0 + patch) for xx in range(x0, x0 + patch)]
            else:
                keys = [f[:, yy, xx] for yy in range(h) for xx in range(w)]
            s = torch.stack([q @ k for k in keys])
            rows.append(s if use_norm else torch.tanh(s / 10))
        maps.append(rows)
    return maps


def _smooth_l1(d):
    d = abs(d)
    return 0.5 * d * d if d < 1 else d - 0.5


def _naive_distance(src_maps, tgt_maps, mode, keep_top, smooth):
    values = []
    for rows_s, rows_t in zip(src_maps, tgt_maps):
        for s, t in zip(rows_s, rows_t):
            k = len(s)
            num = int(k * keep_top)
            thr = sorted(t.tolist(), reverse=True)[num]
            s = torch.tensor([a if b >= thr else 0.0 for a, b in zip(s.tolist(), t.tolist())], dtype=torch.float64)
            t = torch.tensor([b if b >= thr else 0.0 for b in t.tolist()], dtype=torch.float64)
            dist = _smooth_l1 if smooth else abs
            if mode == "l1":
                values += [dist((k / num) * (a - b)) for a, b in zip(s.tolist(), t.tolist())]
            else:
                cos = float(s @ t) / max(float(s.norm() * t.norm()), 1e-8)
                values.append(dist(1 - cos))
    return sum(values) / len(values)


def _realistic_features(seed, shape, scale=60.0):
    """Non-negative, VGG-like magnitudes (tens to hundreds), correlated in space."""
    g = torch.Generator().manual_seed(seed)
    base = F.avg_pool2d(torch.randn(shape[0], shape[1], shape[2] + 2, shape[3] + 2, generator=g), 3, 1)
    return (F.relu(base) * scale * (1 + torch.rand(shape[0], shape[1], 1, 1, generator=g) * 3)).double()


@pytest.mark.parametrize("patch", [4, 16])  # a window inside the 9x12 map, and the whole map
@pytest.mark.parametrize("use_norm", [False, True])
@pytest.mark.parametrize("scale", [60.0, 1.0])  # VGG-like magnitudes (tanh mostly saturated), and small ones
def test_self_similarity_equals_naive_loops(patch, use_norm, scale):
    feat = _realistic_features(0, (2, 8, 9, 12), scale)
    assert 10 < feat.max() < 1000 or scale < 10
    ids = torch.randperm(9 * 12, generator=torch.Generator().manual_seed(1))[:20]
    got = self_similarity(feat, ids, patch, use_norm)
    expected = torch.stack([torch.stack(rows) for rows in _naive_maps(feat, ids, patch, use_norm)])
    assert got.shape == (2, 20, patch * patch if patch < 9 else 9 * 12)
    assert torch.allclose(got, expected, atol=1e-10)
    if not use_norm and scale < 10:  # not saturated: the tanh branch is compared on values inside (-1, 1)
        assert (got.abs() < 0.99).float().mean() > 0.2


@pytest.mark.parametrize("mode", ["cos", "l1"])
@pytest.mark.parametrize("use_norm", [False, True])
@pytest.mark.parametrize("patch", [4, 16])
def test_structure_distance_equals_naive_loops(mode, use_norm, patch):
    src = _realistic_features(2, (2, 8, 9, 12))
    tgt = src * 0.3 + _realistic_features(3, (2, 8, 9, 12)) * 0.7  # a translation that keeps part of the structure
    ids = torch.randperm(9 * 12, generator=torch.Generator().manual_seed(4))[:16]
    sims = [self_similarity(f, ids, patch, use_norm) for f in (src, tgt)]
    got = structure_distance(*sims, mode=mode, keep_top=0.25, smooth=not use_norm)
    naive_maps = [_naive_maps(f, ids, patch, use_norm) for f in (src, tgt)]
    expected = _naive_distance(*naive_maps, mode, 0.25, not use_norm)
    assert expected > 1e-4 and float(got) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_structure_distance_is_zero_for_the_same_structure_and_keep_top_none_compares_whole_maps():
    src = _realistic_features(5, (1, 8, 8, 8))
    ids = torch.arange(64)
    s = self_similarity(src, ids, 64, True)
    assert float(structure_distance(s, s.clone())) == pytest.approx(0.0, abs=1e-12)
    t = self_similarity(src + _realistic_features(6, (1, 8, 8, 8)), ids, 64, True)
    whole = 1 - F.cosine_similarity(s, t, dim=-1)
    assert float(structure_distance(s, t, "cos", None, smooth=False)) == pytest.approx(float(whole.mean()))


def test_contrastive_loss_equals_naive_loops():
    feats = [_realistic_features(seed, (2, 8, 9, 12)) for seed in (7, 8, 9)]
    ids = torch.randperm(9 * 12, generator=torch.Generator().manual_seed(10))[:12]
    sims = [self_similarity(f, ids, 4, False) for f in feats]
    got = contrastive_loss(*sims, tau=0.07)
    naive, rows = 0.0, 0
    maps = [_naive_maps(f, ids, 4, False) for f in feats]
    for b in range(2):
        src, pos, neg = ([m / m.norm() for m in maps[j][b]] for j in range(3))
        for i in range(12):
            logits = [float(src[i] @ p) / 0.07 for p in pos] + [float(src[i] @ q) / 0.07 for q in neg] + \
                [float(pos[i] @ q) / 0.07 for q in neg]
            naive += math.log(sum(math.exp(v) for v in logits)) - logits[i]
            rows += 1
    assert float(got) == pytest.approx(naive / rows, rel=1e-9)


# ------------------------------------------------------------------------------------------ (c) what learns where
def _batch(seed=0, size=24):
    g = torch.Generator().manual_seed(seed)
    return {"A": torch.rand(1, 3, size, size, generator=g) * 2 - 1, "B": torch.rand(1, 3, size, size, generator=g) * 2 - 1}


def test_fsesim_vgg_is_frozen_and_nothing_of_the_method_learns(compose, vgg_file):
    G, D, method = _method(compose, vgg_file)
    assert isinstance(method, FLSeSim) and method.heads is None and method.update_order == ("D", "G")
    assert list(method.parameters()) == [] and all(not p for p in method.param_groups().values())
    method.train()
    assert not method.vgg.training and method.vgg.state_dict() == {}
    batch = _batch()
    out = method.forward_G(G, batch)
    out["fake_B"].retain_grad()
    terms = method.generator_losses(G, D, batch, out, GANLoss("lsgan"))
    terms["G_spatial"].backward()
    assert out["fake_B"].grad.abs().sum() > 0  # through the frozen VGG to the translation
    assert all(not b.requires_grad for b in method.vgg.buffers())
    assert all(p.grad is not None for p in G.parameters() if p.requires_grad)


def test_lsesim_heads_learn_only_in_phase_S_from_detached_inputs(compose, vgg_file):
    G, D, method = _method(compose, vgg_file, "lsesim_horse2zebra")
    assert method.update_order == ("S", "D", "G")
    groups = method.param_groups()
    assert {id(p) for p in groups["S"]} == {id(p) for p in method.heads.parameters()} and not groups["F"]
    batch = _batch()
    out = method.forward_G(G, batch)
    terms = method.phase_losses("S", G, D, batch, out, GANLoss("lsgan"))
    assert set(terms) == {"S_contrastive"}
    terms["S_contrastive"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.heads.parameters())
    assert all(p.grad is None for p in G.parameters())  # the translation entered detached
    # G's step (the loop freezes the heads): the gradient reaches G through them, and they get none
    for p in method.heads.parameters():
        p.grad = None
        p.requires_grad_(False)
    out = method.forward_G(G, batch)
    fake = out["fake_B"]
    fake.retain_grad()
    torch.manual_seed(1)
    method.generator_losses(G, D, batch, out, GANLoss("lsgan"))["G_spatial"].backward()
    grad = fake.grad.clone()
    assert grad.abs().sum() > 0 and all(p.grad is None for p in method.heads.parameters())
    with torch.no_grad():  # other head weights give another gradient: G's loss goes through the heads
        for p in method.heads.parameters():
            p.mul_(1.5).add_(0.01)
    out = {"fake_B": fake.detach().requires_grad_()}
    torch.manual_seed(1)
    method.generator_losses(G, D, batch, out, GANLoss("lsgan"))["G_spatial"].backward()
    assert not torch.allclose(out["fake_B"].grad, grad)


def test_lsesim_phase_S_pairs_the_source_with_the_translation_and_its_jittered_copy(compose, vgg_file, monkeypatch):
    G, D, method = _method(compose, vgg_file, "lsesim_horse2zebra")
    seen = {}
    monkeypatch.setattr(method, "spatial_loss", lambda s, p, n: seen.update(s=s, p=p, n=n) or s.sum())
    jittered = []
    monkeypatch.setattr(method, "colour_jitter", lambda x: jittered.append(x) or -x)
    batch = _batch(3)
    out = {"fake_B": torch.rand(1, 3, 24, 24, requires_grad=True)}
    method.phase_losses("S", G, D, batch, out, GANLoss("lsgan"))
    A, B = batch["A"], batch["B"]
    assert torch.equal(seen["s"], torch.cat([A, A])) and not seen["p"].requires_grad
    assert torch.equal(seen["p"], torch.cat([out["fake_B"].detach(), -A]))
    assert torch.equal(seen["n"], torch.cat([B, -B]).flip((2, 3))) and len(jittered) == 2


def test_colour_jitter_is_per_image_and_keeps_range_and_shape(compose, vgg_file):
    _, _, method = _method(compose, vgg_file, "lsesim_horse2zebra")
    x = torch.rand(1, 3, 24, 24).expand(4, -1, -1, -1) * 2 - 1
    torch.manual_seed(0)
    y = method.colour_jitter(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and not torch.allclose(y, x)
    assert not torch.allclose(y[0], y[1])  # each image draws its own jitter


def test_discriminator_sees_fakes_through_the_history_pool(compose, vgg_file):
    _, D, method = _method(compose, vgg_file)
    assert method.pool.size == 50
    fake = torch.rand(1, 3, 24, 24)
    method.discriminator_losses(D, _batch(), {"fake_B": fake}, GANLoss("lsgan"))
    assert len(method.pool.images) == 1 and torch.equal(method.pool.images[0], fake)


# ------------------------------------------------------------------------------------------ (d, e) train, test
@pytest.mark.parametrize("name", [pytest.param("fsesim", marks=pytest.mark.slow), "lsesim"])  # lsesim: every phase
def test_smoke_training_then_i2i_test_with_lean_checkpoints(compose, vgg_file, tmp_path, name):
    from i2i.cli.test import run_test

    trainer = run_training(compose(f"experiment={name}_horse2zebra", *SMOKE, f"method.vgg_weights={vgg_file}",
                                   "train.save_epoch_every=1", "method.lambda_spatial_idt=1.0",
                                   "method.lambda_identity=0.5"))
    assert trainer.step == 2 and isinstance(trainer.method, FLSeSim)
    record = json.loads((trainer.run_dir / "stats.jsonl").read_text().splitlines()[-1])
    expected = {"Loss/G_GAN", "Loss/G_spatial", "Loss/G_spatial_idt", "Loss/idt_B", "Loss/D_fake", "Loss/D_real"}
    assert expected <= set(record) and all(math.isfinite(record[k]) for k in expected)
    assert ("Loss/S_contrastive" in record) == (name == "lsesim") and ("LR/S" in record) == (name == "lsesim")
    last = torch.load(trainer.run_dir / "ckpt" / "last.pt", weights_only=True)
    assert not any("vgg" in k for k in last["method"])  # the extractor comes from its file, never a checkpoint
    assert any(k.startswith("heads.conv_0.") for k in last["method"]) == (name == "lsesim")
    snapshot = torch.load(trainer.run_dir / "ckpt" / "epoch_0001.pt", weights_only=True)
    assert snapshot.get("method", {}) == {} and "opt_S" not in snapshot  # inference needs G only
    test_dir = trainer.dataset.dir_A.replace("trainA", "testA")
    cfg = compose(f"ckpt={trainer.run_dir}", "which=epoch_0001.pt", "data=folder", f"data.root={test_dir}",
                  "device=cpu", f"out_dir={tmp_path / 'out'}", config="test")
    out = run_test(cfg)
    assert len(list((out / "fake_B").glob("*.png"))) == 2


# ------------------------------------------------------------------------------------------ (f) errors
@pytest.mark.parametrize("override,key", [
    ("method.loss_mode=info", "method.loss_mode"), ("method.loss_mode=l2", "method.loss_mode"),
    ("method.layers=[relu3_1,relu9_9]", "method.layers"), ("method.keep_top=1.5", "method.keep_top"),
    ("method.patch_size=0", "method.patch_size"), ("method.augment=true", "method.augment"),
    ("method.jitter=[0.5,0.5,0.5,0.9]", "method.jitter"), ("method.pool_size=-1", "method.pool_size"),
])
def test_a_bad_option_is_one_line_naming_its_key(compose, vgg_file, override, key):
    with pytest.raises(ValueError) as e:
        _method(compose, vgg_file, "fsesim_horse2zebra", override)
    assert str(e.value).startswith(key) and "\n" not in str(e.value)


def test_vgg_weights_unset_missing_unreadable_or_not_a_vgg16_fail_in_create(compose, tmp_path, vgg_state):
    cfg = compose("experiment=lsesim_horse2zebra", *SMOKE)
    G, D = build_generator(cfg.generator), build_discriminator(cfg.discriminator)
    text, other, list_file = tmp_path / "notes.pth", tmp_path / "vgg11.pth", tmp_path / "list.pth"
    text.write_text("not weights")
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["A"]).state_dict().items()}, other)  # VGG-11
    torch.save([1, 2], list_file)
    for path, why in ((None, "is not set"), (tmp_path / "absent.pth", "no such file"), (text, "not a readable"),
                      (other, "not a torchvision vgg16"), (list_file, "not a state dict")):
        c = compose("experiment=lsesim_horse2zebra", *SMOKE, *([f"method.vgg_weights={path}"] if path else []))
        with pytest.raises(ConfigError) as e:
            build_method(c, G, D)
        message = str(e.value)
        assert message.startswith("method.vgg_weights") and why in message and "\n" not in message
        assert "IMAGENET1K_V1" in message  # the fix: how to make the file


def test_loader_accepts_a_full_torchvision_state_dict_by_its_key_names(tmp_path, vgg_state):
    import torchvision

    with torch.device("meta"):
        names = list(torchvision.models.vgg16().state_dict())
    assert set(vgg_state) < set(names)
    full = {k: vgg_state.get(k, torch.zeros(1)) for k in names}  # the classifier: placeholders
    torch.save(full, tmp_path / "vgg16.pth")
    net = load_vgg16(tmp_path / "vgg16.pth", DEFAULT_LAYERS)
    assert torch.equal(net.w21, vgg_state["features.21.weight"])


@pytest.mark.slow
def test_loader_reads_a_real_full_size_torchvision_vgg16_file(tmp_path):
    import torchvision

    model = torchvision.models.vgg16(weights=None)
    torch.save(model.state_dict(), tmp_path / "vgg16.pth")
    net = load_vgg16(tmp_path / "vgg16.pth", ["relu5_3"])
    assert torch.equal(net.w28, model.features[28].weight.detach())


DOC_OVERRIDES = [("method.loss_mode=l1", "loss_mode", "l1"), ("method.use_norm=true", "use_norm", True),
                 ("method.keep_top=null", "keep_top", None), ("method.patch_size=16", "patch_size", 16),
                 ("method.augment=false", "augment", False), ("method.lambda_spatial_idt=1.0", "lambda_spatial_idt", 1.0)]


@pytest.mark.parametrize("override,attr,value", DOC_OVERRIDES)
def test_documented_overrides_build_the_variant(compose, vgg_file, override, attr, value):
    from conftest import CONFIGS

    assert f"`{override}`" in (CONFIGS.parent / "docs" / "flsesim.md").read_text()
    _, _, method = _method(compose, vgg_file, "lsesim_horse2zebra", override)
    assert getattr(method, attr) == value and method.heads is not None


@pytest.mark.parametrize("mode", ["cos", "l1"])
def test_spatial_loss_is_the_mean_over_layers_of_the_naive_distance_on_imagenet_normalised_vgg_input(
        compose, tmp_path, vgg_state, mode, monkeypatch):
    import i2i.methods.flsesim as flsesim

    vgg_state = {k: v * 2 if k.endswith("weight") else v for k, v in vgg_state.items()}  # VGG-like magnitudes
    torch.save(vgg_state, tmp_path / "vgg16.pth")
    _, _, method = _method(compose, tmp_path / "vgg16.pth", "fsesim_horse2zebra", f"method.loss_mode={mode}",
                           "method.use_norm=true")  # the saturated tanh maps of random weights hardly differ
    calls = []
    monkeypatch.setattr(flsesim, "sample_locations", lambda f, n: calls.append(f.shape) or torch.arange(
        f.shape[2] * f.shape[3])[:n])  # every location, in order
    batch = _batch(4)
    src, tgt = batch["A"], batch["B"]
    got = method.spatial_loss(src, tgt)
    ref = make_layers(cfgs["D"]).double()
    ref.load_state_dict({k[len("features."):]: v for k, v in vgg_state.items()})
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    feats = []
    with torch.no_grad():
        for x in (src, tgt):
            h, out = ((x.double() + 1) / 2 - mean) / std, []
            for i, layer in enumerate(ref[:23]):
                h = layer(h)
                if i in (11, 18, 22):
                    out.append(h)
            feats.append(out)
    naive = 0.0
    for fs, ft in zip(*feats):
        ids = torch.arange(fs.shape[2] * fs.shape[3])
        naive += _naive_distance(_naive_maps(fs, ids, 64, True), _naive_maps(ft, ids, 64, True), mode, 0.25, False)
    assert len(calls) == 3 and naive > 1e-2 and max(float(f.max()) for f in feats[0]) > 1
    assert float(got) == pytest.approx(naive / 3, rel=1e-4)
