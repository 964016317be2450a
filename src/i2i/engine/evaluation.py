"""Evaluation during training and after ``i2i-test``: translate the test split in memory and score it.

The translated images go to :class:`i2i.metrics.MetricSuite` as uint8 tensors (the same rounding as the PNGs
``i2i-test`` writes), cropped back to each input's size; the reference statistics come from the metrics cache.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from i2i.engine.translate import iter_translations
from i2i.utils.images import to_uint8

#: metrics for which a lower value is better (``best_<metric>.pt`` is kept for these)
LOWER_IS_BETTER = ("fid", "kid", "kid_fused", "swd")


def translated_images(G: torch.nn.Module, dataset, device: torch.device, batch_size: int = 1,
                      prepare: Callable | None = None):
    """Yield uint8 [3, h, w] translations of every dataset item (CPU tensors), as ``i2i-test`` would save them."""
    for _, _, fake in iter_translations(G, dataset, device, batch_size, prepare):
        if fake.shape[0] == 1:
            fake = fake.repeat(3, 1, 1)
        yield to_uint8(fake[:3]).cpu()


def make_evaluator(suite, dataset, device: torch.device, batch_size: int = 1,
                   prepare: Callable | None = None) -> Callable:
    """``evaluate(trainer, epoch) -> dict`` for :class:`~i2i.engine.loop.Trainer` (G in eval mode meanwhile)."""

    def evaluate(trainer, epoch: int) -> dict[str, float]:
        G = getattr(trainer.G, "module", trainer.G)
        was_training = G.training
        G.eval()
        try:
            values = suite.compute(translated_images(G, dataset, device, batch_size, prepare))
        finally:
            G.train(was_training)
        return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not k.startswith("n_")}

    return evaluate
