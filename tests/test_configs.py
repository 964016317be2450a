"""Every experiment composes and its full-size networks and method instantiate; the CUT/FastCUT recipes carry the
published settings (taesungp/contrastive-unpaired-translation: options/, models/cut_model.py, models/networks.py)."""

from __future__ import annotations

import pytest
import torch

from conftest import experiment_params
from i2i.build import (
    build_discriminator,
    build_feedback,
    build_generator,
    build_method,
    generator_input_nc,
    instantiate,
    loop_config,
)
from i2i.losses.gan import GANLoss


# the inner loop smoke-trains the presets instead (tests/engine/test_train.py)
@pytest.mark.parametrize("experiment", experiment_params(lambda name: name in ("cut_horse2zebra", "demo")))
def test_experiment_composes_and_instantiates_at_full_size(compose_runnable, experiment):
    cfg = compose_runnable(f"experiment={experiment}")
    G = build_generator(cfg.generator, input_nc=generator_input_nc(cfg))
    D = build_discriminator(cfg.discriminator)
    method = build_method(cfg, G, D)
    assert isinstance(instantiate(cfg.gan_loss, "gan_loss"), GANLoss)
    build_feedback(cfg)
    loop_config(cfg, torch.device("cpu"))
    assert cfg.name == experiment
    if experiment != "demo":
        assert cfg.generator.ngf == 64 and cfg.data.crop_size == 256 and cfg.data.load_size == 286
        assert sum(p.numel() for p in G.parameters()) >= 11_378_179 - 1
    assert sum(p.numel() for p in D.parameters()) > 0 and isinstance(method, torch.nn.Module)


@pytest.mark.parametrize("dataset", ["horse2zebra", "cat2dog", "cityscapes"])
def test_cut_and_fastcut_recipes_are_the_published_ones(compose, dataset):
    for name, lam, idt, flip, epochs in (("cut", 1.0, True, False, (200, 200)), ("fastcut", 10.0, False, True, (150, 50))):
        cfg = compose(f"experiment={name}_{dataset}")
        g, d, m, o, t, data = cfg.generator, cfg.discriminator, cfg.method, cfg.optim, cfg.train, cfg.data
        assert (g.ngf, g.n_blocks, g.antialias, g.antialias_up, g.norm, g.init_type, g.init_gain) == \
            (64, 9, True, True, "instance", "xavier", 0.02)
        assert (d.ndf, d.n_layers, d.antialias, d.norm) == (64, 3, True, "instance")
        assert cfg.gan_loss.mode == "lsgan"
        assert (o.lr_g, o.lr_d, o.lr_f, list(o.betas)) == (2e-4, 2e-4, 2e-4, [0.5, 0.999])
        assert (t.batch_size, t.n_epochs, t.n_epochs_decay) == (1, *epochs)
        assert (data.load_size, data.crop_size, data.flip, data.preprocess) == (286, 256, True, "resize_and_crop")
        assert data.no_crop_after_epoch == epochs[0]
        assert list(m.nce_layers) == [0, 4, 8, 12, 16] and (m.num_patches, m.nc, m.tau, m.diagonal) == (256, 256, 0.07, -10.0)
        assert (m.lambda_nce, m.nce_idt, m.flip_equivariance, m.negatives) == (lam, idt, flip, "image")
        assert data.direction == ("BtoA" if dataset == "cityscapes" else "AtoB")
