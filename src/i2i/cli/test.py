"""``i2i-test ckpt=<run dir | checkpoint | latest_net_G.pth> data=<dataset | folder> [out_dir=...]``: translate images.

Also reachable as ``i2i test`` and ``python -m i2i test`` (there is no ``test`` script: it would shadow
/usr/bin/test).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from i2i.cli.common import check_overrides, config_dir, run_cli


@hydra.main(config_path=config_dir(), config_name="test", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from i2i.build import run_test

    run_cli(run_test, cfg)


def main() -> None:
    """Console entry point (an override Hydra cannot parse is one line, exit 2)."""
    check_overrides()
    _main()


if __name__ == "__main__":
    main()
