"""SasP, steps 1-2 and the frames: the similarity map, min-max normalisation, the token grid and its aspect padding,
and the mapping of pixel coordinates to SAM's input frame (spec 2.2-2.4, 2.7.1). Pure functions; conventions in
``read.model.sasp``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["aspect_padding", "as_hw_list", "minmax_normalize", "padded_selection_grid", "sam_preprocess_shape",
           "selection_grid", "similarity_map", "to_sam_frame", "token_side"]


# --------------------------------------------------------------------------------------------------------------


def similarity_map(image_hidden: Tensor, seg_hidden: Tensor) -> Tensor:
    """Raw dot-product similarity (spec 2.2; no L2 normalisation), in the input dtype.

    Args:
        image_hidden: ``[P, N, C]`` image-token states.
        seg_hidden: ``[P, C]`` [SEG] query states.

    Returns:
        ``[P, N]``.
    """
    return torch.einsum("pnc,pc->pn", image_hidden, seg_hidden)


def minmax_normalize(x: Tensor, dim: int | tuple[int, ...] = -1) -> tuple[Tensor, Tensor]:
    """``(x - min) / (max - min)`` over ``dim``; a constant slice gives 0.5 everywhere (see module docstring).

    Returns:
        (normalised ``x`` (same shape and dtype), ``constant`` bool mask with ``dim`` reduced).
    """
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    rng = hi - lo
    constant = rng <= 0
    out = (x - lo) / torch.where(constant, torch.ones_like(rng), rng)
    out = torch.where(constant, torch.full_like(out, 0.5), out)
    return out, constant.squeeze(dims) if constant.dim() > 0 else constant


def token_side(n: int) -> int:
    s = math.isqrt(n)
    if s * s != n:
        raise ValueError(f"SasP needs a square token grid, got N={n} image tokens")
    return s


# --------------------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------------------


def aspect_padding(image_hw: tuple[int, int], side: int) -> tuple[int, int]:
    """Symmetric padding ``(pad_h, pad_w)`` that undoes a shortest-side-resize + centre-crop to ``side``.

    Exactly the official integer rules (spec 2.3.4, 2.4.2): ``scale = side / min(H, W)``,
    ``new_h = int(H * scale)``, ``pad_h = (new_h - side) // 2`` (same for w). Can be -1 (then it crops).
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    scale = side / min(h, w)
    return (int(h * scale) - side) // 2, (int(w * scale) - side) // 2


def as_hw_list(image_hw: Tensor | Sequence, p: int) -> list[tuple[int, int]]:
    if isinstance(image_hw, Tensor):
        hw = [tuple(int(v) for v in row) for row in image_hw.reshape(-1, 2).tolist()]
    else:
        hw = [(int(a), int(b)) for a, b in image_hw]
    if len(hw) != p:
        raise ValueError(f"got {len(hw)} image sizes for {p} similarity rows")
    if any(h < 1 or w < 1 for h, w in hw):
        raise ValueError(f"image sizes must be positive, got {hw}")
    return hw


def sam_preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """``ResizeLongestSide.get_preprocess_shape``: each side ``int(side * long / max(H, W) + 0.5)``."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def to_sam_frame(coords: Tensor, image_hw: Tensor | Sequence, long_side: int) -> Tensor:
    """Original-image (x, y) to SAM's resized input frame, as ``ResizeLongestSide.apply_coords`` (spec 2.7.1).

    No +0.5 and no pad point: the upstream ``PromptEncoder`` adds both itself.

    Args:
        coords: ``[P, K, 2]`` (x, y).
        image_hw: ``[P, 2]`` original (H, W) per row.
        long_side: SAM input side (1024).

    Returns:
        ``[P, K, 2]`` in ``coords``' dtype (differentiable: a per-row constant scale).
    """
    hw = as_hw_list(image_hw, coords.shape[0])
    factors = []
    for h, w in hw:
        nh, nw = sam_preprocess_shape(h, w, long_side)
        factors.append((nw / w, nh / h))
    f = torch.tensor(factors, dtype=torch.float64, device=coords.device).reshape(-1, 2)
    return (coords.double() * f[:, None, :]).to(coords.dtype)


# --------------------------------------------------------------------------------------------------------------
# Selection grid and points (spec 2.4, 2.5)
# --------------------------------------------------------------------------------------------------------------


def selection_grid(sim: Tensor, down_sample: int) -> tuple[Tensor, Tensor]:
    """Down-sampled, min-max normalised selection grid (spec 2.4.1), before aspect padding.

    Args:
        sim: ``[P, N]`` raw similarities, ``N = s * s`` tokens in row-major order (any float dtype).
        down_sample: grid side is ``ds = s // down_sample`` (bilinear, ``align_corners=False``, no antialias;
            2 is exactly 2x2 average pooling, 1 the identity).

    Returns:
        (``[P, ds, ds]`` float32 in [0, 1], ``[P]`` bool: the grid is constant (then filled with 0.5)).
    """
    p, n = sim.shape
    s = token_side(n)
    ds = s // down_sample
    if ds < 1:
        raise ValueError(f"down_sample={down_sample} is larger than the {s}x{s} token grid")
    grid = sim.float().reshape(p, 1, s, s)
    if ds != s:
        grid = F.interpolate(grid, size=(ds, ds), mode="bilinear", align_corners=False)
    grid, constant = minmax_normalize(grid.reshape(p, ds * ds), dim=-1)
    return grid.reshape(p, ds, ds), constant


def padded_selection_grid(sim: Tensor, image_hw: tuple[int, int], down_sample: int) -> Tensor:
    """The official padded selection grid of one item (for inspection and visualisation; spec 2.4.2).

    Args:
        sim: ``[N]`` raw similarities.
        image_hw: original (H, W).

    Returns:
        ``[h, w]`` float32, values in [0, 1] and -1 in the aspect padding (cropped where the pad is -1).
    """
    grid, _ = selection_grid(sim[None], down_sample)
    pad_h, pad_w = aspect_padding(image_hw, grid.shape[-1])
    return F.pad(grid[:, None], (pad_w, pad_w, pad_h, pad_h), value=-1.0)[0, 0]
