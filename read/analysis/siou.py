"""S_IoU (READ paper, Appendix A.1): how well a similarity map alone segments the target, with the best threshold.

For one image: the map is min-max normalised to [0, 1] over all its pixels, thresholded at t = 0, step, 2 step,
..., 1 (``mask = map >= t``), and the t whose mask has the highest IoU with the ground truth is kept (ties: the
smallest t). Ground-truth pixels equal to ``ignore_index`` count neither in the intersection nor in the union, as in
the evaluation metrics. Over a split the kept (intersection, union) pairs give gIoU and cIoU exactly like the masks
of a model (``read.eval.metrics.SegMetricAccumulator``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["normalise_map", "similarity_iou", "thresholds"]


def thresholds(step: float = 0.01) -> Tensor:
    """``[0, step, 2 step, ..., 1]`` in float64 (``k * step`` for integer k, so 0.07 is the float ``7 * 0.01``)."""
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    n = int(round(1.0 / step))
    return torch.arange(n + 1, dtype=torch.float64) * step


def normalise_map(sim: Tensor) -> Tensor:
    """Min-max over all pixels to [0, 1] (float64); a constant map becomes 0.5 everywhere (as SasP's convention)."""
    x = sim.double()
    lo, hi = x.min(), x.max()
    if not bool(hi > lo):
        return torch.full_like(x, 0.5)
    return (x - lo) / (hi - lo)


def similarity_iou(sim: Tensor, gt: Tensor, step: float = 0.01, ignore_index: int = 255) -> dict:
    """The best-threshold IoU of one similarity map against its ground truth.

    Args:
        sim: float ``[H, W]`` similarity at the image's size (any range; normalised here).
        gt: int64 ``[H, W]``: 1 object, 0 background, ``ignore_index`` ignored.
        step: threshold step (0.01 in the paper).

    Returns:
        ``{"threshold": t, "intersection": I, "union": U, "iou": I / U}`` for the best t (``iou`` 1.0 when U = 0,
        i.e. no valid pixel).

    Raises:
        ValueError: shapes differ.
    """
    if sim.shape != gt.shape or sim.dim() != 2:
        raise ValueError(f"similarity_iou: sim {tuple(sim.shape)} and gt {tuple(gt.shape)} must be the same [H, W]")
    valid = gt != ignore_index
    values = normalise_map(sim)[valid]
    target = (gt[valid] == 1)
    ts = thresholds(step)
    # counts of pixels >= t, from sorted values (exact: no binning)
    all_sorted = torch.sort(values).values
    tgt_sorted = torch.sort(values[target]).values
    n_all, n_tgt = all_sorted.numel(), tgt_sorted.numel()
    pred = n_all - torch.searchsorted(all_sorted, ts, right=False)  # #valid pixels with value >= t
    inter = n_tgt - torch.searchsorted(tgt_sorted, ts, right=False)  # #target pixels with value >= t
    union = pred + n_tgt - inter
    iou = torch.where(union > 0, inter.double() / union.clamp_min(1).double(), torch.ones_like(ts))
    best = int(torch.argmax(iou))  # the first maximum: the smallest threshold among ties
    return {"threshold": float(ts[best]), "intersection": int(inter[best]), "union": int(union[best]),
            "iou": float(iou[best])}
