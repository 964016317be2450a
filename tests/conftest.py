"""Shared fixtures: Hydra composition of the real configs, with every path redirected into temporary dirs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED_H2Z = Path(os.environ.get("I2I_HORSE2ZEBRA", REPO / "datasets" / "horse2zebra"))  # optional real data

torch.set_num_threads(min(2, os.cpu_count() or 1))


def experiments() -> list[str]:
    """Every experiment preset (configs/experiment/*.yaml)."""
    return sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def experiment_params(inner_loop: Callable[[str], bool] | None = None) -> list:
    """Every experiment preset as a test parameter; those for which ``inner_loop(name)`` is false are marked slow.

    Default: each method's horse2zebra preset (and the demo) runs in the inner loop; its presets on other datasets
    differ from it only in configured values, which tests/test_resolved_configs.py compares key by key.
    """
    inner_loop = inner_loop or (lambda name: name.endswith("_horse2zebra") or name == "demo")
    return [name if inner_loop(name) else pytest.param(name, marks=pytest.mark.slow) for name in experiments()]


@pytest.fixture(scope="session")
def datasets_dir(tmp_path_factory) -> Path:
    """One synthetic-data directory for the whole session (generated on first use)."""
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture
def compose(datasets_dir, tmp_path):
    """``compose(*overrides, config='train')`` -> DictConfig of the real configs, writing only under tmp dirs."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    def _compose(*overrides: str, config: str = "train"):
        base = [f"paths.datasets_dir={datasets_dir}", f"paths.checkpoints_dir={tmp_path / 'checkpoints'}",
                f"paths.cache_dir={tmp_path / 'cache'}"]
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return hydra_compose(config_name=config, overrides=base + list(overrides))

    return _compose


@pytest.fixture(scope="session")
def vgg16_features_file(tmp_path_factory) -> Path:
    """A randomly initialised VGG-16 ``features`` state dict under torchvision's key names."""
    from torchvision.models.vgg import cfgs, make_layers

    path = tmp_path_factory.mktemp("vgg") / "vgg16_features.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}, path)
    return path


@pytest.fixture
def compose_runnable(compose, request):
    """Like ``compose``, and a method on VGG-16 features (``method.vgg_weights``, which presets leave unset) gets
    the random-weights file, so that every preset can be built and run."""

    def _compose(*overrides: str, config: str = "train"):
        cfg = compose(*overrides, config=config)
        if config == "train" and "vgg_weights" in cfg.method and cfg.method.vgg_weights is None:
            weights = request.getfixturevalue("vgg16_features_file")
            cfg = compose(*overrides, f"method.vgg_weights={weights}", config=config)
        return cfg

    return _compose
