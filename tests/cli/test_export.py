"""``i2i export``: every format computes what the generator computes (two image sizes, dynamic batch), a published
file round-trips through ``load_generator``, bad input is one line, and ``download_pretrained.sh`` unpacks the
published archive layout into files ``i2i-test`` loads."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from i2i.build import ConfigError, load_generator
from i2i.cli.train import run_training
from i2i.engine.state import CheckpointError
from i2i.export import run_export
from i2i.models.generators import ResnetGenerator

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# init_gain=0.5: outputs spread over (-1, 1), std 0.3 (the published 0.02 keeps them within ±0.1 at one step,
# which would make an absolute tolerance meaningless)
SMOKE = ["experiment=cut_horse2zebra", "debug=smoke", "train.max_steps=1", "train.sample_every=0",
         "generator.init_gain=0.5"]
#: (batch, H, W): two image sizes that differ from the size export traces at (64x64), and two batch sizes
SHAPES = [(1, 32, 32), (2, 40, 48)]
TOL = 1e-5


def _compose(tmp: Path, datasets: Path, *overrides: str, config: str = "train"):
    """The ``compose`` fixture of conftest.py, for a fixture shared by this module's tests."""
    from hydra import compose, initialize_config_dir

    base = [f"paths.datasets_dir={datasets}", f"paths.checkpoints_dir={tmp / 'checkpoints'}",
            f"paths.cache_dir={tmp / 'cache'}"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name=config, overrides=base + list(overrides))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, datasets_dir) -> Path:
    """A one-step smoke run of CUT (tiny anti-aliased ResNet-9 generator)."""
    tmp = tmp_path_factory.mktemp("export_run")
    return Path(run_training(_compose(tmp, datasets_dir, *SMOKE, "name=tiny")).run_dir)


@pytest.fixture(scope="module")
def exported(run_dir) -> dict[str, tuple[Path, str, str]]:
    """format -> (the file ``i2i export`` wrote for ``run_dir`` with its defaults, its stdout, its stderr)."""
    out = {}
    for fmt in ("torchscript", "onnx", "published"):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            path = run_export({"ckpt": str(run_dir), "format": fmt})
        out[fmt] = path, stdout.getvalue(), stderr.getvalue()
    return out


def _inputs(channels: int = 3):
    gen = torch.Generator().manual_seed(7)
    return [torch.rand(b, channels, h, w, generator=gen) * 2 - 1 for b, h, w in SHAPES]


def _runner(path: Path, fmt: str):
    """Run the exported file with the format's own runtime, independently of i2i.export."""
    if fmt == "torchscript":
        module = torch.jit.load(str(path)).eval()
        return module
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    G, info = load_generator(path)
    assert info["source"] == "published"
    return G


def _max_diffs(run, G, xs) -> list[float]:
    out = []
    with torch.no_grad():
        for x in xs:
            y, ref = run(x), G(x)
            assert y.shape == ref.shape == (x.shape[0], 3, *x.shape[-2:])
            out.append(float((y - ref).abs().max()))
    return out


@pytest.mark.parametrize("fmt,name", [("torchscript", "G.ts"), ("onnx", "G.onnx"), ("published", "latest_net_G.pth")])
def test_each_format_computes_what_the_generator_computes_at_two_sizes(run_dir, exported, fmt, name):
    path, stdout, stderr = exported[fmt]
    assert path == run_dir / "export" / name and path.is_file()
    assert stdout.strip() == str(path)  # the written file, alone on stdout
    assert "max |exported - generator| = " in stderr and " at 1x64x64, " in stderr  # the built-in check ran
    G, _ = load_generator(run_dir)
    with torch.no_grad():
        assert G(_inputs()[1]).std() > 0.2  # a tolerance of 1e-5 is small against these outputs
    diffs = _max_diffs(_runner(path, fmt), G, _inputs())
    print(f"{fmt}: max abs difference {dict(zip(SHAPES, diffs))}", file=sys.stderr)
    assert max(diffs) <= TOL, diffs


def test_published_file_round_trips(run_dir, tmp_path):
    G, _ = load_generator(run_dir)
    path = run_export({"ckpt": str(run_dir / "ckpt" / "last.pt"), "format": "published", "out": str(tmp_path) + "/",
                       "check": False})
    assert path == tmp_path / "latest_net_G.pth"
    state = torch.load(path, weights_only=True)
    assert list(state) == list(G.state_dict()) and all(torch.is_tensor(v) for v in state.values())
    G2, info = load_generator(path)
    assert info["source"] == "published" and info["generator"]["n_blocks"] == G.n_blocks
    assert max(_max_diffs(G2, G, _inputs())) == 0.0
    # the published file itself exports again: next to it, under export/, named after it
    again = run_export({"ckpt": str(path), "format": "torchscript", "check": False})
    assert again == tmp_path / "export" / "latest_net_G.ts"
    assert max(_max_diffs(torch.jit.load(str(again)), G, _inputs())) <= TOL


def test_a_published_generator_of_another_architecture_and_channels_exports(tmp_path):
    torch.manual_seed(0)
    G = ResnetGenerator(input_nc=1, output_nc=3, ngf=4, n_blocks=2, antialias=False, antialias_up=False).eval()
    torch.save(G.state_dict(), tmp_path / "latest_net_G.pth")
    path = run_export({"ckpt": str(tmp_path / "latest_net_G.pth"), "format": "onnx", "check": False})
    assert max(_max_diffs(_runner(path, "onnx"), G, _inputs(channels=1))) <= TOL


def test_a_one_stage_generator_exports_but_not_to_the_published_layout(tmp_path):
    torch.manual_seed(0)
    G = ResnetGenerator(ngf=4, n_blocks=1, n_downsampling=1, init_type="normal", init_gain=0.5).eval()
    torch.save(G.state_dict(), tmp_path / "G.pth")
    assert load_generator(tmp_path / "G.pth")[0].n_downsampling == 1
    path = run_export({"ckpt": str(tmp_path / "G.pth"), "format": "torchscript", "check": False})
    assert max(_max_diffs(_runner(path, "torchscript"), G, _inputs())) <= TOL
    with pytest.raises(ConfigError, match=r"^format=published: the generator has n_downsampling=1 and the published "
                                          r"ResnetGenerator always has 2 — export format=torchscript or onnx instead$"):
        run_export({"ckpt": str(tmp_path / "G.pth"), "format": "published", "out": str(tmp_path / "p.pth")})
    assert not (tmp_path / "p.pth").exists()


def test_onnx_axes_are_dynamic_and_files_say_what_they_hold(exported):
    import onnx

    model = onnx.load(str(exported["onnx"][0]))
    for value in (*model.graph.input, *model.graph.output):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"], (value.name, dims)
    assert [v.name for v in model.graph.input] == ["image"] and [v.name for v in model.graph.output] == ["translated"]
    meta = json.loads({p.key: p.value for p in model.metadata_props}["i2i"])
    assert meta["source"] == "i2i" and meta["step"] == 1 and "multiples of 4" in meta["input"]
    extra = {"i2i.json": ""}
    torch.jit.load(str(exported["torchscript"][0]), _extra_files=extra)
    assert json.loads(extra["i2i.json"])["generator"]["ngf"] == 4


@pytest.mark.parametrize("fmt,message", [
    ("tflite", "format='tflite' is not an export format — use torchscript, onnx or published"),
    ("???", "format: missing — use format=torchscript, format=onnx or format=published"),
    (None, "format: missing"),
])
def test_a_bad_format_is_one_line_naming_format(run_dir, fmt, message):
    with pytest.raises(ConfigError) as err:
        run_export({"ckpt": str(run_dir), "format": fmt})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not (run_dir / "export" / "G.tflite").exists()


@pytest.mark.parametrize("opset", [25, 5, "17", True])
def test_a_bad_opset_is_one_line_naming_opset(run_dir, opset):
    with pytest.raises(ConfigError) as err:
        run_export({"ckpt": str(run_dir), "format": "onnx", "opset": opset})
    assert str(err.value).startswith(f"opset={opset!r} cannot be written — use an opset from 11 to ")


def test_bad_ckpt_and_out_are_one_line(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match="nowhere.pth: no such checkpoint file"):
        run_export({"ckpt": str(tmp_path / "nowhere.pth"), "format": "torchscript"})
    with pytest.raises(ConfigError, match="^ckpt: missing"):
        run_export({"ckpt": "???", "format": "torchscript"})
    published = run_export({"ckpt": str(run_dir), "format": "published", "out": str(tmp_path / "p.pth"),
                            "check": False})
    with pytest.raises(ConfigError, match="is the checkpoint being exported"):
        run_export({"ckpt": str(published), "format": "published", "out": str(published)})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=f"^out={blocker}/G.ts: cannot write"):
        run_export({"ckpt": str(run_dir), "format": "torchscript", "out": str(blocker / "G.ts")})


def test_without_onnx_torchscript_and_published_work_and_onnx_is_one_line(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.delitem(sys.modules, "i2i.export")  # imported again below, without onnx
    export = importlib.import_module("i2i.export")
    with pytest.raises(ConfigError) as err:
        export.run_export({"ckpt": str(run_dir), "format": "onnx", "out": str(tmp_path / "g.onnx")})
    assert str(err.value).startswith("format=onnx needs the onnx package — pip install onnx")
    assert not (tmp_path / "g.onnx").exists()
    for fmt in ("torchscript", "published"):
        assert export.run_export({"ckpt": str(run_dir), "format": fmt, "out": str(tmp_path) + "/"}).is_file()


def test_a_feedback_run_is_refused_with_one_line(tmp_path_factory, datasets_dir):
    tmp = tmp_path_factory.mktemp("export_feedback")
    run = Path(run_training(_compose(tmp, datasets_dir, "experiment=cut_feedback_horse2zebra", "debug=smoke",
                                     "feedback=pha_alpha", "train.max_steps=1", "train.sample_every=0")).run_dir)
    assert load_generator(run)[0].model[1].in_channels == 4  # image + attention map
    for fmt in ("torchscript", "onnx", "published"):
        with pytest.raises(CheckpointError) as err:
            run_export({"ckpt": str(run), "format": fmt})
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"{run / 'ckpt' / 'last.pt'}: trained with attention feedback "
                                                  "(feedback.injection=alpha)")
        assert msg.endswith(f"— translate with i2i-test ckpt={run / 'ckpt' / 'last.pt'}")
    assert not (run / "export").exists()


# --------------------------------------------------------------------------- scripts/download_pretrained.sh
def _published_archive(folder: Path, names: list[str]) -> dict[str, ResnetGenerator]:
    """``folder/pretrained_models.tar`` laid out as the published one: checkpoints/<name>/latest_net_{G,D}.pth."""
    gens = {}
    with tarfile.open(folder / "pretrained_models.tar", "w") as tar:
        for i, name in enumerate(names):
            torch.manual_seed(i)
            gens[name] = G = ResnetGenerator(ngf=4, n_blocks=2).eval()
            src = folder / "src" / "checkpoints" / name
            src.mkdir(parents=True)
            torch.save(G.state_dict(), src / "latest_net_G.pth")
            torch.save({"w": torch.zeros(1)}, src / "latest_net_D.pth")
            (src / "train_opt.txt").write_text(f"name: {name}\n")
            tar.add(src.parent.parent / "checkpoints", arcname="checkpoints")
    return gens


def _download(*args: str, base: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "I2I_PRETRAINED_URL_BASE": base}
    return subprocess.run(["bash", str(REPO / "scripts" / "download_pretrained.sh"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_download_pretrained_unpacks_the_published_layout(tmp_path):
    names = ["horse2zebra_cut_pretrained", "cat2dog_fastcut_pretrained"]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    gens = _published_archive(mirror, names)
    dest = tmp_path / "ckpts"
    proc = _download(names[0], str(dest), base=mirror.as_uri(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (dest / names[0]).iterdir()) == ["latest_net_D.pth", "latest_net_G.pth",
                                                                   "train_opt.txt"]
    assert not (dest / names[1]).exists() and [p.name for p in dest.iterdir()] == [names[0]]  # no temp left
    G, info = load_generator(dest / names[0] / "latest_net_G.pth")
    x = _inputs()[1]
    with torch.no_grad():
        assert info["source"] == "published" and torch.equal(G(x), gens[names[0]](x))
    again = _download(names[0], str(dest), base=mirror.as_uri(), cwd=tmp_path)
    assert again.returncode == 0 and "already exists" in again.stdout


def test_download_pretrained_refuses_an_unknown_name_and_a_bad_archive(tmp_path):
    proc = _download("horse2zebra_pretrained", base="file:///nowhere", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("download_pretrained.sh: error: unknown model 'horse2zebra_pretrained' — use one "
                                  "of: horse2zebra_cut_pretrained, horse2zebra_fastcut_pretrained, ")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _published_archive(mirror, ["cat2dog_cut_pretrained"])
    proc = _download("horse2zebra_cut_pretrained", str(tmp_path / "d"), base=mirror.as_uri(), cwd=tmp_path)
    assert proc.returncode == 1 and "has no horse2zebra_cut_pretrained/latest_net_G.pth" in proc.stderr
    assert list((tmp_path / "d").iterdir()) == []


# --------------------------------------------------------------------------- the command line
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_i2i_export_command_line(run_dir, tmp_path):
    proc = _cli(str(BIN / "i2i"), "export", f"ckpt={run_dir}", "format=onnx", f"out={tmp_path}/", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "G.onnx") and "max |exported - generator|" in proc.stderr
    proc = _cli(str(BIN / "i2i-export"), f"ckpt={run_dir}", "format=tflite", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "i2i: error: format='tflite' is not an export format — use torchscript, onnx or published"]
    proc = _cli(sys.executable, "-m", "i2i", "export", "format=torchscript", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("i2i: error: ckpt: missing")
