"""Non-finite losses and gradients (``train.on_nonfinite``), detected on the device without a host sync per step.

- ``raise``: the first loss term that became NaN or infinite stops the run with its name and step
  (:class:`NonFiniteLossError`) at the next log step or checkpoint write, so nothing from that step on is written.
- ``skip``: a phase (D or G) whose gradients are not all finite leaves its weights and optimizer state untouched:
  the fused Adam kernel reads a device-side flag (``found_inf``, as with a GradScaler). Skipped steps are counted on
  the device, reported at log steps, and the run stops when more than ``max_skip_fraction`` of the last
  ~:data:`SKIP_WINDOW` steps (and at least :data:`MIN_SKIPS`) were skipped.

In both modes a checkpoint with non-finite weights is never written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

#: ``on_nonfinite=skip``: the stop rule looks at about this many recent steps (at least the log interval) ...
SKIP_WINDOW = 100
#: ... and stops only when at least this many of them were skipped (a single bad step never stops a run)
MIN_SKIPS = 3


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


class NonFiniteGuard:
    """Device-side watch of the loss terms and gradients of every step, read back at log steps and checkpoints.

    Args:
        mode: ``raise`` or ``skip`` (``train.on_nonfinite``).
        max_skip_fraction: ``skip``: the largest fraction of recent steps that may be skipped.
        device: where the flags live (the training device).
        comm: :class:`~i2i.engine.distributed.Communicator` when several processes train (flags are combined).
        is_main: whether this process prints the warnings.

    Attributes:
        skipped: 0-dim long tensor on ``device``: optimizer steps skipped so far (``skip``), checkpointed.
    """

    def __init__(self, mode: str = "raise", max_skip_fraction: float = 0.5, device: torch.device | None = None,
                 comm=None, is_main: bool = True) -> None:
        self.mode, self.max_skip_fraction, self.comm, self.is_main = mode, max_skip_fraction, comm, is_main
        self.device = device if device is not None else torch.device("cpu")
        self.skipped = torch.zeros((), device=self.device, dtype=torch.long)
        self._step_bad = torch.zeros((), device=self.device)  # 1.0 once a phase of the current step was skipped
        self._first_bad: dict[str, torch.Tensor] = {}  # term -> first bad 1-based step since the last log (-1: none)
        self._history: list[tuple[int, int]] = []  # (step, skipped so far) at the log steps of this fit

    @property
    def skip(self) -> bool:
        """Whether faulty optimizer steps are skipped (the optimizers must then be fused: ``found_inf``)."""
        return self.mode == "skip"

    # ------------------------------------------------------------------ inside a step (no host sync)
    def flag_gradients(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """``skip``: make this phase's optimizer steps exact no-ops when a gradient is not finite.

        Called after ``backward`` (and the gradient all-reduce), before ``opt.step()``. The check runs on the device
        (``found``: 0-dim float, 1.0 = skip); the fused Adam kernel reads it as ``found_inf`` and then leaves
        weights, moments and step counts untouched. After the all-reduce every rank has the same gradients, hence
        the same flag.
        """
        if not self.skip:
            return
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for opt in optimizers:
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        found = torch.zeros((), device=self.device)
        one = torch.ones((), device=self.device)
        for grads in by_dtype.values():  # sets found to 1 if any gradient has a NaN/inf (grads * 1: unchanged)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, one)
        for opt in optimizers:
            opt.found_inf = found
        self._step_bad = torch.maximum(self._step_bad, found)

    def watch(self, terms: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """End of step ``step`` (1-based): note which loss terms are not finite, count a skipped step.

        Args:
            terms: the step's loss terms (0-dim tensors, any float dtype).
            step: the step's number.

        Returns:
            The terms as 0-dim float32 tensors, non-finite values replaced by 0 (what the log may average).
        """
        at = torch.full((), step, device=self.device, dtype=torch.long)  # a fill: no blocking copy
        out = {}
        for name, value in terms.items():
            v = value.detach().float()
            finite = torch.isfinite(v)
            first = self._first_bad.get(name)
            if first is None:
                first = torch.full((), -1, device=self.device, dtype=torch.long)
            self._first_bad[name] = torch.where(~finite & (first < 0), at, first)
            out[name] = torch.where(finite, v, 0.0)
        if self.skip:
            self.skipped += self._step_bad.long()
            self._step_bad = torch.zeros_like(self._step_bad)
        return out

    # ------------------------------------------------------------------ read back (log steps, checkpoints)
    def start(self, step: int) -> None:
        """A fit starts at ``step``: the skip window starts there."""
        if self.skip:
            self._history = [(step, int(self.skipped))]

    def at_log(self, step: int) -> None:
        """At a log step (every rank): raise or warn about non-finite terms, apply the skip stop rule.

        Raises:
            NonFiniteLossError: ``raise`` and a term was not finite; ``skip`` and too many steps were skipped.
        """
        bad = self._read_first_bad()
        self._report(bad)
        if self.skip:
            self._check_skips(step, warn=not bad)
        self._first_bad = {}

    def before_checkpoint(self) -> None:
        """``raise``, before a checkpoint write (every rank): name the first non-finite term, write nothing."""
        if self.mode == "raise" and self._first_bad:
            self._report(self._read_first_bad())

    def check_weights(self, nets: dict[str, nn.Module], step: int, path: Path) -> None:
        """Refuse to write ``path`` when a weight of ``nets`` (name -> module) is not finite."""
        for name, net in nets.items():
            for p in net.parameters():
                if not torch.isfinite(p).all():
                    raise NonFiniteLossError(f"step {step}: {name} has non-finite weights; refusing to write "
                                             f"{path} (the previous checkpoint is kept) — lower the learning rate "
                                             "and continue from that checkpoint: resume=auto resume_allow_changes=true "
                                             "optim.lr_g=<lower> optim.lr_d=<lower>")

    def state_dict(self) -> dict[str, int]:
        """What a checkpoint keeps: ``{"skipped_steps": n}`` (one read-back)."""
        return {"skipped_steps": int(self.skipped)}

    def load_state_dict(self, state: dict) -> None:
        """Continue the skip count of a checkpoint (0 when it has none)."""
        self.skipped.fill_(int(state.get("skipped_steps", 0)))

    def _read_first_bad(self) -> list[tuple[int, str]]:
        """(first bad step, term) of every term that was not finite since the last log, earliest first."""
        if not self._first_bad:
            return []
        names = list(self._first_bad)
        first = torch.stack([self._first_bad[n] for n in names])  # [terms]
        if self.comm is not None:  # the earliest over processes: every rank reports the same
            first = self.comm.first_step(first)
        return sorted((b, n) for n, b in zip(names, first.tolist()) if b >= 0)

    def _report(self, bad: list[tuple[int, str]]) -> None:
        """Raise (``raise``) or warn (``skip``) about the earliest non-finite loss term."""
        if not bad:
            return
        step, name = bad[0]
        if self.mode == "raise":
            raise NonFiniteLossError(f"loss term {name} became non-finite at step {step} (no checkpoint was written "
                                     "from that step on): lower the learning rate, check the data, or set "
                                     "train.on_nonfinite=skip")
        if self.is_main:
            tqdm.write(f"i2i: warning: loss term {name} became non-finite at step {step}: optimizer step skipped "
                       f"({int(self.skipped)} step(s) skipped so far)", file=sys.stderr)

    def _check_skips(self, step: int, warn: bool) -> None:
        """Warn about steps skipped since the last log (``warn``: when no loss term was reported, i.e. only
        gradients were non-finite); stop when too many of the recent steps were skipped."""
        total = int(self.skipped)  # read back at log steps only
        history = self._history  # starts with (first step of this fit, skipped then)
        new = total - history[-1][1]
        history.append((step, total))
        while len(history) > 2 and history[1][0] <= step - SKIP_WINDOW:
            history.pop(0)  # history[0]: the latest log point at least SKIP_WINDOW steps back, or the start
        window, skipped = step - history[0][0], total - history[0][1]
        if new > 0 and warn and self.is_main:
            tqdm.write(f"i2i: warning: {new} optimizer step(s) skipped since the last log (non-finite gradients; "
                       f"{total} in all)", file=sys.stderr)
        if window > 0 and skipped >= MIN_SKIPS and skipped > self.max_skip_fraction * window:
            raise NonFiniteLossError(f"{skipped} of the last {window} steps were skipped (non-finite losses or "
                                     f"gradients; train.max_skip_fraction={self.max_skip_fraction}): training "
                                     "does not progress — lower the learning rate (optim.lr_g, optim.lr_d) or check "
                                     "the data; the last checkpoint written (if any) is kept")
