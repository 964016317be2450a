#!/usr/bin/env python
"""Seconds per training iteration of every method, built from the real configs (docs/benchmarks.md).

For each method x mode x batch size: a Trainer is built by ``i2i.build.build_trainer`` from ``compose()`` of
configs/ (the same objects ``train`` runs), fed device-resident random batches (rotating among 4), and
``Trainer.train_step`` is timed. On CUDA each iteration is bracketed by CUDA events recorded between steps and
the host synchronises once after the timed loop (never inside a step); on the CPU a host clock is read between
steps. Reported: median s/iter, images/s (batch / s), peak GPU memory, FLOPs per iteration (FlopCounterMode on a
``meta``-device step; FastCUT: analytic expectation over its flip coin) and achieved TFLOP/s.

    python scripts/benchmark.py                                   # CUDA: all methods, 256x256, batch 1 and 4
    python scripts/benchmark.py --size 32 --ngf 8 --iters 3 --warmup 1 --methods cut,fastcut --device cpu
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

#: benchmark name -> experiment preset (skipped with a note when the preset does not exist)
METHODS = {"cut": "cut_horse2zebra", "fastcut": "fastcut_horse2zebra", "qsattn_global": "qsattn_horse2zebra",
           "qsattn_local": "qsattn_local_horse2zebra", "qsattn_local_global": "qsattn_localglobal_horse2zebra",
           "enco": "enco_horse2zebra", "cut_feedback": "cut_feedback_horse2zebra",
           "cyclegan_feedback": "cyclegan_feedback_horse2zebra", "dclgan": "dclgan_horse2zebra",
           "simdcl": "simdcl_horse2zebra", "hneg_src": "hneg_src_horse2zebra", "monce": "monce_horse2zebra",
           "negcut": "negcut_horse2zebra", "fsesim": "fsesim_horse2zebra", "lsesim": "lsesim_horse2zebra"}
_OFF = ["train.channels_last=false", "train.compile=none", "train.cuda_graphs=false"]
#: mode -> overrides; fp32-eager is the baseline (no levers at all)
MODES = {"fp32-eager": ["train.amp=none", "optim.fused=false"] + _OFF,
         "bf16": ["train.amp=bf16"] + _OFF,
         "bf16-nhwc": ["train.amp=bf16", "train.channels_last=true", "train.compile=none", "train.cuda_graphs=false"],
         "bf16-compile": ["train.amp=bf16", "train.channels_last=false", "train.compile=default",
                          "train.cuda_graphs=false"],
         "bf16-graphs": ["train.amp=bf16", "train.channels_last=false", "train.compile=default",
                         "train.cuda_graphs=true"],
         "bf16-max": ["train.amp=bf16", "train.channels_last=false", "train.compile=max-autotune",
                      "train.cuda_graphs=true"]}
CUDA_ONLY = {"bf16-graphs", "bf16-max"}
COLUMNS = ["method", "mode", "batch", "s_per_iter", "images_per_s", "peak_mem_GB", "GFLOP_per_iter",
           "TFLOP_per_s", "syncs_per_step", "note"]


class StandIn:
    """Dataset stand-in: the benchmark feeds device batches itself (data loading is measured by --extras decode)."""

    def __len__(self) -> int:
        return 10**6

    def set_epoch(self, epoch: int) -> None:
        pass


def compose_cfg(experiment: str, args, extra: list[str], device: str, batch: int):
    from hydra import compose, initialize_config_dir

    tmp = tempfile.mkdtemp(prefix="i2i-bench-")
    overrides = [f"experiment={experiment}", f"device={device}", f"train.batch_size={batch}",
                 f"data.load_size={args.size}", f"data.crop_size={args.size}", f"generator.ngf={args.ngf}",
                 f"discriminator.ndf={args.ngf}", "train.tensorboard=false", f"paths.checkpoints_dir={tmp}",
                 f"paths.datasets_dir={tmp}", f"paths.cache_dir={tmp}", "eval.every_epochs=0"] + extra
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
        if "vgg_weights" in cfg.method and cfg.method.vgg_weights is None:  # a loss on VGG-16 features: random
            cfg = compose(config_name="train", overrides=overrides + [f"method.vgg_weights={random_vgg16(tmp)}"])
        return cfg


def random_vgg16(directory: str) -> str:
    """A VGG-16 ``features`` state_dict with random weights (timing and FLOPs do not depend on the values)."""
    import torchvision

    path = Path(directory) / "vgg16_random.pth"
    if not path.is_file():
        features = torchvision.models.vgg16(weights=None).features
        torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return str(path)


def make_batches(batch: int, size: int, channels: int, device: torch.device, count: int = 4) -> list[dict]:
    """``count`` random batches in [-1, 1] with the keys of the real loader."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(count):
        b = {}
        for side in ("A", "B"):
            b[side] = (torch.rand(batch, channels, size, size, generator=gen) * 2 - 1).to(device)
            b[f"{side}_path"] = [f"{side}/{i}_{j}.jpg" for j in range(batch)]
            b[f"{side}_index"] = torch.arange(i * batch, (i + 1) * batch, device=device)
            b[f"{side}_params"] = torch.tensor([[0, 0, size, size, 0]] * batch, device=device)
        out.append(b)
    return out


def build(experiment: str, args, extra: list[str], device: str, batch: int):
    from i2i.build import build_trainer

    cfg = compose_cfg(experiment, args, extra, device, batch)
    trainer = build_trainer(cfg, Path(cfg.run_dir), dataset=StandIn())
    return trainer, cfg


def count_iteration_flops(experiment: str, args, batch: int) -> tuple[float | None, str]:
    """FLOPs of one iteration from a meta-device step (no compute); FastCUT: analytic expectation."""
    from flops import count_flops, cut_step_flops

    try:
        trainer, cfg = build(experiment, args, ["train.amp=none", "optim.fused=false"] + _OFF, "meta", batch)
        m = cfg.method
        if m.get("flip_equivariance") and m._target_.endswith("cut.CUT"):
            kw = dict(size=args.size, batch=batch, nce_layers=list(m.nce_layers), num_patches=m.num_patches,
                      nc=m.nc, nce_idt=m.nce_idt, negatives=m.negatives, channels=cfg.data.channels)
            flops = [cut_step_flops(trainer.G, trainer.D, flipped=f, **kw)["total"] for f in (False, True)]
            return sum(flops) / 2, "FLOPs: E over flip coin"
        data = make_batches(batch, args.size, cfg.data.channels, torch.device("meta"), 1)[0]
        autocast = torch.autocast  # torch.autocast("meta") is unsupported: samplers that switch autocast off
        torch.autocast = lambda dev, *a, **k: autocast("cpu" if dev == "meta" else dev, *a, **k)  # get CPU's
        try:
            total, _ = count_flops(trainer.train_step, data)
        finally:
            torch.autocast = autocast
        return float(total), ""
    except Exception as e:  # a data-dependent host read fails on meta: report it, keep going
        return None, f"meta step failed ({type(e).__name__}: {str(e).splitlines()[0][:80]})"


def time_steps(trainer, batches: list[dict], warmup: int, iters: int, device: torch.device) -> list[float]:
    """Seconds of each of ``iters`` steps after ``warmup`` steps; no synchronisation inside a step."""
    for i in range(warmup):
        trainer.train_step(batches[i % len(batches)])
    if device.type != "cuda":
        times = []
        for i in range(iters):
            t0 = time.perf_counter()
            trainer.train_step(batches[i % len(batches)])
            times.append(time.perf_counter() - t0)
        return times
    torch.cuda.synchronize(device)
    events = [torch.cuda.Event(enable_timing=True) for _ in range(iters + 1)]
    events[0].record()
    for i in range(iters):
        trainer.train_step(batches[i % len(batches)])
        events[i + 1].record()
    torch.cuda.synchronize(device)
    return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(iters)]


def profile_steps(trainer, batches: list[dict], out_dir: Path, device: torch.device, steps: int = 5) -> None:
    """torch.profiler over ``steps`` warm steps: top ops by device (or CPU) time, and a Chrome trace."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(steps):
            trainer.train_step(batches[i % len(batches)])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(out_dir / "trace.json"))
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=25)
    (out_dir / "top_ops.txt").write_text(table)
    print(f"profile: {out_dir}/top_ops.txt, trace.json", file=sys.stderr)


def count_syncs(trainer, batches: list[dict], steps: int = 2) -> int:
    """Synchronising CUDA calls per step (torch.cuda.set_sync_debug_mode), after warm-up."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for i in range(steps):
                trainer.train_step(batches[i % len(batches)])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return round(sum("synchroniz" in str(w.message) for w in caught) / steps)


def run_one(name: str, mode: str, batch: int, args, flops: float | None) -> dict:
    experiment = METHODS[name]
    row = {"method": name, "mode": mode, "batch": batch, "note": ""}
    trainer, cfg = build(experiment, args, MODES[mode], args.device, batch)
    device = trainer.device
    batches = make_batches(batch, args.size, cfg.data.channels, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = time_steps(trainer, batches, args.warmup, args.iters, device)
    sec = statistics.median(times)
    if args.profile:
        profile_steps(trainer, batches, Path(args.profile) / f"{name}_{mode}_b{batch}", device)
    row.update(s_per_iter=sec, images_per_s=batch / sec,
               peak_mem_GB=torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
               GFLOP_per_iter=flops / 1e9 if flops else None, TFLOP_per_s=flops / sec / 1e12 if flops else None,
               syncs_per_step=count_syncs(trainer, batches) if device.type == "cuda" and args.sync_check else None)
    del trainer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_table(rows: list[dict], columns: list[str]) -> None:
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for x in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(x, widths)) + " |")


def environment(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'}, " \
        f"{torch.get_num_threads()} threads)"
    return {"device": name, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from i2i.build import resolve_device

    device = resolve_device(args.device)
    args.device = str(device)
    env = environment(device)
    print(f"# i2i benchmark — {env['device']} — torch {env['torch']} — {env['date']}")
    print(f"# {env['command']}")
    rows, notes = [], []
    for name in args.methods:
        if name not in METHODS:
            raise SystemExit(f"--methods: unknown method {name!r}; use some of {', '.join(METHODS)}")
        if not (REPO / "configs" / "experiment" / f"{METHODS[name]}.yaml").is_file():
            notes.append(f"{name}: skipped (configs/experiment/{METHODS[name]}.yaml does not exist yet)")
            continue
        for batch in args.batches:
            flops, note = count_iteration_flops(METHODS[name], args, batch)
            if args.flops_only:
                rows.append({"method": name, "mode": "meta", "batch": batch, "note": note,
                             "GFLOP_per_iter": flops / 1e9 if flops else None})
            for mode in [] if args.flops_only else args.modes:
                if mode in CUDA_ONLY and device.type != "cuda":
                    continue
                try:
                    row = run_one(name, mode, batch, args, flops)
                except Exception as e:  # keep measuring the others; the note says what broke
                    row = {"method": name, "mode": mode, "batch": batch,
                           "note": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"}
                row["note"] = "; ".join(x for x in (row["note"], note) if x)
                rows.append(row)
                print(f"  {name} {mode} b{batch}: {fmt(row.get('s_per_iter'))} s/iter", file=sys.stderr, flush=True)
    add_speedups(rows)
    print_table(rows, COLUMNS + ["speedup_vs_fp32"])
    extras = run_extras(args, device)
    for n in notes:
        print(f"note: {n}")
    if args.out:
        Path(args.out).write_text(json.dumps({"env": env, "rows": rows, "extras": extras, "notes": notes}, indent=2))
    return 0


def add_speedups(rows: list[dict]) -> None:
    base = {(r["method"], r["batch"]): r.get("s_per_iter") for r in rows if r["mode"] == "fp32-eager"}
    for r in rows:
        b = base.get((r["method"], r["batch"]))
        r["speedup_vs_fp32"] = b / r["s_per_iter"] if b and r.get("s_per_iter") else None


def run_extras(args, device: torch.device) -> dict:
    from benchmark_extras import decode_cost, metrics_cost, qsattn_memory

    out = {}
    if "qsattn-memory" in args.extras:
        out["qsattn_memory"] = qsattn_memory(args, device)
    if "decode" in args.extras:
        out["decode"] = decode_cost(args)
    if "metrics" in args.extras:
        out["metrics"] = metrics_cost(args, device)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    csv = lambda s: [x for x in s.split(",") if x]
    p.add_argument("--methods", type=csv, default=list(METHODS), help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--modes", type=csv, default=None, help=f"comma list of {', '.join(MODES)} "
                   "(default: all on CUDA, fp32-eager,bf16 on CPU)")
    p.add_argument("--batches", type=lambda s: [int(x) for x in csv(s)], default=[1, 4])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--ngf", type=int, default=64, help="generator ngf and discriminator ndf")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-sync-check", dest="sync_check", action="store_false",
                   help="skip counting synchronising CUDA calls per step")
    p.add_argument("--extras", type=csv, default=["qsattn-memory", "decode", "metrics"],
                   help="comma list of qsattn-memory, decode, metrics (or none)")
    p.add_argument("--data-root", default=str(REPO / "datasets" / "horse2zebra"))
    p.add_argument("--decode-images", type=int, default=200)
    p.add_argument("--metrics-images", type=int, default=100, help="images timed; the cost is scaled to 500")
    p.add_argument("--profile", default=None, help="directory: profile 5 steps of every run (top ops + trace)")
    p.add_argument("--flops-only", action="store_true", help="only count FLOPs per iteration (meta device, no timing)")
    p.add_argument("--out", default=None, help="write all numbers as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.modes is None:
        cuda = (torch.cuda.is_available() and args.device in ("auto", "cuda")) or args.device.startswith("cuda")
        args.modes = list(MODES) if cuda else ["fp32-eager", "bf16"]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        p.error(f"--modes: unknown {unknown}; use some of {', '.join(MODES)}")
    return args


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    raise SystemExit(main())
