"""Mask losses exactly as the official code computes them (spec 3.4), plus the micro-batch aggregation.

Shape shorthand: n = masks of one image, H x W = that image's original resolution.

Per image, ``sigmoid_ce_loss`` and ``dice_loss`` return the *sum* of per-mask losses divided by ``num_masks``.
The micro-batch loss multiplies each image's value back by its mask count and divides by the total mask count,
i.e. it is the mean over every mask in the micro-batch (``aggregate_mask_losses``).

Ignore pixels (255): the official training converts masks with ``mask == 1``, so ignore pixels count as
background (``ignore_mode="background"``). ``ignore_mode="mask"`` excludes them from both losses instead: BCE is
averaged over valid pixels only, and Dice sums over valid pixels only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_LABEL = 255


def sigmoid_ce_loss(
    logits: Tensor, targets: Tensor, num_masks: float, valid: Tensor | None = None
) -> Tensor:
    """Per-mask mean binary cross-entropy with logits, summed over masks and divided by ``num_masks``.

    Args:
        logits: ``[n, H, W]`` mask logits.
        targets: ``[n, H, W]`` in {0, 1} (any float/int dtype).
        num_masks: the divisor (the official code passes n; ``+ 1e-8`` is added as it does).
        valid: optional bool ``[n, H, W]``; when given, each mask's mean runs over valid pixels only.

    Returns:
        Scalar tensor.
    """
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    loss = loss.flatten(1)
    if valid is None:
        per_mask = loss.mean(1)
    else:
        v = valid.flatten(1).float()
        per_mask = (loss * v).sum(1) / v.sum(1).clamp_min(1.0)
    return per_mask.sum() / (num_masks + 1e-8)


def dice_loss(
    logits: Tensor,
    targets: Tensor,
    num_masks: float,
    scale: float = 1000,
    eps: float = 1e-6,
    valid: Tensor | None = None,
) -> Tensor:
    """Official Dice loss: per mask ``1 - (2 sum(s/scale * g) + eps) / (sum(s/scale) + sum(g/scale) + eps)``.

    ``s = sigmoid(logits)``. The division by ``scale`` (1000) makes ``eps`` act like ``1e-3`` in unscaled units;
    this is what the released models were trained with.

    Args:
        logits: ``[n, H, W]``.
        targets: ``[n, H, W]`` in {0, 1}.
        num_masks: divisor (``+ 1e-8``).
        valid: optional bool ``[n, H, W]``; pixels outside it are dropped from all three sums.

    Returns:
        Scalar tensor: sum over masks of the per-mask loss, divided by ``num_masks``.
    """
    probs = logits.float().sigmoid().flatten(1)
    tgt = targets.float().flatten(1)
    if valid is not None:
        v = valid.flatten(1).float()
        probs = probs * v
        tgt = tgt * v
    numerator = 2 * (probs / scale * tgt).sum(-1)
    denominator = (probs / scale).sum(-1) + (tgt / scale).sum(-1)
    loss = 1 - (numerator + eps) / (denominator + eps)
    return loss.sum() / (num_masks + 1e-8)


def split_ignore(
    gt: Tensor, mode: Literal["background", "mask"]
) -> tuple[Tensor, Tensor | None]:
    """Turn a ground-truth mask with ignore label 255 into (binary target, valid mask or None).

    Args:
        gt: ``[n, H, W]`` integer/float mask with values in {0, 1, 255}.
        mode: ``background`` (official: target = ``gt == 1``, no valid mask) or ``mask`` (255 excluded).
    """
    target = (gt == 1).float()
    if mode == "background":
        return target, None
    return target, gt != IGNORE_LABEL


def aggregate_mask_losses(
    pred_masks: list[Tensor],
    gt_masks: list[Tensor],
    *,
    ignore_mode: Literal["background", "mask"] = "background",
) -> tuple[Tensor, Tensor, int]:
    """Micro-batch BCE and Dice (unweighted), each the mean over all masks of all images.

    Args:
        pred_masks: per image ``[n_b, H_b, W_b]`` logits.
        gt_masks: per image ``[n_b, H_b, W_b]`` with values in {0, 1, 255}.
        ignore_mode: see :func:`split_ignore`.

    Returns:
        ``(bce, dice, num_masks)``. An image with ``n_b = 0`` contributes nothing. With no mask at all, both
        losses are zero tensors that stay connected to the graph of ``pred_masks`` (so backward still works).
    """
    if len(pred_masks) != len(gt_masks):
        raise ValueError(f"{len(pred_masks)} predicted mask sets for {len(gt_masks)} images")
    bce_sum: Tensor | None = None
    dice_sum: Tensor | None = None
    total = 0
    for b, (pred, gt) in enumerate(zip(pred_masks, gt_masks, strict=True)):
        if pred.shape != gt.shape:
            raise ValueError(f"image {b}: predicted masks {tuple(pred.shape)} vs ground truth {tuple(gt.shape)}")
        n = gt.shape[0]
        if n == 0:
            continue
        target, valid = split_ignore(gt, ignore_mode)
        bce_b = sigmoid_ce_loss(pred, target, n, valid=valid) * n
        dice_b = dice_loss(pred, target, n, valid=valid) * n
        bce_sum = bce_b if bce_sum is None else bce_sum + bce_b
        dice_sum = dice_b if dice_sum is None else dice_sum + dice_b
        total += n
    if bce_sum is None or dice_sum is None:
        if not pred_masks:
            zero = torch.zeros((), dtype=torch.float32)
        else:
            zero = sum(p.float().sum() * 0.0 for p in pred_masks)
        return zero, zero, 0
    return bce_sum / (total + 1e-8), dice_sum / (total + 1e-8), total
