"""The command-line contract, exercised through the installed console scripts from another working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow  # every test here runs the console scripts in subprocesses

BIN = Path(sys.executable).parent


def run(tmp: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "I2I_DATASETS_DIR": str(tmp / "datasets"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(list(args), cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A two-step smoke run made by the `train` script, in a directory far from the repository."""
    tmp = tmp_path_factory.mktemp("cli_cwd")
    run(tmp, str(BIN / "train"), "experiment=cut_horse2zebra", "debug=smoke", "name=cli_run")
    return tmp


def test_train_from_another_directory_writes_the_run_there(trained_run):
    run_dir = trained_run / "checkpoints" / "cli_run"
    assert (run_dir / "ckpt" / "last.pt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").read_text().count("name: cli_run") == 1
    assert not (trained_run / "outputs").exists()  # Hydra writes nothing of its own


def test_i2i_test_translates_a_folder_of_any_size(trained_run):
    src = trained_run / "my_photos"
    src.mkdir()
    Image.new("RGB", (45, 37), (200, 30, 30)).save(src / "odd.png")
    Image.new("L", (20, 16), 128).save(src / "grey.jpg")
    out = trained_run / "out"
    proc = run(trained_run, str(BIN / "i2i-test"), "ckpt=checkpoints/cli_run", "data=folder",
               f"data.root={src}", f"out_dir={out}")
    assert "translated 2 images" in proc.stderr
    for stem, size in (("odd", (45, 37)), ("grey", (20, 16))):
        assert Image.open(out / "fake_B" / f"{stem}.png").size == size
        assert Image.open(out / "real_A" / f"{stem}.png").size == size
    page = (out / "index.html").read_text()
    assert 'src="real_A/odd.png"' in page and 'src="fake_B/odd.png"' in page


def test_python_m_i2i_test_uses_the_dataset_test_split(trained_run):
    proc = run(trained_run, sys.executable, "-m", "i2i", "test", "ckpt=checkpoints/cli_run", "data=synthetic",
               "data.synthetic.size=36", "out_dir=res")
    stems = sorted(p.stem for p in (trained_run / "res" / "fake_B").iterdir())
    expected = sorted(p.stem for p in next((trained_run / "datasets").glob("synthetic*36")).joinpath("testA").iterdir()
                      if p.suffix == ".png")
    assert stems == expected and "translated" in proc.stderr


def test_published_latest_net_g_translates_with_i2i_test(trained_run):
    from i2i.models.generators import ResnetGenerator

    G = ResnetGenerator(ngf=4, n_blocks=2, antialias=False, antialias_up=False)
    torch.save(OrderedDict((f"module.{k}", v) for k, v in G.state_dict().items()), trained_run / "latest_net_G.pth")
    src = trained_run / "one"
    src.mkdir()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(src / "x.png")
    run(trained_run, str(BIN / "i2i-test"), "ckpt=latest_net_G.pth", "data=folder", f"data.root={src}")
    assert Image.open(trained_run / "results" / "latest_net_G" / "fake_B" / "x.png").size == (32, 24)


@pytest.mark.parametrize("override,message", [
    ("train.max_stepz=3", "Could not override 'train.max_stepz'"),
    ("method=cutt", "Could not find 'method/cutt'"),
    ("experiment=cut_horse2zebr", "Could not find 'experiment/cut_horse2zebr'"),
])
def test_misspelt_key_or_option_fails_with_hydras_message_before_any_work(tmp_path, override, message):
    proc = run(tmp_path, str(BIN / "train"), "experiment=cut_horse2zebra", "debug=smoke", override, ok=False)
    assert proc.returncode != 0 and message in proc.stderr
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "datasets").exists()


def test_user_errors_are_one_line_without_traceback(trained_run):
    proc = run(trained_run, str(BIN / "train"), "experiment=cut_horse2zebra", "debug=smoke", "name=cli_run", ok=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("i2i: error: run directory checkpoints/cli_run is not empty")
    assert "Traceback" not in proc.stderr
    proc = run(trained_run, str(BIN / "i2i-test"), "ckpt=nowhere/latest_net_G.pth", "data=folder", "data.root=.",
               ok=False)
    assert proc.returncode == 2 and "nowhere/latest_net_G.pth: no such checkpoint file" in proc.stderr
