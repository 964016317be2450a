"""DAG negative sampling (EnCo Algorithm 1) and its use by any method (CUT, QS-Attn) through method.sampler=dag."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import CONFIGS
from i2i.build import ConfigError, build_trainer
from i2i.cli.train import run_training
from i2i.losses.gan import GANLoss
from i2i.methods.cut import CUT
from i2i.models.discriminators import PatchGAN
from i2i.models.generators import ResnetGenerator
from i2i.samplers.base import SampleContext
from i2i.samplers.dag import DAGSampler, resize_scores

TABLE4 = [(1, 0.0), (4, 0.75), (4, 1.0), (2, 0.5), (8, 0.5), (4, 0.5)]  # (k, beta) rows of Table 4


def seeded_draw(seed: int):
    """Candidate draw with its own generator, so the test can repeat it naively; also records what it drew."""
    drawn = []

    def draw(b, hw, m, device):
        g = torch.Generator().manual_seed(seed)
        cand = torch.stack([torch.randperm(hw, generator=g)[:m] for _ in range(b)])  # [B, m]
        drawn.append(cand.clone())
        return cand.to(device)

    return draw, drawn


def location_features(b: int, c: int, h: int, w: int) -> torch.Tensor:
    """[B, C, H, W] whose channel 0 is the flat location id and channel 1 the image index."""
    feat = torch.randn(b, c, h, w)
    feat[:, 0] = torch.arange(h * w, dtype=torch.float32).view(h, w)
    feat[:, 1] = torch.arange(b, dtype=torch.float32).view(b, 1, 1)
    return feat


@pytest.mark.parametrize("k,beta", TABLE4)
@pytest.mark.parametrize("num_patches", [16, 10])
def test_dag_keeps_the_lowest_beta_k_and_highest_rest_of_the_oversampled_candidates(k, beta, num_patches):
    b, h, w = 2, 12, 10
    score_map = torch.randn(b, 1, 5, 4)  # D logits, coarser than the features
    draw, drawn = seeded_draw(seed=7)
    sampler = DAGSampler(k=k, beta=beta, candidates=draw)
    feat_k = location_features(b, 5, h, w)
    k_out, q_out = sampler(feat_k, feat_k + 1.0, num_patches, SampleContext(score_map=score_map))
    assert k_out.shape == (b, num_patches, 5) and q_out.shape == (b, num_patches, 5)
    cand = drawn[0]
    assert cand.shape == (b, min(k * num_patches, h * w))  # k·K candidates
    scores = F.interpolate(score_map, size=(h, w), mode="bilinear", align_corners=False).flatten(1)
    n_low = round(beta * num_patches)
    for i in range(b):  # naive: sort the candidates' scores by hand
        ranked = sorted(cand[i].tolist(), key=lambda loc: scores[i, loc].item())
        expected = ranked[:n_low] + ranked[len(ranked) - (num_patches - n_low):]
        got = k_out[i, :, 0].long().tolist()
        assert sorted(got) == sorted(expected)
        assert len(set(got)) == num_patches
        assert torch.equal(q_out[i], k_out[i] + 1.0)  # the same ids index queries and keys


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.5, 1.0])
def test_dag_with_every_location_a_candidate_is_deterministic(beta):
    """k·K >= HW: the default (random) draw holds every location, so the result is fixed by the scores alone."""
    b, h, w, n = 2, 4, 4, 8
    scores = torch.randperm(b * h * w).float().view(b, 1, h, w)
    k_out, _ = DAGSampler(k=2, beta=beta)(location_features(b, 3, h, w), torch.zeros(b, 3, h, w), n,
                                          SampleContext(score_map=scores))
    n_low = round(beta * n)
    for i in range(b):
        order = scores[i].flatten().argsort().tolist()
        expected = order[:n_low] + order[h * w - (n - n_low):]
        assert sorted(k_out[i, :, 0].long().tolist()) == sorted(expected)


@pytest.mark.parametrize("src,dst", [((30, 30), (64, 64)), ((30, 30), (16, 16)), ((2, 2), (8, 8)), ((5, 7), (9, 6))])
def test_score_map_is_resized_bilinearly_to_each_feature_size(src, dst):
    score = torch.randn(3, 1, *src)
    expected = F.interpolate(score, size=dst, mode="bilinear", align_corners=False).flatten(1)
    assert torch.allclose(resize_scores(score, dst), expected)
    corners = F.interpolate(score, size=dst, mode="bilinear", align_corners=True).flatten(1)
    assert not torch.allclose(resize_scores(score, dst), corners)  # align_corners=False, as published


def test_ids_are_drawn_per_image_and_follow_each_image_score_map():
    b, h, w, n = 2, 6, 6, 6
    scores = torch.randn(b, 1, h, w)
    scores[1] = -scores[0]  # opposite maps: with beta=1 the two images keep different locations
    k_out, _ = DAGSampler(k=6, beta=1.0)(location_features(b, 3, h, w), torch.zeros(b, 3, h, w), n,
                                         SampleContext(score_map=scores))
    for i in range(b):
        assert sorted(k_out[i, :, 0].long().tolist()) == sorted(scores[i].flatten().argsort()[:n].tolist())
        assert torch.all(k_out[i, :, 1] == i)
    assert set(k_out[0, :, 0].tolist()) != set(k_out[1, :, 0].tolist())


def test_dag_rejects_missing_score_map_batch_mismatch_and_bad_options():
    feat = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="score_map"):
        DAGSampler()(feat, feat, 4, SampleContext())
    with pytest.raises(ValueError, match="batch 1"):
        DAGSampler()(feat, feat, 4, SampleContext(score_map=torch.randn(1, 1, 2, 2)))
    with pytest.raises(ValueError, match="method.sampler.k"):
        DAGSampler(k=0.5)
    with pytest.raises(ValueError, match="method.sampler.beta"):
        DAGSampler(beta=1.5)


class SpySampler(DAGSampler):
    """DAG sampler that records the score maps it is given."""

    def __init__(self):
        super().__init__()
        self.maps = []

    def __call__(self, feat_k, feat_q, num_patches, ctx=None):
        self.maps.append(ctx.score_map)
        return super().__call__(feat_k, feat_q, num_patches, ctx)


def test_cut_with_dag_scores_the_identity_half_with_D_of_idt_B():
    torch.manual_seed(0)
    layers = [0, 4, 8, 12, 16]
    G, D = ResnetGenerator(ngf=4, n_blocks=9), PatchGAN(ndf=4)
    spy = SpySampler()
    method = CUT(G.feature_channels(layers), layers, num_patches=8, nc=8, sampler=spy)
    batch = {"A": torch.randn(2, 3, 32, 32), "B": torch.randn(2, 3, 32, 32)}
    out = method.forward_G(G, batch)
    method.generator_losses(G, D, batch, out, GANLoss("lsgan"))
    with torch.no_grad():
        expected = torch.cat([D(out["fake_B"]).logits, D(out["idt_B"]).logits])  # [2B, 1, h, w]
    assert len(spy.maps) == len(layers)
    for score in spy.maps:
        assert score.shape[0] == 4 and not score.requires_grad
        assert torch.allclose(score, expected, atol=1e-6)


def test_sampler_options_that_do_not_fit_are_one_clear_error(compose):
    # selecting another sampler replaces the whole node: DAG's k and beta do not follow to the random sampler
    cfg = compose("experiment=enco_horse2zebra", "debug=smoke", "method/sampler=random")
    assert set(cfg.method.sampler) == {"_target_", "per_image"}
    cfg = compose("experiment=enco_horse2zebra", "debug=smoke", "+method.sampler.gamma=1")
    with pytest.raises(ConfigError, match=r"method \(enco\): .*DAGSampler.*gamma"):
        build_trainer(cfg, cfg.run_dir)
    cfg = compose("experiment=enco_horse2zebra", "debug=smoke", "method.sampler.k=0.5")
    with pytest.raises(ConfigError, match=r"method\.sampler\.k=0\.5"):
        build_trainer(cfg, cfg.run_dir)


def test_the_former_sampler_string_is_refused_with_the_new_spelling(compose):
    cfg = compose("experiment=cut_horse2zebra", "debug=smoke", "method.sampler=dag")
    with pytest.raises(ConfigError, match=r"method/sampler=dag"):
        build_trainer(cfg, cfg.run_dir)


@pytest.mark.parametrize("experiment,options,k_beta", [
    ("cut_horse2zebra", ["method.sampler.k=8", "method.sampler.beta=0.25"], (8, 0.25)),
    ("qsattn_horse2zebra", [], (4, 0.5)),  # no options: the paper's defaults
])
def test_method_sampler_dag_smoke_trains(compose, experiment, options, k_beta):
    if not (CONFIGS / "experiment" / f"{experiment}.yaml").is_file():
        pytest.skip(f"configs/experiment/{experiment}.yaml is not there yet")
    trainer = run_training(compose(f"experiment={experiment}", "debug=smoke", "method/sampler=dag", *options))
    assert trainer.step == 2
    method = trainer.method
    n_layers = len(method.nce_layers)
    kinds = [isinstance(method.sampler_for(pos), DAGSampler) for pos in range(n_layers)]
    if experiment.startswith("qsattn"):
        assert kinds == [True] * (n_layers - 2) + [False, False]  # DAG on the first three, QS-Attn on the last two
    else:
        assert all(kinds)
    assert (method.sampler.k, method.sampler.beta) == k_beta
