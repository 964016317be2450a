"""The one training loop, for every method.

:meth:`Trainer.fit` reads top to bottom: per epoch the learning rates and the data phase are set, then per step
the GAN step (:meth:`Trainer.train_step`; ``method.update_order`` decides whether D or G goes first)::

    out = method.forward_G(G, batch)            # one generator pass for real A (and real B for identity)
    D step: backward(sum(method.discriminator_losses(...))); opt_D.step()
    G step: backward(sum(method.generator_losses(...)));     opt_G.step(); opt_F.step()
    (a method's own phase P: backward(sum(method.phase_losses(P, ...))); opt_P.step())

and the maintenance: scalars every ``log_every`` steps, a sample grid every ``sample_every``, ``ckpt/last.pt``
every ``ckpt_every``, and at the end of an epoch its snapshot and the evaluation. One object each does the rest:
:class:`~i2i.engine.nonfinite.NonFiniteGuard` (NaN/inf losses and gradients),
:class:`~i2i.engine.checkpointing.Checkpointer` (checkpoint files, resume), :class:`~i2i.engine.timing.StepTimer`
(time outside the steps), :class:`~i2i.engine.distributed.Communicator` (several processes).

No host-device synchronisation happens inside a step: loss terms are accumulated on the device and read back
every ``log_every`` steps. Learning rates and the data phase are pure functions of the epoch, so a resumed
run continues with the same rates, optimizer moments, RNG streams and data order.

Time spent outside the steps (evaluation, sample grids, checkpoint writes) is measured on the host, reported as
``Timing/excluded_sec`` and left out of ``Timing/sec_per_iter`` and of the progress bar's rate and ETA.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from i2i.engine import schedule
from i2i.engine.checkpointing import Checkpointer
from i2i.engine.distributed import Communicator, DistEnv
from i2i.engine.nonfinite import NonFiniteGuard, NonFiniteLossError  # noqa: F401 (NonFiniteLossError: public here)
from i2i.engine.signals import StopRequest, TrainingInterrupted
from i2i.engine.speed import apply_levers, step_begin
from i2i.engine.timing import StepTimer
from i2i.errors import ConfigError
from i2i.losses.gan import GANLoss
from i2i.utils.gallery import write_samples_index
from i2i.utils.images import make_grid, save_image
from i2i.utils.runlog import RunLogger

#: ``make_optimizer(params, lr=..., [fused=True]) -> Optimizer``
OptimizerFactory = Callable[..., torch.optim.Optimizer]
#: the published optimizer: Adam with betas (0.5, 0.999)
ADAM: OptimizerFactory = functools.partial(torch.optim.Adam, betas=(0.5, 0.999))


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
    on_nonfinite: str = "raise"
    max_skip_fraction: float = 0.5
    seed: int = 0
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    lr_f: float = 2e-4
    fused_adam: bool = False
    tensorboard: bool = True
    channels_last: bool = False  # speed levers (engine/speed.py, docs/benchmarks.md)
    compile: str = "none"
    cuda_graphs: bool = False
    prefetch_factor: int | None = None


@dataclass
class Networks:
    """What a step trains: the generator (A -> B), the discriminator (domain B), the method (its own modules and
    loss terms, :class:`~i2i.methods.base.Method`) and the adversarial objective."""

    G: nn.Module
    D: nn.Module
    method: nn.Module
    gan_loss: GANLoss


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _set_requires_grad(params, flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


class Trainer:
    """Owns the networks, optimizers and state of one run; :meth:`fit` is the loop.

    Args:
        nets: G, D, the method and the GAN loss (on ``env.device``).
        dataset: the unpaired training dataset (``len``; ``set_epoch(epoch)`` sets its data phase).
        build_loader: ``f(dataset, epoch, start_step) -> iterable of batches`` (this process's share).
        cfg: loop settings.
        run_dir: run directory (created by the caller).
        config_dict: resolved config stored in every checkpoint.
        env: this process among the training processes (default: one process on the CPU).
        make_optimizer: ``f(params, lr=..., [fused=True]) -> Optimizer`` for each of G, D and the method's own
            modules (``fused=True`` is passed with ``optim.fused`` and ``train.on_nonfinite=skip``).
        evaluate: optional ``f(trainer, epoch) -> dict[str, float]`` (lower is better), every
            ``eval_every_epochs`` (rank 0).
    """

    def __init__(self, nets: Networks, dataset, build_loader: Callable, cfg: LoopConfig, run_dir: str | Path,
                 config_dict: dict | None = None, *, env: DistEnv | None = None,
                 make_optimizer: OptimizerFactory = ADAM, evaluate: Callable | None = None) -> None:
        self.nets, self.dataset, self.build_loader, self.cfg = nets, dataset, build_loader, cfg
        self.run_dir, self.config_dict, self.evaluate = Path(run_dir), config_dict or {}, evaluate
        self.env = env if env is not None else DistEnv()
        self.comm = Communicator(self.env, cfg.seed) if self.env.enabled else None  # gradient/scalar averaging
        self.step, self.best, self.last_metrics = 0, {}, {}
        apply_levers(self.G, self.D, self.method, cfg.channels_last, cfg.compile, cfg.cuda_graphs)

        self.guard = NonFiniteGuard(cfg.on_nonfinite, cfg.max_skip_fraction, self.device, self.comm, self.is_main)
        groups = self.method.param_groups()
        self.params_G = list(self.G.parameters()) + groups["G"]
        self.params_D = list(self.D.parameters()) + groups["D"]
        fused = {"fused": True} if cfg.fused_adam or self.guard.skip else {}  # skip: the kernel reads found_inf
        self.optimizers = {"opt_G": make_optimizer(self.params_G, lr=cfg.lr_g, **fused),
                           "opt_D": make_optimizer(self.params_D, lr=cfg.lr_d, **fused)}
        if groups["F"]:
            self.optimizers["opt_F"] = make_optimizer(groups["F"], lr=cfg.lr_f, **fused)
        self.params_phase = {p: groups[p] for p in self.method.extra_phases}  # the method's own phases
        for phase, params in self.params_phase.items():
            self.optimizers[f"opt_{phase}"] = make_optimizer(params, lr=cfg.lr_f, **fused)
        self.opt_G, self.opt_D, self.opt_F = (self.optimizers.get(k) for k in ("opt_G", "opt_D", "opt_F"))
        self.base_lr = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}

        self.steps_per_epoch = len(dataset) // self.global_batch
        if self.steps_per_epoch == 0:
            raise ConfigError(f"train.batch_size={cfg.batch_size} x {self.world_size} process(es) is larger than the "
                              f"dataset ({len(dataset)} images) — lower train.batch_size")
        total = (cfg.n_epochs + cfg.n_epochs_decay) * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps is not None else total
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=amp)) if amp else contextlib.nullcontext

        self.checkpoints = Checkpointer(self.run_dir / "ckpt", self.env, self.comm, cfg.epoch_snapshots,
                                        cfg.keep_last_epochs)
        self.logger = RunLogger(self.run_dir, cfg.tensorboard, enabled=self.is_main)
        self.timer = StepTimer()
        self._sums: dict[str, torch.Tensor] = {}  # loss term -> sum since the last log (0-dim, on the device)
        self._count = 0  # steps in those sums
        self._stop = StopRequest()  # SIGINT/SIGTERM: checkpoint at the next step boundary, then stop

    # ------------------------------------------------------------------ what the run is
    G = property(lambda self: self.nets.G, doc="The generator (A -> B).")
    D = property(lambda self: self.nets.D, doc="The discriminator (domain B).")
    method = property(lambda self: self.nets.method, doc="The method (:class:`~i2i.methods.base.Method`).")
    gan_loss = property(lambda self: self.nets.gan_loss, doc="The adversarial objective.")
    device = property(lambda self: self.env.device, doc="Where this process trains.")
    is_main = property(lambda self: self.env.is_main, doc="Rank 0: logs, writes samples and checkpoints.")
    world_size = property(lambda self: self.env.world_size, doc="Number of training processes.")

    @property
    def global_batch(self) -> int:
        """Images per step over all processes."""
        return self.cfg.batch_size * self.world_size

    @property
    def epoch(self) -> int:
        """Current 1-based epoch."""
        return self.step // self.steps_per_epoch + 1

    @property
    def total_epochs(self) -> int:
        """Epochs this run reaches: the schedule's, or fewer with ``max_steps``."""
        return max(math.ceil(self.total_steps / self.steps_per_epoch), 1)

    # ------------------------------------------------------------------ checkpoints (engine/checkpointing.py)
    def state_dict(self) -> dict:
        """The whole training state (what ``ckpt/last.pt`` holds)."""
        return self.checkpoints.state_dict(self)

    def save(self, name: str = "last.pt", full: bool = True) -> Path:
        """Write ``ckpt/<name>``: the whole training state, or (``full=False``) what inference reads only.

        Every rank calls it (collectives); rank 0 writes.
        """
        return self.checkpoints.save(self, name, full)

    def resume(self, path: str | Path, state: dict | None = None) -> None:
        """Continue from the checkpoint ``path`` (``state``: its contents, when already loaded)."""
        self.checkpoints.resume(self, path, state)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> None:
        """Train from ``self.step`` to ``total_steps``, logging, sampling, checkpointing and evaluating.

        SIGINT/SIGTERM (engine/signals.py) stop at the next step boundary with ``ckpt/last.pt`` written there and
        raise :class:`~i2i.engine.signals.TrainingInterrupted`.
        """
        with self._stop:
            self._fit()

    def _fit(self) -> None:
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.is_main, dynamic_ncols=True,
                   desc=self._bar_desc(self.epoch),
                   mininterval=0.1 if sys.stderr.isatty() else 30.0)  # logs: few lines
        self.timer.start(self.step, bar)
        self.guard.start(self.step)
        self.checkpoints.remove_stale_temps()  # left by a kill during a checkpoint write
        try:
            while self.step < self.total_steps:
                epoch = self.epoch
                self._set_epoch(epoch)
                bar.set_description_str(self._bar_desc(epoch), refresh=False)
                for batch in self.build_loader(self.dataset, epoch, self.step % self.steps_per_epoch):
                    batch = _to_device(batch, self.device)
                    out = self.train_step(batch)
                    self.step += 1
                    bar.update(1)
                    self._after_step(batch, out, bar)
                    if self.step < self.total_steps and self._stop_now():  # done anyway: finish normally
                        self._interrupt(bar)
                    if self.step >= self.total_steps or self.step % self.steps_per_epoch == 0:
                        break
                if self.step % self.steps_per_epoch == 0:
                    self._end_of_epoch(self.step // self.steps_per_epoch)
        finally:
            bar.close()
            self.timer.bar = None
        if self._count:
            self._log(bar)
        self.save("last.pt")
        self.logger.close()
        if self.is_main and self.best:
            print("i2i: " + "; ".join(f"{name}: last {self.last_metrics.get(name, float('nan')):.4g}, best "
                                      f"{b['value']:.4g} at epoch {b['epoch']}" for name, b in self.best.items()),
                  file=sys.stderr)

    def _set_epoch(self, epoch: int) -> None:
        """Learning rates, the data phase and the method's epoch-dependent settings of ``epoch`` (1-based)."""
        factor = schedule.lr_factor(epoch, self.cfg.n_epochs, self.cfg.n_epochs_decay, self.cfg.warmup_epochs)
        for name, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self.base_lr[name]):
                group["lr"] = base * factor
        self.dataset.set_epoch(epoch)
        self.method.set_epoch(epoch)

    # ------------------------------------------------------------------ the GAN step
    def train_step(self, batch: dict) -> dict:
        """One optimisation step on a device batch; returns the method's outputs (for samples)."""
        batch = step_begin(batch, self.cfg.channels_last, self.cfg.cuda_graphs)
        with self.autocast():
            out = self.method.forward_G(self.G, batch)
        terms_all = {}
        for phase in self.method.update_order:
            _set_requires_grad(self.params_D, phase == "D")
            for own, params in self.params_phase.items():  # a phase's modules learn in that phase only
                _set_requires_grad(params, phase == own)
            with self.autocast():
                if phase == "D":
                    terms = self.method.discriminator_losses(self.D, batch, out, self.gan_loss)
                elif phase == "G":
                    terms = self.method.generator_losses(self.G, self.D, batch, out, self.gan_loss)
                else:
                    terms = self.method.phase_losses(phase, self.G, self.D, batch, out, self.gan_loss)
            if phase == "G":
                self._backward_step(terms, [self.opt_G] + ([self.opt_F] if self.opt_F else []))
            else:
                self._backward_step(terms, [self.optimizers[f"opt_{phase}"]])
            terms_all.update(terms)
        for params in self.params_phase.values():
            _set_requires_grad(params, True)
        _set_requires_grad(self.params_D, True)
        self._accumulate(terms_all)
        return out

    def _backward_step(self, terms: dict[str, torch.Tensor], optimizers: list) -> None:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        if self.comm is not None:
            self.comm.sync_grads(optimizers)
        self.guard.flag_gradients(optimizers)  # on_nonfinite=skip: a faulty phase's steps become no-ops
        for opt in optimizers:
            opt.step()

    def _accumulate(self, terms: dict[str, torch.Tensor]) -> None:
        """Add the step's loss terms to the device-side sums (skipped steps add nothing to the mean)."""
        for name, value in self.guard.watch(terms, self.step + 1).items():
            if name not in self._sums:
                self._sums[name] = torch.zeros((), device=self.device)
            self._sums[name] += value
        self._count += 1

    # ------------------------------------------------------------------ maintenance
    def _after_step(self, batch: dict, out: dict, bar) -> None:
        c = self.cfg
        if c.log_every and self.step % c.log_every == 0:
            self._log(bar)
        if c.sample_every and self.step % c.sample_every == 0 and self.is_main:
            with self.timer.untimed():
                self.write_samples(batch, out)
        if c.ckpt_every and self.step % c.ckpt_every == 0:
            with self.timer.untimed():
                self.save("last.pt")

    def _end_of_epoch(self, epoch: int) -> None:
        if self.cfg.save_epoch_every and epoch % self.cfg.save_epoch_every == 0:
            with self.timer.untimed():
                self.checkpoints.save_epoch(self, epoch)
        if self.evaluate is not None and self.cfg.eval_every_epochs and epoch % self.cfg.eval_every_epochs == 0:
            with self.timer.untimed():
                self.run_evaluation(epoch)

    def _log(self, bar) -> None:
        """Read the accumulated terms back (one synchronisation per ``log_every`` steps) and write them."""
        names = list(self._sums)
        sums = torch.stack([self._sums[n] for n in names])  # [terms]
        if self.comm is not None:  # every rank logs the same numbers (only rank 0 writes them)
            sums = self.comm.mean(sums)
        means = (sums / max(self._count, 1)).tolist()
        self.guard.at_log(self.step)  # raise: a non-finite term stops here; skip: warnings, the stop rule
        sec_per_iter, excluded = self.timer.lap(self.step)
        values = {f"Loss/{n}": m for n, m in zip(names, means)}
        values.update({"Timing/sec_per_iter": sec_per_iter,
                       "Timing/images_per_sec": self.global_batch / max(sec_per_iter, 1e-12),
                       "Timing/excluded_sec": excluded})
        for name, opt in self.optimizers.items():
            values[f"LR/{name[4:]}"] = opt.param_groups[0]["lr"]
        if self.guard.skip:
            values["Train/skipped_steps"] = int(self.guard.skipped)  # log steps only
        self.logger.scalars(self.step, values, {"epoch": self.epoch})
        bar.set_postfix({n: f"{m:.3g}" for n, m in zip(names, means)}, refresh=False)
        self._sums, self._count = {}, 0

    def write_samples(self, batch: dict, out: dict) -> None:
        """Save the sample grid (columns from ``method.visuals``, labelled with their names) as PNG and to
        TensorBoard, and rewrite ``samples/index.html`` (every grid, newest first)."""
        grid = make_grid(self.method.visuals(batch, out), labels=True)  # [3, band + rows*H, cols*W]
        samples = self.run_dir / "samples"
        save_image(grid, samples / f"step_{self.step:08d}.png")
        last = self.checkpoints.last
        write_samples_index(samples, self.run_dir.name, (last[0], f"ckpt/{last[1].name}") if last else None)
        self.logger.image("samples", grid, self.step)
        self.logger.flush()

    def run_evaluation(self, epoch: int) -> dict:
        """Evaluate, log to ``metrics.jsonl``, keep ``best_<metric>.pt`` (lower is better)."""
        values = (self.evaluate(self, epoch) or {}) if self.is_main else {}
        if self.comm is not None:  # the others wait here; every rank keeps the same `best` and saves together
            values = self.comm.broadcast_object(values)
        if values:
            self.last_metrics = dict(values)
            self.logger.scalars(self.step, {f"Metrics/{k}": v for k, v in values.items()}, {"epoch": epoch},
                                file="metrics.jsonl")
            self.checkpoints.keep_best(self, values, epoch)
        return values

    # ------------------------------------------------------------------ interrupts, progress
    def _stop_now(self) -> bool:
        """Whether a SIGINT/SIGTERM asked to stop (a Python flag: no sync). Under several processes rank 0's flag
        is shared at log steps (where the loop synchronises anyway), so every rank stops at the same step."""
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
        if self.checkpoints.last is None or self.checkpoints.last[0] != self.step:
            path = self.save("last.pt")
        self.logger.close()
        raise TrainingInterrupted(self._stop.signum, self.step, path)

    def _bar_desc(self, epoch: int) -> str:
        return f"{self.run_dir.name} ep {epoch}/{self.total_epochs}"
