"""``i2i-compare``: FID / KID / SWD / precision-recall of one image folder against another, and metrics.json.

Thin Hydra wrapper over :class:`i2i.metrics.evaluate.MetricSuite` (config: configs/compare.yaml)::

    i2i-compare fake=results/x/test_latest/images/fake_B real=datasets/horse2zebra/testB metrics=[fid,kid] out=res/
"""

from __future__ import annotations

import time

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from i2i.cli.common import check_overrides, config_dir, run_cli
from i2i.metrics.evaluate import MetricSuite, metrics_json_path, write_metrics_json
from i2i.metrics.features import make_extractor

_FEATURE_METRICS = {"fid", "kid", "pr"}


def format_report(values: dict) -> list[str]:
    """Human-readable lines for the values dict of ``MetricSuite.compute``."""
    lines = [f"images: fake {values['n_fake']}, real {values['n_real']}"
             + (f", source {values['n_source']}" if "n_source" in values else "")]
    if "fid" in values:
        lines.append(f"FID        {values['fid']:.4f}")
    if "kid" in values:
        lines.append(f"KID x100   {values['kid']:.4f} ± {values['kid_std']:.4f}   (target-KID)")
    if "kid_fused" in values:
        lines.append(f"fused-KID  {values['kid_fused']:.4f} ± {values['kid_fused_std']:.4f}   (x100, target U source)")
    if "swd" in values:
        levels = ", ".join(f"{r}: {v:.2f}" for r, v in values["swd_levels"].items())
        lines.append(f"SWD x1e3   {values['swd']:.4f}   ({levels})")
    if "precision" in values:
        lines.append(f"precision  {values['precision']:.4f}   recall {values['recall']:.4f}")
    return lines


def check_config(cfg: dict) -> str:
    """Every key of configs/compare.yaml checked before any work; returns the device to use.

    Raises:
        ConfigError: one line naming the bad key (also ``device=cuda`` without CUDA, ``cache_dir`` or ``out``
            blocked by an existing file).
    """
    from i2i import schema
    from i2i.build import ConfigError, resolve_device
    from i2i.checks import check_output_dir
    from i2i.metrics.cache import check_cache_dir

    schema.check({k: cfg.get(k) for k in schema.COMPARE}, schema.COMPARE)
    device = str(resolve_device(cfg["device"]))  # device=cuda without CUDA: one line naming device
    if cfg["use_cache"]:
        try:
            check_cache_dir(cfg["cache_dir"], "cache_dir")
        except ValueError as e:
            raise ConfigError(str(e)) from None
    check_output_dir(metrics_json_path(cfg["out"]).parent, "out", cfg["out"])
    return device


def run(cfg: dict) -> dict:
    """Compute, print and write the metrics for a plain config dict (the keys of configs/compare.yaml)."""
    device = check_config(cfg)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg["num_threads"]))
    metrics = list(cfg["metrics"])
    extractor = None
    if _FEATURE_METRICS & set(metrics):
        extractor = make_extractor(cfg["extractor"], weights=cfg["weights"], device=device)
    t0 = time.time()
    suite = MetricSuite(metrics, cfg["real"], extractor=extractor, cache_dir=cfg["cache_dir"], device=device,
                        source_dir=cfg["real2"], batch_size=cfg["batch_size"], num_workers=cfg["num_workers"],
                        kid_subsets=cfg["kid_subsets"], kid_subset_size=cfg["kid_subset_size"],
                        swd_resolution=cfg["swd_resolution"], pr_k=cfg["pr_k"], seed=cfg["seed"],
                        use_cache=cfg["use_cache"])
    values = suite.compute(cfg["fake"])
    meta = {**suite.meta(), "fake_dir": str(cfg["fake"]), "seconds": round(time.time() - t0, 2)}
    for line in format_report(values):
        print(line)
    path = write_metrics_json(cfg["out"], values, meta)
    print(f"wrote {path}")
    return values


#: what the metrics package raises for bad folders and values (its messages name the folder or key)
INPUT_ERRORS = (FileNotFoundError, ValueError, TypeError)


@hydra.main(config_path=config_dir(), config_name="compare", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    run_cli(run, OmegaConf.to_container(cfg, resolve=True), also=INPUT_ERRORS)


def main() -> None:
    """Console entry point (``i2i-compare``); an override Hydra cannot parse is one line, exit 2."""
    check_overrides()
    _main()


if __name__ == "__main__":
    main()
