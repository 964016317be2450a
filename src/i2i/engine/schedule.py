"""The learning-rate schedule, a pure function of the (1-based) epoch.

The linear policy is the published one (taesungp/contrastive-unpaired-translation, models/networks.py
``get_scheduler``)::

    factor(epoch) = 1 - max(0, epoch - n_epochs) / (n_epochs_decay + 1)

so the rate is constant for epochs 1..n_epochs and the last epoch runs at base/(n_epochs_decay + 1), not 0.
EnCo's optional warm-up multiplies by epoch / warmup_epochs for epoch <= warmup_epochs. Because the factor
depends on the epoch only, resuming needs no scheduler state. (The data phase, CUT's ``no_crop_after_epoch``,
is the dataset's: ``UnpairedDataset.set_epoch``.)
"""

from __future__ import annotations


def lr_factor(epoch: int, n_epochs: int, n_epochs_decay: int, warmup_epochs: int = 0) -> float:
    """Multiplier of the base learning rate during ``epoch`` (1-based)."""
    if warmup_epochs > 0 and epoch <= warmup_epochs:
        return epoch / warmup_epochs
    return 1.0 - max(0, epoch - n_epochs) / float(n_epochs_decay + 1)
