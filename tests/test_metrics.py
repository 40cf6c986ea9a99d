"""Segmentation metrics (read.eval.metrics). Every expectation is either a literal worked out by hand in the
comments, or comes from the plain-Python pixel loop `_ref_fg_counts` below. None comes from the module under test."""

from __future__ import annotations

import json
import math

import pytest
import torch
from dist_helpers import reduce_on_two_ranks

from read.eval.metrics import (
    SegMetricAccumulator,
    giou_ciou,
    intersection_union,
    mask_counts,
    pred_exists,
    see_segment,
)

# ---------------------------------------------------------------------------------------------------------------
# Plain-Python reference
# ---------------------------------------------------------------------------------------------------------------


def _ref_fg_counts(pred_rows, gt_rows, ignore=255):
    """Foreground (I, U) of one [H, W] mask pair, given as nested lists, by looping over pixels."""
    inter = union = 0
    for prow, grow in zip(pred_rows, gt_rows):
        for p, g in zip(prow, grow):
            if g == ignore:
                continue
            if p == 1 and g == 1:
                inter += 1
            if p == 1 or g == 1:
                union += 1
    return inter, union


def _ref_metrics(items, ignore=255):
    """Official gIoU/cIoU by hand: per-mask IoU = I/(U+1e-5), 1.0 if U == 0; gIoU = sum/(count+1e-5);
    cIoU = sum I / (sum U + 1e-10)."""
    ious, si, su = [], 0, 0
    for pred, gt in items:
        for pk, gk in zip(pred.tolist(), gt.tolist()):
            i, u = _ref_fg_counts(pk, gk, ignore)
            ious.append(1.0 if u == 0 else i / (u + 1e-5))
            si += i
            su += u
    return sum(ious) / (len(ious) + 1e-5), si / (su + 1e-10), len(ious), si, su


def _random_items(seed, n_items=7):
    g = torch.Generator().manual_seed(seed)
    items = []
    for k in range(n_items):
        n = 1 + k % 3
        h, w = 5 + k, 7 + (3 * k) % 5
        pred = (torch.rand(n, h, w, generator=g) < 0.4).to(torch.uint8)
        gt = (torch.rand(n, h, w, generator=g) < 0.4).to(torch.int64)
        gt[torch.rand(n, h, w, generator=g) < 0.1] = 255
        if k == 2:  # an empty GT + empty prediction mask, and an empty-prediction mask
            pred[0] = 0
            gt[0] = 0
            pred[1] = 0
        items.append((pred, gt))
    return items


# ---------------------------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------------------------

PRED_3 = [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
GT_3 = [[1, 255, 0], [255, 1, 1], [0, 0, 0]]


def test_ignore_pixels_3x3_by_hand():
    pred, gt = torch.tensor(PRED_3), torch.tensor(GT_3)
    # Valid pixels (gt != 255): (0,0) p1 g1, (0,2) p0 g0, (1,1) p1 g1, (1,2) p0 g1, (2,0) p0 g0, (2,1) p0 g0,
    # (2,2) p1 g0.  fg: pred 3, gt 3, I 2, U 4.  bg: pred 4, gt 4, I 3, U 5.
    i, u, a_p, a_g = intersection_union(pred, gt)
    assert i.tolist() == [3, 2] and u.tolist() == [5, 4]
    assert a_p.tolist() == [4, 3] and a_g.tolist() == [4, 3]
    assert i.dtype == u.dtype == a_p.dtype == a_g.dtype == torch.int64
    assert mask_counts(pred, gt) == {"intersection": 2, "union": 4, "pred_area": 3, "gt_area": 3}
    assert all(type(v) is int for v in mask_counts(pred, gt).values())
    # Without ignoring, (0,1) (pred 1) joins the fg union and (1,0) (pred 0) joins the bg counts; 255 is in no class.
    # fg: pred 4, gt 3, I 2, U 5.  bg: pred 5, gt 4, I 3, U 6.
    i, u, a_p, a_g = intersection_union(pred, gt, ignore_index=None)
    assert i.tolist() == [3, 2] and u.tolist() == [6, 5]
    assert a_p.tolist() == [5, 4] and a_g.tolist() == [4, 3]
    assert _ref_fg_counts(PRED_3, GT_3) == (2, 4)
    r = giou_ciou([pred[None]], [gt[None]])
    assert r["giou"] == pytest.approx((2 / (4 + 1e-5)) / (1 + 1e-5), rel=1e-12)
    assert r["ciou"] == pytest.approx(2 / (4 + 1e-10), rel=1e-12)
    assert r["giou"] != pytest.approx(0.4, abs=1e-3)  # what ignoring nothing would give (2/5)


def test_all_pixels_ignored_counts_as_no_object():
    pred = torch.ones(2, 2, dtype=torch.int64)
    gt = torch.full((2, 2), 255)
    i, u, _, _ = intersection_union(pred, gt)
    assert i.tolist() == [0, 0] and u.tolist() == [0, 0]
    assert giou_ciou([pred[None]], [gt[None]])["giou"] == pytest.approx(1 / (1 + 1e-5), rel=1e-12)


def test_empty_gt_empty_pred_is_perfect():
    pred = torch.zeros(1, 4, 4, dtype=torch.uint8)
    gt = torch.zeros(1, 4, 4, dtype=torch.int64)
    i, u, _, _ = intersection_union(pred[0], gt[0])
    assert i.tolist() == [16, 0] and u.tolist() == [16, 0]
    r = giou_ciou([pred], [gt])
    assert r["giou"] == pytest.approx(0.999990000099999, rel=1e-12)  # 1.0 / (1 + 1e-5)
    assert r["ciou"] == 0.0  # 0 / (0 + 1e-10)
    acc = SegMetricAccumulator()
    acc.update(pred, gt)
    assert acc.result()["num_masks"] == 1 and acc.result()["union"] == 0


def test_empty_gt_nonempty_pred_is_zero():
    gt = torch.zeros(1, 3, 3, dtype=torch.int64)
    pred = torch.zeros(1, 3, 3, dtype=torch.int64)
    pred[0, 0, :] = 1  # 3 false-positive pixels
    assert mask_counts(pred[0], gt[0]) == {"intersection": 0, "union": 3, "pred_area": 3, "gt_area": 0}
    r = giou_ciou([pred], [gt])
    assert r["giou"] == 0.0 and r["ciou"] == 0.0


def test_empty_pred_nonempty_gt_is_zero():
    gt = torch.zeros(1, 3, 3, dtype=torch.int64)
    gt[0, 1:, 1:] = 1  # 4 GT pixels
    pred = torch.zeros(1, 3, 3, dtype=torch.bool)
    assert mask_counts(pred[0], gt[0]) == {"intersection": 0, "union": 4, "pred_area": 0, "gt_area": 4}
    r = giou_ciou([pred], [gt])
    assert r["giou"] == 0.0 and r["ciou"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------------------------


def test_several_masks_several_images_by_hand():
    # image 0, mask 0: the 3x3 example (I 2, U 4); mask 1: empty/empty (IoU 1.0)
    p0 = torch.stack([torch.tensor(PRED_3), torch.zeros(3, 3, dtype=torch.int64)])
    g0 = torch.stack([torch.tensor(GT_3), torch.zeros(3, 3, dtype=torch.int64)])
    # image 1 (2x4), one mask: pred 1 1 0 0 / 0 0 0 0, gt 0 1 1 0 / 0 0 0 0 -> I 1, U 3
    p1 = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 0]]])
    g1 = torch.tensor([[[0, 1, 1, 0], [0, 0, 0, 0]]])
    r = giou_ciou([p0, p1], [g0, g1])
    giou = (2 / (4 + 1e-5) + 1.0 + 1 / (3 + 1e-5)) / (3 + 1e-5)  # per mask, not per image
    assert r["giou"] == pytest.approx(giou, rel=1e-12)
    assert r["giou"] != pytest.approx(((0.5 + 1.0) / 2 + 1 / 3) / 2, abs=1e-3)  # the per-image mean differs
    assert r["ciou"] == pytest.approx(3 / (7 + 1e-10), rel=1e-12)  # cumulative: (2 + 0 + 1) / (4 + 0 + 3)
    acc = SegMetricAccumulator()
    acc.update(p0, g0)
    acc.update(p1, g1)
    res = acc.result()
    assert (res["num_masks"], res["intersection"], res["union"]) == (3, 3, 7)
    assert res["giou"] == r["giou"] and res["ciou"] == r["ciou"]


def test_random_items_match_pixel_loop():
    items = _random_items(0)
    giou, ciou, n, si, su = _ref_metrics(items)
    r = giou_ciou([p for p, _ in items], [g for _, g in items])
    assert r["giou"] == pytest.approx(giou, rel=1e-12, abs=1e-15)
    assert r["ciou"] == pytest.approx(ciou, rel=1e-12, abs=1e-15)
    acc = SegMetricAccumulator()
    for p, g in items:
        acc.update(p, g)
    res = acc.result()
    assert (res["num_masks"], res["intersection"], res["union"]) == (n, si, su)


def test_dtypes_give_same_result():
    items = _random_items(1, n_items=4)
    expected = None
    for pd in (torch.bool, torch.uint8, torch.int32, torch.int64, torch.float32):
        for gd in (torch.uint8, torch.int32, torch.int64):
            preds = [p.to(pd) for p, _ in items]
            gts = [g.to(gd) for _, g in items]
            r = giou_ciou(preds, gts)
            per_mask = [mask_counts(p[0], g[0]) for p, g in zip(preds, gts)]
            if expected is None:
                expected = (r, per_mask)
            assert (r, per_mask) == expected, (pd, gd)
    giou, ciou, *_ = _ref_metrics(items)
    assert expected[0]["giou"] == pytest.approx(giou, rel=1e-12)


def test_inputs_not_mutated():
    items = _random_items(2, n_items=3)
    copies = [(p.clone(), g.clone()) for p, g in items]
    giou_ciou([p for p, _ in items], [g for _, g in items])
    acc = SegMetricAccumulator()
    for p, g in items:
        acc.update(p, g)
        intersection_union(p[0], g[0])
        mask_counts(p[0], g[0])
    for (p, g), (pc, gc) in zip(items, copies):
        assert torch.equal(p, pc) and torch.equal(g, gc)
    assert (items[0][1] == 255).any()  # the ignore pixels are still there (the official code overwrites pred)


def test_logits_rejected_and_binary_floats_accepted():
    gt = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="threshold"):
        intersection_union(torch.tensor([[0.3, -1.2], [2.0, 0.0]]), gt)
    i, u, _, _ = intersection_union(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), gt)
    # bg: pred {(0,0),(1,0),(1,1)}, gt {(0,0),(1,1)} -> I 2, U 3.  fg: pred {(0,1)}, gt {(0,1),(1,0)} -> I 1, U 2
    assert i.tolist() == [2, 1] and u.tolist() == [3, 2]


def test_shape_mismatch_names_image():
    preds = [torch.zeros(1, 3, 3), torch.zeros(2, 4, 5)]
    gts = [torch.zeros(1, 3, 3, dtype=torch.int64), torch.zeros(2, 5, 4, dtype=torch.int64)]
    with pytest.raises(ValueError, match=r"image 1.*\(2, 4, 5\).*\(2, 5, 4\)"):
        giou_ciou(preds, gts)
    with pytest.raises(ValueError):
        giou_ciou(preds, gts[:1])
    with pytest.raises(ValueError):
        intersection_union(torch.zeros(2, 3), torch.zeros(3, 2))


def test_counts_records_state_roundtrip_and_merge():
    items = _random_items(3)
    full = SegMetricAccumulator()
    for p, g in items:
        full.update(p, g)
    # JSONL-style records -> re-aggregation gives exactly the same result
    lines = [json.dumps(mask_counts(pk, gk)) for p, g in items for pk, gk in zip(p, g)]
    recs = [json.loads(s) for s in lines]
    again = SegMetricAccumulator()
    again.update_counts([r["intersection"] for r in recs], [r["union"] for r in recs])
    assert again.result() == full.result()
    # two halves, states through JSON, merged
    a, b = SegMetricAccumulator(), SegMetricAccumulator()
    for p, g in items[:3]:
        a.update(p, g)
    for p, g in items[3:]:
        b.update(p, g)
    merged = (
        SegMetricAccumulator()
        .merge(json.loads(json.dumps(b.state())))
        .merge(json.loads(json.dumps(a.state())))
    )
    assert merged.state() == full.state()
    assert merged.result() == full.result()
    # invalid counts
    with pytest.raises(ValueError):
        SegMetricAccumulator().update_counts([3], [2])
    with pytest.raises(ValueError):
        SegMetricAccumulator().update_counts([1, 2], [3])


def test_empty_accumulator_and_reduce_noop():
    acc = SegMetricAccumulator()
    assert acc.result() == {"giou": 0.0, "ciou": 0.0, "num_masks": 0, "intersection": 0, "union": 0}
    acc.update_counts([1], [2])
    before = acc.state()
    assert acc.reduce() is acc and acc.reduce().state() == before  # no process group: no-op, repeatable
    assert acc.result()["giou"] == pytest.approx((1 / (2 + 1e-5)) / (1 + 1e-5), rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# FP-RefCOCO
# ---------------------------------------------------------------------------------------------------------------


def test_see_segment_by_hand():
    records = [
        {"gt_exists": True, "pred_exists": True, "intersection": 5, "union": 8},  # agree
        {"gt_exists": False, "pred_exists": False, "intersection": 0, "union": 0},  # agree (FP rejected)
        {"gt_exists": False, "pred_exists": True, "intersection": 0, "union": 4},  # FP hallucinated mask
        {"gt_exists": True, "pred_exists": False, "intersection": 0, "union": 6},  # true query missed
        {"gt_exists": True, "pred_exists": True, "intersection": 3, "union": 3},  # agree
    ]
    r = see_segment(records)
    assert r["num_queries"] == 5
    assert r["see"] == pytest.approx(0.6, rel=1e-12)  # 3 / 5
    assert r["segment"] == pytest.approx(8 / 21, rel=1e-12)  # (5+0+0+0+3) / (8+0+4+6+3)
    empty = see_segment([])
    assert empty["num_queries"] == 0 and math.isnan(empty["see"]) and math.isnan(empty["segment"])
    r = see_segment([{"gt_exists": False, "pred_exists": False, "intersection": 0, "union": 0}])
    assert r == {"see": 1.0, "segment": 1.0, "num_queries": 1}


def test_pred_exists():
    z = torch.zeros(4, 4)
    assert pred_exists(False, torch.ones(4, 4)) is False  # no [SEG]
    assert pred_exists(True, None) is False
    assert pred_exists(True, z) is False  # empty mask
    assert pred_exists(True, torch.full((4, 4), -3.0)) is False  # logits all <= 0
    logits = torch.full((4, 4), -3.0)
    logits[2, 1] = 0.5
    assert pred_exists(True, logits) is True
    assert pred_exists(True, torch.stack([z, torch.ones(4, 4)])) is False  # only the first mask counts
    assert pred_exists(True, torch.stack([logits, z])) is True
    assert pred_exists(True, torch.zeros(4, 4, dtype=torch.bool)) is False
    assert pred_exists(True, torch.eye(4, dtype=torch.bool)) is True


# ---------------------------------------------------------------------------------------------------------------
# Distributed reduction (2 forked processes, gloo)
# ---------------------------------------------------------------------------------------------------------------


def test_distributed_reduce_equals_single_process(tmp_path):
    items = _random_items(4, n_items=9)
    single = SegMetricAccumulator()
    for p, g in items:
        single.update(p, g)
    split = 4  # rank 0 gets 4 items, rank 1 gets 5

    def fill(rank: int) -> SegMetricAccumulator:
        acc = SegMetricAccumulator()
        for p, g in items[:split] if rank == 0 else items[split:]:
            acc.update(p, g)
        return acc

    ranks = reduce_on_two_ranks(tmp_path, fill)
    expected = json.loads(json.dumps(single.result()))
    giou, ciou, n, si, su = _ref_metrics(items)
    assert expected["num_masks"] == n and expected["intersection"] == si and expected["union"] == su
    assert expected["giou"] == pytest.approx(giou, rel=1e-12)
    for got in ranks:
        assert got["result"] == expected  # exactly equal, floats included
        assert got["state"] == single.state()
        assert got["second"] is True
