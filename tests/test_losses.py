"""Mask losses against hand-computed values (spec 3.4)."""

from __future__ import annotations

import math

import pytest
import torch

from read.model.losses import aggregate_mask_losses, dice_loss, sigmoid_ce_loss


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def bce(x: float, t: int) -> float:
    """-(t log s(x) + (1-t) log(1-s(x)))."""
    return softplus(-x) if t == 1 else softplus(x)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def dice_by_hand(xs: list[float], ts: list[int]) -> float:
    s = [sig(x) / 1000 for x in xs]
    num = 2 * sum(si * t for si, t in zip(s, ts))
    den = sum(s) + sum(t / 1000 for t in ts)
    return 1 - (num + 1e-6) / (den + 1e-6)


def test_zero_logits_by_hand():
    logits = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert sigmoid_ce_loss(logits, target, 1).item() == pytest.approx(math.log(2) / (1 + 1e-8), rel=1e-6)
    # num = 2 * (0.5/1000 * 2) = 0.002; den = 4 * 0.5/1000 + 2/1000 = 0.004
    assert dice_loss(logits, target, 1).item() == pytest.approx(1 - 0.002001 / 0.004001, rel=1e-6)


def test_two_masks_sum_over_num_masks():
    xs = [[2.0, -1.0, 0.5, -3.0], [0.1, 0.2, -0.3, 4.0]]
    ts = [[1, 0, 0, 1], [0, 0, 1, 1]]
    logits = torch.tensor(xs).view(2, 2, 2)
    target = torch.tensor(ts, dtype=torch.float32).view(2, 2, 2)
    expect_bce = sum(sum(bce(x, t) for x, t in zip(xr, tr)) / 4 for xr, tr in zip(xs, ts)) / 2
    expect_dice = sum(dice_by_hand(xr, tr) for xr, tr in zip(xs, ts)) / 2
    assert sigmoid_ce_loss(logits, target, 2).item() == pytest.approx(expect_bce, rel=1e-6)
    assert dice_loss(logits, target, 2).item() == pytest.approx(expect_dice, rel=1e-6)


def test_ignore_pixels_background_vs_masked():
    xs = [2.0, -1.0, 0.5, -3.0]
    gt = torch.tensor([[[1, 255], [0, 1]]], dtype=torch.uint8)
    logits = torch.tensor(xs).view(1, 2, 2)
    # official: 255 -> background (target 0)
    bce_bg, dice_bg, n = aggregate_mask_losses([logits], [gt], ignore_mode="background")
    assert n == 1
    assert bce_bg.item() == pytest.approx(sum(bce(x, t) for x, t in zip(xs, [1, 0, 0, 1])) / 4, rel=1e-6)
    assert dice_bg.item() == pytest.approx(dice_by_hand(xs, [1, 0, 0, 1]), rel=1e-6)
    # masked: pixel (0, 1) dropped from both losses
    bce_m, dice_m, _ = aggregate_mask_losses([logits], [gt], ignore_mode="mask")
    kept_x, kept_t = [2.0, 0.5, -3.0], [1, 0, 1]
    assert bce_m.item() == pytest.approx(sum(bce(x, t) for x, t in zip(kept_x, kept_t)) / 3, rel=1e-6)
    assert dice_m.item() == pytest.approx(dice_by_hand(kept_x, kept_t), rel=1e-6)
    assert bce_m.item() != pytest.approx(bce_bg.item())


def test_micro_batch_aggregation_is_mean_over_all_masks():
    torch.manual_seed(0)
    p1, p2, p3 = torch.randn(1, 3, 4), torch.randn(2, 5, 2), torch.randn(0, 2, 2)
    g1 = (torch.rand(1, 3, 4) > 0.5).to(torch.uint8)
    g2 = (torch.rand(2, 5, 2) > 0.5).to(torch.uint8)
    g3 = torch.zeros(0, 2, 2, dtype=torch.uint8)
    b, d, n = aggregate_mask_losses([p1, p2, p3], [g1, g2, g3])
    assert n == 3
    per_mask = []
    for p, g in ((p1, g1), (p2, g2)):
        for k in range(p.shape[0]):
            xs, ts = p[k].flatten().tolist(), g[k].flatten().tolist()
            per_mask.append((sum(bce(x, t) for x, t in zip(xs, ts)) / len(xs), dice_by_hand(xs, ts)))
    assert b.item() == pytest.approx(sum(v[0] for v in per_mask) / 3, rel=1e-5)
    assert d.item() == pytest.approx(sum(v[1] for v in per_mask) / 3, rel=1e-5)


def test_no_masks_gives_zero_with_graph():
    p = torch.zeros(0, 3, 3, requires_grad=True)
    b, d, n = aggregate_mask_losses([p], [torch.zeros(0, 3, 3)])
    assert n == 0 and b.item() == 0.0 and d.item() == 0.0
    (b + d).backward()
    with pytest.raises(ValueError, match="image 0"):
        aggregate_mask_losses([torch.zeros(1, 2, 2)], [torch.zeros(1, 3, 3)])
