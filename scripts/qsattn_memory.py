"""Peak memory of one QS-Attn loss evaluation, straightforward (whole attention matrix) vs chunked.

    python scripts/qsattn_memory.py [--size 256] [--batches 1 4] [--device cuda]

On CUDA it measures ``torch.cuda.max_memory_allocated`` (see ``i2i.samplers.qsattn.qsattn_loss_peak_memory``);
elsewhere it prints the analytic size of the dominant attention tensors.
"""

from __future__ import annotations

import argparse

import torch

from i2i.samplers.qsattn import qsattn_loss_peak_memory


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
                r = qsattn_loss_peak_memory(batch, args.size, chunked, args.device, attention)
                measured = "n/a" if r["measured_bytes"] is None else f"{r['measured_bytes'] / mib:.0f}"
                a = r["analytic"]
                print(f"| {attention} | {batch} | {'chunked' if chunked else 'straightforward'} | {measured} | "
                      f"{a['kept'] / mib:.0f} / {a['peak'] / mib:.0f} |")


if __name__ == "__main__":
    main()
