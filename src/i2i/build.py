"""From a composed config to plain Python objects — the only module below the CLI that imports Hydra/OmegaConf.

Runtime facts the YAML cannot know are passed here: the channels of the generator layers a method uses (so
projection heads are built eagerly), the device, the run directory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from i2i.compat.published import infer_generator_kwargs, strip_module_prefix
from i2i.data.errors import DataError
from i2i.engine import distributed, rundir
from i2i.engine.loop import LoopConfig, NonFiniteLossError, Trainer
from i2i.engine.state import CheckpointError, is_checkpoint, mismatch_line, safe_load
from i2i.errors import ConfigError, RunDirError
from i2i.models.layers import init_weights



#: errors caused by the user's input: the CLI prints their one-line message instead of a traceback
USER_ERRORS = (DataError, CheckpointError, NonFiniteLossError, ConfigError, RunDirError)

#: OSError numbers that mean "this directory cannot be written" (no permission, full disk or quota, read-only)
_DISK_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOTDIR}


@contextlib.contextmanager
def disk_errors(run_dir: Path):
    """Turn an OSError of a full or unwritable run directory into one :class:`RunDirError` line."""
    try:
        yield
    except OSError as e:
        if e.errno not in _DISK_ERRNOS:
            raise
        raise RunDirError(f"{e.filename or run_dir}: cannot write ({e.strerror}) — free disk space or fix the "
                          f"permissions of {run_dir} (or choose another paths.checkpoints_dir), then continue with "
                          "resume=auto; the last complete checkpoint is kept") from None

#: samplers selectable with ``method.sampler=<name>``
SAMPLERS = {"random": "i2i.samplers.random.RandomSampler", "dag": "i2i.samplers.dag.DAGSampler"}

#: keys of a component config that are not constructor arguments
_META_KEYS = ("name", "init_type", "init_gain", "sampler", "sampler_options")


# ---------------------------------------------------------------------------------------------- helpers
def to_dict(node) -> dict:
    """Resolved plain-dict copy of a config node (or a dict)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def instantiate(node, drop: tuple[str, ...] = _META_KEYS, **extra):
    """Instantiate ``node['_target_']`` with the node's keys (minus ``drop``) and ``extra`` keyword arguments."""
    kwargs = to_dict(node)
    target = kwargs.pop("_target_")
    for key in drop:
        kwargs.pop(key, None)
    kwargs.update(extra)
    return get_class(target)(**kwargs)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: CUDA is not available on this machine — use device=auto or device=cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_generator(gcfg, input_nc: int | None = None) -> torch.nn.Module:
    """ResnetGenerator from ``generator`` config, initialised as published (xavier, gain 0.02)."""
    extra = {"input_nc": input_nc} if input_nc is not None else {}
    G = instantiate(gcfg, **extra)
    return init_weights(G, gcfg.get("init_type", "xavier"), gcfg.get("init_gain", 0.02))


def build_discriminator(dcfg) -> torch.nn.Module:
    D = instantiate(dcfg)
    return init_weights(D, dcfg.get("init_type", "xavier"), dcfg.get("init_gain", 0.02))


def build_sampler(mcfg):
    name = mcfg.get("sampler", "random")
    if name not in SAMPLERS:
        raise ConfigError(f"method.sampler={name!r} is not known: use one of {', '.join(SAMPLERS)}")
    options = to_dict(mcfg.get("sampler_options") or {})
    try:
        return get_class(SAMPLERS[name])(**options)
    except TypeError as e:
        raise ConfigError(f"method.sampler_options={options} do not fit method.sampler={name} ({e}): set "
                          "method.sampler_options=null or options that sampler takes") from None
    except ValueError as e:
        raise ConfigError(str(e)) from None


def feedback_enabled(cfg) -> bool:
    """Whether ``cfg.feedback`` asks for discriminator-attention feedback (ASGIT)."""
    fb = cfg.get("feedback")
    return fb is not None and fb.get("injection", "none") != "none"


def generator_input_nc(cfg) -> int | None:
    """G's input channels: one more than the images with ``feedback.injection=alpha`` (else from the config)."""
    if feedback_enabled(cfg) and cfg.feedback.injection == "alpha":
        return int(cfg.data.channels) + 1
    return None


def check_feedback(cfg) -> None:
    """Feedback needs a discriminator that returns an attention map; say which keys to fix, before any work."""
    if not feedback_enabled(cfg):
        return
    cls = get_class(cfg.discriminator._target_)
    if not getattr(cls, "returns_attention", False):
        raise ConfigError(f"feedback={cfg.feedback.get('name')} needs an attention discriminator but "
                          f"discriminator._target_={cfg.discriminator._target_} returns no map: use discriminator=pha "
                          "or discriminator=tam (or feedback=none)")


def build_feedback(cfg):
    """The :class:`~i2i.methods.feedback.Feedback` module from ``cfg.feedback`` (None when disabled)."""
    if not feedback_enabled(cfg):
        return None
    try:
        return instantiate(cfg.feedback, drop=("name", "attention"))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"feedback: {e}") from None


def build_method(cfg, G) -> torch.nn.Module:
    """The method, given the generator (its feature channels size the projection heads)."""
    mcfg = cfg.method
    extra = {"sampler": build_sampler(mcfg)} if "sampler" in mcfg else {}
    if getattr(get_class(mcfg._target_), "two_sided", False):  # CycleGAN: a second G (B->A) and D (domain A)
        extra["G_BA"] = build_generator(cfg.generator, input_nc=generator_input_nc(cfg))
        extra["D_A"] = build_discriminator(cfg.discriminator)
    if "nce_layers" in mcfg:
        layers = list(mcfg.nce_layers)
        try:
            extra["feature_channels"] = G.feature_channels(layers)
        except ValueError as e:
            raise ConfigError(f"method.nce_layers={layers}: {e}") from None
    if "pairs" in mcfg:  # EnCo: (encoder, decoder) layer pairs of equal shape
        from i2i.methods.enco import pair_channels

        pairs = [[int(i) for i in p] for p in mcfg.pairs]
        try:
            extra["feature_channels"] = pair_channels(G, pairs, cfg.data.crop_size)
        except ValueError as e:
            raise ConfigError(f"method.pairs={pairs}: {e} — set method.pairs to same-shape pairs") from None
    ignored = ("ignore_keys", *(mcfg.get("ignore_keys") or ()))  # keys other methods' presets set (debug=smoke)
    try:
        return instantiate(mcfg, drop=_META_KEYS + ignored, init_type=cfg.generator.get("init_type", "xavier"),
                           init_gain=cfg.generator.get("init_gain", 0.02), **extra)
    except ValueError as e:  # the methods name the offending key in their message
        raise ConfigError(f"method ({mcfg.get('name')}): {e}") from None


def build_dataset(dcfg, seed: int, phase: str = "train"):
    """UnpairedDataset for ``data`` (the synthetic domains are generated on first use)."""
    from i2i.data.unaligned import UnpairedDataset

    if dcfg.get("kind") != "unpaired":
        raise ConfigError(f"data={dcfg.get('name')} is a single folder: training needs an unpaired dataset "
                          "(data=horse2zebra, data=synthetic, ... with data.root=<dir with trainA/trainB>)")
    if "synthetic" in dcfg:
        from i2i.data.synthetic import make_synthetic_dataset

        s = dcfg.synthetic
        make_synthetic_dataset(dcfg.root, seed=s.seed, size=s.size, n_train=s.n_train, n_test=s.n_test)
    return UnpairedDataset(root=dcfg.root, phase=phase, direction=dcfg.direction, channels=dcfg.channels,
                           load_size=dcfg.load_size, crop_size=dcfg.crop_size, preprocess=dcfg.preprocess,
                           flip=dcfg.flip, serial_batches=dcfg.serial_batches, max_dataset_size=dcfg.max_dataset_size,
                           seed=seed, on_error=dcfg.get("on_error", "raise"))


# ---------------------------------------------------------------------------------------------- training
def write_run_config(cfg, run_dir: Path) -> None:
    """Resolved config and command-line overrides into ``<run>/.hydra/`` (Hydra itself writes nothing)."""
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(command_overrides())))


def check_config(cfg) -> None:
    """Every key's type and range (i2i/schema.py), and what needs two keys, before any work: one line naming the key."""
    from omegaconf.errors import OmegaConfBaseException

    from i2i import schema

    try:
        values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:  # a mandatory value (???) not given, an interpolation that cannot resolve
        key = getattr(e, "full_key", None) or "config"
        raise ConfigError(f"{key}: {str(e).splitlines()[0]} — set {key}=<value> on the command line") from None
    schema.check(values, schema.TRAIN)
    t = cfg.train
    if t.n_epochs + t.n_epochs_decay < 1:
        raise ConfigError(f"train.n_epochs={t.n_epochs}, train.n_epochs_decay={t.n_epochs_decay}: nothing to train "
                          "— set train.n_epochs >= 1")


def loop_config(cfg, device: torch.device) -> LoopConfig:
    t, o = cfg.train, cfg.optim
    amp = t.amp if t.amp != "auto" else ("bf16" if device.type == "cuda" else "none")
    fused = o.fused if o.fused != "auto" else device.type == "cuda"
    return LoopConfig(n_epochs=t.n_epochs, n_epochs_decay=t.n_epochs_decay, warmup_epochs=t.warmup_epochs,
                      batch_size=t.batch_size, max_steps=t.max_steps, num_workers=t.num_workers, log_every=t.log_every,
                      sample_every=t.sample_every, ckpt_every=t.ckpt_every, save_epoch_every=t.save_epoch_every,
                      eval_every_epochs=(cfg.eval.every_epochs or 0) if cfg.eval.metrics else 0, amp=amp,
                      no_crop_after_epoch=cfg.data.get("no_crop_after_epoch"), on_nonfinite=t.on_nonfinite,
                      max_skip_fraction=t.get("max_skip_fraction", 0.5),
                      epoch_snapshots=t.get("epoch_snapshots", "inference"),
                      keep_last_epochs=t.get("keep_last_epochs"),
                      seed=cfg.seed, lr_g=o.lr_g, lr_d=o.lr_d, lr_f=o.lr_f, betas=tuple(o.betas), fused_adam=bool(fused),
                      tensorboard=t.tensorboard, **speed_levers(t, device))


def speed_levers(t, device: torch.device) -> dict:
    """The ``train.*`` speed keys (engine/speed.py, docs/benchmarks.md) as LoopConfig fields."""
    from i2i.engine.speed import compile_mode

    group = t.get("group_layers", False)
    try:
        compile_mode(t.get("compile", "none"), bool(t.get("cuda_graphs", False)))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if t.get("cuda_graphs", False) and device.type != "cuda":
        raise ConfigError(f"train.cuda_graphs=true needs a CUDA device (device={device}): set train.cuda_graphs=false")
    return {"channels_last": bool(t.get("channels_last", False)), "compile": t.get("compile", "none"),
            "cuda_graphs": bool(t.get("cuda_graphs", False)), "prefetch_factor": t.get("prefetch_factor"),
            "group_layers": device.type == "cuda" if group == "auto" else bool(group)}


def build_trainer(cfg, run_dir: Path, dataset=None) -> Trainer:
    """Everything a run needs, on its device, wrapped in a :class:`Trainer` (``dataset``: use this one instead of
    ``cfg.data``'s, e.g. the benchmark's stand-in)."""
    from i2i.data.sampler import build_loader

    check_config(cfg)
    env = distributed_env(cfg)  # torchrun: process group, cuda:<LOCAL_RANK>; else one process on cfg.device
    device = env.device
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    seed_everything(cfg.seed)  # the same on every rank: identical initial weights
    check_feedback(cfg)
    with distributed.main_first(env):  # rank 0 generates/validates files first
        dataset = build_dataset(cfg.data, cfg.seed) if dataset is None else dataset
    G = build_generator(cfg.generator, input_nc=generator_input_nc(cfg))
    D = build_discriminator(cfg.discriminator)
    method = build_method(cfg, G)
    feedback = build_feedback(cfg)
    if feedback is not None:  # ASGIT: D's attention fed to G's input, through Method.translate
        method.feedback = feedback
        feedback.attach(method.feedback_sources(D))
    gan_loss = instantiate(cfg.gan_loss)
    G, D, method = G.to(device), D.to(device), method.to(device)
    if env.enabled:
        distributed.broadcast_modules((G, D, method))  # rank 0's weights everywhere, whatever the init did
        if env.rank > 0:  # own streams for patch sampling, flips, pools (rank 0 keeps the one-process stream)
            seed_everything(distributed.rank_seed(cfg.seed, env.rank))
    lcfg = loop_config(cfg, device)
    pin = device.type == "cuda"

    def loader(ds, epoch: int, start_step: int):
        return build_loader(ds, batch_size=lcfg.batch_size, num_workers=lcfg.num_workers, seed=cfg.seed, epoch=epoch,
                            start_step=start_step, pin_memory=pin, rank=env.rank, world_size=env.world_size,
                            prefetch_factor=lcfg.prefetch_factor)

    comm = distributed.Communicator(env, cfg.seed) if env.enabled else None
    evaluate = build_evaluator(cfg, device, feedback) if lcfg.eval_every_epochs and env.is_main else None
    return Trainer(G, D, method, gan_loss, dataset, lcfg, run_dir, device, to_dict(cfg), loader, evaluate=evaluate,
                   is_main=env.is_main, world_size=env.world_size, comm=comm)


def test_split_dirs(dcfg) -> tuple[Path, Path]:
    """(source, target) test folders of an unpaired dataset, honouring ``data.direction`` (and valA/valB)."""
    from i2i.data.validate import domain_dir

    src, tgt = ("A", "B") if dcfg.direction == "AtoB" else ("B", "A")
    return Path(domain_dir(dcfg.root, "test", src)), Path(domain_dir(dcfg.root, "test", tgt))


def build_metric_suite(metrics, real_dir: Path, source_dir: Path | None, cache_dir, device, weights=None,
                       batch_size: int = 50, extractor: str = "inception", progress: bool = True,
                       fake_total: int | None = None):
    """:class:`~i2i.metrics.MetricSuite` with one-line errors for missing folders, FID weights or a ``cache_dir``
    that is a file.

    ``extractor=mock`` is a testing aid (a fixed random projection instead of Inception): never for reported numbers.
    ``progress`` shows progress bars on stderr; ``fake_total`` is the number of images an iterable of translations
    yields (sizes the bar).
    """
    from i2i.metrics import MetricSuite
    from i2i.metrics.cache import check_cache_dir
    from i2i.metrics.features import make_extractor

    for d in (real_dir, source_dir):
        if d is not None and not Path(d).is_dir():
            raise DataError(f"{d}: no such folder — metrics need the dataset's test split (testA/testB)")
    try:
        check_cache_dir(cache_dir, "paths.cache_dir")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        needs_features = bool({"fid", "kid", "pr"} & set(metrics))
        feats = make_extractor(extractor, weights, str(device)) if needs_features else None
        return MetricSuite(metrics=tuple(metrics), real_dir=real_dir, source_dir=source_dir, cache_dir=cache_dir,
                           device=str(device), weights=weights, batch_size=batch_size, extractor=feats,
                           progress=progress, fake_total=fake_total)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"metrics: {e}") from None


def missing_test_split(dcfg) -> list[Path]:
    """The test folders (source, target) an unpaired dataset lacks (neither ``test<X>/`` nor ``val<X>/``)."""
    return [d for d in test_split_dirs(dcfg) if not d.is_dir()]


def build_evaluator(cfg, device: torch.device, feedback=None):
    """Every ``eval.every_epochs``: translate the test split and compute ``eval.metrics`` against its target side.

    A dataset without a test split (only trainA/ trainB/, e.g. grumpifycat) trains without evaluation: one line
    says why and ``None`` is returned. Progress bars are shown on a terminal only (below the training bar, removed
    when done), so a training log gets the cache lines and warnings but no bar updates.
    """
    from i2i.data.folder import ImageFolderDataset
    from i2i.engine.evaluation import make_evaluator
    from i2i.metrics.progress import stderr_is_terminal

    e = cfg.eval
    missing = missing_test_split(cfg.data)
    if missing:
        tests, vals = (" and ".join(f"{p}{d.name[4:]}/" for d in missing) for p in ("test", "val"))
        print(f"i2i: evaluation off: {cfg.data.root} has no {tests} (nor {vals}) — training runs without "
              f"eval.metrics; to evaluate, add test images in {' and '.join(str(d) for d in missing)} "
              "(eval.metrics=[] drops this line)", file=sys.stderr)
        return None
    src, tgt = test_split_dirs(cfg.data)
    dataset = ImageFolderDataset(src, channels=cfg.data.channels, max_dataset_size=e.num_images)
    suite = build_metric_suite(e.metrics, tgt, src if e.fused_kid else None, cfg.paths.cache_dir, device,
                               e.weights, e.feature_batch_size, e.extractor, progress=stderr_is_terminal(),
                               fake_total=len(dataset))
    prepare = None
    if feedback is not None:  # the test-time placeholder map (all ones by default)
        prepare = lambda x, batch: feedback.test_input(x, None)  # noqa: E731
    return make_evaluator(suite, dataset, device, batch_size=1, prepare=prepare)


def distributed_env(cfg) -> distributed.DistEnv:
    """This process's place in a ``torchrun`` launch (one process without one); config errors in one line."""
    try:
        return distributed.init_distributed(resolve_device(cfg.device))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def command_overrides() -> list[str]:
    """The command line's overrides (empty outside a Hydra app, e.g. when a test composes the config)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run_training(cfg: DictConfig) -> Trainer:
    """``train``: check the config and run dir, build, resume if asked, train, and say where the results are.

    Nothing is written before the config, the data and (when resuming) the checkpoint have been checked; the run
    dir is locked against a second process for the whole run. A resume continues the run that was started: a
    command line that changes its training settings is refused (engine/rundir.py ``RESUME_MAY_CHANGE`` lists what
    may change) unless ``resume_allow_changes=true``, and ``.hydra/config.yaml`` keeps the original config.
    """
    from i2i.engine.banner import print_banner
    from i2i.engine.state import check_training_state

    check_config(cfg)
    env = distributed_env(cfg)
    run_dir = Path(cfg.run_dir)
    rundir.check_location(run_dir)
    with disk_errors(run_dir), rundir.RunLock(run_dir, enabled=env.is_main):
        resume_from = rundir.find_resume(run_dir, cfg.resume)
        state, changes = None, {}
        if resume_from is not None:  # the checkpoint's config is the run's: today's may differ only where allowed
            state = safe_load(resume_from)
            if not is_checkpoint(state):
                raise CheckpointError(f"{resume_from}: not an i2i training checkpoint — resume expects "
                                      "<run>/ckpt/last.pt")
            check_training_state(state, resume_from)  # an inference-only epoch snapshot: one line
            changes = rundir.check_resume_config(state.get("cfg") or {}, to_dict(cfg), run_dir,
                                                 bool(cfg.get("resume_allow_changes", False)))
        trainer = build_trainer(cfg, run_dir)  # validates data and config before anything is written
        if state is not None:  # before anything is written: a mismatching checkpoint leaves the run untouched
            trainer.resume(resume_from, state)
            if env.is_main:
                print(f"i2i: resumed {resume_from} at step {trainer.step} (epoch {trainer.epoch})", file=sys.stderr)
        if env.is_main:
            print_banner(trainer, str(cfg.device))
        env.barrier()  # every rank has checked the run dir before rank 0 writes into it
        if env.is_main:
            if state is None:
                rundir.clear_restartable(run_dir)
                write_run_config(cfg, run_dir)
            else:
                rundir.record_resume(run_dir, trainer.step, resume_from, changes, command_overrides())
        trainer.fit()
    env.barrier()
    if env.is_main:
        print(f"i2i: run finished at step {trainer.step}: {run_dir} (checkpoint {run_dir / 'ckpt' / 'last.pt'})",
              file=sys.stderr)
    distributed.cleanup()
    return trainer


# ---------------------------------------------------------------------------------------------- inference
def load_generator(ckpt: str | Path, which: str = "last.pt") -> tuple[torch.nn.Module, dict]:
    """Generator from a run dir, an i2i checkpoint or a published ``latest_net_G.pth``.

    Returns:
        (G on CPU in eval mode, info dict with ``source``, ``path``, ``channels`` (of the images it translates);
        for our checkpoints also ``cfg`` and the loaded ``state``).
    """
    path = Path(ckpt)
    if path.is_dir():
        path = path / "ckpt" / which
    state = safe_load(path)
    if is_checkpoint(state):
        run_cfg = state["cfg"]
        G = build_generator(OmegaConf.create(run_cfg["generator"]),  # 4 inputs after alpha feedback
                            input_nc=int(state["G"]["model.1.weight"].shape[1]))
        try:
            G.load_state_dict(state["G"])
        except RuntimeError as e:
            raise CheckpointError(f"{path}: generator weights do not match the generator config stored in the "
                                  f"checkpoint ({mismatch_line(e)}) — the file was altered or mixed up; use the run's "
                                  "own checkpoint") from None
        info = {"source": "i2i", "path": str(path), "cfg": run_cfg, "channels": run_cfg["data"]["channels"],
                "step": state["step"], "epoch": state["epoch"], "state": state}
    else:
        if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
            raise CheckpointError(f"{path}: neither an i2i checkpoint nor a generator state_dict")
        state = strip_module_prefix(state)
        try:
            kwargs = infer_generator_kwargs(state)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
        from i2i.models.generators import ResnetGenerator

        G = ResnetGenerator(**kwargs)
        try:
            G.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: not a ResNet generator state_dict ({mismatch_line(e)})") from None
        info = {"source": "published", "path": str(path), "cfg": None, "channels": kwargs["input_nc"],
                "generator": kwargs}
    return G.eval(), info


def build_test_feedback(cfg, info: dict, device: torch.device):
    """Test-time ``prepare(x, batch)`` hook for a run trained with feedback (None otherwise).

    The transfer block comes from the checkpoint's method state; ``feedback_placeholder=ones|discriminator``
    (default: the run's ``feedback.test_placeholder``) selects the map: all ones (the paper) or the map of the
    checkpoint's discriminator of the input's domain (CycleGAN: ``D_A``; one-sided methods: the one D).
    """
    run_cfg = OmegaConf.create(info["cfg"]) if info.get("cfg") else None
    if run_cfg is None or not feedback_enabled(run_cfg):
        return None
    feedback = build_feedback(run_cfg)
    state = info["state"]  # loaded once, by load_generator
    own = {k[len("feedback."):]: v for k, v in state["method"].items() if k.startswith("feedback.")}
    feedback.load_state_dict(own)
    placeholder = cfg.get("feedback_placeholder") or feedback.test_placeholder
    if placeholder not in ("ones", "discriminator"):
        raise ConfigError(f"feedback_placeholder={placeholder!r}: use ones or discriminator")
    feedback.test_placeholder = placeholder
    D = None
    if feedback.test_placeholder == "discriminator":
        D = build_discriminator(run_cfg.discriminator)
        d_a = {k[len("D_A."):]: v for k, v in state["method"].items() if k.startswith("D_A.")}
        D.load_state_dict(d_a or state["D"])
        D = D.to(device).eval()
    feedback = feedback.to(device).eval()
    return lambda x, batch: feedback.test_input(x, D)


def run_test(cfg: DictConfig) -> Path:
    """``i2i-test``: translate a folder (or a dataset's test split) and write images and a gallery.

    The keys are checked before the checkpoint is loaded, and the checkpoint, data and outputs before any image is
    written; each failure is one line naming the key or file. Without ``data.root`` an i2i checkpoint translates
    its own dataset's test split.

    What an earlier ``i2i-test`` wrote into ``out_dir`` (``fake_B/``, ``real_A/``, ``index.html``, ``info.json``,
    ``metrics.json``: engine/translate.py ``OUTPUTS``) is removed before writing, so metrics never count stale
    images; other files there are kept. The gallery and ``info.json`` name the checkpoint, its step and epoch.
    """
    from i2i import schema
    from i2i.checks import check_output_dir, check_test_channels, output_errors, run_dataset
    from i2i.data.folder import ImageFolderDataset
    from i2i.engine.translate import check_clearable, clear_outputs, translate_dataset

    schema.check(to_dict(OmegaConf.masked_copy(cfg, list(schema.TEST))), schema.TEST)  # ckpt: ??? when unset
    device = resolve_device(cfg.device)
    if cfg.out_dir is not None:
        check_output_dir(cfg.out_dir, "out_dir")
    seed_everything(cfg.seed)
    G, info = load_generator(cfg.ckpt, cfg.which)
    data = cfg.data
    if data.kind == "folder" and OmegaConf.is_missing(data, "root"):  # i2i-test ckpt=<run>: the run's test split
        data = OmegaConf.create(run_dataset((info.get("cfg") or {}).get("data"), info["path"]))
    channels = check_test_channels(data.get("channels"), info["channels"], info["path"])
    src = Path(data.root) if data.kind == "folder" else test_split_dirs(data)[0]
    if not src.is_dir():
        raise DataError(f"{src}: no such image folder — set data.root=<folder of images> (data=folder) or "
                        "download the dataset (bash scripts/download_dataset.sh <name>)")
    dataset = ImageFolderDataset(src, channels=channels, size_multiple=cfg.size_multiple, resize=cfg.resize,
                                 max_dataset_size=cfg.num_images)
    ckpt_path = Path(info["path"])
    if cfg.out_dir is not None:
        out_dir = Path(cfg.out_dir)
    elif info["source"] == "i2i" and ckpt_path.parent.name == "ckpt":
        out_dir = ckpt_path.parent.parent / f"test_{ckpt_path.stem}"
    else:
        out_dir = Path("results") / ckpt_path.stem
    check_output_dir(out_dir, "out_dir")
    suite, real, source = None, None, None
    if cfg.metrics:  # checked before translating: a missing reference or weights file fails first
        if cfg.metrics_real is not None:
            real = Path(cfg.metrics_real)
        elif data.kind == "folder":
            raise ConfigError("metrics need a reference folder: use data=<dataset> (its test split) or "
                              "metrics_real=<folder of target-domain images>")
        else:
            source, real = test_split_dirs(data)
        source = source if cfg.fused_kid else None
        suite = build_metric_suite(cfg.metrics, real, source, cfg.paths.cache_dir, device, cfg.weights,
                                   extractor=cfg.extractor)
    check_clearable(out_dir, {"images to translate": src, "metrics reference": real, "fused-KID source": source,
                              "checkpoint": ckpt_path})
    prepare = build_test_feedback(cfg, info, device)
    about = {"checkpoint": info["path"], "source": info["source"], "step": info.get("step"),
             "epoch": info.get("epoch"), "input_dir": str(src)}
    with output_errors(out_dir):
        clear_outputs(out_dir)
        stems = translate_dataset(G.to(device), dataset, out_dir, device, batch_size=cfg.batch_size,
                                  prepare=prepare, about=about)
        (out_dir / "info.json").write_text(json.dumps({**about, "n_images": len(stems)}, indent=2))
    print(f"i2i: translated {len(stems)} images from {src}: {out_dir}/fake_B/ (gallery {out_dir / 'index.html'})",
          file=sys.stderr)
    if suite is not None:
        from i2i.metrics import list_images, write_metrics_json

        try:  # the files, not the folder: fresh translations are not worth a statistics-cache entry
            values = suite.compute(list_images(out_dir / "fake_B"))
        except DataError:
            raise
        except ValueError as e:  # too few images for a metric: the translations are kept
            raise ConfigError(f"metrics={list(cfg.metrics)}: {e} — translate more images or drop the metric "
                              f"(the {len(stems)} translations are in {out_dir})") from None
        with output_errors(out_dir):
            path = write_metrics_json(out_dir / "metrics.json", values, suite.meta())
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, float))
        print(f"i2i: {shown} ({values.get('n_fake')} fake vs {values.get('n_real')} real images): {path}",
              file=sys.stderr)
    return out_dir
