"""Segmentation metrics as the official READ evaluation computes them, as pure functions.

Official protocol (spec 5.2, 5.3), reproduced here:

* Per mask pair, two classes (0 = background, 1 = foreground) are counted. Pixels where the ground truth equals
  ``ignore_index`` (255) count for neither class, in the prediction or the ground truth.
  :func:`intersection_union` gives the same counts as the official ``intersectionAndUnionGPU``. Unlike that function,
  it does not modify its inputs, runs on any device, and accepts any integer or bool dtype. The official
  ``torch.histc`` on int tensors is CUDA-only (spec 10.20).
* **gIoU**: each mask ``k`` gets ``IoU_k = I_k / (U_k + 1e-5)``. A mask with ``U_k == 0`` (empty ground truth
  *and* empty prediction) gets ``1.0``, the "no-object" rule. gIoU is the foreground ``sum_k IoU_k`` divided by
  ``num_masks + 1e-5``. The ``+ 1e-5`` in the count comes from the official ``AverageMeter.all_reduce`` and is kept
  on purpose: one perfect mask gives ``1 / (1 + 1e-5)``, not ``1.0``. The average is **per mask (query)**, not per image.
* **cIoU**: cumulative foreground ``sum I / (sum U + 1e-10)``.
* **FP-RefCOCO** (:func:`see_segment`): See is ``mean(gt_exists == pred_exists)``. Segment is the cumulative
  foreground ``sum I / sum U`` over all queries. As in the official script, there is no epsilon (details below).

How the sum of per-mask IoUs is kept. :class:`SegMetricAccumulator` stores it as an exact integer in units of
``2**-53``: ``round(IoU_k * 2**53)``. For ``IoU >= 0.5`` this is exact, and otherwise the error is below ``2**-54``.
Integer sums do not depend on order, so merging saved states or all-reducing across ranks gives *exactly* the
single-process result. A float sum would differ in its last bits with the split.

GSVA's gRefCOCO metrics (gIoU, cIoU, N-acc, T-acc) live in :mod:`read.eval.gres_metrics`, REC precision@0.5 in
:mod:`read.eval.rec_metrics`; both are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from read.eval.gres_metrics import (
    GRES_CIOU_EPS,
    GRES_IOU_EPS,
    GRES_RECORD_KEYS,
    GresMetricAccumulator,
    grefcoco_from_records,
    grefcoco_metrics,
    gres_counts,
)
from read.eval.rec_metrics import box_iou, mask_box, rec_correct, rec_precision
from read.utils import distributed as du

__all__ = [
    "CIOU_EPS",
    "GIOU_COUNT_EPS",
    "GRES_CIOU_EPS",
    "GRES_IOU_EPS",
    "GRES_RECORD_KEYS",
    "GresMetricAccumulator",
    "IOU_EPS",
    "SegMetricAccumulator",
    "box_iou",
    "grefcoco_from_records",
    "grefcoco_metrics",
    "gres_counts",
    "mask_box",
    "rec_correct",
    "rec_precision",
    "giou_ciou",
    "intersection_union",
    "mask_counts",
    "pred_exists",
    "see_segment",
]

IOU_EPS = 1e-5  # per-mask IoU denominator, official `intersection / (union + 1e-5)`
GIOU_COUNT_EPS = 1e-5  # official AverageMeter.all_reduce: avg = sum / (count + 1e-5)
CIOU_EPS = 1e-10  # official cIoU: intersection_sum[1] / (union_sum[1] + 1e-10)

_Q_BITS = 53  # fixed-point resolution of the per-mask IoU sum
_Q_SCALE = 1 << _Q_BITS
_LIMB_BITS = 31  # the IoU sum is all-reduced as int64 limbs of 31 bits (no overflow up to 2**32 ranks)
_N_LIMBS = 4  # 124 bits: room for far more than 2**70 masks


# ----------------------------------------------------------------------------------------------------------------
# Per-pixel counting
# ----------------------------------------------------------------------------------------------------------------


def _as_label_tensor(x: Any, name: str) -> torch.Tensor:
    """An int64 view/copy of a label tensor. The input is never modified. Floats are accepted only when they hold
    integral values (so a logit map passed by mistake raises instead of being silently miscounted)."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    if t.dtype.is_complex:
        raise TypeError(f"{name}: complex tensors are not label maps")
    if t.dtype.is_floating_point:
        if t.numel() and not bool(torch.equal(t, torch.round(t))):
            raise ValueError(
                f"{name}: floating tensor with non-integral values; threshold logits first (pred = logits > 0)"
            )
    return t.to(torch.int64)


def _class_counts(
    pred: torch.Tensor, gt: torch.Tensor, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Counts for a batch of masks ``[n, ...]`` (the trailing dims are flattened). Each result is int64 ``[n, 2]``:
    column 0 is background, column 1 foreground. Values other than 0 and 1 fall in no class, just as they fall
    outside the official ``histc(bins=2, min=0, max=1)``."""
    p = pred.reshape(pred.shape[0], -1)
    g = gt.reshape(gt.shape[0], -1)
    if ignore_index is not None:
        valid = g != ignore_index
    else:
        valid = torch.ones_like(g, dtype=torch.bool)
    p0, p1 = (p == 0) & valid, (p == 1) & valid
    g0, g1 = (g == 0) & valid, (g == 1) & valid
    area_pred = torch.stack([p0.sum(1), p1.sum(1)], dim=1)
    area_gt = torch.stack([g0.sum(1), g1.sum(1)], dim=1)
    area_int = torch.stack([(p0 & g0).sum(1), (p1 & g1).sum(1)], dim=1)
    area_union = area_pred + area_gt - area_int
    return area_int, area_union, area_pred, area_gt


def _check_same_shape(pred: torch.Tensor, gt: torch.Tensor, what: str) -> None:
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(f"{what}: pred shape {tuple(pred.shape)} != gt shape {tuple(gt.shape)}")


def intersection_union(
    pred: Any, gt: Any, ignore_index: int | None = 255
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(intersection, union, pred_area, gt_area)`` for ONE mask pair ``[H, W]``. Each is an int64 tensor of
    shape ``[2]`` (index 0 = background, 1 = foreground) on the input's device.

    These are the counts of the official ``intersectionAndUnionGPU(pred, gt, K=2, ignore_index)``. Pixels with
    ``gt == ignore_index`` are left out of both maps. ``ignore_index=None`` leaves no pixel out.
    """
    p = _as_label_tensor(pred, "pred")
    g = _as_label_tensor(gt, "gt")
    _check_same_shape(p, g, "intersection_union")
    if p.device != g.device:
        raise ValueError(f"intersection_union: pred on {p.device} but gt on {g.device}")
    i, u, a_p, a_g = _class_counts(p.unsqueeze(0), g.unsqueeze(0), ignore_index)
    return i[0], u[0], a_p[0], a_g[0]


def mask_counts(pred: Any, gt: Any, ignore_index: int | None = 255) -> dict[str, int]:
    """Foreground counts of one mask pair ``[H, W]`` as plain ints, for JSONL records:
    ``{"intersection", "union", "pred_area", "gt_area"}``."""
    i, u, a_p, a_g = intersection_union(pred, gt, ignore_index)
    return {
        "intersection": int(i[1]),
        "union": int(u[1]),
        "pred_area": int(a_p[1]),
        "gt_area": int(a_g[1]),
    }


def _iou_no_object(intersection: int, union: int) -> float:
    """Official per-mask IoU, ``I / (U + 1e-5)``, or ``1.0`` when ``U == 0`` (then ``I == 0`` too)."""
    if union == 0:
        return 1.0
    return intersection / (union + IOU_EPS)


# ----------------------------------------------------------------------------------------------------------------
# Accumulator (gIoU / cIoU)
# ----------------------------------------------------------------------------------------------------------------


def _to_int_list(x: Any, name: str) -> list[int]:
    if isinstance(x, torch.Tensor):
        vals = x.reshape(-1).tolist()
    elif isinstance(x, (int,)) and not isinstance(x, bool):
        vals = [x]
    else:
        vals = list(x)
    out = []
    for v in vals:
        if isinstance(v, float):
            if not v.is_integer():
                raise ValueError(f"{name}: non-integral count {v!r}")
            v = int(v)
        out.append(int(v))
    return out


def _split_limbs(q: int) -> list[int]:
    if q < 0 or q >= 1 << (_LIMB_BITS * _N_LIMBS):
        raise OverflowError(f"IoU sum {q} out of the range of the reduction limbs")
    mask = (1 << _LIMB_BITS) - 1
    return [(q >> (_LIMB_BITS * i)) & mask for i in range(_N_LIMBS)]


def _join_limbs(limbs: Sequence[int]) -> int:
    return sum(int(v) << (_LIMB_BITS * i) for i, v in enumerate(limbs))


class SegMetricAccumulator:
    """Accumulates the official gIoU / cIoU sums (foreground class), one mask (query) at a time.

    ``state()`` holds only plain ints, so it can be saved as JSON. ``merge`` adds another state. ``reduce`` sums
    over ranks (a no-op without a process group). ``result`` gives ``{"giou", "ciou", "num_masks",
    "intersection", "union"}``.
    """

    _KEYS = ("iou_sum_q53", "num_masks", "intersection", "union")

    def __init__(self, ignore_index: int | None = 255) -> None:
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self.iou_sum_q53 = 0  # sum_k round(IoU_k * 2**53), exact
        self.num_masks = 0
        self.intersection = 0  # sum_k I_k (foreground)
        self.union = 0  # sum_k U_k (foreground)
        self._reduced = False

    # -- updates ---------------------------------------------------------------------------------------------

    def update(self, pred: Any, gt: Any) -> dict[str, list[int]]:
        """Add the masks of one item: ``pred`` is binary ``[n, H, W]`` (or ``[H, W]`` for one mask) and ``gt`` has
        the same shape, with ``ignore_index`` pixels. Returns the per-mask foreground counts (lists of ints)."""
        p = _as_label_tensor(pred, "pred")
        g = _as_label_tensor(gt, "gt")
        _check_same_shape(p, g, "SegMetricAccumulator.update")
        if p.device != g.device:
            raise ValueError(f"SegMetricAccumulator.update: pred on {p.device} but gt on {g.device}")
        if p.dim() == 2:
            p, g = p.unsqueeze(0), g.unsqueeze(0)
        if p.dim() != 3:
            raise ValueError(
                f"SegMetricAccumulator.update: expected [n, H, W] masks, got shape {tuple(p.shape)}"
            )
        i, u, a_p, a_g = _class_counts(p, g, self.ignore_index)
        counts = {
            "intersection": i[:, 1].tolist(),
            "union": u[:, 1].tolist(),
            "pred_area": a_p[:, 1].tolist(),
            "gt_area": a_g[:, 1].tolist(),
        }
        self.update_counts(counts["intersection"], counts["union"])
        return counts

    def update_counts(self, intersection: Any, union: Any) -> None:
        """Add masks from precomputed per-mask foreground counts (ints, sequences of ints, or tensors), e.g. the
        ``intersection``/``union`` fields of JSONL records written with :func:`mask_counts`."""
        ii = _to_int_list(intersection, "intersection")
        uu = _to_int_list(union, "union")
        if len(ii) != len(uu):
            raise ValueError(f"update_counts: {len(ii)} intersections but {len(uu)} unions")
        for k, (i, u) in enumerate(zip(ii, uu, strict=True)):
            if i < 0 or u < 0 or i > u:
                raise ValueError(f"update_counts: mask {k} has invalid counts intersection={i}, union={u}")
        for i, u in zip(ii, uu, strict=True):
            self.iou_sum_q53 += round(_iou_no_object(i, u) * _Q_SCALE)
            self.num_masks += 1
            self.intersection += i
            self.union += u

    # -- state -----------------------------------------------------------------------------------------------

    def state(self) -> dict[str, int]:
        """The sums as plain ints (JSON-serialisable). ``iou_sum_q53`` is the per-mask IoU sum in units of 2**-53."""
        return {k: int(getattr(self, k)) for k in self._KEYS}

    def merge(self, other_state: Mapping[str, Any] | SegMetricAccumulator) -> SegMetricAccumulator:
        """Add another accumulator's ``state()`` (or the accumulator itself) to this one."""
        st = other_state.state() if isinstance(other_state, SegMetricAccumulator) else other_state
        missing = [k for k in self._KEYS if k not in st]
        if missing:
            raise KeyError(f"merge: state lacks {missing}")
        for k in self._KEYS:
            v = st[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"merge: state[{k!r}] must be a non-negative int, got {v!r}")
            setattr(self, k, getattr(self, k) + v)
        return self

    @classmethod
    def from_state(cls, state: Mapping[str, Any], ignore_index: int | None = 255) -> SegMetricAccumulator:
        return cls(ignore_index=ignore_index).merge(state)

    def reduce(self, device: torch.device | str | None = None) -> SegMetricAccumulator:
        """Sum the state over all ranks, in place, when ``torch.distributed`` is initialised. Otherwise this is a
        no-op. Every rank must call it. A second reduce would count other ranks twice, so it raises.

        ``device`` is where the int64 buffer lives. By default that is CUDA (current device) for a pure NCCL group
        and CPU for any other backend."""
        if not du.is_initialized():
            return self
        if self._reduced:
            raise RuntimeError("SegMetricAccumulator.reduce called twice: the sums already cover all ranks")
        if device is None:
            backend = str(torch.distributed.get_backend())
            if backend == "nccl":
                device = torch.device("cuda", torch.cuda.current_device())
            else:
                device = torch.device("cpu")
        vals = _split_limbs(self.iou_sum_q53) + [self.num_masks, self.intersection, self.union]
        t = du.all_reduce_sum(torch.tensor(vals, dtype=torch.int64, device=device)).tolist()
        self.iou_sum_q53 = _join_limbs(t[:_N_LIMBS])
        self.num_masks, self.intersection, self.union = (int(v) for v in t[_N_LIMBS:])
        self._reduced = True
        return self

    # -- result ----------------------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """``giou = sum IoU_k / (num_masks + 1e-5)`` and ``ciou = sum I / (sum U + 1e-10)`` (official epsilons)."""
        iou_sum = self.iou_sum_q53 / _Q_SCALE  # int / int: correctly rounded
        return {
            "giou": float(iou_sum / (self.num_masks + GIOU_COUNT_EPS)),
            "ciou": float(self.intersection / (self.union + CIOU_EPS)),
            "num_masks": int(self.num_masks),
            "intersection": int(self.intersection),
            "union": int(self.union),
        }

    def __repr__(self) -> str:
        r = self.result()
        return f"SegMetricAccumulator(giou={r['giou']:.6f}, ciou={r['ciou']:.6f}, num_masks={r['num_masks']})"


def giou_ciou(preds: Sequence[Any], gts: Sequence[Any], ignore_index: int | None = 255) -> dict[str, float]:
    """Official gIoU / cIoU over a dataset. ``preds[i]`` is the binary ``[n_i, H_i, W_i]`` prediction of image ``i``
    (logits must already be thresholded, e.g. ``logits > 0``). ``gts[i]`` is the matching integer ground truth,
    with ``ignore_index`` pixels. Returns ``{"giou": float, "ciou": float}``."""
    if len(preds) != len(gts):
        raise ValueError(f"giou_ciou: {len(preds)} predictions but {len(gts)} ground truths")
    acc = SegMetricAccumulator(ignore_index=ignore_index)
    for idx, (p, g) in enumerate(zip(preds, gts, strict=True)):
        pt = p if isinstance(p, torch.Tensor) else torch.as_tensor(p)
        gt = g if isinstance(g, torch.Tensor) else torch.as_tensor(g)
        if tuple(pt.shape) != tuple(gt.shape):
            raise ValueError(
                f"giou_ciou: image {idx}: pred shape {tuple(pt.shape)} != gt shape {tuple(gt.shape)}"
            )
        if pt.dim() not in (2, 3):
            raise ValueError(f"giou_ciou: image {idx}: expected [n, H, W] masks, got shape {tuple(pt.shape)}")
        acc.update(pt, gt)
    r = acc.result()
    return {"giou": r["giou"], "ciou": r["ciou"]}


# ----------------------------------------------------------------------------------------------------------------
# FP-RefCOCO: See / Segment
# ----------------------------------------------------------------------------------------------------------------


def pred_exists(has_seg: bool, mask: Any = None) -> bool:
    """Official FP-RefCOCO existence decision: the output has at least one ``[SEG]`` AND the binarised mask of the
    first ``[SEG]`` is non-empty. ``mask`` is that mask ``[H, W]``, or all masks ``[n, H, W]`` (the first is used).
    Logits are binarised with ``> 0``, and bool masks are used as they are."""
    if not has_seg or mask is None:
        return False
    m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
    if m.dim() == 3:
        if m.shape[0] == 0:
            return False
        m = m[0]
    if m.dim() != 2:
        raise ValueError(f"pred_exists: expected a mask [H, W] or [n, H, W], got shape {tuple(m.shape)}")
    if m.dtype == torch.bool:
        return bool(m.any())
    return bool((m > 0).any())


def _field(rec: Any, key: str) -> Any:
    if isinstance(rec, Mapping):
        return rec[key]
    return getattr(rec, key)


def see_segment(records: Iterable[Any]) -> dict[str, Any]:
    """FP-RefCOCO metrics over queries. Each record has ``gt_exists`` (bool), ``pred_exists`` (bool), and the
    foreground ``intersection`` / ``union`` (ints) of that query. For false-premise queries the GT mask is all zero.

    * ``see`` = mean(gt_exists == pred_exists).
    * ``segment`` = sum(intersection) / sum(union), cumulative over all queries. As in the official metric
      (``I[1] / U[1]``), there is no epsilon. When the total union is 0 (every query has an empty GT and an empty
      prediction), the no-object rule gives ``1.0``.

    With no records, both are ``nan``.
    """
    n = agree = inter = union = 0
    for k, rec in enumerate(records):
        g, p = _field(rec, "gt_exists"), _field(rec, "pred_exists")
        i, u = int(_field(rec, "intersection")), int(_field(rec, "union"))
        if i < 0 or u < 0 or i > u:
            raise ValueError(f"see_segment: record {k} has invalid counts intersection={i}, union={u}")
        n += 1
        agree += int(bool(g) == bool(p))
        inter += i
        union += u
    if n == 0:
        return {"see": math.nan, "segment": math.nan, "num_queries": 0}
    return {
        "see": agree / n,
        "segment": inter / union if union > 0 else 1.0,
        "num_queries": n,
    }
