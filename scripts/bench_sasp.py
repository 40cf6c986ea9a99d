"""Benchmark: windowed Discrete-to-Continuous (read.model.sasp) vs the official full-grid computation.

The reference is written out here plainly, as the official code does it (spec 2.3 and 2.6): the dense map is
materialised at the original image resolution (min-max -> 24x24 -> bilinear 336 -> zero aspect padding ->
bilinear (H, W)), ``p = softmax`` over all H*W pixels, and for each point (a Python loop) the squared distance to
every pixel, ``w = exp(-d) * p`` normalised, and the weighted mean of the pixel coordinates: O(points x H x W).
Both sides start from the same raw similarity vector and include the point selection, so the times are end to
end. ``--ref-dtype float64`` runs the reference in double precision (an exact yardstick for the coordinates).

Usage:
    python scripts/bench_sasp.py [--repeats 3] [--sizes 640x480 1920x1080 4000x3000] [--ref-dtype float32]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from read.model.sasp import similarity_as_points


def official_full_grid(sim: torch.Tensor, hw: tuple[int, int], dtype: torch.dtype, clip_size: int = 336):
    """Official-style SasP: selection, full-resolution dense map, full-grid DtoC. Returns ``[K, 2]``."""
    points, _ = similarity_as_points(sim, hw, continuous=False)  # same selection; integers as float
    s = int(round(sim.numel() ** 0.5))
    h, w = hw
    # dense map at the original resolution
    m = sim.to(dtype)
    m = (m - m.min()) / (m.max() - m.min())
    m = F.interpolate(
        m.reshape(1, 1, s, s), size=(clip_size, clip_size), mode="bilinear", align_corners=False
    )
    scale = clip_size / min(h, w)
    pad_h = (int(h * scale) - clip_size) // 2
    pad_w = (int(w * scale) - clip_size) // 2
    m = F.pad(m, (pad_w, pad_w, pad_h, pad_h), value=0.0)
    dense = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    # full-grid DtoC, one point at a time
    gy, gx = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    gx, gy = gx.reshape(-1), gy.reshape(-1)
    p = torch.softmax(dense.reshape(-1), dim=0)
    out = []
    for x, y in points.to(dtype):
        d = (gx - x) ** 2 + (gy - y) ** 2
        wt = torch.exp(-d) * p
        wt = wt / wt.sum()
        out.append(torch.stack([(gx * wt).sum(), (gy * wt).sum()]))
    return torch.stack(out)


def ours(sim: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return similarity_as_points(sim, hw, continuous=True)[0]


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", nargs="+", default=["640x480", "1920x1080", "4000x3000"], help="WxH")
    ap.add_argument("--ref-dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    ref_dtype = getattr(torch, args.ref_dtype)

    g = torch.Generator().manual_seed(args.seed)
    r, c = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    # a blob plus noise: realistic mix of positives, negatives and neutral points
    sim = (torch.exp(-((r - 9) ** 2 + (c - 14) ** 2) / 18) + 0.2 * torch.randn(24, 24, generator=g)).reshape(
        -1
    )

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(f"reference dtype {args.ref_dtype}, median of {args.repeats} runs, 30 points (read_7b settings)\n")
    print("| image (W x H) | official full grid (s) | ours, windowed (ms) | speed-up | max coord diff (px) |")
    print("|---|---:|---:|---:|---:|")
    for size in args.sizes:
        w, h = (int(v) for v in size.lower().split("x"))
        hw = (h, w)
        ours(sim, hw)  # warm-up
        t_ours, c_ours = timed(lambda hw=hw: ours(sim, hw), max(args.repeats, 20))
        t_ref, c_ref = timed(lambda hw=hw: official_full_grid(sim, hw, ref_dtype), args.repeats)
        diff = float((c_ours.double() - c_ref.double()).abs().max())
        print(
            f"| {w} x {h} | {t_ref:.3f} | {t_ours * 1e3:.2f} | {t_ref / t_ours:,.0f}x | {diff:.2e} |",
            flush=True,
        )


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
