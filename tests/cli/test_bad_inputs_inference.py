"""Bad inputs to i2i-test and i2i-compare: each ends in ONE line naming the file or key with the fix (exit status 2
on the command line), before any work where it can be known then, and nothing already written changes.

Classes: the statistics cache (unreadable, non-finite or misshapen entries; a ``cache_dir`` that is a file), tiny
images, an ``out_dir`` that is a file, bad typed keys, channels that do not fit the checkpoint, corrupt fake
images, ``device=cuda`` without CUDA, ``i2i-test`` without ``data=``, a non-checkpoint given as ``ckpt=``, and
unquoted non-ASCII overrides.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.cli import compare
from i2i.cli.common import check_overrides
from i2i.cli.test import run_test
from i2i.data.errors import DataError
from i2i.data.folder import pad_to_multiple
from i2i.engine.state import CheckpointError, safe_load
from i2i.errors import ConfigError, RunDirError
from i2i.metrics.evaluate import MetricSuite
from i2i.metrics.features import MockExtractor

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


# ---------------------------------------------------------------------------------------------- helpers
def snapshot(*roots: Path) -> dict:
    """Every file and folder under ``roots``: path -> (mtime_ns, bytes) for files, None for folders."""
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            out[str(p)] = (p.stat().st_mtime_ns, p.read_bytes()) if p.is_file() else None
    return out


def one_line(err) -> str:
    """The exception's message, checked to be a single line."""
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def images(folder: Path, sizes, seed: int = 0) -> Path:
    """RGB PNGs of the given (width, height) sizes named img_<i>.png."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img_{i}.png")
    return folder


def truncated_jpeg(path: Path) -> Path:
    """A JPEG whose body is cut in half (the header is intact)."""
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path.with_suffix(".full.jpg"))
    data = path.with_suffix(".full.jpg").read_bytes()
    path.with_suffix(".full.jpg").unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, datasets_dir) -> Path:
    """A run dir holding an i2i checkpoint of a tiny untrained CUT generator (the smoke config: ngf 4, synthetic
    36 px data with 2 test images per domain), with the keys training writes and i2i-test reads."""
    from hydra import compose, initialize_config_dir

    from i2i.build import build_generator, to_dict
    from i2i.data.synthetic import make_synthetic_dataset
    from i2i.engine.state import FORMAT, atomic_torch_save

    tmp = tmp_path_factory.mktemp("bad_inputs_run")
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.datasets_dir={datasets_dir}", f"paths.checkpoints_dir={tmp}",
                                          f"paths.cache_dir={tmp / 'cache'}", "experiment=cut_horse2zebra",
                                          "debug=smoke", "name=r"])
    s = cfg.data.synthetic
    make_synthetic_dataset(cfg.data.root, seed=s.seed, size=s.size, n_train=s.n_train, n_test=s.n_test)
    run_dir = Path(cfg.run_dir)
    state = {"format": FORMAT, "step": 1, "epoch": 1, "cfg": to_dict(cfg), "G": build_generator(cfg.generator)
             .state_dict()}
    atomic_torch_save(state, run_dir / "ckpt" / "last.pt")
    return run_dir


@pytest.fixture
def photos(tmp_path) -> Path:
    return images(tmp_path / "photos", [(13, 10), (9, 9)])


@pytest.fixture
def published(tmp_path) -> Path:
    """A published-style latest_net_G.pth (DataParallel ``module.`` keys) of a tiny generator."""
    from i2i.models.generators import ResnetGenerator

    G = ResnetGenerator(ngf=4, n_blocks=1, antialias=False, antialias_up=False)
    path = tmp_path / "latest_net_G.pth"
    torch.save(OrderedDict((f"module.{k}", v) for k, v in G.state_dict().items()), path)
    return path


def compare_cfg(compose, fake: Path, real: Path, tmp_path: Path, *overrides: str) -> dict:
    """The plain config dict i2i-compare runs on (mock extractor, small KID subsets)."""
    from omegaconf import OmegaConf

    cfg = compose(f"fake={fake}", f"real={real}", "extractor=mock", "device=cpu", "kid_subsets=2",
                  f"out={tmp_path / 'res'}", f"cache_dir={tmp_path / 'cache'}", *overrides, config="compare")
    return OmegaConf.to_container(cfg, resolve=True)


# ---------------------------------------------------------------------------------------------- A. the cache
def _edit(change):
    """A damage that rewrites some arrays of an entry: ``change(arrays) -> {name: new array}``."""
    def apply(path: Path) -> None:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        with open(path, "wb") as f:
            np.savez(f, **{**arrays, **change(arrays)})
    return apply


def _entry_damages() -> dict:
    return {
        "empty": lambda p: p.write_bytes(b""),
        "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "nan_mu": _edit(lambda z: {"mu": z["mu"] * np.nan}),
        "inf_sigma": _edit(lambda z: {"sigma": np.where(np.eye(len(z["mu"])) > 0, np.inf, z["sigma"])}),
        "sigma_shape": _edit(lambda z: {"sigma": z["sigma"][:3]}),
        "mu_shape": _edit(lambda z: {"mu": z["mu"][None]}),
        "features_shape": _edit(lambda z: {"features": z["features"][:, :5]}),
        "nan_features": _edit(lambda z: {"features": z["features"] * np.nan}),
        "pickled_mu": _edit(lambda z: {"mu": np.array([{"a": 1}], dtype=object)}),
    }


DAMAGES = _entry_damages()


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_unusable_cache_entry_is_a_named_miss_and_is_rewritten(tmp_path, capsys, damage):
    real, fake = images(tmp_path / "real", [(16, 16)] * 4), images(tmp_path / "fake", [(16, 16)] * 3, seed=1)

    def suite():
        return MetricSuite(("fid", "kid"), real, extractor=MockExtractor(), cache_dir=tmp_path / "cache",
                           device="cpu", kid_subsets=2, progress=False)

    def cache_warnings() -> list[str]:  # (the too-few-images warnings of these tiny sets are not about the cache)
        return [x for x in capsys.readouterr().err.splitlines() if x.startswith("i2i: warning:") and "cache" in x]

    expected = suite().compute(fake)
    (entry,) = (tmp_path / "cache").glob("*_real-*.npz")  # the reference side's entry
    capsys.readouterr()
    DAMAGES[damage](entry)
    s = suite()
    assert s.compute(fake) == expected  # recomputed, not "FID nan"
    warning = cache_warnings()
    assert len(warning) == 1 and warning[0].startswith(f"i2i: warning: {entry}: unusable statistics cache entry")
    assert (s.cache.hits, s.cache.misses) == (1, 1)
    again = suite()
    assert again.compute(fake) == expected and (again.cache.hits, again.cache.misses) == (2, 0)  # rewritten whole
    assert cache_warnings() == []


def test_cache_dir_that_is_a_file_names_the_key(compose, run, tmp_path, photos):
    blocker = tmp_path / "cachefile"
    blocker.write_text("not a folder")
    before = snapshot(run, tmp_path)
    cfg = compose(f"ckpt={run}", "data=synthetic", "data.synthetic.size=36", "metrics=[fid]", "extractor=mock",
                  f"paths.cache_dir={blocker}", f"out_dir={tmp_path / 'out'}", config="test")
    with pytest.raises(ConfigError) as err:
        run_test(cfg)
    msg = one_line(err)
    assert msg.startswith(f"paths.cache_dir={blocker}: {blocker} is a file, not a directory") and "set " in msg
    with pytest.raises(ConfigError) as err:
        compare.run(compare_cfg(compose, photos, photos, tmp_path, f"cache_dir={blocker / 'sub'}"))
    assert one_line(err).startswith(f"cache_dir={blocker / 'sub'}: {blocker} is a file")
    assert snapshot(run, tmp_path) == before


# ---------------------------------------------------------------------------------------------- B1. tiny images
def test_pad_reflects_where_it_can_and_replicates_where_it_cannot():
    x = torch.arange(2 * 3, dtype=torch.float32).reshape(1, 2, 3)  # [C, H, W] = [1, 2, 3]
    y = pad_to_multiple(x, 4, min_size=8)
    assert y.shape == (1, 8, 8)
    assert torch.equal(y[..., :2, :3], x)
    assert torch.equal(y[..., 2:, :3], x[..., 1:2, :].expand(1, 6, 3))  # rows: pad 6 >= 2, replicated
    assert torch.equal(y[..., :2, 3:], x[..., :, 2:3].expand(1, 2, 5))  # columns: pad 5 >= 3, replicated
    z = torch.arange(7 * 5, dtype=torch.float32).reshape(1, 7, 5)
    assert torch.equal(pad_to_multiple(z, 4, min_size=8), torch.nn.functional.pad(z[None], (0, 3, 0, 1),
                                                                                    mode="reflect")[0])


def test_any_image_size_translates_and_is_cropped_back(compose, run, tmp_path):
    sizes = [(1, 1), (3, 2), (13, 10)]  # (width, height)
    src = images(tmp_path / "tiny", sizes)
    out = run_test(compose(f"ckpt={run}", "data=folder", f"data.root={src}", f"out_dir={tmp_path / 'out'}",
                           "batch_size=3", config="test"))
    for i, size in enumerate(sizes):
        for side in ("fake_B", "real_A"):
            assert Image.open(out / side / f"img_{i}.png").size == size
    real = np.asarray(Image.open(out / "real_A" / "img_1.png")).astype(int)
    assert np.abs(real - np.asarray(Image.open(src / "img_1.png"))).max() <= 1  # the crop is the input (tensor2im)


def test_a_three_stage_generator_gets_inputs_padded_for_its_stages(compose, tmp_path):
    from i2i.models.generators import ResnetGenerator

    G = ResnetGenerator(ngf=4, n_blocks=1, n_downsampling=3)  # sides must divide by 8 and be >= 16 px
    torch.save(G.state_dict(), tmp_path / "G.pth")
    sizes = [(1, 1), (13, 10), (20, 36)]  # (width, height); 4 (size_multiple) would leave 13x10 at 16x12
    src = images(tmp_path / "odd", sizes)
    out = run_test(compose(f"ckpt={tmp_path / 'G.pth'}", "data=folder", f"data.root={src}",
                           f"out_dir={tmp_path / 'out'}", config="test"))
    for i, size in enumerate(sizes):
        assert Image.open(out / "fake_B" / f"img_{i}.png").size == size


# ---------------------------------------------------------------------------------------------- B2. out_dir
def test_out_dir_that_is_a_file_names_out_dir(compose, run, published, tmp_path, photos, monkeypatch):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    monkeypatch.chdir(tmp_path)  # a published file's default out_dir: results/<stem>
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "latest_net_G").write_text("keep me too")
    before = snapshot(run, tmp_path)
    for ckpt, out_dir in ((tmp_path / "absent.pt", target), (run, target / "sub")):  # checked before the checkpoint
        with pytest.raises(ConfigError) as err:
            run_test(compose(f"ckpt={ckpt}", "data=folder", f"data.root={photos}", f"out_dir={out_dir}",
                             config="test"))
        assert one_line(err).startswith(f"out_dir={out_dir}: {target} is a file, not a directory — choose another")
    with pytest.raises(ConfigError) as err:  # the default out_dir
        run_test(compose(f"ckpt={published}", "data=folder", f"data.root={photos}", config="test"))
    assert one_line(err).startswith("out_dir=results/latest_net_G: results/latest_net_G is a file")
    with pytest.raises(ConfigError) as err:
        compare.run(compare_cfg(compose, photos, photos, tmp_path, f"out={target}/m.json"))
    assert one_line(err).startswith(f"out={target}/m.json: {target} is a file")
    assert snapshot(run, tmp_path) == before


def test_full_disk_while_translating_is_one_line_naming_the_file(compose, run, tmp_path, photos, monkeypatch):
    import errno

    import i2i.engine.translate as translate

    def full(x, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(translate, "save_image", full)
    with pytest.raises(RunDirError) as err:
        run_test(compose(f"ckpt={run}", "data=folder", f"data.root={photos}", f"out_dir={tmp_path / 'out'}",
                         config="test"))
    assert one_line(err).startswith(f"{tmp_path / 'out' / 'fake_B' / 'img_0.png'}: cannot write (No space left")
    assert "or choose another out_dir" in str(err.value)


# ---------------------------------------------------------------------------------------------- B3. typed keys
@pytest.mark.parametrize("override,shown", [
    ("batch_size=0", "batch_size=0: must be an integer >= 1"),
    ("batch_size=-3", "batch_size=-3: must be an integer >= 1"),
    ("batch_size=1.5", "batch_size=1.5: must be an integer >= 1"),
    ("num_images=-1", "num_images=-1: must be null or an integer >= 1"),
    ("size_multiple=0", "size_multiple=0: must be an integer >= 1"),
    ("resize=abc", "resize=abc: must be null or an integer >= 1"),
    ("resize=0", "resize=0: must be null or an integer >= 1"),
    ("metrics=[fid,is]", "metrics=[fid,is]: must be a list of distinct entries of fid, kid, swd, pr"),
    ("device=gpu", "device=gpu: must be auto, cpu, cuda or cuda:<index>"),
])
def test_i2i_test_bad_key_is_one_line_before_the_checkpoint_is_read(compose, tmp_path, photos, override, shown):
    before = snapshot(tmp_path)
    cfg = compose(f"ckpt={tmp_path / 'absent.pt'}", "data=folder", f"data.root={photos}", override, config="test")
    with pytest.raises(ConfigError) as err:  # not CheckpointError: the keys are checked first
        run_test(cfg)
    msg = one_line(err)
    assert msg.startswith(shown) and f" — set e.g. {override.split('=')[0]}=" in msg
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("override,key", [
    ("batch_size=0", "batch_size"), ("num_workers=-1", "num_workers"), ("kid_subsets=0", "kid_subsets"),
    ("kid_subset_size=1", "kid_subset_size"), ("swd_resolution=8", "swd_resolution"), ("pr_k=0", "pr_k"),
    ("metrics=[fid,is]", "metrics"), ("metrics=[]", "metrics"), ("num_threads=0", "num_threads"),
])
def test_i2i_compare_bad_key_is_one_line_before_any_work(compose, tmp_path, photos, override, key):
    cfg = compare_cfg(compose, photos, photos, tmp_path, override, "extractor=inception",
                      f"weights={tmp_path / 'absent.pth'}")  # loading Inception would fail differently
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        compare.run(cfg)
    assert one_line(err).startswith(f"{override}: must be ") and f" — set e.g. {key}=" in str(err.value)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------- B4. channels
@pytest.mark.parametrize("ckpt", ["run", "published"])
def test_channels_that_do_not_fit_the_checkpoint(compose, run, published, tmp_path, photos, ckpt):
    path = run if ckpt == "run" else published
    before = snapshot(run, tmp_path)
    for channels in (4, 1):
        with pytest.raises(ConfigError) as err:
            run_test(compose(f"ckpt={path}", "data=folder", f"data.root={photos}", f"data.channels={channels}",
                             f"out_dir={tmp_path / 'out'}", config="test"))
        msg = one_line(err)
        assert msg.startswith(f"data.channels={channels}: ") and "trained on 3-channel images" in msg
        assert "set data.channels=3" in msg
    assert snapshot(run, tmp_path) == before


# ---------------------------------------------------------------------------------------------- B5. corrupt fakes
@pytest.mark.parametrize("bad", ["truncated.jpg", "x.png"])
def test_corrupt_fake_image_names_the_file(compose, tmp_path, bad):
    real, fake = images(tmp_path / "real", [(16, 16)] * 3), images(tmp_path / "fake", [(16, 16)] * 3, seed=1)
    path = truncated_jpeg(fake / bad) if bad.endswith(".jpg") else fake / bad
    if bad == "x.png":
        path.write_text("this is not a PNG")
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as err:
        compare.run(compare_cfg(compose, fake, real, tmp_path, "use_cache=false"))
    msg = one_line(err)
    assert msg.startswith(f"{path}: cannot decode image") and msg.endswith("remove or replace the file")
    assert snapshot(tmp_path) == before  # no metrics.json


# ---------------------------------------------------------------------------------------------- B6. device=cuda
@NO_CUDA
def test_device_cuda_without_cuda_is_one_line_even_when_everything_is_cached(compose, run, tmp_path, photos):
    compare.run(compare_cfg(compose, photos, photos, tmp_path))  # fills the cache, writes res/metrics.json
    before = snapshot(run, tmp_path)
    with pytest.raises(ConfigError) as err:
        compare.run(compare_cfg(compose, photos, photos, tmp_path, "device=cuda"))
    assert one_line(err).startswith("device=cuda: CUDA is not available") and "device=auto or device=cpu" in str(
        err.value)
    with pytest.raises(ConfigError) as err:
        run_test(compose(f"ckpt={run}", "data=folder", f"data.root={photos}", "device=cuda", config="test"))
    assert one_line(err).startswith("device=cuda: CUDA is not available")
    assert snapshot(run, tmp_path) == before


# ---------------------------------------------------------------------------------------------- B7. no data=
def test_i2i_test_of_a_run_without_data_uses_the_runs_test_split(compose, run, tmp_path):
    out = run_test(compose(f"ckpt={run}", f"out_dir={tmp_path / 'out'}", config="test"))
    test_a = Path(safe_load(run / "ckpt" / "last.pt")["cfg"]["data"]["root"]) / "testA"
    assert sorted(p.stem for p in (out / "fake_B").iterdir()) == sorted(p.stem for p in test_a.glob("*.png"))


def test_published_generator_without_data_root_says_what_to_give(compose, published, tmp_path):
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        run_test(compose(f"ckpt={published}", config="test"))
    msg = one_line(err)
    assert msg.startswith(f"data.root: not set, and {published} stores no dataset")
    assert "data=<dataset>" in msg and "data=folder data.root=<folder of images>" in msg
    assert snapshot(tmp_path) == before


def test_empty_or_missing_image_folder_is_one_line(compose, run, tmp_path):
    empty, real = tmp_path / "empty", images(tmp_path / "real", [(8, 8)] * 2)
    empty.mkdir()
    before = snapshot(run, tmp_path)
    for root, says in ((empty, "no images found — add images or fix data.root"),
                       (tmp_path / "nowhere", "no such image folder — set data.root=")):
        with pytest.raises(DataError) as err:
            run_test(compose(f"ckpt={run}", "data=folder", f"data.root={root}", config="test"))
        assert one_line(err).startswith(f"{root}: {says}")
    with pytest.raises(ValueError) as err:
        compare.run(compare_cfg(compose, empty, real, tmp_path))
    assert one_line(err).startswith(f"{empty}: no images") and "pass a folder that contains images" in str(err.value)
    assert snapshot(run, tmp_path) == before


# ---------------------------------------------------------------------------------------------- B8. not a checkpoint
@pytest.mark.parametrize("content,what", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "it looks like a JPEG image"),
    (b"", "the file is empty"),
    (b"step: 3\nG: weights\n", "it is a text file"),
    (b"<!DOCTYPE html><html>quota exceeded</html>", "it is a text file, perhaps the HTML page of a failed download"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "it looks like a PNG image"),
])
def test_a_non_checkpoint_file_is_named_as_such(compose, tmp_path, photos, content, what):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError) as err:
        safe_load(path)  # what resume= and ckpt= both read through
    assert one_line(err) == (f"{path}: not a PyTorch checkpoint ({what}) — give a file written by torch.save: a "
                             "run's ckpt/*.pt (or the run dir) or a published latest_net_G.pth")
    with pytest.raises(CheckpointError) as err:
        run_test(compose(f"ckpt={path}", "data=folder", f"data.root={photos}", config="test"))
    assert "pickled" not in one_line(err) and f"not a PyTorch checkpoint ({what})" in str(err.value)
    assert snapshot(tmp_path) == before


def test_a_damaged_legacy_pickle_is_not_called_a_payload(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"\x80\x02garbage that is no pickle")
    with pytest.raises(CheckpointError) as err:
        safe_load(path)
    assert one_line(err).startswith(f"{path}: not a readable checkpoint (damaged pickle data)")


# ---------------------------------------------------------------------------------------------- B9. unicode paths
def test_unquoted_non_ascii_override_is_one_line_with_the_quoting_that_works(capsys):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with pytest.raises(SystemExit) as exit_:
        check_overrides(["ckpt=x", "data=folder", "data.root=/tmp/фото"])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("i2i: error: data.root=/tmp/фото: Hydra reads non-ASCII")
    suggestion = lines[0].rsplit(": ", 1)[1]
    assert suggestion == "data.root='\"/tmp/фото\"'"
    override = OverridesParser.create().parse_overrides(shlex.split(suggestion))[0]  # what the shell passes on
    assert override.key_or_group == "data.root" and override.value() == "/tmp/фото"
    check_overrides(["ckpt=x", *shlex.split(suggestion)])  # accepted


# ---------------------------------------------------------------------------------------------- the command line
def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("I2I_DEBUG", None)
    return subprocess.run(list(args), cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


def assert_one_error_line(proc: subprocess.CompletedProcess, start: str) -> None:
    """Exit status 2 and one error line, the last (progress shown before a failure found mid-work may precede it)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if "i2i: error:" in x]
    assert errors == lines[-1:] and lines[-1].startswith(f"i2i: error: {start}"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_i2i_test_bad_inputs_exit_2_with_one_line(run, tmp_path, photos):
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(jpeg)
    before = snapshot(run, tmp_path)
    test = str(BIN / "i2i-test")
    assert_one_error_line(cli(tmp_path, test, f"ckpt={jpeg}", "data=folder", f"data.root={photos}"),
                          f"{jpeg}: not a PyTorch checkpoint (it looks like a JPEG image)")
    assert_one_error_line(cli(tmp_path, test, f"ckpt={run}", "batch_size=0"), "batch_size=0: must be")
    assert_one_error_line(cli(tmp_path, test, f"ckpt={run}", "data=folder", f"data.root={photos}", "data.channels=4"),
                          "data.channels=4: ")
    uni = tmp_path / "фото"
    assert_one_error_line(cli(tmp_path, test, f"ckpt={run}", "data=folder", f"data.root={uni}"),
                          f"data.root={uni}: Hydra reads non-ASCII characters only inside quotes")
    assert snapshot(run, tmp_path) == before
    images(uni, [(5, 4)])
    quoted = cli(tmp_path, test, f"ckpt={run}", "data=folder", f"data.root=\"{uni}\"", f"out_dir={tmp_path / 'o'}")
    assert quoted.returncode == 0 and "translated 1 images" in quoted.stderr, quoted.stderr[-2000:]


@pytest.mark.slow
def test_cli_i2i_compare_bad_inputs_exit_2_with_one_line(tmp_path):
    real, fake = images(tmp_path / "real", [(16, 16)] * 3), images(tmp_path / "fake", [(16, 16)] * 3, seed=1)
    truncated_jpeg(fake / "cut.jpg")
    before = snapshot(real, fake)
    out = tmp_path / "m.json"
    base = [str(BIN / "i2i-compare"), f"real={real}", "extractor=mock", "device=cpu", f"out={out}",
            f"cache_dir={tmp_path / 'cache'}", "kid_subsets=2"]
    assert_one_error_line(cli(tmp_path, *base, f"fake={fake}"), f"{fake / 'cut.jpg'}: cannot decode image")
    assert_one_error_line(cli(tmp_path, *base, f"fake={real}", "pr_k=0"), "pr_k=0: must be an integer >= 1")
    assert_one_error_line(cli(tmp_path, *base, f"fake={tmp_path / 'none'}"), f"fake={tmp_path / 'none'}: must be")
    if not torch.cuda.is_available():
        assert_one_error_line(cli(tmp_path, *base, f"fake={real}", "device=cuda"), "device=cuda: CUDA is not")
    assert snapshot(real, fake) == before and not out.exists()
