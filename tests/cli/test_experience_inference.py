"""What a researcher sees around inference: progress and cache lines, outputs that hold only this run's images, a
gallery that links every file and names its checkpoint, warnings for too few images, run names of smoke runs,
training on one's own folder (with or without a test split) and ``i2i-test --help``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image
from tqdm import tqdm

from i2i import build
from i2i.build import ConfigError, build_evaluator
from i2i.cli import compare
from i2i.cli.test import run_test
from i2i.cli.train import run_training
from i2i.metrics.evaluate import MetricSuite
from i2i.metrics.features import MockExtractor
from i2i.metrics.progress import progress_bar
from i2i.models.generators import ResnetGenerator

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SMOKE = ("experiment=cut_horse2zebra", "debug=smoke")


def images(folder: Path, names, size=(20, 16), seed: int = 0) -> Path:
    """RGB PNGs with the given file names (random pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory, datasets_dir) -> Path:
    """A run dir with an i2i checkpoint (step 7, epoch 3) of a tiny untrained CUT generator on the smoke data."""
    from hydra import compose, initialize_config_dir

    from i2i.build import build_generator, to_dict
    from i2i.data.synthetic import make_synthetic_dataset
    from i2i.engine.state import FORMAT, atomic_torch_save

    tmp = tmp_path_factory.mktemp("experience_run")
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.datasets_dir={datasets_dir}", f"paths.checkpoints_dir={tmp}",
                                          f"paths.cache_dir={tmp / 'cache'}", *SMOKE, "name=r"])
    s = cfg.data.synthetic
    make_synthetic_dataset(cfg.data.root, seed=s.seed, size=s.size, n_train=s.n_train, n_test=s.n_test)
    state = {"format": FORMAT, "step": 7, "epoch": 3, "cfg": to_dict(cfg),
             "G": build_generator(cfg.generator).state_dict()}
    atomic_torch_save(state, Path(cfg.run_dir) / "ckpt" / "last.pt")
    return Path(cfg.run_dir)


def test_cfg(compose, run: Path, *overrides: str):
    return compose(f"ckpt={run}", "device=cpu", *overrides, config="test")


test_cfg.__test__ = False  # a helper, not a test


# ---------------------------------------------------------------------------------------------- 1. progress
def test_i2i_test_shows_progress_and_says_what_is_cached(compose, run, tmp_path, capsys):
    cfg = test_cfg(compose, run, "metrics=[fid,kid]", "extractor=mock", f"out_dir={tmp_path / 'out'}")
    run_test(cfg)
    err = capsys.readouterr().err
    cache = Path(cfg.paths.cache_dir)
    assert "translating" in err and "features" in err and "metrics" in err  # the bars' labels
    line = next(x for x in err.splitlines() if "reference statistics" in x)
    assert line.startswith("i2i: computing reference statistics for ") and "testB" in line
    assert f"will be cached in {cache}" in line
    run_test(cfg)
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "reference statistics" in x)
    assert re.match(rf"i2i: reference statistics for \S+testB from cache {re.escape(str(cache))}/\S+\.npz$", line)
    assert len(list(cache.glob("*.npz"))) == 1  # the fresh translations are not cached, only the reference


def test_i2i_compare_says_computed_then_from_cache(compose, tmp_path, capsys):
    real = images(tmp_path / "real", ["r0.png", "r1.png", "r2.png"])
    fake = images(tmp_path / "fake", ["f.png", "g.png"])
    cfg = compose(f"fake={fake}", f"real={real}", "extractor=mock", "device=cpu", "kid_subsets=2", "metrics=[fid]",
                  f"out={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}", config="compare")
    plain = OmegaConf.to_container(cfg, resolve=True)
    compare.run(plain)
    first = capsys.readouterr().err
    assert f"i2i: computing reference statistics for {real} (3 images; will be cached in {tmp_path / 'cache'}" in first
    assert f"i2i: computing fake statistics for {fake}" in first
    compare.run(plain)
    second = capsys.readouterr().err
    assert f"i2i: reference statistics for {real} from cache {tmp_path / 'cache'}" in second
    assert f"i2i: fake statistics for {fake} from cache" in second
    compare.run({**plain, "use_cache": False})
    assert "statistics cache off" in capsys.readouterr().err


def test_progress_bars_leave_no_line_and_stack_below_an_outer_bar(capsys):
    with tqdm(total=3, desc="training") as outer, progress_bar(desc="translating", total=2) as inner:
        assert inner.leave is False and inner.pos != outer.pos  # removed when done, on its own line
    assert progress_bar(desc="x", enabled=False).disable


def test_in_training_evaluation_has_no_bars_in_a_log(compose, run, monkeypatch):  # run: the smoke data exists
    suites = []
    real_build = build.build_metric_suite
    monkeypatch.setattr(build, "build_metric_suite", lambda *a, **k: suites.append(real_build(*a, **k)) or suites[-1])
    build_evaluator(compose(*SMOKE, "eval.every_epochs=1", "eval.metrics=[fid]", "eval.extractor=mock"),
                    torch.device("cpu"))
    assert suites[0].progress is False and suites[0].fake_total == 2  # stderr is not a terminal here


@pytest.mark.slow
def test_in_training_evaluation_says_once_what_is_cached(compose, capsys):
    trainer = run_training(compose(*SMOKE, "train.max_steps=4", "eval.every_epochs=1", "eval.metrics=[fid]",
                                   "eval.extractor=mock"))
    err = capsys.readouterr().err
    assert err.count("reference statistics for") == 1 and "translating" not in err  # the reference is kept
    assert (trainer.run_dir / "metrics.jsonl").is_file()


# ---------------------------------------------------------------------------------------------- 2. outputs
def test_stale_outputs_are_removed_and_the_users_files_kept(compose, run, tmp_path, capsys):
    out = tmp_path / "out"
    images(out / "fake_B", ["old.png", "other.jpg"])
    images(out / "real_A", ["old.png"])
    for name in ("index.html", "info.json", "metrics.json", ".index.html.tmp", ".metrics.json.abc.tmp"):
        (out / name).write_text("stale")
    (out / "notes.txt").write_text("mine")
    images(out / "mine", ["keep.png"])
    run_test(test_cfg(compose, run, f"out_dir={out}"))
    fakes = sorted(p.name for p in (out / "fake_B").iterdir())
    assert len(fakes) == 2 and "old.png" not in fakes and "other.jpg" not in fakes
    assert sorted(p.name for p in (out / "real_A").iterdir()) == fakes
    assert not (out / "metrics.json").exists()  # no metrics this time: the old numbers are gone
    assert not list(out.glob(".*tmp")) and json.loads((out / "info.json").read_text())["n_images"] == 2
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine" / "keep.png").is_file()
    assert f"removed the previous results in {out}" in capsys.readouterr().err


def test_an_out_dir_that_holds_or_is_inside_the_input_is_refused(compose, run, tmp_path):
    photos = images(tmp_path / "photos", ["a.png"])
    for out, says in ((photos, "so its images would be read back as inputs"),
                      (photos / "sub", "so its images would be read back as inputs"),
                      (tmp_path / "p2", "i2i-test replaces")):
        src = photos if out != tmp_path / "p2" else images(tmp_path / "p2" / "fake_B", ["b.png"])
        cfg = test_cfg(compose, run, "data=folder", f"data.root={src}", f"out_dir={out}")
        with pytest.raises(ConfigError) as err:
            run_test(cfg)
        assert says in str(err.value) and "choose" in str(err.value) and "\n" not in str(err.value)
    assert (photos / "a.png").is_file() and (tmp_path / "p2" / "fake_B" / "b.png").is_file()


def test_gallery_links_odd_names_and_names_the_checkpoint(compose, run, tmp_path):
    src = images(tmp_path / "in", ["a #1 50%.png", "plain.png"], size=(30, 20))
    out = run_test(test_cfg(compose, run, "data=folder", f"data.root={src}", f"out_dir={tmp_path / 'out'}"))
    page = (out / "index.html").read_text()
    assert 'src="fake_B/a%20%231%2050%25.png"' in page and 'href="fake_B/a%20%231%2050%25.png"' in page
    targets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(targets) == 2 * 2 * 2  # two images, two columns, an img and its link each
    assert all((out / unquote(t)).is_file() for t in targets)
    assert "max-width:512px" in page and "width=" not in page  # natural size up to 512 px, no fixed width
    assert f"checkpoint {run / 'ckpt' / 'last.pt'} at step 7, epoch 3" in page
    info = json.loads((out / "info.json").read_text())
    assert (info["checkpoint"], info["step"], info["epoch"], info["source"]) == (str(run / "ckpt" / "last.pt"), 7, 3,
                                                                              "i2i")


def test_gallery_of_a_published_generator_says_it_has_no_step(compose, tmp_path):
    G = ResnetGenerator(ngf=4, n_blocks=1, antialias=False, antialias_up=False)
    torch.save(OrderedDict(G.state_dict()), tmp_path / "latest_net_G.pth")
    src = images(tmp_path / "in", ["x.png"])
    out = run_test(test_cfg(compose, tmp_path / "latest_net_G.pth", "data=folder", f"data.root={src}",
                            f"out_dir={tmp_path / 'out'}"))
    assert "a published generator: no step recorded" in (out / "index.html").read_text()


def test_too_few_images_for_fid_and_kid_warn_once_and_are_recorded(tmp_path, capsys):
    real, fake = images(tmp_path / "real", ["a.png", "b.png", "c.png"]), images(tmp_path / "fake", ["x.png", "y.png"])
    suite = MetricSuite(("fid", "kid"), real, extractor=MockExtractor(), cache_dir=tmp_path / "cache", device="cpu",
                        kid_subsets=2, kid_subset_size=1000, progress=False)
    suite.compute(fake)
    suite.compute(fake)
    warnings = [x for x in capsys.readouterr().err.splitlines() if x.startswith("i2i: warning:")]
    assert len(warnings) == 2  # once per suite, not per evaluation
    fid, kid = warnings
    assert "FID from 2 fake and 3 real images, fewer than the 16 feature dimensions" in fid
    assert "not comparable to published" in fid
    assert "KID with subsets of 2 images, fewer than kid_subset_size=1000" in kid
    assert "not directly comparable to published" in kid
    assert [w.removeprefix("i2i: warning: ") for w in warnings] == suite.meta()["warnings"]
    enough = MetricSuite(("kid",), real, extractor=MockExtractor(), cache_dir=tmp_path / "cache", device="cpu",
                         kid_subsets=2, kid_subset_size=2, progress=False)
    enough.compute(fake)
    assert "warning" not in capsys.readouterr().err and enough.meta()["warnings"] == []


def test_i2i_test_metrics_json_records_the_small_n_warning(compose, run, tmp_path):
    out = run_test(test_cfg(compose, run, "metrics=[fid]", "extractor=mock", f"out_dir={tmp_path / 'out'}"))
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    assert any(w.startswith("FID from 2 fake and 2 real images") for w in meta["warnings"])


# ---------------------------------------------------------------------------------------------- 3. names and data
def test_smoke_runs_have_their_own_name(compose):
    real = compose("experiment=cut_horse2zebra")
    smoke = compose(*SMOKE)
    assert smoke.name == "cut_synthetic_smoke" and Path(smoke.run_dir).name == "cut_synthetic_smoke"
    assert smoke.run_dir != real.run_dir and real.name == "cut_horse2zebra"
    assert compose(*SMOKE, "name=mine").name == "mine"


def _own_dataset(root: Path, with_test: bool) -> Path:
    for d in ("trainA", "trainB") + (("testA", "testB") if with_test else ()):
        images(root / d, [f"{d}_{i}.png" for i in range(3)], size=(40, 40), seed=len(d))
    return root


@pytest.mark.slow
def test_data_unpaired_trains_and_evaluates_on_a_folder_of_ones_own_images(compose, tmp_path, capsys):
    root = _own_dataset(tmp_path / "mine", with_test=True)
    cfg = compose(*SMOKE, "data=unpaired", f"data.root={root}", "train.max_steps=3", "eval.every_epochs=1",
                  "eval.metrics=[fid]", "eval.extractor=mock")
    assert cfg.data.name == "custom" and "synthetic" not in cfg.data and cfg.name == "cut_custom_smoke"
    trainer = run_training(cfg)
    assert trainer.step == 3 and (trainer.run_dir / "metrics.jsonl").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["testA", "testB", "trainA", "trainB"]  # nothing written there
    assert "evaluation off" not in capsys.readouterr().err


def _eval_off_line(root: Path, missing: tuple[str, ...]) -> str:
    return (f"i2i: evaluation off: {root} has no {' and '.join(m + '/' for m in missing)} (nor "
            f"{' and '.join('val' + m[4:] + '/' for m in missing)}) — training runs without eval.metrics; to "
            f"evaluate, add test images in {' and '.join(str(root / m) for m in missing)} (eval.metrics=[] drops this "
            "line)")


def test_no_test_folders_turn_evaluation_off_with_one_line(compose, tmp_path, capsys):
    root = _own_dataset(tmp_path / "grumpy", with_test=False)
    cfg = compose(*SMOKE, "data=unpaired", f"data.root={root}", "eval.every_epochs=1", "eval.extractor=mock")
    assert build_evaluator(cfg, torch.device("cpu")) is None
    assert capsys.readouterr().err.splitlines() == [_eval_off_line(root, ("testA", "testB"))]
    images(root / "testB", ["b.png"])
    cfg = compose(*SMOKE, "data=unpaired", f"data.root={root}", "data.direction=BtoA", "eval.extractor=mock")
    assert build_evaluator(cfg, torch.device("cpu")) is None  # BtoA translates testB, scored against testA
    assert capsys.readouterr().err.splitlines() == [_eval_off_line(root, ("testA",))]


@pytest.mark.slow
def test_a_dataset_without_test_folders_trains_with_evaluation_on_and_says_why(compose, tmp_path, capsys):
    root = _own_dataset(tmp_path / "grumpy", with_test=False)
    cfg = compose(*SMOKE, "data=unpaired", f"data.root={root}", "eval.every_epochs=1", "eval.metrics=[fid,kid]",
                  "eval.extractor=mock")
    trainer = run_training(cfg)
    assert trainer.step == 2 and not (trainer.run_dir / "metrics.jsonl").exists()
    lines = [x for x in capsys.readouterr().err.splitlines() if "evaluation off" in x]
    assert lines == [_eval_off_line(root, ("testA", "testB"))]


def test_download_script_explains_a_missing_test_split_correctly(tmp_path):
    server = tmp_path / "server"
    server.mkdir()
    with zipfile.ZipFile(server / "grumpifycat.zip", "w") as z:
        for d in ("trainA", "trainB"):
            z.writestr(f"grumpifycat/{d}/0.png", (images(tmp_path / "png", ["0.png"]) / "0.png").read_bytes())
    env = {**os.environ, "I2I_DATASET_URL_BASE": f"file://{server}", "I2I_DATASETS_DIR": str(tmp_path / "datasets")}
    res = subprocess.run(["bash", str(REPO / "scripts" / "download_dataset.sh"), "grumpifycat"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "phase" not in res.stdout + (REPO / "scripts" / "download_dataset.sh").read_text()
    assert "testA: missing" in res.stdout and "training on it runs without evaluation" in res.stdout
    dest = tmp_path / "datasets" / "grumpifycat"
    (command,) = [x.strip() for x in res.stdout.splitlines() if x.strip().startswith("translate images with:")]
    assert command.endswith(f"i2i-test ckpt=<run dir> data=folder data.root={dest}/trainA")
    assert (dest / "trainA").is_dir() and "phase" not in (REPO / "datasets" / "README.md").read_text()


# ---------------------------------------------------------------------------------------------- 4. --help
HELP = (REPO / "configs" / "hydra" / "help" / "test.yaml")


def test_help_lists_every_test_key_and_data_option():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        template = compose("test", return_hydra_config=True).hydra.help.template  # what --help prints
    assert template == yaml.safe_load(HELP.read_text())["template"]
    keys = [k for k in yaml.safe_load((REPO / "configs" / "test.yaml").read_text()) if k != "defaults"]
    assert keys and all(f"  {k}=" in template for k in keys), [k for k in keys if f"  {k}=" not in template]
    options = [p.stem for p in (REPO / "configs" / "data").glob("*.yaml")]
    assert all(re.search(rf"\b{o}\b", template) for o in options), options
    assert "$" not in template.replace("$$", "")  # Hydra substitutes $NAME: none is meant here


@pytest.mark.slow
def test_i2i_test_help_lists_its_keys_not_the_training_config(tmp_path):
    res = subprocess.run([str(BIN / "i2i-test"), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for key in ("ckpt=", "which=", "out_dir=", "metrics=", "data=folder", "data=unpaired", "Examples"):
        assert key in res.stdout, key
    for training in ("paths:\n", "hydra:\n", "checkpoints_dir", "load_size", "n_epochs", "crop_size", "== Config =="):
        assert training not in res.stdout, training
    assert not (tmp_path / "outputs").exists()
