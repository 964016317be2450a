"""Peak memory of one QS-Attn loss evaluation, straightforward (whole attention matrix) vs chunked.

    python scripts/qsattn_memory.py [--size 256] [--batches 1 4] [--device cuda]

On CUDA it measures ``torch.cuda.max_memory_allocated`` (see ``i2i.samplers.qsattn.qsattn_loss_peak_memory``);
on the CPU the growth of peak resident memory, each configuration in a fresh process. The analytic size of the
dominant attention tensors is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from i2i.samplers.qsattn import qsattn_loss_peak_memory


def measure(batch: int, size: int, chunked: bool, device: str, attention: str) -> dict:
    """One configuration; on the CPU in a fresh process so that its peak RSS is its own."""
    if device.startswith("cuda"):
        return qsattn_loss_peak_memory(batch, size, chunked, device, attention)
    code = ("import json, torch; from i2i.samplers.qsattn import qsattn_loss_peak_memory as m; "
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
