"""REC from masks (GSVA paper 4.3): the bounding box of a predicted mask against the box of the ground-truth mask;
a prediction is correct when their IoU is greater than 0.5 (precision@0.5). Boxes are half-open pixel boxes
``(x0, y0, x1, y1)``, so a box's area equals the pixel count of a full rectangle; IoUs are exact fractions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import torch

__all__ = ["Box", "binary_mask", "box_iou", "mask_box", "rec_correct", "rec_precision"]


def binary_mask(x: Any, name: str) -> torch.Tensor:
    """A bool map of a binary mask (bool, or numbers that are all 0 or 1). Anything else raises: logits must be
    thresholded first."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    if t.dtype == torch.bool:
        return t
    if t.dtype.is_complex or (t.numel() and not bool(((t == 0) | (t == 1)).all())):
        raise ValueError(
            f"{name}: expected a binary mask (bool or 0/1); threshold logits first (logits >= 0)"
        )
    return t == 1


Box = tuple[int, int, int, int]


def mask_box(mask: Any) -> Box | None:
    """The tight box of a binary mask ``[H, W]`` as ``(x0, y0, x1, y1)``. Pixel coordinates are half-open:
    columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1``. So the width is ``x1 - x0``, and the box's area is the number of
    pixels it covers (a single pixel at column 3, row 5 is ``(3, 5, 4, 6)``, area 1). Returns ``None`` for an empty
    mask."""
    m = binary_mask(mask, "mask_box")
    if m.dim() != 2:
        raise ValueError(f"mask_box: expected a mask [H, W], got shape {tuple(m.shape)}")
    rows = torch.nonzero(m.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(m.any(dim=0)).flatten()
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _coords(box: Any, name: str) -> tuple[Fraction, Fraction, Fraction, Fraction]:
    vals = box.tolist() if isinstance(box, torch.Tensor) else list(box)
    if len(vals) != 4:
        raise ValueError(f"{name}: expected (x0, y0, x1, y1), got {box!r}")
    out = []
    for v in vals:
        if isinstance(v, torch.Tensor):
            v = v.item()
        if isinstance(v, bool):
            raise ValueError(f"{name}: bool coordinate in {box!r}")
        v = int(v) if hasattr(v, "__index__") else float(v)  # ints (numpy ints too) stay exact
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{name}: non-finite coordinate in {box!r}")
        out.append(Fraction(v))
    x0, y0, x1, y1 = out
    if x1 < x0 or y1 < y0:
        raise ValueError(f"{name}: expected x0 <= x1 and y0 <= y1, got {box!r}")
    return x0, y0, x1, y1


def _box_iou_exact(a: Any, b: Any) -> Fraction:
    ax0, ay0, ax1, ay1 = _coords(a, "box a")
    bx0, by0, bx1, by1 = _coords(b, "box b")
    iw = max(Fraction(0), min(ax1, bx1) - max(ax0, bx0))
    ih = max(Fraction(0), min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else Fraction(0)


def box_iou(a: Any, b: Any) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes with the :func:`mask_box` convention (area = ``(x1-x0) * (y1-y0)``).
    Computed exactly and then rounded once. ``None`` (an empty mask) or two zero-area boxes give 0.0."""
    if a is None or b is None:
        return 0.0
    return float(_box_iou_exact(a, b))


def rec_correct(pred_box: Any, gt_box: Any, threshold: float = 0.5) -> bool:
    """Whether one REC prediction is correct: ``box_iou > threshold``, strictly (GSVA §4.3: "greater than 0.5").
    The comparison is exact, so an IoU of exactly 0.5 (e.g. 2 of 4 pixels) is a miss. An empty prediction
    (``None``) is a miss. The ground-truth box must not be ``None``."""
    if gt_box is None:
        raise ValueError("rec_correct: the ground-truth box is None (empty ground-truth mask)")
    if pred_box is None:
        return False
    return _box_iou_exact(pred_box, gt_box) > Fraction(threshold)


def rec_precision(pred_boxes: Sequence[Any], gt_boxes: Sequence[Any], threshold: float = 0.5) -> float:
    """Precision@``threshold``: the fraction of expressions for which :func:`rec_correct` holds. NaN when there
    is none."""
    if len(pred_boxes) != len(gt_boxes):
        raise ValueError(
            f"rec_precision: {len(pred_boxes)} predicted boxes but {len(gt_boxes)} ground-truth boxes"
        )
    if not len(gt_boxes):
        return math.nan
    hits = sum(rec_correct(p, g, threshold) for p, g in zip(pred_boxes, gt_boxes, strict=True))
    return hits / len(gt_boxes)
