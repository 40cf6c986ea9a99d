"""GRES (gRefCOCO) and REC metrics as GSVA's official evaluation computes them, as pure functions.

Re-exported from :mod:`read.eval.metrics`. References are to LeapLabTHU/GSVA @618dc79. ``solver.py:221-306`` is
``eval_gres``, ``solver.py:308-320`` is ``intersectionAndUnionGPU``, and ``utils/meter.py:38-65`` is ``AverageMeter``.

**One expression, one slot.** Every expression gets exactly one ``[SEG]`` or ``[REJ]``. Its prediction is one
binary mask ``[H, W]`` (``logits >= 0``, ``solver.py:247``). Its ground truth is the union of its target masks,
with values 0/1 and an all-zero mask for a no-target expression. The official code decides "no target" with
``gt.sum() < 1`` on the raw ground truth (``solver.py:258``). So, as there, an ignore pixel (255) makes an
expression a *target* even when it has no foreground. gRefCOCO ground truth has no ignore pixels.

**Counting** (:func:`gres_counts`). The foreground intersection/union are counted as in ``intersectionAndUnionGPU``
(``solver.py:314-319``): pixels where ``gt == 255`` are left out of both maps. The prediction is never modified.

**Per expression** (``solver.py:258-289``):

====================  ==========  ===============  =======================  ==========================
expression            prediction  gIoU term        added to cIoU (I, U)     accuracy
====================  ==========  ===============  =======================  ==========================
no target             [REJ]       1.0              nothing                  N-acc hit (``:266-268``)
no target             [SEG]       0.0              (0, U = predicted area)  N-acc miss (``:269-273``)
target                [SEG]       I / (U + 1e-8)   (I, U)                   T-acc hit (``:277-278``)
target                [REJ]       I / (U + 1e-8)   (I, U)                   T-acc miss (``:275-276``)
====================  ==========  ===============  =======================  ==========================

A rejected target is still scored with its decoded mask. In the teacher-forced re-evaluation every ``[REJ]`` is
replaced by ``[SEG]`` and re-run (``model/modeling_lisa_gsva.py:179-188``), so every slot has a mask. The
paper (§3.4) and ReLA's gRefCOCO evaluator (``refer_evaluation.py:156-158``) instead give a ``[REJ]`` an all-zero
mask. ``rej_empty_mask=True`` selects that rule: a rejected target then scores ``I = 0`` and ``U = gt area``. The
default is the code. A target whose union is 0 (possible only through the ignore-pixel quirk above) gets the term
``0 / 1e-8 = 0.0``. The official code has no "no-object = 1.0" rule here, unlike ``validate`` (``solver.py:203``).
``no_target_union=False`` reproduces the official Ref-ZOM branch, where a false-positive no-target adds nothing to
cIoU (``solver.py:230, 272``).

**Totals** (``solver.py:301-304``):

* gIoU: mean of the terms over ALL expressions. The official meter divides by ``count + 1e-5``
  (``utils/meter.py:65``), and it all-reduces its sums in float32 (``utils/meter.py:47-60``). Here the mean is
  exact: the sum of terms is kept as an integer in units of ``2**-53`` (as in :class:`SegMetricAccumulator`), and
  the result is correctly rounded. With no expressions it is NaN.
* cIoU: ``sum I / (sum U + 1e-10)``, the official epsilon. It is 0.0 when the total union is 0.
* N-acc: no-target rejected / all no-target. **NaN when there is no no-target expression** (the official divides
  by zero there).
* T-acc: targets with ``[SEG]`` / all targets. NaN when there is no target.

**REC** (GSVA paper §4.3): the box of the predicted mask is compared with the box of the ground-truth mask. A
prediction is correct when the IoU is *strictly greater* than 0.5. An IoU of exactly 0.5 is a miss. See
:func:`mask_box`, :func:`box_iou`, :func:`rec_precision`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from read.eval.rec_metrics import binary_mask
from read.utils import distributed as du

__all__ = [
    "GRES_CIOU_EPS",
    "GRES_IOU_EPS",
    "GRES_RECORD_KEYS",
    "GresMetricAccumulator",
    "grefcoco_from_records",
    "grefcoco_metrics",
    "gres_counts",
]

GRES_IOU_EPS = 1e-8  # solver.py:286, this_giou = inter_i / (union_i + 1e-8)
GRES_CIOU_EPS = 1e-10  # solver.py:304, inter_meter.sum / (union_meter.sum + 1e-10)
GRES_RECORD_KEYS = ("intersection", "union", "pred_area", "gt_area", "is_target", "rejected")

_Q_SCALE = 1 << 53  # fixed-point unit of the gIoU term sum
_LIMB_BITS = 31  # the sum is all-reduced as int64 limbs of 31 bits
_N_LIMBS = 4


# ----------------------------------------------------------------------------------------------------------------
# Per-expression counting
# ----------------------------------------------------------------------------------------------------------------


def gres_counts(
    pred: Any, gt: Any, rejected: bool | None = None, ignore_index: int | None = 255
) -> dict[str, Any]:
    """The record of one expression, with plain ints/bools so it can be stored as JSON:
    ``{"intersection", "union", "pred_area", "gt_area", "is_target", "rejected"}``.

    ``pred``: the binary mask ``[H, W]`` that was decoded for the expression's slot. ``gt``: the integer ground truth
    ``[H, W]``, with 0/1 values and ``ignore_index`` pixels. ``rejected``: whether the slot's token was ``[REJ]``.
    When it is ``None``, an all-False ``pred`` counts as rejected. The counts are foreground counts over the pixels
    where ``gt != ignore_index`` (``solver.py:314-319``). ``is_target`` is ``gt.sum() >= 1`` on the raw ground
    truth (``solver.py:258``). The counts are those of the decoded mask. The rejection rule is applied when the
    records are aggregated (:class:`GresMetricAccumulator`), so records serve both rules."""
    p = binary_mask(pred, "pred")
    g = gt if isinstance(gt, torch.Tensor) else torch.as_tensor(gt)
    if g.dtype.is_floating_point or g.dtype.is_complex:
        raise TypeError(f"gres_counts: gt must be an integer or bool tensor, got {g.dtype}")
    g = g.to(torch.int64)
    if p.dim() != 2 or tuple(p.shape) != tuple(g.shape):
        raise ValueError(
            f"gres_counts: expected pred and gt [H, W] of one shape, got {tuple(p.shape)}, {tuple(g.shape)}"
        )
    if p.device != g.device:
        raise ValueError(f"gres_counts: pred on {p.device} but gt on {g.device}")
    allowed = (g == 0) | (g == 1)
    if ignore_index is not None:
        allowed |= g == ignore_index
    if g.numel() and not bool(allowed.all()):
        raise ValueError(f"gres_counts: gt values must be 0, 1 or ignore_index={ignore_index}")
    valid = g != ignore_index if ignore_index is not None else torch.ones_like(p)
    pf, gf = p & valid, (g == 1) & valid
    rec = {
        "intersection": int((pf & gf).sum()),
        "union": int((pf | gf).sum()),
        "pred_area": int(pf.sum()),
        "gt_area": int(gf.sum()),
        "is_target": bool(int(g.sum()) >= 1),
        "rejected": (not bool(p.any())) if rejected is None else _flag(rejected, "rejected"),
    }
    return rec


def _flag(v: Any, name: str) -> bool:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"{name}: expected one flag, got a tensor of shape {tuple(v.shape)}")
        v = v.item()
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError(f"{name}: expected a bool, got {v!r}")


def _count(v: Any, name: str) -> int:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {v!r}")
    return v


def _check_record(rec: Mapping[str, Any] | Any, where: str) -> tuple[int, int, int, int, bool, bool]:
    get = rec.__getitem__ if isinstance(rec, Mapping) else (lambda k: getattr(rec, k))
    i, u, a_p, a_g = (_count(get(k), f"{where}.{k}") for k in GRES_RECORD_KEYS[:4])
    is_target, rejected = (_flag(get(k), f"{where}.{k}") for k in GRES_RECORD_KEYS[4:])
    if i > min(a_p, a_g) or u != a_p + a_g - i:
        raise ValueError(
            f"{where}: inconsistent counts intersection={i}, union={u}, pred_area={a_p}, gt_area={a_g}"
        )
    if not is_target and a_g:
        raise ValueError(f"{where}: a no-target record has gt_area={a_g}")
    return i, u, a_p, a_g, is_target, rejected


# ----------------------------------------------------------------------------------------------------------------
# Accumulator
# ----------------------------------------------------------------------------------------------------------------


def _split_limbs(q: int) -> list[int]:
    if q < 0 or q >= 1 << (_LIMB_BITS * _N_LIMBS):
        raise OverflowError(f"gIoU sum {q} out of the range of the reduction limbs")
    mask = (1 << _LIMB_BITS) - 1
    return [(q >> (_LIMB_BITS * k)) & mask for k in range(_N_LIMBS)]


def _join_limbs(limbs: Sequence[int]) -> int:
    return sum(int(v) << (_LIMB_BITS * k) for k, v in enumerate(limbs))


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


class GresMetricAccumulator:
    """Accumulates GSVA's gRefCOCO sums (gIoU, cIoU, N-acc, T-acc) one expression at a time. All sums are exact
    integers, so ``merge`` and ``reduce`` give exactly the single-process result whatever the split.

    ``rej_empty_mask``: score a rejected target with an all-zero mask (paper rule) instead of its decoded mask (code
    rule, the default). ``no_target_union``: add a false-positive no-target's union to cIoU (gRefCOCO, the default).
    ``False`` gives the official Ref-ZOM branch. Merged states must come from accumulators with the same options.
    """

    _KEYS = (
        "giou_sum_q53",  # sum of the gIoU terms, in units of 2**-53
        "intersection",  # cIoU numerator
        "union",  # cIoU denominator
        "no_target_rejected",  # official NT_TP
        "no_target_accepted",  # official NT_FN
        "target_seg",  # official NT_TN
        "target_rejected",  # official NT_FP
    )

    def __init__(
        self, ignore_index: int | None = 255, rej_empty_mask: bool = False, no_target_union: bool = True
    ) -> None:
        self.ignore_index = ignore_index
        self.rej_empty_mask = bool(rej_empty_mask)
        self.no_target_union = bool(no_target_union)
        self.reset()

    def reset(self) -> None:
        for k in self._KEYS:
            setattr(self, k, 0)
        self._reduced = False

    def update(self, pred: Any, gt: Any, rejected: bool | None = None) -> dict[str, Any]:
        """Add one expression (see :func:`gres_counts`). Returns its record."""
        rec = gres_counts(pred, gt, rejected, self.ignore_index)
        self.update_record(rec)
        return rec

    def update_record(self, rec: Mapping[str, Any] | Any, where: str = "record") -> None:
        """Add one expression from its record (a mapping or an object with the :data:`GRES_RECORD_KEYS`)."""
        i, u, _, a_g, is_target, rejected = _check_record(rec, where)
        if not is_target:
            if rejected:  # solver.py:266-268
                self.no_target_rejected += 1
                self.giou_sum_q53 += _Q_SCALE
            else:  # solver.py:269-273: term 0.0, union (the predicted area) joins cIoU
                self.no_target_accepted += 1
                if self.no_target_union:
                    self.union += u
            return
        if rejected:  # solver.py:275-276
            self.target_rejected += 1
            if self.rej_empty_mask:  # paper rule: [REJ] -> all-zero mask
                i, u = 0, a_g
        else:  # solver.py:277-278
            self.target_seg += 1
        self.giou_sum_q53 += round(i / (u + GRES_IOU_EPS) * _Q_SCALE)  # solver.py:286-289
        self.intersection += i
        self.union += u

    def update_records(self, records: Any) -> GresMetricAccumulator:
        for k, rec in enumerate(records):
            self.update_record(rec, where=f"record {k}")
        return self

    @property
    def num_expressions(self) -> int:
        return self.no_target_rejected + self.no_target_accepted + self.target_seg + self.target_rejected

    # -- state -----------------------------------------------------------------------------------------------

    def state(self) -> dict[str, int]:
        """The sums as plain ints (JSON-serialisable)."""
        return {k: int(getattr(self, k)) for k in self._KEYS}

    def merge(self, other_state: Mapping[str, Any] | GresMetricAccumulator) -> GresMetricAccumulator:
        """Add another accumulator's ``state()`` (or the accumulator itself) to this one."""
        st = other_state.state() if isinstance(other_state, GresMetricAccumulator) else other_state
        missing = [k for k in self._KEYS if k not in st]
        if missing:
            raise KeyError(f"merge: state lacks {missing}")
        vals = {k: _count(st[k], f"state[{k!r}]") for k in self._KEYS}
        for k, v in vals.items():
            setattr(self, k, getattr(self, k) + v)
        return self

    @classmethod
    def from_state(cls, state: Mapping[str, Any], **kwargs: Any) -> GresMetricAccumulator:
        return cls(**kwargs).merge(state)

    def reduce(self, device: torch.device | str | None = None) -> GresMetricAccumulator:
        """Sum the state over all ranks, in place, when ``torch.distributed`` is initialised. Otherwise this is a
        no-op. Every rank must call it, and a second call raises. The buffer lives on ``device``: by default the
        current CUDA device for an NCCL group, and the CPU otherwise."""
        if not du.is_initialized():
            return self
        if self._reduced:
            raise RuntimeError("GresMetricAccumulator.reduce called twice: the sums already cover all ranks")
        if device is None:
            nccl = str(torch.distributed.get_backend()) == "nccl"
            device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        vals = _split_limbs(self.giou_sum_q53) + [getattr(self, k) for k in self._KEYS[1:]]
        t = du.all_reduce_sum(torch.tensor(vals, dtype=torch.int64, device=device)).tolist()
        self.giou_sum_q53 = _join_limbs(t[:_N_LIMBS])
        for k, v in zip(self._KEYS[1:], t[_N_LIMBS:], strict=True):
            setattr(self, k, int(v))
        self._reduced = True
        return self

    # -- result ----------------------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """``{"giou", "ciou", "n_acc", "t_acc"}`` (floats; see the module docstring for NaN cases) plus the counts
        ``num_expressions``, ``num_no_target``, ``num_target``, ``no_target_rejected``, ``target_rejected``,
        ``intersection`` and ``union``."""
        n = self.num_expressions
        n_nt = self.no_target_rejected + self.no_target_accepted
        n_t = self.target_seg + self.target_rejected
        return {
            "giou": self.giou_sum_q53 / (n * _Q_SCALE) if n else math.nan,  # int / int: correctly rounded
            "ciou": float(self.intersection / (self.union + GRES_CIOU_EPS)),
            "n_acc": _ratio(self.no_target_rejected, n_nt),
            "t_acc": _ratio(self.target_seg, n_t),
            "num_expressions": n,
            "num_no_target": n_nt,
            "num_target": n_t,
            "no_target_rejected": self.no_target_rejected,
            "target_rejected": self.target_rejected,
            "intersection": self.intersection,
            "union": self.union,
        }

    def __repr__(self) -> str:
        r = self.result()
        return (
            f"GresMetricAccumulator(giou={r['giou']:.6f}, ciou={r['ciou']:.6f}, n_acc={r['n_acc']:.6f}, "
            f"t_acc={r['t_acc']:.6f}, num_expressions={r['num_expressions']})"
        )


def grefcoco_metrics(
    preds: Sequence[Any],
    gts: Sequence[Any],
    rejected: Sequence[bool] | None = None,
    *,
    ignore_index: int | None = 255,
    rej_empty_mask: bool = False,
    no_target_union: bool = True,
) -> dict[str, Any]:
    """GSVA's official gRefCOCO metrics (``eval_gres``, solver.py:221-306 @618dc79) over a list of expressions.

    ``preds[i]``: the bool mask ``[H, W]`` of expression ``i``. ``gts[i]``: its int64 ground truth ``[H, W]`` (the
    union of the target masks, all 0 for no target, 255 = ignore). ``rejected[i]``: whether the model emitted
    ``[REJ]`` for it. With ``rejected=None``, an all-False prediction counts as rejected. Rules (the module docstring
    has the details): a rejected no-target counts as an N-acc hit with gIoU term 1.0 and adds nothing to cIoU
    (solver.py:266-268). A no-target that is not rejected gets gIoU term 0.0, and its union (the predicted area)
    joins the cIoU union (:269-273). A target counts ``[SEG]`` vs ``[REJ]`` for T-acc (:275-278). Either way it is
    scored with its mask: term ``I / (U + 1e-8)``, and I and U join the cIoU totals (:279-289). gIoU is the exact
    mean over all expressions (the official divides by ``count + 1e-5``, utils/meter.py:65). cIoU is
    ``sum I / (sum U + 1e-10)``. N-acc and T-acc are NaN when there is no no-target / no target expression.

    Returns the :meth:`GresMetricAccumulator.result` dict."""
    if len(preds) != len(gts):
        raise ValueError(f"grefcoco_metrics: {len(preds)} predictions but {len(gts)} ground truths")
    if rejected is not None and len(rejected) != len(preds):
        raise ValueError(f"grefcoco_metrics: {len(rejected)} rejection flags but {len(preds)} predictions")
    acc = GresMetricAccumulator(ignore_index, rej_empty_mask=rej_empty_mask, no_target_union=no_target_union)
    for k, (p, g) in enumerate(zip(preds, gts, strict=True)):
        try:
            acc.update(p, g, None if rejected is None else rejected[k])
        except (ValueError, TypeError) as e:
            raise type(e)(f"expression {k}: {e}") from e
    return acc.result()


def grefcoco_from_records(
    records: Any, *, rej_empty_mask: bool = False, no_target_union: bool = True
) -> dict[str, Any]:
    """The :func:`grefcoco_metrics` result recomputed from per-expression records (:func:`gres_counts` dicts, e.g.
    read back from a JSONL file)."""
    acc = GresMetricAccumulator(rej_empty_mask=rej_empty_mask, no_target_union=no_target_union)
    return acc.update_records(records).result()
