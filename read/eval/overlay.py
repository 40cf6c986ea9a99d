"""Evaluation overlays (``eval.overlays=N``, every protocol): the first query of a sample drawn by the shared renderer
(``read.utils.render``): prediction filled, ground truth outlined, SasP points, the [SEG] heat-map, the query, the
per-sample IoU and, for generation, the answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from read.data.base import Sample
from read.data.transforms import clip_view_box
from read.eval.metrics import mask_counts
from read.model.sasp import dense_similarity_map
from read.utils.render import render_figure, write_png

__all__ = ["draw_overlay", "query_text"]


def query_text(sample: Sample, row: int = 0) -> str:
    """The user's question of conversation row ``row`` without the image placeholder."""
    q = sample.conversations[row][0][0] if sample.conversations else ""
    for tok in ("<im_start>", "<im_end>", "<image>"):
        q = q.replace(tok, "")
    return " ".join(q.split())


def iou_of(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of one prediction with its ground truth, ignore pixels (255) excluded as in the metrics; 0/0 -> 0."""
    c = mask_counts(torch.from_numpy(np.asarray(pred, bool)), torch.from_numpy(np.asarray(gt).astype(np.int64)))
    return float(c["intersection"]) / float(c["union"]) if int(c["union"]) > 0 else 0.0


def draw_overlay(path: Path, sample: Sample, pred_masks: np.ndarray, *, clip_size: int, query: int | None = None,
                 similarity: torch.Tensor | None = None, points=None, answer: str | None = None,  # noqa: ANN001
                 protocol: str = "", view: str = "center_crop") -> Path:
    """Write the overlay of ``sample``'s first query as a PNG.

    Args:
        pred_masks: ``[n, H, W]`` bool predictions of the sample's n queries (only the first is drawn).
        clip_size: CLIP input side (the heat-map's frame).
        view: how the VLM's token grid covers the image (``center_crop``: LLaVA; ``full``: Qwen2.5-VL, whose
            per-query grids come from ``points.grid_hw``; without points its heat-map is not drawn).
        query: index of the first query's [SEG] in ``similarity`` / ``points`` (``None``: no [SEG] for it).
        similarity: ``[P, N]`` similarities of the batch's queries; points: their ``PointPrompts`` (or ``None``).
        answer: the generated answer (generation protocols).
    """
    h, w = sample.image.shape[:2]
    gt = sample.masks if sample.masks is not None else sample.meta.get("gt_masks")
    gt = None if gt is None else np.asarray(gt)
    n = int(pred_masks.shape[0])
    pred = [pred_masks[0]] if n else []
    lines = []
    if answer is not None:
        lines.append(f"answer: {answer}")
    if gt is not None and gt.shape[0] and n:
        lines.append(f"IoU {iou_of(pred_masks[0], gt[0]):.3f}" + (f"  (query 1 of {n})" if n > 1 else ""))
    if protocol:
        lines.append(f"{protocol}: {sample.name}")
    heat = pts = labels = None
    grid = getattr(points, "grid_hw", None) if points is not None else None
    if query is not None and similarity is not None and grid is not None:
        gh, gw = (int(v) for v in grid[query])
        sim = similarity[query][: gh * gw].detach().float().cpu()
        heat = dense_similarity_map(sim, (h, w), clip_size, grid_hw=(gh, gw), view=view).numpy()
    elif query is not None and similarity is not None and view == "center_crop":
        heat = dense_similarity_map(similarity[query].detach().float().cpu(), (h, w), clip_size).numpy()
    if query is not None and points is not None:
        valid = points.valid[query].cpu()
        pts = points.coords_image[query].detach().float().cpu()[valid].numpy()
        labels = points.labels[query].cpu()[valid].numpy()
    fig = render_figure(
        sample.image,
        pred_masks=pred,
        gt_masks=[gt[0]] if gt is not None and gt.shape[0] else [],
        points=pts,
        labels=labels,
        heat=heat,
        view_box=clip_view_box(h, w, clip_size) if heat is not None and view == "center_crop" else None,
        title=query_text(sample),
        lines=lines,
    )
    return write_png(path, fig)
