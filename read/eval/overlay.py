"""Overlay images for inspection: predicted mask, ground-truth outline, SasP points and the similarity map."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from read.data.base import Sample


def draw_overlay(path: Path, sample: Sample, pred_masks: np.ndarray, points=None, query_sel=None,
                 clip_size: int | None = None) -> Path:
    """Write ``[image + prediction + GT outline + points | similarity heat-map]`` as one PNG.

    Args:
        pred_masks: ``[n, H, W]`` bool predictions of this sample's queries.
        points: ``PointPrompts`` of the whole batch (or ``None`` when SasP is off).
        query_sel: indices of this sample's queries inside ``points``.
    """
    img = cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    left = img.astype(np.float32)
    for m in pred_masks:
        left[m] = 0.45 * left[m] + 0.55 * np.array((0, 0, 255), np.float32)
    left = left.clip(0, 255).astype(np.uint8)
    gt = sample.masks if sample.masks is not None else sample.meta.get("gt_masks")
    if gt is not None:
        for g in np.asarray(gt):
            contours, _ = cv2.findContours((g == 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(left, contours, -1, (0, 255, 0), 1)
    right = np.zeros_like(img)
    if points is not None and query_sel is not None and len(query_sel) > 0:
        q = int(query_sel[0])
        coords = points.coords_image[q].detach().float().cpu().numpy()
        labels = points.labels[q].cpu().numpy()
        colour = {1: (0, 255, 0), 0: (255, 0, 0), -1: (200, 200, 200)}
        for (x, y), lab in zip(coords, labels, strict=True):
            cv2.circle(left, (int(round(x)), int(round(y))), max(2, min(h, w) // 60), colour[int(lab)], -1)
        from read.model.sasp import dense_similarity_map

        n = points.similarity.shape[-1]
        side = clip_size or int(round(n**0.5)) * 14  # LLaVA's patch size when the caller does not say
        heat = dense_similarity_map(points.similarity[q].detach().float().cpu(), (h, w), side)
        right = cv2.applyColorMap((heat.clamp(0, 1).numpy() * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = np.concatenate([left, right], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), out):
        raise OSError(f"{path}: could not write the overlay")
    return path

