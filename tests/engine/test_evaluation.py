"""Metrics wired into training (every N epochs, best checkpoints) and into i2i-test (metrics.json)."""

from __future__ import annotations

import json

import pytest

from i2i.build import ConfigError
from i2i.cli.test import run_test
from i2i.cli.train import run_training

MOCK = "eval.extractor=mock"  # a fixed random projection instead of Inception: tests never need the weights


def test_training_evaluates_every_epoch_logs_and_keeps_the_best(compose, capsys):
    cfg = compose("experiment=cut_horse2zebra", "debug=smoke", "train.max_steps=8", "eval.every_epochs=1",
                  "eval.metrics=[fid,kid,swd]", MOCK)
    trainer = run_training(cfg)
    run = trainer.run_dir
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # 4 steps per epoch (4 synthetic images, batch 1)
    for r in records:
        assert {"Metrics/fid", "Metrics/kid", "Metrics/swd"} <= set(r)
    for name in ("fid", "kid", "swd"):
        values = [r[f"Metrics/{name}"] for r in records]
        best = trainer.best[name]
        assert best["value"] == min(values) and best["epoch"] == 1 + values.index(min(values))
        assert (run / "ckpt" / f"best_{name}.pt").is_file()
    assert "best" in capsys.readouterr().err  # the end of the run reports last and best with epochs


def test_i2i_test_writes_metrics_json_against_the_test_split(compose):
    train_cfg = compose("experiment=cut_horse2zebra", "debug=smoke")
    run_training(train_cfg)
    cfg = compose(f"ckpt={train_cfg.run_dir}", "data=synthetic", "data.synthetic.size=36", "metrics=[fid,kid,swd]",
                  "extractor=mock", config="test")
    out = run_test(cfg)
    result = json.loads((out / "metrics.json").read_text())
    values, meta = result["values"], result["meta"]
    assert values["n_fake"] == 2 and values["n_real"] == 2  # smoke data: 2 test images per domain
    assert {"fid", "kid", "kid_std", "swd"} <= set(values)
    assert meta["extractor"].startswith("mock")


def test_metrics_on_a_plain_folder_need_a_reference(compose, tmp_path):
    train_cfg = compose("experiment=cut_horse2zebra", "debug=smoke")
    run_training(train_cfg)
    cfg = compose(f"ckpt={train_cfg.run_dir}", "data=folder", f"data.root={tmp_path}", "metrics=[fid]",
                  "extractor=mock", config="test")
    with pytest.raises(ConfigError, match="metrics_real="):
        run_test(cfg)


def test_in_memory_images_equal_the_saved_pngs(tmp_path):
    """Metrics during training (in memory) and after i2i-test (PNGs) see the same pixels: one conversion,
    the published tensor2im truncation."""
    import numpy as np
    import torch
    from PIL import Image

    from i2i.metrics import tensor_to_uint8
    from i2i.utils.images import save_image

    x = torch.linspace(-1, 1, 3 * 8 * 16).reshape(3, 8, 16)
    save_image(x, tmp_path / "x.png")
    saved = np.asarray(Image.open(tmp_path / "x.png")).transpose(2, 0, 1)
    assert np.array_equal(saved, tensor_to_uint8(x).numpy())
    assert np.array_equal(saved, ((x.numpy() + 1) / 2 * 255).astype(np.uint8))  # truncation, as published
