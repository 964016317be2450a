"""docs/extending.md's worked example is real: its module and its YAML, and nothing else, train a new method.

The test copies the example's code blocks out of the document, puts the module on ``sys.path`` and the YAML into a
copy of ``configs/``, and trains two steps (debug=smoke): the new term is logged and the method's heads are
stepped, with no other file of the package changed.
"""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest
import torch

from conftest import CONFIGS, REPO

DOC = REPO / "docs" / "extending.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def example(tmp_path, monkeypatch):
    module = next(b for b in _blocks("python") if "class CUTColour" in b)
    config = next(b for b in _blocks("yaml") if "CUTColour" in b)
    pkg = tmp_path / "example_pkg"
    pkg.mkdir()
    (pkg / "cut_colour.py").write_text(module)
    monkeypatch.syspath_prepend(str(pkg))
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    # the document's module path is i2i.methods.cut_colour; here the module lives outside the package
    (configs / "method" / "cut_colour.yaml").write_text(config.replace("i2i.methods.cut_colour", "cut_colour"))
    yield configs
    sys.modules.pop("cut_colour", None)


def test_the_worked_example_trains_with_only_its_module_and_yaml(example, tmp_path, datasets_dir):
    from hydra import compose, initialize_config_dir

    from i2i.cli.train import run_training

    overrides = [f"paths.datasets_dir={datasets_dir}", f"paths.checkpoints_dir={tmp_path / 'ckpt'}",
                 f"paths.cache_dir={tmp_path / 'cache'}", "method=cut_colour", "debug=smoke",
                 "method.lambda_colour=0.5"]
    with initialize_config_dir(config_dir=str(example), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    assert cfg.name == "cut_colour_synthetic_smoke"
    trainer = run_training(cfg)
    assert type(trainer.method).__name__ == "CUTColour" and trainer.method.lambda_colour == 0.5
    stats = [json.loads(line) for line in (trainer.run_dir / "stats.jsonl").read_text().splitlines()]
    logged = [s for s in stats if "Loss/colour" in s]
    assert logged and all(s["Loss/colour"] > 0 for s in logged)  # an untrained G does not keep the colours
    assert {"Loss/NCE", "Loss/G_GAN"} <= set(logged[0])  # CUT's terms are still there
    state = torch.load(trainer.run_dir / "ckpt" / "last.pt", weights_only=True)
    assert any(k.startswith("heads.") for k in state["method"])  # CUT.create sized the heads from G


def test_the_example_colour_term_is_what_the_document_says(example):
    import cut_colour

    from i2i.losses.gan import GANLoss
    from i2i.methods.base import Parts
    from i2i.models.discriminators import PatchGAN
    from i2i.models.generators import ResnetGenerator

    torch.manual_seed(0)
    G, D = ResnetGenerator(ngf=4, n_blocks=1), PatchGAN(ndf=4)
    method = cut_colour.CUTColour.create(Parts(G=G, D=D), nce_layers=[0, 4], num_patches=8, nc=8,
                                         lambda_colour=2.0)
    batch = {"A": torch.rand(2, 3, 32, 32) * 2 - 1, "B": torch.rand(2, 3, 32, 32) * 2 - 1}
    out = method.forward_G(G, batch)
    terms = method.generator_losses(G, D, batch, out, GANLoss("lsgan"))
    naive = sum(abs(out["fake_B"][i, c].mean() - batch["A"][i, c].mean()) for i in range(2) for c in range(3)) / 6
    torch.testing.assert_close(terms["colour"], 2.0 * naive)
    assert set(terms) == {"G_GAN", "NCE", "NCE_Y", "colour"}
