"""Time per training step, without the time spent outside the steps (evaluation, sample grids, checkpoints).

Read on the host clock only (``time.perf_counter``): nothing here synchronises with the device.
"""

from __future__ import annotations

import contextlib
import time


class StepTimer:
    """Host time of the training steps between two log steps.

    ``with timer.untimed():`` around work that is not a training step: its time goes to ``Timing/excluded_sec``
    instead of ``Timing/sec_per_iter``, and the progress bar's clock moves forward by as much, so the bar's rate and
    ETA are those of the steps. Nested blocks count once.

    Attributes:
        bar: the tqdm bar whose clock is moved (None: none).
        excluded: seconds spent in untimed blocks since the last :meth:`lap`.
    """

    def __init__(self) -> None:
        self.bar = None
        self.excluded = 0.0
        self._t0, self._s0, self._depth = 0.0, 0, 0

    def start(self, step: int, bar=None) -> None:
        """Start timing at ``step`` (the bar, if any, is the one to keep in step)."""
        self.bar, self.excluded = bar, 0.0
        self._t0, self._s0 = time.perf_counter(), step

    @contextlib.contextmanager
    def untimed(self):
        """Leave the time spent inside out of the step time and the bar's rate and ETA."""
        self._depth += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                elapsed = time.perf_counter() - start
                self.excluded += elapsed
                bar = self.bar
                if bar is not None and not bar.disable:
                    bar.start_t += elapsed
                    bar.last_print_t += elapsed

    def lap(self, step: int) -> tuple[float, float]:
        """``(sec_per_iter, excluded_sec)`` since the last lap (or the start), which now ends at ``step``."""
        now = time.perf_counter()
        sec_per_iter = max(now - self._t0 - self.excluded, 0.0) / max(step - self._s0, 1)  # training steps only
        excluded = self.excluded
        self._t0, self._s0, self.excluded = now, step, 0.0
        return sec_per_iter, excluded
