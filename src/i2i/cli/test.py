"""``i2i-test ckpt=<run dir | checkpoint | latest_net_G.pth> data=<dataset | folder> [out_dir=...]``: translate images.

Also reachable as ``i2i test`` and ``python -m i2i test`` (there is no ``test`` script: it would shadow
/usr/bin/test).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from i2i import build
from i2i.cli.common import check_overrides, config_dir, run_cli
from i2i.data.errors import DataError
from i2i.errors import ConfigError


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
    from i2i.data.folder import MIN_SIZE, ImageFolderDataset
    from i2i.engine.translate import check_clearable, clear_outputs, translate_dataset

    schema.check(build.to_dict(OmegaConf.masked_copy(cfg, list(schema.TEST))), schema.TEST)  # ckpt: ??? when unset
    device = build.resolve_device(cfg.device)
    if cfg.out_dir is not None:
        check_output_dir(cfg.out_dir, "out_dir")
    build.seed_everything(cfg.seed)
    G, info = build.load_generator(cfg.ckpt, cfg.which)
    data = cfg.data
    unpaired = build.is_unpaired(data)
    if not unpaired and OmegaConf.is_missing(data, "root"):  # i2i-test ckpt=<run>: the run's test split
        data = OmegaConf.create(run_dataset((info.get("cfg") or {}).get("data"), info["path"]))
    channels = check_test_channels(data.get("channels"), info["channels"], info["path"])
    unpaired = build.is_unpaired(data)
    src = build.test_split_dirs(data)[0] if unpaired else Path(data.root)
    if not src.is_dir():
        raise DataError(f"{src}: no such image folder — set data.root=<folder of images> (data=folder) or "
                        "download the dataset (bash scripts/download_dataset.sh <name>)")
    stride = 2 ** getattr(G, "n_downsampling", 2)  # the generator's stride-2 stages: sides divisible by it, >= 2 px after
    dataset = ImageFolderDataset(src, channels=channels, size_multiple=math.lcm(cfg.size_multiple, stride),
                                 min_size=max(MIN_SIZE, 2 * stride), resize=cfg.resize,
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
        elif not unpaired:
            raise ConfigError("metrics need a reference folder: use data=<dataset> (its test split) or "
                              "metrics_real=<folder of target-domain images>")
        else:
            source, real = build.test_split_dirs(data)
        source = source if cfg.fused_kid else None
        suite = build.build_metric_suite(cfg.metrics, real, source, cfg.paths.cache_dir, device, cfg.weights,
                                   extractor=cfg.extractor)
    check_clearable(out_dir, {"images to translate": src, "metrics reference": real, "fused-KID source": source,
                              "checkpoint": ckpt_path})
    prepare = build.build_test_feedback(cfg, info, G, device)
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


@hydra.main(config_path=config_dir(), config_name="test", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    run_cli(run_test, cfg)


def main() -> None:
    """Console entry point (an override Hydra cannot parse is one line, exit 2)."""
    check_overrides()
    _main()


if __name__ == "__main__":
    main()
