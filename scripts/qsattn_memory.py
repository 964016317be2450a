"""Peak memory of one QS-Attn loss evaluation, straightforward (whole attention matrix) vs chunked.

    python scripts/qsattn_memory.py [--size 256] [--batches 1 4] [--device cuda]

On CUDA it measures ``torch.cuda.max_memory_allocated`` (:func:`qsattn_loss_peak_memory`);
on the CPU the growth of peak resident memory, each configuration in a fresh process. The analytic size of the
dominant attention tensors is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch


def attention_memory_bytes(batch: int, size: int = 256, chunked: bool = True, attention: str = "global",
                           num_patches: int = 256, chunk_size: int = 512, channels: int = 256, window: int = 7,
                           num_attn_layers: int = 2, nce_idt: bool = True, dtype_bytes: int = 4) -> dict[str, int]:
    """Analytic size of the dominant attention tensors of one QS-Attn loss evaluation (forward + backward).

    Assumes the published layers (attention on 1/4-resolution features with ``channels`` channels), identity
    NCE doubling the images (B' = 2B), float32. ``kept`` = tensors saved for backward over all attention
    layers; ``transient`` = the largest temporaries of one layer's forward; ``peak`` = kept + transient.
    Convolutional activations and the three CUT-sampled layers are not counted (equal in both paths).
    """
    imgs = batch * (2 if nce_idt else 1)
    m = (size // 4) ** 2  # HW at the attention layers
    n, k2 = min(num_patches, m), window * window
    sel, route = {"global": ("global", "global"), "local": ("local", "local"),
                  "local_global": ("local", "global")}[attention]
    if not chunked:  # logits + softmax + entropy temp of the whole matrix; softmax kept for backward
        per = m * m if route == "global" else m * k2 * channels  # whole matrix / one unfolded copy
        kept, transient = num_attn_layers * imgs * per, 3 * imgs * per
        if sel != route:
            transient += 3 * imgs * (m * m if sel == "global" else m * k2)
    else:  # score chunks under no_grad, only the selected rows (or gathered neighbours) with gradient
        rows = n * m if route == "global" else 3 * n * k2 * channels
        score = 3 * min(chunk_size, m) * m if sel == "global" else m * k2 + m * channels
        kept, transient = num_attn_layers * imgs * rows, imgs * (score + rows)
    return {"kept": kept * dtype_bytes, "transient": transient * dtype_bytes,
            "peak": (kept + transient) * dtype_bytes}


def qsattn_loss_peak_memory(batch: int, size: int = 256, chunked: bool = True, device: str = "cuda",
                            attention: str = "global", chunk_size: int = 512, ngf: int = 64) -> dict:
    """Peak memory of one QS-Attn NCE loss evaluation (all five layers, forward + backward).

    The generator features (published layers 0, 4, 8, 12, 16 of a ResNet-9, identity NCE on) are given as
    leaf tensors, so only the sampler, the projection heads and PatchNCE are measured. On CUDA the result is
    ``torch.cuda.max_memory_allocated`` minus the memory held before the evaluation; on the CPU the growth of the
    process's peak resident memory (``ru_maxrss``; run each configuration in a fresh process, as
    ``scripts/qsattn_memory.py`` does); the analytic estimate (:func:`attention_memory_bytes`) always.

    Returns:
        ``{"device", "batch", "size", "chunked", "attention", "measured_bytes", "measured_how", "analytic": {...}}``.
    """
    from i2i.methods.qsattn import QSAttn
    from i2i.models.generators import ResnetGenerator

    layers = [0, 4, 8, 12, 16]
    with torch.device("meta"):  # shapes only, no weights
        shapes = ResnetGenerator(ngf=ngf).feature_shapes(layers, size)
    result = {"device": str(device), "batch": batch, "size": size, "chunked": chunked, "attention": attention,
              "measured_bytes": None,
              "analytic": attention_memory_bytes(batch, size, chunked, attention, chunk_size=chunk_size,
                                                 channels=shapes[-1][0])}
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return result
    method = QSAttn([c for c, _, _ in shapes], layers, attention=attention,
                    chunk_size=chunk_size if chunked else 0).to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    feats = [[torch.randn(2 * batch, *s, device=dev, generator=gen).requires_grad_() for s in shapes]
             for _ in range(2)]
    if dev.type != "cuda":  # CPU: growth of the process's peak resident memory (meaningful in a fresh process)
        import resource

        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method.nce_per_image(feats[0], feats[1]).mean().backward()
        result["measured_bytes"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
        result["measured_how"] = "CPU peak RSS growth (ru_maxrss)"
        return result
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    method.nce_per_image(feats[0], feats[1]).mean().backward()
    torch.cuda.synchronize(dev)
    result["measured_bytes"] = torch.cuda.max_memory_allocated(dev) - base
    result["measured_how"] = "torch.cuda.max_memory_allocated"
    return result


def measure(batch: int, size: int, chunked: bool, device: str, attention: str) -> dict:
    """One configuration; on the CPU in a fresh process so that its peak RSS is its own."""
    if device.startswith("cuda"):
        return qsattn_loss_peak_memory(batch, size, chunked, device, attention)
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            "from qsattn_memory import qsattn_loss_peak_memory as m; "
            f"print(json.dumps(m({batch}, {size}, {chunked}, {device!r}, {attention!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--attention", nargs="+", default=["global", "local", "local_global"])
    args = parser.parse_args()
    mib = 2**20
    print("| attention | batch | path | measured peak (MiB) | analytic kept / peak (MiB) |")
    print("|---|---|---|---|---|")
    for attention in args.attention:
        for batch in args.batches:
            for chunked in (False, True):
                r = measure(batch, args.size, chunked, args.device, attention)
                measured = "n/a" if r["measured_bytes"] is None else f"{r['measured_bytes'] / mib:.0f}"
                a = r["analytic"]
                print(f"| {attention} | {batch} | {'chunked' if chunked else 'straightforward'} | {measured} | "
                      f"{a['kept'] / mib:.0f} / {a['peak'] / mib:.0f} |")


if __name__ == "__main__":
    main()
