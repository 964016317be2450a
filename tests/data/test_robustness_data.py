"""Bad data through the real entry points (build -> run_training, the `train` CLI): one line naming the path and
the fix before training starts, documented conversions for unusual image modes, and files that become
unreadable mid-run handled by ``data.on_error=raise|skip``. (Unit-level checks live in tests/data/test_data.py.)"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import random_rgb, spoil_after_validation, unpaired_root
from i2i.cli.train import run_training
from i2i.data.errors import DataError

BIN = Path(sys.executable).parent


def _cfg(compose, root: Path, *extra: str):
    return compose("experiment=cut_horse2zebra", "debug=smoke", "data=unpaired", f"data.root={root}",
                   "train.sample_every=0", *extra)


def _truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(random_rgb(7)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[:300])  # header intact (passes the up-front check), body cut


def _corrupt(root: Path) -> tuple[Path, str]:
    (root / "trainA" / "01.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return root / "trainA" / "01.png", "remove or replace the file"


def _not_image(root: Path) -> tuple[Path, str]:
    (root / "trainB" / "notes.jpg").write_text("this is text")
    return root / "trainB" / "notes.jpg", "not an image file"


def _empty_b(root: Path) -> tuple[Path, str]:
    for p in (root / "trainB").iterdir():
        p.unlink()
    return root / "trainB", "add images or fix data.root"


def _missing_a(root: Path) -> tuple[Path, str]:
    for p in (root / "trainA").iterdir():
        p.unlink()
    (root / "trainA").rmdir()
    return root / "trainA", "data.root must contain trainA/"


def _flat_layout(root: Path) -> tuple[Path, str]:
    for d in ("trainA", "trainB"):
        for p in (root / d).iterdir():
            p.rename(root / f"{d}_{p.name}")
        (root / d).rmdir()
    return root, "put domain A in"


def _too_small(root: Path) -> tuple[Path, str]:
    Image.fromarray(random_rgb(9, size=20)).save(root / "trainB" / "02.png")
    return root / "trainB" / "02.png", "smaller than 32"


@pytest.mark.parametrize("make_bad,extra", [
    (_corrupt, []), (_not_image, []), (_empty_b, []), (_missing_a, []), (_flat_layout, []),
    (_too_small, ["data.preprocess=crop"]),
])
def test_bad_dataset_is_one_line_naming_path_and_fix_before_training(compose, tmp_path, make_bad, extra):
    root = unpaired_root(tmp_path)
    path, fix = make_bad(root)
    cfg = _cfg(compose, root, *extra)
    with pytest.raises(DataError) as err:
        run_training(cfg)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and fix in msg and " — " in msg, msg
    assert not Path(cfg.run_dir).exists()  # nothing started


@pytest.mark.slow  # a subprocess or a long run
def test_bad_dataset_on_the_command_line_is_one_line_exit_2(tmp_path):
    root = unpaired_root(tmp_path)
    bad, _ = _corrupt(root)
    proc = subprocess.run([str(BIN / "train"), "experiment=cut_horse2zebra", "debug=smoke", "data=unpaired",
                           f"data.root={root}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"i2i: error: {bad}: cannot decode image")


def test_unusual_modes_are_converted_and_train(compose, tmp_path):
    """Grayscale, grayscale+alpha, RGBA, palette, CMYK and 16-bit files train as RGB (images.load_image documents
    each conversion)."""
    root = unpaired_root(tmp_path)
    a = root / "trainA"
    Image.fromarray(random_rgb(1)[..., 0]).save(a / "01.png")  # L
    Image.fromarray(random_rgb(2)).convert("RGBA").save(a / "02.png")
    Image.fromarray(random_rgb(3)).convert("P").save(a / "03.png")
    Image.fromarray(random_rgb(4)).convert("CMYK").save(a / "04.jpg")
    Image.fromarray(random_rgb(5)[..., 0].astype(np.uint16) * 257).save(b := root / "trainB" / "01.png")  # 16-bit
    assert Image.open(b).mode.startswith("I")
    trainer = run_training(_cfg(compose, root, "train.max_steps=6"))
    assert trainer.step == 6 and trainer.dataset.skipped == 0


def _deleted(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("spoil", [_deleted, _truncated_jpeg], ids=["deleted", "truncated"])
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_file_unreadable_mid_run(compose, tmp_path, monkeypatch, spoil, on_error, capsys):
    root = unpaired_root(tmp_path)
    victim = root / "trainA" / "02.png"
    spoil_after_validation(monkeypatch, lambda: spoil(victim))  # the file goes bad after the up-front checks
    cfg = _cfg(compose, root, "train.max_steps=4", f"data.on_error={on_error}")  # one epoch: every A image
    if on_error == "raise":
        with pytest.raises(DataError) as err:
            run_training(cfg)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"{victim}: ") and " — " in msg
        return
    with pytest.warns(UserWarning, match=f"skipping {victim}"):
        trainer = run_training(cfg)
    assert trainer.step == 4 and trainer.dataset.skipped == 1
