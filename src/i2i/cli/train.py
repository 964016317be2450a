"""``train experiment=<name> [key=value ...]``: compose the config and train."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from i2i.cli.common import check_overrides, config_dir, run_cli


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from i2i.build import run_training

    run_cli(run_training, cfg)


def main() -> None:
    """Console entry point (an override Hydra cannot parse is one line, exit 2)."""
    check_overrides()
    _main()


if __name__ == "__main__":
    main()
