"""Helpers shared by the test modules: tiny image folders and faults injected after the up-front checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def random_rgb(seed: int, size: int = 36) -> np.ndarray:
    """[size, size, 3] uint8 noise image of ``seed``."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def unpaired_root(tmp: Path, n: int = 4) -> Path:
    """``<tmp>/data`` with ``n`` PNGs in trainA/ and trainB/ (no test split)."""
    root = tmp / "data"
    for d, off in (("A", 0), ("B", 100)):
        (root / f"train{d}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(random_rgb(i + off)).save(root / f"train{d}" / f"{i:02d}.png")
    return root


def spoil_after_validation(monkeypatch, spoil: Callable[[], None]) -> None:
    """Make ``build.build_trainer`` call ``spoil()`` once the trainer (and its up-front data check) is built: the
    file goes bad as if damaged during training."""
    import i2i.build as build

    original = build.build_trainer

    def spoiled(cfg, run_dir, *a, **k):
        trainer = original(cfg, run_dir, *a, **k)
        spoil()
        return trainer

    monkeypatch.setattr(build, "build_trainer", spoiled)
