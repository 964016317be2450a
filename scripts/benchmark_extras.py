"""Optional measurements of scripts/benchmark.py: QS-Attn loss memory, data decode cost, metric evaluation cost.

Each function prints a short table and returns its numbers (they go into ``--out``). A missing piece (another
package part not there yet, no data, no weights) is reported as a note, never an error.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import torch


def qsattn_memory(args, device: torch.device) -> list[dict]:
    """Peak memory of one QS-Attn NCE loss evaluation, straightforward vs chunked, batch 1 and 4 (global)."""
    from qsattn_memory import qsattn_loss_peak_memory  # scripts/ (on sys.path when run as a script)

    rows = []
    print("\nQS-Attn loss peak memory (one NCE evaluation, forward + backward; MB)")
    print("| attention | batch | chunked | measured_MB | analytic_MB |")
    print("|---|---|---|---|---|")
    for attention in ("global", "local"):
        for batch in (1, 4):
            for chunked in (False, True):
                r = qsattn_loss_peak_memory(batch, args.size, chunked, str(device), attention=attention, ngf=args.ngf)
                # off CUDA the in-process RSS growth is not per configuration: scripts/qsattn_memory.py measures it
                meas = r["measured_bytes"] / 2**20 if device.type == "cuda" and r["measured_bytes"] is not None else None
                ana = r["analytic"]["peak"] / 2**20
                rows.append({"attention": attention, "batch": batch, "chunked": chunked, "measured_MB": meas,
                             "analytic_MB": ana})
                print(f"| {attention} | {batch} | {chunked} | {'-' if meas is None else f'{meas:.1f}'} | {ana:.1f} |")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def _median_ms(fn, items) -> float:
    times = []
    for x in items:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def decode_cost(args) -> dict:
    """Per-image CPU cost of the training input pipeline on real JPEGs: decode, resize 286 + crop 256 + flip,
    to tensor; and one full ``UnpairedDataset`` item (two images), in milliseconds (single thread)."""
    from i2i.data.images import list_images, load_image, to_tensor
    from i2i.data.transforms import transform_pil
    from i2i.data.unaligned import UnpairedDataset

    root = Path(args.data_root)
    if not (root / "trainA").is_dir():
        print(f"note: decode skipped ({root}/trainA not found; pass --data-root)")
        return {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        paths = list_images(root / "trainA")[: args.decode_images]
        images = [load_image(p) for p in paths]
        rng = random.Random(0)
        kw = dict(preprocess="resize_and_crop", load_size=286, crop_size=256, flip=True)
        out = {"images": len(paths), "source_size": list(images[0].size),
               "decode_ms": _median_ms(load_image, paths),
               "resize_crop_flip_ms": _median_ms(lambda im: transform_pil(im, rng, **kw), images),
               "to_tensor_ms": _median_ms(to_tensor, [transform_pil(im, rng, **kw)[0] for im in images])}
        ds = UnpairedDataset(root, phase="train", validate=False)
        out["dataset_item_ms"] = _median_ms(ds.__getitem__, range(min(len(ds), args.decode_images)))
    finally:
        torch.set_num_threads(threads)
    out["images_per_s_per_core"] = 2e3 / out["dataset_item_ms"]
    print(f"\nData pipeline on this host's CPU (one core, median over {len(paths)} images of {root.name}/trainA, "
          f"{out['source_size'][0]}x{out['source_size'][1]} JPEG)")
    for k in ("decode_ms", "resize_crop_flip_ms", "to_tensor_ms", "dataset_item_ms"):
        print(f"  {k}: {out[k]:.2f}")
    print(f"  => {out['images_per_s_per_core']:.0f} images/s per worker core (one item = real A + real B)")
    return out


def metrics_cost(args, device: torch.device) -> dict:
    """Inception pool3 feature extraction time per 256x256 image, scaled to 500 images, plus FID+KID math."""
    try:
        import numpy as np

        from i2i.metrics.features import InceptionExtractor
        from i2i.metrics.fid import frechet_distance
        from i2i.metrics.kid import kid
        from i2i.metrics.stats import stats_from_features
        extractor = InceptionExtractor(device=str(device))
    except Exception as e:  # no weights / package part missing
        print(f"note: metrics skipped ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
        return {}
    n, bs = args.metrics_images, 50
    gen = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8, generator=gen) for _ in range(n)]
    extractor(imgs[:2])  # warm-up (cuDNN autotune, lazy init)
    t0 = time.perf_counter()
    feats = np.concatenate([extractor(imgs[i:i + bs]).numpy() for i in range(0, n, bs)])
    per_image = (time.perf_counter() - t0) / n
    feats = np.concatenate([feats] * -(-500 // n))[:500] + np.random.default_rng(0).normal(0, 1e-3, (500, 2048))
    t0 = time.perf_counter()
    s = stats_from_features(feats)
    frechet_distance(s.mu, s.sigma, s.mu, s.sigma)
    kid(feats, feats[::-1].copy())
    math_s = time.perf_counter() - t0
    out = {"device": str(device), "feature_ms_per_image": 1e3 * per_image, "features_500_s": 500 * per_image,
           "fid_kid_math_s": math_s, "total_500_s": 500 * per_image + math_s}
    print(f"\nMetrics (FID/KID) on 500 images, {device}: {out['feature_ms_per_image']:.1f} ms/image features "
          f"(timed on {n}), {out['fid_kid_math_s']:.1f} s FID+KID math -> {out['total_500_s']:.0f} s "
          "(+ the same again for the real side unless cached)")
    return out
