"""The one training loop, for every method.

Per step (``method.update_order`` decides whether D or G goes first)::

    out = method.forward_G(G, batch)            # one generator pass for real A (and real B for identity)
    D step: backward(sum(method.discriminator_losses(...))); opt_D.step()
    G step: backward(sum(method.generator_losses(...)));     opt_G.step(); opt_F.step()

No host-device synchronisation happens inside a step: loss terms are accumulated on the device and read back
every ``log_every`` steps. Learning rates and the data phase are pure functions of the epoch, so a resumed
run continues with the same rates, optimizer moments, RNG streams and data order.

Time spent outside the steps (evaluation, sample grids, checkpoint writes) is measured on the host, reported as
``Timing/excluded_sec`` and left out of ``Timing/sec_per_iter`` and of the progress bar's rate and ETA.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from i2i.engine import schedule
from i2i.engine.evaluation import LOWER_IS_BETTER
from i2i.engine.speed import apply_levers, step_begin
from i2i.engine.distributed import convert_step
from i2i.engine.signals import StopRequest, TrainingInterrupted
from i2i.engine.state import FORMAT, atomic_torch_save, capture_rng, restore_rng, safe_load, CheckpointError
from i2i.engine.state import check_training_state, config_diff, inference_state, mismatch_line
from i2i.engine.state import prune_epoch_snapshots, remove_stale_temps
from i2i.errors import ConfigError
from i2i.losses.gan import GANLoss
from i2i.utils.gallery import write_samples_index
from i2i.utils.images import make_grid, save_image
from i2i.utils.runlog import RunLogger


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


#: ``on_nonfinite=skip``: the stop rule looks at about this many recent steps (at least the log interval) ...
SKIP_WINDOW = 100
#: ... and stops only when at least this many of them were skipped (a single bad step never stops a run)
MIN_SKIPS = 3


@dataclass
class LoopConfig:
    """Settings of the loop (``train.*`` and ``optim.*`` in the config)."""

    n_epochs: int = 200
    n_epochs_decay: int = 200
    warmup_epochs: int = 0
    batch_size: int = 1
    max_steps: int | None = None
    num_workers: int = 4
    log_every: int = 100
    sample_every: int = 1000
    ckpt_every: int = 5000
    save_epoch_every: int = 5
    epoch_snapshots: str = "inference"  # inference (what i2i-test / i2i export read) | full (resumable)
    keep_last_epochs: int | None = None  # None: keep every epoch snapshot; N: only the newest N
    eval_every_epochs: int = 0
    amp: str = "none"
    no_crop_after_epoch: int | None = None
    on_nonfinite: str = "raise"
    max_skip_fraction: float = 0.5
    seed: int = 0
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    lr_f: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    fused_adam: bool = False
    tensorboard: bool = True
    channels_last: bool = False  # speed levers (engine/speed.py, docs/benchmarks.md)
    compile: str = "none"
    cuda_graphs: bool = False
    group_layers: bool = False
    prefetch_factor: int | None = None


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP / compiled wrapper (its state_dict keys are the published ones)."""
    return getattr(module, "module", module)


def _set_requires_grad(params, flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


class Trainer:
    """Owns the networks, optimizers and state of one run; :meth:`fit` is the loop.

    Args:
        G: generator.
        D: discriminator.
        method: the :class:`~i2i.methods.base.Method`.
        gan_loss: adversarial objective.
        dataset: unpaired training dataset (``set_epoch``, ``set_no_crop``).
        cfg: loop settings.
        run_dir: run directory (created by the caller).
        device: where to train.
        config_dict: resolved config stored in every checkpoint.
        build_loader: ``f(dataset, epoch, start_step) -> iterable of batches``.
        evaluate: optional ``f(trainer, epoch) -> dict[str, float]`` (lower is better) run every
            ``eval_every_epochs``.
    """

    def __init__(self, G: nn.Module, D: nn.Module, method: nn.Module, gan_loss: GANLoss, dataset, cfg: LoopConfig,
                 run_dir: str | Path, device: torch.device, config_dict: dict, build_loader: Callable,
                 evaluate: Callable | None = None, is_main: bool = True, world_size: int = 1, comm=None) -> None:
        self.comm = comm  # engine.distributed.Communicator when world_size > 1 (gradient/scalar averaging)
        self.G, self.D, self.method, self.gan_loss, self.dataset = G, D, method, gan_loss, dataset
        self.cfg, self.run_dir, self.device, self.config_dict = cfg, Path(run_dir), device, config_dict
        self.build_loader, self.evaluate, self.is_main, self.world_size = build_loader, evaluate, is_main, world_size
        self.step, self.best, self.last_metrics = 0, {}, {}
        apply_levers(G, D, method, cfg.channels_last, cfg.compile, cfg.cuda_graphs, cfg.group_layers)
        groups = method.param_groups()
        # on_nonfinite=skip: the fused kernel takes a device-side skip flag (found_inf), see _flag_nonfinite
        fused = {"fused": True} if cfg.fused_adam or cfg.on_nonfinite == "skip" else {}
        self.params_G = list(G.parameters()) + groups["G"]
        self.params_D = list(D.parameters()) + groups["D"]
        self.opt_G = torch.optim.Adam(self.params_G, lr=cfg.lr_g, betas=tuple(cfg.betas), **fused)
        self.opt_D = torch.optim.Adam(self.params_D, lr=cfg.lr_d, betas=tuple(cfg.betas), **fused)
        self.opt_F = (torch.optim.Adam(groups["F"], lr=cfg.lr_f, betas=tuple(cfg.betas), **fused) if groups["F"]
                      else None)
        self.optimizers = {"opt_G": self.opt_G, "opt_D": self.opt_D}
        if self.opt_F is not None:
            self.optimizers["opt_F"] = self.opt_F
        self.base_lr = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        self.steps_per_epoch = len(dataset) // (cfg.batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"train.batch_size={cfg.batch_size} x {world_size} process(es) is larger than the "
                              f"dataset ({len(dataset)} images) — lower train.batch_size")
        total = (cfg.n_epochs + cfg.n_epochs_decay) * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps is not None else total
        self.logger = RunLogger(self.run_dir, cfg.tensorboard, enabled=is_main)
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        self.autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
        self._sums: dict[str, torch.Tensor] = {}
        self._first_bad: dict[str, torch.Tensor] = {}
        self._count = 0
        self._stop = StopRequest()  # SIGINT/SIGTERM: checkpoint at the next step boundary, then stop
        self._skipped = torch.zeros((), device=device, dtype=torch.long)  # on_nonfinite=skip: steps skipped
        self._step_bad = torch.zeros((), device=device)
        self._skip_history: list[tuple[int, int]] = []  # on_nonfinite=skip: (step, skipped so far) at log steps
        self._last_ckpt: tuple[int, Path] | None = None  # (step, path) of the last ckpt/last.pt written
        self._bar = None  # the tqdm bar while fit() runs
        self._excluded = 0.0  # seconds spent outside training steps since the last log (evaluation, samples, ckpt)
        self._untimed_depth = 0

    # ------------------------------------------------------------------ state
    @property
    def epoch(self) -> int:
        """Current 1-based epoch."""
        return self.step // self.steps_per_epoch + 1

    @property
    def total_epochs(self) -> int:
        """Epochs this run reaches: the schedule's, or fewer with ``max_steps``."""
        return max(math.ceil(self.total_steps / self.steps_per_epoch), 1)

    def state_dict(self) -> dict:
        state = {"format": FORMAT, "version": 1, "step": self.step, "epoch": self.epoch,
                 "G": _unwrap(self.G).state_dict(), "D": _unwrap(self.D).state_dict(),
                 "method": _unwrap(self.method).state_dict(), "rng": capture_rng(), "best": self.best,
                 "cfg": self.config_dict, "global_batch": self.cfg.batch_size * self.world_size,
                 "skipped_steps": int(self._skipped)}  # read back at checkpoint time only
        state.update({name: opt.state_dict() for name, opt in self.optimizers.items()})
        return state

    def load_state_dict(self, state: dict) -> None:
        _unwrap(self.G).load_state_dict(state["G"])
        _unwrap(self.D).load_state_dict(state["D"])
        _unwrap(self.method).load_state_dict(state["method"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
        self.step, self.best = int(state["step"]), dict(state.get("best", {}))
        self._skipped.fill_(int(state.get("skipped_steps", 0)))
        global_batch = self.cfg.batch_size * self.world_size
        self.step = convert_step(self.step, int(state.get("global_batch", global_batch)), global_batch,
                                 len(self.dataset))  # another process count: same epoch, position by samples
        restore_rng(state["rng"])
        if self.comm is not None:
            self.comm.restore_rng(state, self.step)

    def save(self, name: str = "last.pt", full: bool = True) -> Path:
        """Write ``ckpt/<name>``: the whole training state, or (``full=False``) what inference reads only.

        Every rank calls it (collectives); rank 0 writes.
        """
        path = self.run_dir / "ckpt" / name
        rng_ranks = self.comm.gather_rng() if self.comm is not None and full else None  # collective
        self._check_nonfinite_losses()  # raise mode: name the term and step, write nothing
        if self.is_main:
            self._check_finite_weights(path)
            state = self.state_dict()
            if rng_ranks is not None:
                state["rng_ranks"] = rng_ranks
            atomic_torch_save(state if full else inference_state(state), path)
        if name == "last.pt":
            self._last_ckpt = (self.step, path)
        return path

    def resume(self, path: str | Path, state: dict | None = None) -> None:
        """Continue from the checkpoint ``path`` (``state``: its contents, when already loaded)."""
        state = safe_load(path, map_location=self.device) if state is None else state
        if state.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not an i2i training checkpoint — resume expects <run>/ckpt/last.pt")
        check_training_state(state, path)
        try:
            self.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as e:  # shapes / keys / optimizer groups differ
            diff = config_diff(state.get("cfg") or {}, self.config_dict)
            raise CheckpointError(f"{path}: the checkpoint does not match the configured networks ("
                                  f"{'; '.join(diff[:3]) or mismatch_line(e)}) — resume with the run's own settings "
                                  "(see its .hydra/config.yaml) or start a new run with another name=") from None

    def _check_finite_weights(self, path: Path) -> None:
        for name, net in (("G", self.G), ("D", self.D), ("method", self.method)):
            for p in net.parameters():
                if not torch.isfinite(p).all():
                    raise NonFiniteLossError(f"step {self.step}: {name} has non-finite weights; refusing to write "
                                             f"{path} (the previous checkpoint is kept) — lower the learning rate "
                                             "and continue from that checkpoint: resume=auto resume_allow_changes=true "
                                             "optim.lr_g=<lower> optim.lr_d=<lower>")

    # ------------------------------------------------------------------ one step
    def _backward_step(self, terms: dict[str, torch.Tensor], optimizers: list) -> None:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        if self.comm is not None:
            self.comm.sync_grads(optimizers)
        if self.cfg.on_nonfinite == "skip":
            self._flag_nonfinite(optimizers)
        for opt in optimizers:
            opt.step()

    def _flag_nonfinite(self, optimizers: list) -> None:
        """``on_nonfinite=skip``: make this phase's optimizer steps exact no-ops when a gradient is not finite.

        The check runs on the device (``found``: 0-dim float, 1.0 = skip; no host sync). The fused Adam kernel
        reads it as ``found_inf`` (as with a GradScaler) and then leaves weights, moments and step counts
        untouched. After DDP's gradient all-reduce every rank sees the same gradients, hence the same flag.
        """
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

    def train_step(self, batch: dict) -> dict:
        """One optimisation step on a device batch; returns the method's outputs (for samples)."""
        batch = step_begin(batch, self.cfg.channels_last, self.cfg.cuda_graphs)
        with self.autocast():
            out = self.method.forward_G(self.G, batch)
        terms_all = {}
        for phase in self.method.update_order:
            if phase == "D":
                _set_requires_grad(self.params_D, True)
                with self.autocast():
                    terms = self.method.discriminator_losses(self.D, batch, out, self.gan_loss)
                self._backward_step(terms, [self.opt_D])
            else:
                _set_requires_grad(self.params_D, False)
                with self.autocast():
                    terms = self.method.generator_losses(self.G, self.D, batch, out, self.gan_loss)
                self._backward_step(terms, [self.opt_G] + ([self.opt_F] if self.opt_F else []))
            terms_all.update(terms)
        _set_requires_grad(self.params_D, True)
        self._accumulate(terms_all)
        return out

    def _accumulate(self, terms: dict[str, torch.Tensor]) -> None:
        step = torch.full((), self.step + 1, device=self.device, dtype=torch.long)  # a fill: no blocking copy
        for name, value in terms.items():
            v = value.detach().float()
            if name not in self._sums:
                self._sums[name] = torch.zeros((), device=self.device)
                self._first_bad[name] = torch.full((), -1, device=self.device, dtype=torch.long)
            self._sums[name] += torch.where(torch.isfinite(v), v, 0.0)  # skipped steps add nothing to the mean
            bad = ~torch.isfinite(v) & (self._first_bad[name] < 0)
            self._first_bad[name] = torch.where(bad, step, self._first_bad[name])
        self._count += 1
        if self.cfg.on_nonfinite == "skip":
            self._skipped += self._step_bad.long()  # on the device
            self._step_bad = torch.zeros_like(self._step_bad)

    # ------------------------------------------------------------------ the loop
    def _set_epoch(self, epoch: int) -> None:
        factor = schedule.lr_factor(epoch, self.cfg.n_epochs, self.cfg.n_epochs_decay, self.cfg.warmup_epochs)
        for name, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self.base_lr[name]):
                group["lr"] = base * factor
        self.dataset.set_epoch(epoch)
        self.dataset.set_no_crop(schedule.no_crop_phase(epoch, self.cfg.no_crop_after_epoch))
        self.method.set_epoch(epoch)

    def fit(self) -> None:
        """Train from ``self.step`` to ``total_steps``, logging, sampling, checkpointing and evaluating.

        SIGINT/SIGTERM (engine/signals.py) stop at the next step boundary with ``ckpt/last.pt`` written there and
        raise :class:`~i2i.engine.signals.TrainingInterrupted`.
        """
        with self._stop:
            self._fit()

    def _bar_desc(self, epoch: int) -> str:
        return f"{self.run_dir.name} ep {epoch}/{self.total_epochs}"

    @contextlib.contextmanager
    def _untimed(self):
        """Leave the time spent inside out of ``Timing/sec_per_iter`` and the bar's rate and ETA.

        The time is read on the host only (no device synchronisation) and added to ``Timing/excluded_sec``;
        the bar's clock is moved forward by as much. Nested blocks count once.
        """
        self._untimed_depth += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._untimed_depth -= 1
            if self._untimed_depth == 0:
                elapsed = time.perf_counter() - start
                self._excluded += elapsed
                bar = self._bar
                if bar is not None and not bar.disable:
                    bar.start_t += elapsed
                    bar.last_print_t += elapsed

    def _fit(self) -> None:
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.is_main, dynamic_ncols=True,
                   desc=self._bar_desc(self.epoch),
                   mininterval=0.1 if sys.stderr.isatty() else 30.0)  # logs: few lines
        self._bar = bar
        self._t0, self._s0, self._excluded = time.perf_counter(), self.step, 0.0
        if self.cfg.on_nonfinite == "skip":
            self._skip_history = [(self.step, int(self._skipped))]
        out = batch = None
        if self.is_main:
            remove_stale_temps(self.run_dir / "ckpt")  # left by a kill during a checkpoint write
        try:
            while self.step < self.total_steps:
                epoch = self.epoch
                self._set_epoch(epoch)
                bar.set_description_str(self._bar_desc(epoch), refresh=False)
                start = self.step % self.steps_per_epoch
                for batch in self.build_loader(self.dataset, epoch, start):
                    batch = _to_device(batch, self.device)
                    out = self.train_step(batch)
                    self.step += 1
                    bar.update(1)
                    self._periodic(batch, out, bar)
                    if self.step < self.total_steps and self._stop_now():  # done anyway: finish normally
                        self._interrupt(bar)
                    if self.step >= self.total_steps or self.step % self.steps_per_epoch == 0:
                        break
                if self.step % self.steps_per_epoch == 0:
                    self._end_of_epoch(self.step // self.steps_per_epoch)
        finally:
            bar.close()
            self._bar = None
        if self._count:
            self._log(bar)
        self.save("last.pt")
        self.logger.close()
        if self.is_main and self.best:
            print("i2i: " + "; ".join(f"{name}: last {self.last_metrics.get(name, float('nan')):.4g}, best "
                                      f"{b['value']:.4g} at epoch {b['epoch']}" for name, b in self.best.items()),
                  file=sys.stderr)

    def _stop_now(self) -> bool:
        """Whether a SIGINT/SIGTERM asked to stop (a Python flag: no sync). Under DDP rank 0's flag is shared at
        log steps (where the loop synchronises anyway), so every rank stops at the same step."""
        if self.comm is None:
            return self._stop.requested
        if not (self.cfg.log_every and self.step % self.cfg.log_every == 0):
            return False
        self._stop.signum = self.comm.broadcast_object(self._stop.signum)
        return self._stop.requested

    def _interrupt(self, bar) -> None:
        """Write ``ckpt/last.pt`` at this step boundary (unless just written) and raise TrainingInterrupted."""
        if self._count:
            self._log(bar)
        if self.step % self.steps_per_epoch == 0 and self.step < self.total_steps:  # as if uninterrupted
            self._end_of_epoch(self.step // self.steps_per_epoch)
        path = self.run_dir / "ckpt" / "last.pt"
        if self._last_ckpt is None or self._last_ckpt[0] != self.step:
            path = self.save("last.pt")
        self.logger.close()
        raise TrainingInterrupted(self._stop.signum, self.step, path)

    def _periodic(self, batch: dict, out: dict, bar) -> None:
        c = self.cfg
        if c.log_every and self.step % c.log_every == 0:
            self._log(bar)
        if c.sample_every and self.step % c.sample_every == 0 and self.is_main:
            with self._untimed():
                self.write_samples(batch, out)
        if c.ckpt_every and self.step % c.ckpt_every == 0:
            with self._untimed():
                self.save("last.pt")

    def _end_of_epoch(self, epoch: int) -> None:
        if self.cfg.save_epoch_every and epoch % self.cfg.save_epoch_every == 0:
            with self._untimed():
                self.save_epoch_snapshot(epoch)
        if self.evaluate is not None and self.cfg.eval_every_epochs and epoch % self.cfg.eval_every_epochs == 0:
            with self._untimed():
                self.run_evaluation(epoch)

    def save_epoch_snapshot(self, epoch: int) -> Path:
        """``ckpt/epoch_XXXX.pt`` (``train.epoch_snapshots``: inference-only or full), then drop the snapshots
        beyond the newest ``train.keep_last_epochs``."""
        path = self.save(f"epoch_{epoch:04d}.pt", full=self.cfg.epoch_snapshots == "full")
        if self.is_main:
            prune_epoch_snapshots(path.parent, self.cfg.keep_last_epochs)
        return path

    def run_evaluation(self, epoch: int) -> dict:
        """Evaluate, log to ``metrics.jsonl``, keep ``best_<metric>.pt`` (lower is better)."""
        values = (self.evaluate(self, epoch) or {}) if self.is_main else {}
        if self.comm is not None:  # the others wait here; every rank keeps the same `best` and saves together
            values = self.comm.broadcast_object(values)
        if values:
            self.last_metrics = dict(values)
            self.logger.scalars(self.step, {f"Metrics/{k}": v for k, v in values.items()}, {"epoch": epoch},
                                file="metrics.jsonl")
            for name, v in values.items():
                if name not in LOWER_IS_BETTER:
                    continue
                if name in self.best and self.best[name]["value"] <= v:
                    continue
                self.best[name] = {"value": v, "epoch": epoch, "step": self.step}
                self.save(f"best_{name}.pt")
        return values

    def _log(self, bar) -> None:
        """Read the accumulated terms back (one synchronisation per ``log_every`` steps) and write them."""
        names = list(self._sums)
        sums, first_bad = torch.stack([self._sums[n] for n in names]), torch.stack([self._first_bad[n] for n in names])
        if self.comm is not None:  # every rank logs the same numbers (only rank 0 writes them)
            sums, first_bad = self.comm.mean(sums), self.comm.first_step(first_bad)
        means = (sums / max(self._count, 1)).tolist()
        first_bad = first_bad.tolist()
        self._report_nonfinite(names, first_bad)
        if self.cfg.on_nonfinite == "skip":
            self._check_skips(warn=not any(b >= 0 for b in first_bad))
        now = time.perf_counter()
        steps = max(self.step - self._s0, 1)
        sec_per_iter = max(now - self._t0 - self._excluded, 0.0) / steps  # training steps only
        values = {f"Loss/{n}": m for n, m in zip(names, means)}
        values.update({"Timing/sec_per_iter": sec_per_iter,
                       "Timing/images_per_sec": self.cfg.batch_size * self.world_size / max(sec_per_iter, 1e-12),
                       "Timing/excluded_sec": self._excluded})
        for name, opt in self.optimizers.items():
            values[f"LR/{name[4:]}"] = opt.param_groups[0]["lr"]
        if self.cfg.on_nonfinite == "skip":
            values["Train/skipped_steps"] = int(self._skipped)  # log steps only
        self.logger.scalars(self.step, values, {"epoch": self.epoch})
        bar.set_postfix({n: f"{m:.3g}" for n, m in zip(names, means)}, refresh=False)
        self._sums, self._first_bad, self._count = {}, {}, 0
        self._t0, self._s0, self._excluded = now, self.step, 0.0

    def _check_skips(self, warn: bool) -> None:
        """``on_nonfinite=skip``, at a log step: warn about steps skipped since the last log (``warn``: when no loss
        term was reported, i.e. only gradients were non-finite); stop when more than ``max_skip_fraction`` of the
        last ~:data:`SKIP_WINDOW` steps (and at least :data:`MIN_SKIPS`) were skipped."""
        total = int(self._skipped)  # read back at log steps only
        history = self._skip_history  # starts with (first step of this fit, skipped then)
        new = total - history[-1][1]
        history.append((self.step, total))
        while len(history) > 2 and history[1][0] <= self.step - SKIP_WINDOW:
            history.pop(0)  # history[0]: the latest log point at least SKIP_WINDOW steps back, or the start
        window, skipped = self.step - history[0][0], total - history[0][1]
        if new > 0 and warn and self.is_main:
            tqdm.write(f"i2i: warning: {new} optimizer step(s) skipped since the last log (non-finite gradients; "
                       f"{total} in all)", file=sys.stderr)
        if window > 0 and skipped >= MIN_SKIPS and skipped > self.cfg.max_skip_fraction * window:
            raise NonFiniteLossError(f"{skipped} of the last {window} steps were skipped (non-finite losses or "
                                     f"gradients; train.max_skip_fraction={self.cfg.max_skip_fraction}): training "
                                     "does not progress — lower the learning rate (optim.lr_g, optim.lr_d) or check "
                                     "the data; the last checkpoint written (if any) is kept")

    def _check_nonfinite_losses(self) -> None:
        """Before a checkpoint write (raise mode): read the device flags back (one sync per checkpoint)."""
        if self.cfg.on_nonfinite != "raise" or not self._first_bad:
            return
        names = list(self._first_bad)
        first_bad = torch.stack([self._first_bad[n] for n in names])
        if self.comm is not None:
            first_bad = self.comm.first_step(first_bad)
        self._report_nonfinite(names, first_bad.tolist())

    def _report_nonfinite(self, names: list[str], first_bad: list[int]) -> None:
        """Raise (``on_nonfinite=raise``) or warn (``skip``) about loss terms that became non-finite."""
        bad = sorted((b, n) for n, b in zip(names, first_bad) if b >= 0)
        if not bad:
            return
        step, name = bad[0]
        if self.cfg.on_nonfinite == "raise":
            raise NonFiniteLossError(f"loss term {name} became non-finite at step {step} (no checkpoint was written "
                                     "from that step on): lower the learning rate, check the data, or set "
                                     "train.on_nonfinite=skip")
        if self.is_main:
            tqdm.write(f"i2i: warning: loss term {name} became non-finite at step {step}: optimizer step skipped "
                       f"({int(self._skipped)} step(s) skipped so far)", file=sys.stderr)

    def write_samples(self, batch: dict, out: dict) -> None:
        """Save the sample grid (columns from ``method.visuals``, labelled with their names) as PNG and to
        TensorBoard, and rewrite ``samples/index.html`` (every grid, newest first)."""
        grid = make_grid(self.method.visuals(batch, out), labels=True)  # [3, band + rows*H, cols*W]
        samples = self.run_dir / "samples"
        save_image(grid, samples / f"step_{self.step:08d}.png")
        ckpt = None
        if self._last_ckpt is not None:
            ckpt = (self._last_ckpt[0], f"ckpt/{self._last_ckpt[1].name}")
        write_samples_index(samples, self.run_dir.name, ckpt)
        self.logger.image("samples", grid, self.step)
        self.logger.flush()

