"""``i2i export ckpt=<run dir | checkpoint | latest_net_G.pth> format=torchscript|onnx|published [out=<path>]``.

Writes the generator as a standalone file (:mod:`i2i.export`; config: configs/export.yaml). Also reachable as
``i2i-export`` and ``python -m i2i export``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from i2i.cli.common import check_overrides, config_dir, run_cli


def _export(cfg: DictConfig):
    from i2i.export import run_export

    return run_export(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))


@hydra.main(config_path=config_dir(), config_name="export", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    run_cli(_export, cfg)


def main() -> None:
    """Console entry point (an override Hydra cannot parse is one line, exit 2)."""
    check_overrides()
    _main()


if __name__ == "__main__":
    main()
