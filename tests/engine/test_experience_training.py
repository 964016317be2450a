"""What a researcher sees of a long run: the start-up banner, the progress bar and timing, labelled sample grids
with their index page, and epoch snapshots that fit a disk."""

from __future__ import annotations

import json
import re
import time
from typing import ClassVar

import pytest
import torch
from PIL import Image

from i2i.build import ConfigError, build_trainer, check_config, load_generator
from i2i.cli.train import run_training
from i2i.engine import banner, checkpointing, loop
from i2i.engine.state import (
    FORMAT,
    INFERENCE_KEYS,
    TRAINING_KEYS,
    CheckpointError,
    inference_state,
    prune_epoch_snapshots,
    safe_load,
)
from i2i.utils.gallery import samples_page, write_samples_index
from i2i.utils.images import label_band, make_grid

#: one image per domain: one step per epoch, so epochs are cheap
ONE_PER_EPOCH = ("data.max_dataset_size=1", "train.ckpt_every=0", "train.sample_every=0", "train.log_every=1")


def _smoke(compose, *overrides: str):
    return compose("experiment=cut_horse2zebra", "debug=smoke", *overrides)


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------- 1. banner
def test_banner_states_the_real_dataset_schedule_batch_and_parameter_counts(compose):
    cfg = _smoke(compose, "train.max_steps=3", "train.n_epochs=2", "train.n_epochs_decay=3", "train.warmup_epochs=1")
    trainer = build_trainer(cfg, cfg.run_dir)
    text = "\n".join(banner.banner_lines(trainer, "cpu"))
    ds = trainer.dataset
    assert f"|A| {len(ds.A_paths)}, |B| {len(ds.B_paths)} (train): {trainer.steps_per_epoch} steps/epoch" in text
    full = 5 * trainer.steps_per_epoch
    assert f"2 + 3 epochs (warmup 1) = {full} steps; max_steps 3: {trainer.total_steps} steps" in text
    assert trainer.total_steps == 3
    assert "batch     1 x 1 process(es) = 1" in text
    assert f"run dir   {trainer.run_dir}" in text
    heads = _numel(trainer.method.heads)
    assert f"G {_numel(trainer.G):,}, D {_numel(trainer.D):,}, heads {heads:,}" in text and heads > 0
    assert "device    cpu" in text and "amp none" in text
    assert "eval      off" in text
    assert "WARNING" not in text
    keys = [line.split()[0] for line in text.splitlines()[1:]]
    assert keys == ["device", "data", "schedule", "batch", "run", "params", "eval", "ckpt"]
    values_at = {line.index(line.split(maxsplit=1)[1]) for line in text.splitlines()[1:] if line.split()[0] != "run"}
    assert len(values_at) == 1  # values aligned in one column


def test_banner_names_eval_cadence_and_epoch_snapshot_policy(compose):
    cfg = _smoke(compose, "eval.every_epochs=2", "eval.metrics=[fid,kid]", "eval.extractor=mock",
                 "train.save_epoch_every=3", "train.keep_last_epochs=4")
    text = "\n".join(banner.banner_lines(build_trainer(cfg, cfg.run_dir), "cpu"))
    assert "fid, kid every 2 epoch(s)" in text
    assert "epoch_XXXX.pt every 3 epoch(s) (inference, keep the last 4)" in text


def test_cpu_fallback_of_device_auto_with_a_cuda_torch_is_one_loud_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    line = banner.cuda_fallback_warning("auto", torch.device("cpu"))
    assert line is not None and "\n" not in line
    assert line.startswith("i2i: WARNING: device=auto") and "CUDA 12.1" in line and "device=cpu" in line
    assert banner.cuda_fallback_warning("cpu", torch.device("cpu")) is None  # asked for on purpose
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU-only build of torch: nothing to warn about
    assert banner.cuda_fallback_warning("auto", torch.device("cpu")) is None


def test_banner_puts_the_fallback_warning_first(compose, monkeypatch):
    cfg = _smoke(compose)
    trainer = build_trainer(cfg, cfg.run_dir)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    lines = banner.banner_lines(trainer, "auto")
    assert lines[0].startswith("i2i: WARNING: device=auto") and lines[1].startswith("i2i: training")
    assert not any("WARNING" in line for line in banner.banner_lines(trainer, "cpu"))


# ---------------------------------------------------------------------------------------------- 2. timing
class FakeClock:
    """``time.perf_counter`` replaced: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingBar(loop.tqdm):
    bars: ClassVar[list] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first_start_t = self.start_t
        RecordingBar.bars.append(self)


def test_evaluation_and_checkpoint_time_is_left_out_of_sec_per_iter_and_the_bar(compose, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    RecordingBar.bars = []
    monkeypatch.setattr(loop, "tqdm", RecordingBar)
    real_save = checkpointing.atomic_torch_save

    def slow_save(obj, path):  # every checkpoint write "takes" 50 s
        clock.now += 50.0
        real_save(obj, path)

    monkeypatch.setattr(checkpointing, "atomic_torch_save", slow_save)
    cfg = _smoke(compose, *ONE_PER_EPOCH, "train.max_steps=4", "train.log_every=2", "train.save_epoch_every=1")
    trainer = build_trainer(cfg, cfg.run_dir)
    trainer.run_dir.mkdir(parents=True)

    def evaluate(tr, epoch):  # an evaluation "takes" 100 s
        clock.now += 100.0
        return {"fid": 10.0 - epoch}

    trainer.evaluate, trainer.cfg.eval_every_epochs = evaluate, 1
    build = trainer.build_loader

    def loader(ds, epoch, start):  # a training step "takes" 1 s
        for batch in build(ds, epoch, start):
            clock.now += 1.0
            yield batch

    trainer.build_loader = loader
    trainer.fit()
    records = [json.loads(line) for line in (trainer.run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert [r["Timing/sec_per_iter"] for r in records] == [1.0, 1.0]  # 2 steps of 1 s between logs
    # after each epoch: epoch snapshot (50) + evaluation (100) + best_fid.pt (50); the log at step 2 comes before
    # the end of epoch 2, so it sees epoch 1's, the log at step 4 those of epochs 2 and 3
    assert [r["Timing/excluded_sec"] for r in records] == [200.0, 400.0]
    bar = RecordingBar.bars[-1]
    assert bar.start_t - bar.first_start_t == pytest.approx(800.0)  # four epochs' pauses moved the bar's clock
    assert bar.desc.endswith("ep 4/4")


# ---------------------------------------------------------------------------------------------- 3. grids, index
def _columns(h: int = 24, w: int = 40, rows: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {name: torch.rand(rows, 3, h, w, generator=g) * 2 - 1 for name in ("real_A", "fake_B", "real_B")}


def test_column_labels_add_a_band_above_the_grid_with_the_names_drawn():
    cols = _columns()
    plain, labelled = make_grid(cols), make_grid(cols, labels=True)
    band_h = labelled.shape[1] - plain.shape[1]
    assert plain.shape == (3, 2 * 24, 3 * 40) and band_h > 0 and labelled.shape[2] == plain.shape[2]
    assert torch.equal(labelled[:, band_h:], plain)  # the images are untouched below the band
    band = labelled[:, :band_h]
    assert band.min() == -1 and band.max() > 0  # text on a black band
    for i in range(3):  # every column has its label
        assert (band[:, :, i * 40:(i + 1) * 40] > 0).any()
    other = label_band(["real_A", "idt_B", "real_B"], 40)
    assert other.shape == band.shape and not torch.equal(other, band)  # the pixels spell the names


def test_index_lists_every_grid_newest_first_with_its_step(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    for step in (2, 10, 4):
        Image.new("RGB", (8, 8)).save(samples / f"step_{step:08d}.png")
    (samples / "notes.png").write_bytes(b"")  # not a grid of the loop: not listed
    path = write_samples_index(samples, "my run #1 <b>", (10, "ckpt/last.pt"))
    page = path.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs == ["step_00000010.png", "step_00000004.png", "step_00000002.png"]
    assert re.findall(r"<h3>step (\d+)</h3>", page) == ["10", "4", "2"]
    assert "<title>my run #1 &lt;b&gt;: samples</title>" in page
    assert 'href="../ckpt/last.pt"' in page and "at step 10" in page
    assert "max-width" in page
    assert not list(samples.glob(".*.tmp"))  # written through a temp file, renamed


def test_index_url_encodes_file_names():
    page = samples_page("r", [(3, "step #3 a.png")], (3, "ckpt/a #b.pt"))
    assert 'src="step%20%233%20a.png"' in page and 'href="step%20%233%20a.png"' in page
    assert 'href="../ckpt/a%20%23b.pt"' in page


# ---------------------------------------------------------------------------------------------- 4. checkpoints
def test_inference_state_keeps_what_inference_reads_and_nothing_else():
    w = torch.zeros(2)
    full = {"format": FORMAT, "version": 1, "step": 4, "epoch": 2, "G": {"a": w}, "D": {"d": w}, "cfg": {},
            "method": {"heads.0.weight": w}, "rng": {}, "best": {}, "opt_G": {}, "opt_D": {}, "opt_F": {}}
    assert set(inference_state(full)) == set(INFERENCE_KEYS) == {"format", "step", "epoch", "G", "cfg"}
    assert set(inference_state(full, {}, with_D=True)) == set(INFERENCE_KEYS)  # no feedback: no method, no D
    out = inference_state(full, {"feedback.block.w": w}, with_D=True)
    assert set(out) == {*INFERENCE_KEYS, "method", "D"} and set(out["method"]) == {"feedback.block.w"}
    out = inference_state(full, {"D_A.y": w, "feedback.block.w": w})
    assert set(out) == {*INFERENCE_KEYS, "method"} and set(out["method"]) == {"D_A.y", "feedback.block.w"}


@pytest.mark.parametrize("cyclegan", [False, True])
def test_inference_snapshot_keeps_the_methods_inference_state_and_the_placeholder_source(tmp_path, cyclegan):
    """``Method.inference_state_dict`` decides what of the method a snapshot keeps (CycleGAN: also ``D_A``, its
    placeholder source); a one-sided method's placeholder source is the loop's D, which is kept too."""
    from i2i.losses.gan import GANLoss
    from i2i.methods.base import Method
    from i2i.methods.cyclegan import CycleGAN
    from i2i.models.discriminators import PatchGAN
    from i2i.models.generators import ResnetGenerator

    G, D = ResnetGenerator(ngf=4, n_blocks=2), PatchGAN(ndf=4)
    method = CycleGAN(ResnetGenerator(ngf=4, n_blocks=2), PatchGAN(ndf=4)) if cyclegan else Method()
    cfg = loop.LoopConfig(n_epochs=1, n_epochs_decay=0, tensorboard=False)
    trainer = loop.Trainer(loop.Networks(G, D, method, GANLoss("lsgan")), [None], lambda *a: [], cfg, tmp_path)
    assert method.inference_state_dict() == {}
    assert set(trainer.checkpoints.inference_state_dict(trainer)) == set(INFERENCE_KEYS)  # no feedback: G only
    method.feedback = torch.nn.Linear(2, 2)  # stands in for a transfer block
    snap = trainer.checkpoints.inference_state_dict(trainer)
    feedback = {"feedback.weight", "feedback.bias"}
    if cyclegan:
        assert set(snap) == {*INFERENCE_KEYS, "method"}
        assert set(snap["method"]) == feedback | {f"D_A.{k}" for k in method.D_A.state_dict()}
    else:
        assert set(snap) == {*INFERENCE_KEYS, "method", "D"} and set(snap["method"]) == feedback
        assert snap["D"].keys() == D.state_dict().keys()


def test_prune_keeps_the_newest_epoch_snapshots_only(tmp_path):
    for name in ("epoch_0001.pt", "epoch_0002.pt", "epoch_0010.pt", "epoch_0003.pt", "last.pt", "best_fid.pt",
                 "epoch_0004.pt.bak", ".epoch_0005.pt.x.tmp"):
        (tmp_path / name).write_bytes(b"x")
    removed = prune_epoch_snapshots(tmp_path, 2)
    assert [p.name for p in removed] == ["epoch_0001.pt", "epoch_0002.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".epoch_0005.pt.x.tmp", "best_fid.pt", "epoch_0003.pt", "epoch_0004.pt.bak", "epoch_0010.pt", "last.pt"]
    assert prune_epoch_snapshots(tmp_path, None) == []


def test_new_keys_are_checked_by_the_schema(compose):
    with pytest.raises(ConfigError, match=r"train\.keep_last_epochs=0: must be null or an integer >= 1"):
        check_config(_smoke(compose, "train.keep_last_epochs=0"))
    with pytest.raises(ConfigError, match=r"train\.epoch_snapshots=half: must be one of inference, full"):
        check_config(_smoke(compose, "train.epoch_snapshots=half"))
    check_config(_smoke(compose, "train.keep_last_epochs=3", "train.epoch_snapshots=full"))


@pytest.mark.slow
def test_inference_snapshots_are_small_bounded_loadable_and_refused_by_resume(compose, capsys):
    settings = (*ONE_PER_EPOCH, "train.save_epoch_every=1", "train.keep_last_epochs=2", "train.sample_every=1")
    trainer = run_training(_smoke(compose, *settings, "train.max_steps=4"))
    run = trainer.run_dir
    err = capsys.readouterr().err
    assert f"i2i: training {run.name}" in err and "(inference, keep the last 2)" in err  # the banner, on stderr
    ckpt = run / "ckpt"
    assert sorted(p.name for p in ckpt.glob("epoch_*.pt")) == ["epoch_0003.pt", "epoch_0004.pt"]
    snap, last = safe_load(ckpt / "epoch_0004.pt"), safe_load(ckpt / "last.pt")
    assert set(snap) == {"format", "step", "epoch", "G", "cfg"}
    assert set(TRAINING_KEYS) <= set(last)
    assert (ckpt / "epoch_0004.pt").stat().st_size < (ckpt / "last.pt").stat().st_size / 2
    G, info = load_generator(run, "epoch_0004.pt")  # what i2i-test ckpt=<run> which=... and i2i export read
    assert info["step"] == 4 and info["epoch"] == snap["epoch"]
    for k, v in trainer.G.state_dict().items():
        assert torch.equal(G.state_dict()[k], v), k
    from i2i.export import run_export

    out = run_export({"ckpt": str(run), "which": "epoch_0004.pt", "format": "published", "check": False})
    assert out.name == "epoch_0004_net_G.pth" and set(safe_load(out)) == set(G.state_dict())
    # labelled grids and the index page
    grid = Image.open(run / "samples" / "step_00000004.png")
    band_h = label_band(["real_A"], 32).shape[1]
    assert grid.size == (4 * 32, band_h + 32)  # real_A | fake_B | real_B | idt_B under their names, one row
    page = (run / "samples" / "index.html").read_text()
    assert re.findall(r'<img src="step_(\d+)\.png"', page) == ["00000004", "00000003", "00000002", "00000001"]
    # a resume from an inference snapshot: one line, nothing touched
    before = (ckpt / "last.pt").read_bytes()
    with pytest.raises(CheckpointError) as e:
        run_training(_smoke(compose, *settings, "train.max_steps=6", f"resume={ckpt / 'epoch_0004.pt'}"))
    assert "\n" not in str(e.value) and "holds no training state" in str(e.value)
    assert "resume=auto" in str(e.value) and "train.epoch_snapshots=full" in str(e.value)
    assert (ckpt / "last.pt").read_bytes() == before
    with pytest.raises(CheckpointError, match="holds no training state"):
        trainer.resume(ckpt / "epoch_0004.pt")


@pytest.mark.slow
def test_full_epoch_snapshots_resume(compose):
    common = (*ONE_PER_EPOCH, "train.save_epoch_every=1", "train.epoch_snapshots=full")
    first = run_training(_smoke(compose, *common, "train.max_steps=2"))
    snap = safe_load(first.run_dir / "ckpt" / "epoch_0001.pt")
    assert set(TRAINING_KEYS) <= set(snap) and snap["step"] == 1
    resumed = run_training(_smoke(compose, *common, "train.max_steps=3",
                                  f"resume={first.run_dir / 'ckpt' / 'epoch_0001.pt'}"))
    assert resumed.step == 3
    assert sorted(p.name for p in (first.run_dir / "ckpt").glob("epoch_*.pt")) == [
        "epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"]


@pytest.mark.slow
def test_feedback_inference_snapshot_serves_the_discriminator_placeholder(compose):
    from omegaconf import OmegaConf

    from i2i.build import build_test_feedback

    cfg = compose("experiment=cut_feedback_horse2zebra", "debug=smoke", *ONE_PER_EPOCH, "train.max_steps=1",
                  "train.save_epoch_every=1")
    trainer = run_training(cfg)
    path = trainer.run_dir / "ckpt" / "epoch_0001.pt"
    snap = safe_load(path)
    assert set(snap) == {*INFERENCE_KEYS, "method", "D"}
    assert snap["method"] and all(k.startswith("feedback.") for k in snap["method"])
    G, info = load_generator(path)
    prepare = build_test_feedback(OmegaConf.create({"feedback_placeholder": "discriminator"}), info, G,
                                  torch.device("cpu"))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert G(prepare(x, None)).shape == x.shape
