"""SasP, step 3: positive / negative / neutral point selection on the normalised grid, with the official orders and
integer pixel coordinates (spec 2.4.3-2.5). Pure functions; conventions in ``read.model.sasp``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from read.model.sasp_geometry import as_hw_list, view_padding

__all__ = ["select_points"]


def _stable_argsort(x: Tensor) -> Tensor:
    return torch.sort(x, dim=-1, stable=True).indices


def select_points(
    grid: Tensor,
    constant: Tensor,
    image_hw: Tensor | Sequence,
    *,
    num_points: int | None,
    t_pos: float | Tensor,
    t_neg: float | Tensor,
    view: str = "center_crop",
) -> tuple[Tensor, Tensor, Tensor]:
    """Point classes, official order and truncated pixel coordinates (spec 2.4.2-2.5), batched.

    Order: positives (``v >= t_pos``) by value descending, negatives (``0 <= v <= t_neg``) ascending, neutral
    cells in raster order; ties keep raster order (stable). Cells cropped by a -1 aspect pad are never selected.
    Raster order on the unpadded ``ds x ds`` grid equals raster order on the padded grid, so no padded tensor is
    built.

    Args:
        grid: ``[P, dh, dw]`` normalised selection grid; constant: ``[P]`` (from :func:`selection_grid`).
        image_hw: ``[P, 2]`` original (H, W).
        num_points: keep the first ``num_points`` (``None``: all cells, the paper variant).
        t_pos, t_neg: floats or ``[P]`` tensors (per-item thresholds of the paper variant).
        view: how the grid covers the image (``read.model.sasp_geometry.VIEWS``): ``center_crop`` (official, square
            grid, aspect padding) or ``full`` (no padding: the grid spans the whole image).

    Returns:
        coords ``[P, K, 2]`` int64 (x, y) in original-image pixels (truncated; 0 where invalid),
        labels ``[P, K]`` int64 in {1, 0, -1}, valid ``[P, K]`` bool, with ``K = min(num_points, dh * dw)``.
    """
    p, dh, dw = grid.shape
    if view == "center_crop" and dh != dw:
        raise ValueError(f"a center_crop token grid is square, got {dh}x{dw}")
    dev = grid.device
    hw = as_hw_list(image_hw, p)
    v = grid.reshape(p, dh * dw)
    t_pos_t = torch.as_tensor(t_pos, dtype=v.dtype, device=dev).reshape(-1, 1)
    t_neg_t = torch.as_tensor(t_neg, dtype=v.dtype, device=dev).reshape(-1, 1)

    pads = torch.tensor([view_padding(x, dw, view) for x in hw], dtype=torch.long, device=dev).reshape(-1, 2)
    pad_h, pad_w = pads[:, :1], pads[:, 1:]
    rows = torch.arange(dh, device=dev).repeat_interleave(dw)[None]  # [1, L]
    cols = torch.arange(dw, device=dev).repeat(dh)[None]
    inside = (
        (rows + pad_h >= 0)
        & (rows + pad_h < dh + 2 * pad_h)
        & (cols + pad_w >= 0)
        & (cols + pad_w < dw + 2 * pad_w)
    )

    informative = ~constant.reshape(-1, 1)
    pos = (v >= t_pos_t) & informative
    neg = (v >= 0) & (v <= t_neg_t) & informative & ~pos
    cls = torch.full_like(v, 2.0)
    cls = torch.where(neg, torch.zeros_like(cls) + 1.0, cls)
    cls = torch.where(pos, torch.zeros_like(cls), cls)
    cls = torch.where(inside, cls, torch.full_like(cls, 3.0))
    key = torch.where(pos, -v, torch.where(neg, v, torch.zeros_like(v)))
    order = _stable_argsort(key)  # (key, raster)
    order = order.gather(1, _stable_argsort(cls.gather(1, order)))  # (class, key, raster)

    k = dh * dw if num_points is None else min(int(num_points), dh * dw)
    idx = order[:, :k]
    sel_cls = cls.gather(1, idx)
    valid = sel_cls < 3
    labels = torch.full((p, k), -1, dtype=torch.long, device=dev)
    labels = torch.where(sel_cls == 0, torch.ones_like(labels), labels)
    labels = torch.where(sel_cls == 1, torch.zeros_like(labels), labels)

    # Official coordinates: x = int(min((col + 0.5) * W / w, W - 1)) on the padded h x w grid (float64 here).
    size = torch.tensor(hw, dtype=torch.float64, device=dev).reshape(-1, 2)  # (H, W)
    h_grid = (dh + 2 * pad_h).double()
    w_grid = (dw + 2 * pad_w).double()
    col_p = (idx % dw + pad_w).double()
    row_p = (idx // dw + pad_h).double()
    x = torch.minimum((col_p + 0.5) * (size[:, 1:] / w_grid), size[:, 1:] - 1).floor().long()
    y = torch.minimum((row_p + 0.5) * (size[:, :1] / h_grid), size[:, :1] - 1).floor().long()
    coords = torch.stack([x, y], dim=-1)
    coords = torch.where(valid[..., None], coords, torch.zeros_like(coords))
    return coords, labels, valid
