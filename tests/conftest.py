"""Shared fixtures: Hydra composition of the real configs, with every path redirected into temporary dirs."""

from __future__ import annotations

import os
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
