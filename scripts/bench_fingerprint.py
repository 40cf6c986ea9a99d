"""Cost of the exact base fingerprint (``read.model.fingerprint``): sha256 throughput over bf16 tensors on this CPU.

    python scripts/bench_fingerprint.py [--gib 2] [--tensor-mib 64]

Hashes ``--gib`` GiB of random bf16 tensors of ``--tensor-mib`` MiB each with :func:`base_record` (what every model
build does once, on the CPU, before the model moves to its device) and prints GiB/s. The base of READ-7B holds
14.4 GiB of bf16 weights (``scripts/model_size.py``), so its one-off cost is that size divided by this rate.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--tensor-mib", type=int, default=64)
    args = ap.parse_args(argv)
    from read.model.fingerprint import base_record

    n = max(1, int(args.gib * 1024 / args.tensor_mib))
    numel = args.tensor_mib * 2**20 // 2
    model = nn.Module()
    for i in range(n):
        model.register_parameter(f"p{i}", nn.Parameter(torch.randn(numel, dtype=torch.bfloat16), requires_grad=False))
    t0 = time.perf_counter()
    record = base_record(model)
    dt = time.perf_counter() - t0
    gib = n * numel * 2 / 2**30
    out = {"tensors": len(record.tensors), "gib": round(gib, 3), "seconds": round(dt, 3),
           "gib_per_s": round(gib / dt, 3), "read_7b_base_seconds_at_this_rate": round(14.39 / (gib / dt), 1)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
