"""Graceful interruption: SIGINT / SIGTERM ask the training loop to stop at the next step boundary.

The handler only sets a flag (a plain Python attribute: no tensor, no host-device sync); the loop reads it
after every optimisation step, writes ``ckpt/last.pt`` at that exact step and raises
:class:`TrainingInterrupted`, whose message says how to continue (``resume=auto``). A checkpoint is therefore
never written in the middle of a step. A second signal of the same kind restores the previous handler
behaviour (Ctrl-C twice aborts at once, as usual); even then the atomic checkpoint write
(:func:`i2i.engine.state.atomic_torch_save`) leaves the previous checkpoint intact.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

#: signals that request a graceful stop
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing a checkpoint at the current step.

    Attributes:
        signum: the signal number.
        step: the step of the checkpoint written.
        path: the checkpoint written (``<run>/ckpt/last.pt``).
    """

    def __init__(self, signum: int, step: int, path) -> None:
        self.signum, self.step, self.path = signum, step, path
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name} at step {step}: checkpoint written to {path} — continue with: the "
                         "same command plus resume=auto")

    def with_command(self, command: str) -> str:
        """The message with the exact command line that continues the run."""
        return str(self).replace("the same command plus resume=auto", command)

    @property
    def exit_code(self) -> int:
        """Shell convention for death by signal: 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class StopRequest:
    """Context manager installing SIGINT/SIGTERM handlers that record a stop request.

    Outside the main thread (where Python cannot install handlers) it does nothing. The previous handlers
    are restored on exit.

    Attributes:
        signum: the first signal received, or None.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.signals, self.signum = signals, None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived."""
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            # a second signal of this kind behaves as it did before (Ctrl-C twice: abort now)
            previous = self._previous.get(signum)
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def __enter__(self) -> StopRequest:
        self.signum = None
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
