"""Run logging: TensorBoard scalars and images, ``stats.jsonl``, and the console."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch


class RunLogger:
    """Writes scalars to TensorBoard (``<run>/tb``) and one JSON line per log step to ``<run>/stats.jsonl``.

    Nothing is created before the first value is logged (a run refused at start-up leaves no ``tb/``).

    Args:
        run_dir: the run directory.
        tensorboard: also write TensorBoard event files.
        enabled: False on non-zero ranks (everything becomes a no-op).
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.run_dir, self.enabled, self.tensorboard = Path(run_dir), enabled, tensorboard
        self._writer = None

    @property
    def writer(self):
        """The TensorBoard ``SummaryWriter`` (created on first use), or None without TensorBoard."""
        if self._writer is None and self.enabled and self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tb"))
        return self._writer

    def scalars(self, step: int, values: dict[str, float], extra: dict | None = None,
                file: str = "stats.jsonl") -> None:
        """Log ``values`` (TensorBoard tags as keys, e.g. ``Loss/NCE``) at ``step``."""
        if not self.enabled:
            return
        if self.writer is not None:
            for tag, v in values.items():
                self.writer.add_scalar(tag, v, step)
        record = {"step": step, "time": round(time.time(), 3), **(extra or {}), **values}
        with open(self.run_dir / file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def image(self, tag: str, img: torch.Tensor, step: int) -> None:
        """Log a [3, H, W] image in [-1, 1]."""
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, (img.clamp(-1, 1) + 1) / 2, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
