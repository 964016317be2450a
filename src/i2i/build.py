"""The composition root: from a composed config to plain Python objects — the only module below the CLI that
imports Hydra/OmegaConf.

Every component is a ``_target_`` node built by Hydra's ``instantiate``; the method receives the run's networks
and derives its own shapes (:meth:`i2i.methods.base.Method.create`). What to do with the objects (the run policy
of ``train``, the inference of ``i2i-test``) lives in the CLI modules.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from i2i.compat.published import infer_generator_kwargs, strip_module_prefix
from i2i.data.errors import DataError
from i2i.engine import distributed
from i2i.engine.loop import LoopConfig, Trainer
from i2i.engine.state import CheckpointError, is_checkpoint, mismatch_line, safe_load
from i2i.errors import ConfigError


# ---------------------------------------------------------------------------------------------- helpers
def to_dict(node) -> dict:
    """Resolved plain-dict copy of a config node (or a dict)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def instantiate(node, key: str, **kwargs):
    """``hydra.utils.instantiate(node, **kwargs)`` (lists and dicts as plain Python); a constructor's refusal is one
    :class:`ConfigError` line naming the config group ``key``."""
    try:
        return hydra_instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = _innermost(e)
        if isinstance(cause, (DataError, ConfigError)):  # already one line naming the file or key
            raise cause from None
        raise ConfigError(f"{key}: {_instantiation_cause(e)}") from None


def _innermost(e: BaseException) -> BaseException:
    while e.__cause__ is not None:
        e = e.__cause__
    return e


def _instantiation_cause(e: Exception) -> str:
    """The innermost message of a Hydra instantiation error (the one naming the bad argument)."""
    return str(_innermost(e)).splitlines()[0]


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
    """The generator of a ``generator`` config (initialised by its ``init_type``/``init_gain``, published xavier)."""
    extra = {"input_nc": input_nc} if input_nc is not None else {}
    return instantiate(gcfg, "generator", **extra)


def build_discriminator(dcfg) -> torch.nn.Module:
    """The discriminator of a ``discriminator`` config (returns :class:`~i2i.models.discriminators.DOutput`)."""
    return instantiate(dcfg, "discriminator")


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
    from i2i.models.discriminators import Discriminator

    cls = get_class(cfg.discriminator._target_)
    if not (issubclass(cls, Discriminator) and cls.returns_attention):
        raise ConfigError(f"feedback={cfg.feedback.get('name')} needs an attention discriminator but "
                          f"discriminator._target_={cfg.discriminator._target_} returns no map: use discriminator=pha "
                          "or discriminator=tam (or feedback=none)")


def build_feedback(cfg):
    """The :class:`~i2i.methods.feedback.Feedback` module from ``cfg.feedback`` (None when disabled)."""
    if not feedback_enabled(cfg):
        return None
    return instantiate(cfg.feedback, "feedback")


def build_method(cfg, G: torch.nn.Module, D: torch.nn.Module | None = None) -> torch.nn.Module:
    """The method from ``cfg.method`` through :meth:`Method.create <i2i.methods.base.Method.create>`.

    Hydra instantiates the node partially (nested ``_target_`` nodes such as the sampler become objects); the
    method's ``create`` receives the run's networks (:class:`~i2i.methods.base.Parts`) and derives what it needs.
    """
    from i2i.methods.base import DataSpec, Parts

    input_nc = generator_input_nc(cfg)
    parts = Parts(G=G, D=D, data=DataSpec(channels=int(cfg.data.channels), crop_size=int(cfg.data.crop_size)),
                  new_generator=lambda: build_generator(cfg.generator, input_nc=input_nc),
                  new_discriminator=lambda: build_discriminator(cfg.discriminator),
                  init_type=cfg.generator.get("init_type", "xavier"), init_gain=cfg.generator.get("init_gain", 0.02))
    try:
        factory = hydra_instantiate(cfg.method, _partial_=True, _convert_="all")
        return factory.func.create(parts, *factory.args, **factory.keywords)
    except InstantiationException as e:  # a nested node (the sampler) refused its options
        raise ConfigError(f"method ({cfg.method.get('name')}): {_instantiation_cause(e)}") from None
    except (ValueError, TypeError) as e:  # the methods name the offending key in their message
        message = str(e) if str(e).startswith("method.") else f"method ({cfg.method.get('name')}): {e}"
        raise ConfigError(message) from None


def is_unpaired(dcfg) -> bool:
    """Whether a ``data`` config is a two-domain dataset (its ``_target_`` an UnpairedDataset), not a folder."""
    from i2i.data.unaligned import UnpairedDataset

    target = dcfg.get("_target_")
    try:
        return target is not None and issubclass(get_class(target), UnpairedDataset)
    except (ImportError, ValueError, TypeError):
        raise ConfigError(f"data._target_={target}: no such dataset class — use a data= preset "
                          "(data=unpaired data.root=<dir>)") from None


def build_dataset(dcfg, seed: int, phase: str = "train"):
    """The training dataset of ``data`` (the synthetic domains are generated on first use)."""
    if not is_unpaired(dcfg):
        raise ConfigError(f"data={dcfg.get('name')} is a single folder: training needs an unpaired dataset "
                          "(data=horse2zebra, data=synthetic, ... with data.root=<dir with trainA/trainB>)")
    return instantiate(dcfg, "data", seed=seed, phase=phase)


# ---------------------------------------------------------------------------------------------- training
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
                      on_nonfinite=t.on_nonfinite,
                      max_skip_fraction=t.get("max_skip_fraction", 0.5),
                      epoch_snapshots=t.get("epoch_snapshots", "inference"),
                      keep_last_epochs=t.get("keep_last_epochs"),
                      seed=cfg.seed, lr_g=o.lr_g, lr_d=o.lr_d, lr_f=o.lr_f, fused_adam=bool(fused),
                      tensorboard=t.tensorboard, **speed_levers(t, device))


def speed_levers(t, device: torch.device) -> dict:
    """The ``train.*`` speed keys (engine/speed.py, docs/benchmarks.md) as LoopConfig fields."""
    from i2i.engine.speed import compile_mode

    try:
        compile_mode(t.get("compile", "none"), bool(t.get("cuda_graphs", False)))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if t.get("cuda_graphs", False) and device.type != "cuda":
        raise ConfigError(f"train.cuda_graphs=true needs a CUDA device (device={device}): set train.cuda_graphs=false")
    return {"channels_last": bool(t.get("channels_last", False)), "compile": t.get("compile", "none"),
            "cuda_graphs": bool(t.get("cuda_graphs", False)), "prefetch_factor": t.get("prefetch_factor")}


def build_trainer(cfg, run_dir: Path, dataset=None) -> Trainer:
    """Everything a run needs, on its device, wrapped in a :class:`Trainer` (``dataset``: use this one instead of
    ``cfg.data``'s, e.g. the benchmark's stand-in)."""
    from i2i.data.sampler import build_loader
    from i2i.engine.loop import Networks

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
    method = build_method(cfg, G, D)
    feedback = build_feedback(cfg)
    if feedback is not None:  # ASGIT: D's attention fed to G's input, through Method.translate
        method.feedback = feedback
        feedback.attach(method.feedback_sources(D))
    gan_loss = instantiate(cfg.gan_loss, "gan_loss")
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

    evaluate = build_evaluator(cfg, device, feedback) if lcfg.eval_every_epochs and env.is_main else None
    make_optimizer = instantiate(cfg.optim.optimizer, "optim.optimizer")  # a partial: f(params, lr=...)
    return Trainer(Networks(G, D, method, gan_loss), dataset, loader, lcfg, run_dir, to_dict(cfg), env=env,
                   make_optimizer=make_optimizer, evaluate=evaluate)


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
        prepare = lambda x, batch: feedback.test_input(x, None)
    return make_evaluator(suite, dataset, device, batch_size=1, prepare=prepare)


def distributed_env(cfg) -> distributed.DistEnv:
    """This process's place in a ``torchrun`` launch (one process without one); config errors in one line."""
    try:
        return distributed.init_distributed(resolve_device(cfg.device))
    except ValueError as e:
        raise ConfigError(str(e)) from None


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


def build_test_feedback(cfg, info: dict, G: torch.nn.Module, device: torch.device):
    """Test-time ``prepare(x, batch)`` hook for a run trained with feedback (None otherwise).

    The run's method is rebuilt from the checkpoint's config around ``G`` and given the checkpoint's method and
    discriminator state, so the transfer block and the discriminators are the trained ones.
    ``feedback_placeholder=ones|discriminator`` (default: the run's ``feedback.test_placeholder``) selects the map:
    all ones (the paper) or the map of the discriminator of the input's domain
    (:meth:`Method.feedback_sources <i2i.methods.base.Method.feedback_sources>`: CycleGAN's ``D_A``, the one D of
    a one-sided method).
    """
    from i2i.methods.feedback import Side

    run_cfg = OmegaConf.create(info["cfg"]) if info.get("cfg") else None
    if run_cfg is None or not feedback_enabled(run_cfg):
        return None
    placeholder = cfg.get("feedback_placeholder") or run_cfg.feedback.get("test_placeholder", "ones")
    if placeholder not in ("ones", "discriminator"):
        raise ConfigError(f"feedback_placeholder={placeholder!r}: use ones or discriminator")
    state = info["state"]  # loaded once, by load_generator
    D = build_discriminator(run_cfg.discriminator)
    method = build_method(run_cfg, G, D)
    method.feedback = build_feedback(run_cfg)
    source = method.feedback_sources(D)[Side.A] if placeholder == "discriminator" else None
    try:  # an inference snapshot keeps only what this needs (Method.inference_state_dict)
        missing, _ = method.load_state_dict(state["method"], strict=False)
        if source is D:
            D.load_state_dict(state["D"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{info['path']}: method or discriminator weights do not match the config stored in "
                              f"the checkpoint ({mismatch_line(e) if isinstance(e, RuntimeError) else e}) — use the "
                              "run's own checkpoint") from None
    used = {id(method.feedback), id(source)}
    lost = [k for name, m in method.named_children() if id(m) in used for k in missing if k.startswith(name + ".")]
    if lost:
        raise CheckpointError(f"{info['path']}: the checkpoint lacks {lost[0]} (and {len(lost) - 1} more), which "
                              "feedback inference needs — use the run's last.pt or an epoch snapshot it wrote")
    feedback = method.feedback.to(device).eval()
    feedback.test_placeholder = placeholder
    source = source.to(device).eval() if source is not None else None
    return lambda x, batch: feedback.test_input(x, source)
