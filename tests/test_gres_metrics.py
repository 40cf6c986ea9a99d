"""GSVA gRefCOCO metrics and REC precision (read.eval.gres_metrics, re-exported by read.eval.metrics).

Every expectation is a literal worked out by hand in the comments, or comes from the plain-Python pixel loop
`_ref_eval_gres` below, which follows GSVA's official `eval_gres` (solver.py:256-304 @618dc79). None comes from
the module under test."""

from __future__ import annotations

import json
import math

import pytest
import torch
from dist_helpers import reduce_on_two_ranks

from read.eval import gres_metrics
from read.eval.metrics import (
    GRES_RECORD_KEYS,
    GresMetricAccumulator,
    box_iou,
    grefcoco_from_records,
    grefcoco_metrics,
    gres_counts,
    mask_box,
    rec_correct,
    rec_precision,
)


def _t(rows, dtype=torch.int64):
    return torch.tensor(rows, dtype=dtype)


def _b(rows):
    return torch.tensor(rows, dtype=torch.bool)


# ---------------------------------------------------------------------------------------------------------------
# Plain-Python reference of the official loop (with exact means instead of count + 1e-5)
# ---------------------------------------------------------------------------------------------------------------


def _ref_eval_gres(items):
    """items: (pred rows 0/1, gt rows 0/1/255, rejected bool). Returns giou, ciou, n_acc, t_acc, I, U."""
    terms, si, su = [], 0, 0
    tp = fn = fp = tn = 0
    for pred, gt, rej in items:
        inter = union = 0
        for prow, grow in zip(pred, gt):
            for p, g in zip(prow, grow):
                if g == 255:
                    continue
                inter += p == 1 and g == 1
                union += p == 1 or g == 1
        if sum(sum(r) for r in gt) < 1:  # solver.py:258
            if rej:
                tp += 1
                terms.append(1.0)
            else:
                fn += 1
                terms.append(0.0)
                su += union
        else:
            if rej:
                fp += 1
            else:
                tn += 1
            terms.append(inter / (union + 1e-8))
            si += inter
            su += union
    nan = float("nan")
    return (
        sum(terms) / len(terms),
        si / (su + 1e-10),
        tp / (tp + fn) if tp + fn else nan,
        tn / (tn + fp) if tn + fp else nan,
        si,
        su,
    )


def _random_expressions(seed, n=24):
    """(pred bool [H, W], gt int64 [H, W], rejected) triples: no-target (rejected or not), targets (SEG or REJ),
    some ground truths with ignore pixels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        h, w = 4 + k % 5, 5 + (2 * k) % 7
        pred = torch.rand(h, w, generator=g) < 0.35
        if k % 4 == 0:
            gt = torch.zeros(h, w, dtype=torch.int64)  # no target
        else:
            gt = (torch.rand(h, w, generator=g) < 0.4).to(torch.int64)
            gt[0, 0] = 1
            if k % 3 == 0:
                gt[torch.rand(h, w, generator=g) < 0.15] = 255
        if k % 6 == 5:
            pred[:] = False
        rejected = bool(torch.rand(1, generator=g) < 0.4)
        out.append((pred, gt, rejected))
    return out


def _as_ref(items):
    return [(p.to(torch.int64).tolist(), gt.tolist(), r) for p, gt, r in items]


# ---------------------------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------------------------

Z4 = [[0] * 4 for _ in range(4)]
# B: false positive on a no-target expression, 3 predicted pixels
PRED_B = [[1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
# C: target found: gt 2x2 block (4 px), pred 2x3 block over it (6 px) -> I 4, U 6
GT_C = [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
PRED_C = [[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]]
# D: target wrongly rejected; its decoded mask covers 2 of the 4 gt pixels -> I 2, U 4
GT_D = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
PRED_D = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]


def _four_cases():
    preds = [_b(Z4), _b(PRED_B), _b(PRED_C), _b(PRED_D)]
    gts = [_t(Z4), _t(Z4), _t(GT_C), _t(GT_D)]
    rejected = [True, False, False, True]  # A correct rejection, B FP, C [SEG], D missed target
    return preds, gts, rejected


def test_correct_rejection_alone():
    r = grefcoco_metrics([_b(Z4)], [_t(Z4)], [True])
    # gIoU term 1.0; nothing joins cIoU -> 0 / (0 + 1e-10) = 0.0; N-acc 1/1; no target -> T-acc NaN
    assert r["giou"] == 1.0 and r["ciou"] == 0.0 and r["n_acc"] == 1.0 and math.isnan(r["t_acc"])
    assert (r["num_expressions"], r["num_no_target"], r["num_target"]) == (1, 1, 0)
    assert (r["intersection"], r["union"]) == (0, 0)
    # a rejected no-target scores 1.0 whatever mask was decoded for it (the code never looks at it)
    r = grefcoco_metrics([_b(PRED_B)], [_t(Z4)], [True])
    assert r["giou"] == 1.0 and r["union"] == 0


def test_false_positive_no_target_adds_union():
    r = grefcoco_metrics([_b(PRED_B), _b(PRED_C)], [_t(Z4), _t(GT_C)], [False, False])
    # B: term 0.0, its union = predicted area 3 joins cIoU; C: term 4/(6+1e-8), I 4, U 6
    assert r["giou"] == pytest.approx((0.0 + 4 / (6 + 1e-8)) / 2, rel=1e-15)
    assert (r["intersection"], r["union"]) == (4, 9)
    assert r["ciou"] == pytest.approx(4 / 9, rel=1e-9)
    assert r["n_acc"] == 0.0 and r["t_acc"] == 1.0
    # Ref-ZOM branch (solver.py:272): the FP union is not added -> cIoU 4/6
    r = grefcoco_metrics([_b(PRED_B), _b(PRED_C)], [_t(Z4), _t(GT_C)], [False, False], no_target_union=False)
    assert (r["intersection"], r["union"]) == (4, 6)


def test_four_cases_code_rule():
    preds, gts, rejected = _four_cases()
    r = grefcoco_metrics(preds, gts, rejected)
    # terms: A 1.0, B 0.0, C 4/(6+1e-8), D 2/(4+1e-8) (missed target still scored with its mask)
    giou = (1.0 + 0.0 + 4 / (6 + 1e-8) + 2 / (4 + 1e-8)) / 4  # ~ (1 + 0 + 0.6667 + 0.5) / 4 = 0.541667
    assert r["giou"] == pytest.approx(giou, rel=1e-15)
    assert r["giou"] == pytest.approx(0.5416666, abs=1e-6)
    # cIoU: I = 0 + 0 + 4 + 2 = 6, U = 0 + 3 + 6 + 4 = 13
    assert (r["intersection"], r["union"]) == (6, 13)
    assert r["ciou"] == pytest.approx(6 / 13, rel=1e-9)
    # N-acc: A hit, B miss -> 1/2; T-acc: C [SEG], D [REJ] -> 1/2
    assert r["n_acc"] == 0.5 and r["t_acc"] == 0.5
    assert (r["num_expressions"], r["num_no_target"], r["num_target"]) == (4, 2, 2)
    assert (r["no_target_rejected"], r["target_rejected"]) == (1, 1)
    # the official meter would divide by 4 + 1e-5: the exact mean differs from that by a relative 2.5e-6
    assert r["giou"] != pytest.approx(giou * 4 / (4 + 1e-5), rel=1e-7)


def test_four_cases_paper_rule():
    preds, gts, rejected = _four_cases()
    r = grefcoco_metrics(preds, gts, rejected, rej_empty_mask=True)
    # D's [REJ] gives an all-zero mask: I 0, U = gt area 4, term 0. cIoU 4 / 13.
    assert r["giou"] == pytest.approx((1.0 + 0.0 + 4 / (6 + 1e-8) + 0.0) / 4, rel=1e-15)
    assert (r["intersection"], r["union"]) == (4, 13)
    assert r["n_acc"] == 0.5 and r["t_acc"] == 0.5


def test_missed_target_scored_with_its_mask():
    r = grefcoco_metrics([_b(PRED_D)], [_t(GT_D)], [True])
    # [REJ] on a target: T-acc 0/1, but the decoded mask still scores 2/(4+1e-8) ~ 0.5; N-acc NaN
    assert r["t_acc"] == 0.0 and math.isnan(r["n_acc"])
    assert r["giou"] == pytest.approx(0.5, rel=1e-8)
    assert (r["intersection"], r["union"]) == (2, 4)


def test_several_targets_by_hand():
    # gt: two objects, {(0,0),(0,1),(1,0)} and {(0,4)} -> 4 px
    gt = _t([[1, 1, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    # pred: {(0,0),(0,1),(1,0),(2,1)} -> 4 px; I 3; U = 4 + 4 - 3 = 5
    pred = _b([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 1, 0, 0, 0]])
    rec = gres_counts(pred, gt, False)
    assert rec == {
        "intersection": 3,
        "union": 5,
        "pred_area": 4,
        "gt_area": 4,
        "is_target": True,
        "rejected": False,
    }
    assert all(type(rec[k]) is int for k in GRES_RECORD_KEYS[:4])
    assert all(type(rec[k]) is bool for k in GRES_RECORD_KEYS[4:])
    # with a second expression, another target: gt 2 px, pred exact -> I 2, U 2
    gt2 = _t([[0, 0, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 0]])
    r = grefcoco_metrics([pred, gt2.bool()], [gt, gt2], [False, False])
    assert r["giou"] == pytest.approx(
        (3 / (5 + 1e-8) + 2 / (2 + 1e-8)) / 2, rel=1e-15
    )  # ~ (0.6 + 1.0)/2 = 0.8
    assert r["ciou"] == pytest.approx(5 / 7, rel=1e-9)  # (3 + 2) / (5 + 2)
    assert r["t_acc"] == 1.0 and math.isnan(r["n_acc"])  # no no-target expression: N-acc NaN


def test_empty_prediction_rejected_none():
    # rejected=None: an all-False prediction counts as [REJ], anything else as [SEG]
    preds = [_b(Z4), _b(Z4), _b(PRED_B)]
    gts = [_t(Z4), _t(GT_C), _t(Z4)]
    r = grefcoco_metrics(preds, gts)
    # 0: no target + empty -> rejected: N-acc hit, term 1.0
    # 1: target + empty -> rejected: T-acc miss, term 0/(4+1e-8) = 0, I 0, U 4
    # 2: no target + 3 px -> not rejected: N-acc miss, term 0, U += 3
    assert r["giou"] == pytest.approx(1 / 3, rel=1e-15)
    assert (r["intersection"], r["union"]) == (0, 7) and r["ciou"] == 0.0
    assert r["n_acc"] == 0.5 and r["t_acc"] == 0.0
    assert gres_counts(_b(Z4), _t(GT_C))["rejected"] is True
    assert gres_counts(_b(PRED_C), _t(GT_C))["rejected"] is False
    # an explicit flag wins over the mask
    assert gres_counts(_b(Z4), _t(GT_C), rejected=False)["rejected"] is False
    assert grefcoco_metrics([_b(Z4)], [_t(GT_C)], [False])["t_acc"] == 1.0


def test_ignore_pixels():
    gt = _t([[1, 1, 255], [0, 1, 255], [0, 0, 0]])
    pred = _b([[1, 0, 1], [0, 1, 1], [1, 0, 0]])
    # valid pixels: all but (0,2), (1,2). pred there: (0,0), (1,1), (2,0) = 3; gt: (0,0), (0,1), (1,1) = 3
    # I = 2 ((0,0), (1,1)); U = 3 + 3 - 2 = 4. Counting the ignored column would give U 6.
    rec = gres_counts(pred, gt, False)
    assert (rec["intersection"], rec["union"], rec["pred_area"], rec["gt_area"]) == (2, 4, 3, 3)
    r = grefcoco_metrics([pred], [gt], [False])
    assert r["giou"] == pytest.approx(2 / (4 + 1e-8), rel=1e-15)
    assert r["ciou"] == pytest.approx(0.5, rel=1e-9)
    # without ignoring, 255 is not a valid gt value
    with pytest.raises(ValueError, match="ignore_index"):
        gres_counts(pred, gt, False, ignore_index=None)
    assert gt[0, 2] == 255 and pred[0, 2]  # inputs not modified (the official overwrites pred)


def test_ignore_only_gt_is_a_target_official_quirk():
    # solver.py:258 tests gt.sum() < 1 on the raw gt: 255 pixels make it a "target" with no foreground.
    gt = _t([[0, 255], [0, 0]])
    r = grefcoco_metrics([_b([[0, 0], [0, 0]])], [gt], [False])
    # I 0, U 0 -> term 0 / (0 + 1e-8) = 0.0 (no "no-object = 1.0" rule in eval_gres); T-acc 1/1
    assert r["num_target"] == 1 and r["giou"] == 0.0 and r["t_acc"] == 1.0 and r["union"] == 0


def test_nan_cases_and_empty():
    r = grefcoco_metrics([_b(PRED_C)], [_t(GT_C)], [False])
    assert math.isnan(r["n_acc"]) and r["t_acc"] == 1.0
    r = grefcoco_metrics([], [])
    assert math.isnan(r["giou"]) and math.isnan(r["n_acc"]) and math.isnan(r["t_acc"])
    assert r["ciou"] == 0.0 and r["num_expressions"] == 0


def test_input_validation():
    with pytest.raises(ValueError, match="threshold"):
        gres_counts(torch.tensor([[0.3, -1.0]]), _t([[0, 1]]))
    assert (
        gres_counts(torch.tensor([[0.0, 1.0]]), _t([[0, 1]]))["intersection"] == 1
    )  # binary floats are fine
    with pytest.raises(ValueError, match="expression 1"):
        grefcoco_metrics([_b(Z4), _b([[1]])], [_t(Z4), _t(Z4)])
    with pytest.raises(ValueError):
        grefcoco_metrics([_b(Z4)], [_t(Z4)], [True, False])
    with pytest.raises(ValueError):
        grefcoco_metrics([_b(Z4)], [])
    with pytest.raises(ValueError, match="gt values"):
        gres_counts(_b([[1, 0]]), _t([[2, 0]]))
    with pytest.raises(ValueError, match="inconsistent"):
        grefcoco_from_records(
            [
                {
                    "intersection": 1,
                    "union": 5,
                    "pred_area": 2,
                    "gt_area": 2,
                    "is_target": True,
                    "rejected": False,
                }
            ]
        )
    with pytest.raises(ValueError, match="no-target"):
        grefcoco_from_records(
            [
                {
                    "intersection": 0,
                    "union": 2,
                    "pred_area": 0,
                    "gt_area": 2,
                    "is_target": False,
                    "rejected": False,
                }
            ]
        )


# ---------------------------------------------------------------------------------------------------------------
# Accumulator, records, random cases against the reference loop
# ---------------------------------------------------------------------------------------------------------------


def test_random_expressions_match_reference_loop():
    items = _random_expressions(0)
    giou, ciou, n_acc, t_acc, si, su = _ref_eval_gres(_as_ref(items))
    r = grefcoco_metrics([p for p, _, _ in items], [g for _, g, _ in items], [x for _, _, x in items])
    assert r["giou"] == pytest.approx(giou, rel=1e-14)
    assert (r["intersection"], r["union"]) == (si, su)
    assert r["ciou"] == ciou and r["n_acc"] == n_acc and r["t_acc"] == t_acc
    assert 0 < r["n_acc"] < 1 and 0 < r["t_acc"] < 1  # the mix covers every branch


def test_accumulator_records_and_merge_equal_function():
    items = _random_expressions(1)
    ref = grefcoco_metrics([p for p, _, _ in items], [g for _, g, _ in items], [x for _, _, x in items])
    acc = GresMetricAccumulator()
    lines = [json.dumps(acc.update(p, g, x)) for p, g, x in items]
    assert acc.result() == ref
    # recomputed from a records file
    recs = [json.loads(s) for s in lines]
    assert grefcoco_from_records(recs) == ref
    # the paper rule from the same records equals the function with the option
    paper = grefcoco_metrics(
        [p for p, _, _ in items], [g for _, g, _ in items], [x for _, _, x in items], rej_empty_mask=True
    )
    assert grefcoco_from_records(recs, rej_empty_mask=True) == paper
    assert paper["intersection"] < ref["intersection"]
    # two halves through JSON states, merged in either order
    a, b = GresMetricAccumulator(), GresMetricAccumulator()
    a.update_records(recs[:10])
    b.update_records(recs[10:])
    m = (
        GresMetricAccumulator()
        .merge(json.loads(json.dumps(b.state())))
        .merge(json.loads(json.dumps(a.state())))
    )
    assert m.state() == acc.state() and m.result() == ref
    assert GresMetricAccumulator.from_state(a.state()).merge(b).result() == ref
    with pytest.raises(KeyError):
        GresMetricAccumulator().merge({"union": 1})
    before = acc.state()
    assert acc.reduce() is acc and acc.state() == before  # no process group: no-op
    acc.reset()
    assert math.isnan(acc.result()["giou"])


def test_exports():
    for name in gres_metrics.__all__:
        import read.eval.metrics as m

        assert getattr(m, name) is getattr(gres_metrics, name) and name in m.__all__


# ---------------------------------------------------------------------------------------------------------------
# Distributed reduction (2 forked processes, gloo)
# ---------------------------------------------------------------------------------------------------------------


def test_distributed_reduce_equals_single_process(tmp_path):
    items = _random_expressions(2)
    single = GresMetricAccumulator()
    for p, g, x in items:
        single.update(p, g, x)
    split = 9  # rank 0 gets 9 expressions, rank 1 gets 15

    def fill(rank: int) -> GresMetricAccumulator:
        acc = GresMetricAccumulator()
        for p, g, x in items[:split] if rank == 0 else items[split:]:
            acc.update(p, g, x)
        return acc

    ranks = reduce_on_two_ranks(tmp_path, fill)
    expected = json.loads(json.dumps(single.result()))
    giou, *_ = _ref_eval_gres(_as_ref(items))
    assert expected["giou"] == pytest.approx(giou, rel=1e-14)
    for got in ranks:
        assert got["result"] == expected  # exactly equal, floats included
        assert got["state"] == single.state()
        assert got["second"] is True


# ---------------------------------------------------------------------------------------------------------------
# REC
# ---------------------------------------------------------------------------------------------------------------


def test_mask_box_by_hand():
    m = torch.zeros(5, 6, dtype=torch.bool)
    m[1, 2] = m[3, 4] = True
    assert mask_box(m) == (2, 1, 5, 4)  # cols 2..4, rows 1..3, half-open
    one = torch.zeros(7, 5, dtype=torch.int64)
    one[5, 3] = 1
    assert mask_box(one) == (3, 5, 4, 6)  # a single pixel: area 1
    assert mask_box(torch.zeros(3, 3, dtype=torch.bool)) is None
    assert mask_box(torch.ones(2, 3)) == (0, 0, 3, 2)
    assert all(type(v) is int for v in mask_box(m))
    with pytest.raises(ValueError):
        mask_box(torch.tensor([[0.2, 0.9]]))  # logits


def test_box_iou_by_hand_and_pixel_consistency():
    assert box_iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(
        1 / 3, rel=1e-15
    )  # inter 1x2 = 2, union 4+4-2 = 6
    assert box_iou((0, 0, 2, 2), (2, 0, 4, 2)) == 0.0  # touching, half-open: no overlap
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou(None, (0, 0, 1, 1)) == 0.0
    assert box_iou((1, 1, 1, 1), (1, 1, 1, 1)) == 0.0  # zero-area boxes
    assert box_iou((0.5, 0, 1.5, 1), (0, 0, 1, 1)) == pytest.approx(1 / 3, rel=1e-15)  # floats: 0.5 / 1.5
    assert box_iou([torch.tensor(0.5), 0, 1.5, 1], torch.tensor([0, 0, 1, 1])) == pytest.approx(
        1 / 3, rel=1e-15
    )
    with pytest.raises(ValueError):
        box_iou((2, 0, 1, 1), (0, 0, 1, 1))
    # two filled rectangles: the box IoU equals the pixel-count IoU of the masks
    a = torch.zeros(6, 8, dtype=torch.bool)
    b = torch.zeros(6, 8, dtype=torch.bool)
    a[1:4, 2:7] = True  # 3 x 5 = 15 px
    b[2:6, 4:8] = True  # 4 x 4 = 16 px; overlap rows 2..3, cols 4..6 = 2 x 3 = 6 px
    assert mask_box(a) == (2, 1, 7, 4) and mask_box(b) == (4, 2, 8, 6)
    pix = int((a & b).sum()) / int((a | b).sum())
    assert pix == pytest.approx(6 / 25, rel=1e-15)  # union 15 + 16 - 6 = 25
    assert box_iou(mask_box(a), mask_box(b)) == pytest.approx(pix, rel=1e-15)


def test_rec_precision_and_half_boundary():
    gt = (0, 0, 4, 1)  # area 4
    assert box_iou((0, 0, 2, 1), gt) == 0.5  # 2 / 4 exactly
    assert rec_correct((0, 0, 2, 1), gt) is False  # "greater than 0.5": exactly 0.5 is a miss
    assert rec_correct((0, 0, 3, 1), gt) is True  # 3 / 4
    assert rec_correct((0, 0, 1001, 1), (0, 0, 2000, 1)) is True  # 1001 / 2000 = 0.5005
    assert rec_correct((0, 0, 1000, 1), (0, 0, 2000, 1)) is False  # 0.5
    assert rec_correct(None, gt) is False
    with pytest.raises(ValueError):
        rec_correct((0, 0, 1, 1), None)
    preds = [(0, 0, 3, 1), (0, 0, 2, 1), None, (0, 0, 4, 1)]
    gts = [gt, gt, gt, gt]
    # hit (0.75), miss (0.5), miss (empty), hit (1.0) -> 2 / 4
    assert rec_precision(preds, gts) == 0.5
    assert rec_precision(preds, gts, threshold=0.4) == 0.75  # 0.5 > 0.4 now counts
    assert math.isnan(rec_precision([], []))
    with pytest.raises(ValueError):
        rec_precision(preds, gts[:2])
    # from masks, end to end: pred box (1, 0, 3, 2) vs gt box (0, 0, 3, 2): IoU 4 / 6 > 0.5
    pm = _b([[0, 1, 1], [0, 0, 1]])
    gm = _b([[1, 1, 1], [1, 1, 1]])
    assert rec_precision([mask_box(pm)], [mask_box(gm)]) == 1.0
