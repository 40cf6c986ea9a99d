"""SasP, steps 1-2 and the frames: the similarity map, min-max normalisation, the token grid and its aspect padding,
and the mapping of pixel coordinates to SAM's input frame (spec 2.2-2.4, 2.7.1). Pure functions; conventions in
``read.model.sasp``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FRAMES", "VIEWS", "aspect_padding", "as_hw_list", "grid_shape", "minmax_normalize", "padded_selection_grid",
           "sam_preprocess_shape", "selection_grid", "similarity_map", "to_input_frame", "to_sam_frame", "token_side",
           "view_padding"]

VIEWS = ("center_crop", "full")
"""How a VLM's token grid covers the image. ``center_crop`` (LLaVA-1.5 / CLIP): a square ``s x s`` grid over the
centre crop of the shortest-side resize to ``clip_size``; mapping it back to the image pads it with the official
aspect padding. ``full`` (Qwen2.5-VL and other dynamic-resolution models): a ``gh x gw`` grid that covers the whole
image (resized to a multiple of the patch size, aspect nearly kept), so cell ``(i, j)`` spans
``[i H / gh, (i + 1) H / gh) x [j W / gw, (j + 1) W / gw)`` and no padding exists."""


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
    """Side ``s`` of a square ``s x s`` grid of ``n`` tokens (the LLaVA case)."""
    s = math.isqrt(n)
    if s * s != n:
        raise ValueError(f"SasP needs a square token grid, got N={n} image tokens")
    return s


def grid_shape(n: int, grid_hw: tuple[int, int] | None = None) -> tuple[int, int]:
    """``(gh, gw)`` of ``n`` row-major image tokens: ``grid_hw`` when given (must hold ``n`` cells), else square."""
    if grid_hw is None:
        s = token_side(n)
        return s, s
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    if gh < 1 or gw < 1 or gh * gw != n:
        raise ValueError(f"a {gh}x{gw} token grid does not hold the {n} image tokens given")
    return gh, gw


def view_padding(image_hw: tuple[int, int], side: int, view: str) -> tuple[int, int]:
    """Per-side padding ``(pad_h, pad_w)`` that maps a grid of ``view`` back onto the image: the official
    :func:`aspect_padding` for ``center_crop``, none for ``full``."""
    if view == "center_crop":
        return aspect_padding(image_hw, side)
    if view == "full":
        return 0, 0
    raise ValueError(f"unknown token-grid view {view!r} (expected one of {VIEWS})")


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


FRAMES = ("longest_side", "square")
"""How a mask decoder's input frame holds the image. ``longest_side`` (SAM): ``ResizeLongestSide`` to ``S``, then
zero padding bottom/right. ``square`` (SAM 2): the image resized to ``S x S`` (aspect not kept)."""


def to_input_frame(coords: Tensor, image_hw: Tensor | Sequence, side: int, frame: str = "longest_side") -> Tensor:
    """Original-image (x, y) to a mask decoder's input frame (:data:`FRAMES`).

    ``longest_side`` is :func:`to_sam_frame` (the official case, unchanged); ``square`` scales x by ``S / W`` and
    y by ``S / H`` (SAM 2's ``SAM2Transforms.transform_coords`` with ``normalize=True``). Neither adds the +0.5
    pixel-centre shift (both prompt encoders do).

    Args:
        coords: ``[P, K, 2]`` (x, y); image_hw: ``[P, 2]`` original (H, W); side: the frame's side S.

    Returns:
        ``[P, K, 2]`` in ``coords``' dtype.
    """
    if frame == "longest_side":
        return to_sam_frame(coords, image_hw, side)
    if frame != "square":
        raise ValueError(f"unknown mask-decoder input frame {frame!r} (expected one of {FRAMES})")
    hw = as_hw_list(image_hw, coords.shape[0])
    f = torch.tensor([(side / w, side / h) for h, w in hw], dtype=torch.float64, device=coords.device)
    return (coords.double() * f.reshape(-1, 2)[:, None, :]).to(coords.dtype)


# --------------------------------------------------------------------------------------------------------------
# Selection grid and points (spec 2.4, 2.5)
# --------------------------------------------------------------------------------------------------------------


def selection_grid(sim: Tensor, down_sample: int, grid_hw: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Down-sampled, min-max normalised selection grid (spec 2.4.1), before aspect padding.

    Args:
        sim: ``[P, N]`` raw similarities, ``N = gh * gw`` tokens in row-major order (any float dtype).
        down_sample: grid is ``(gh // down_sample, gw // down_sample)`` (bilinear, ``align_corners=False``, no
            antialias; 2 is exactly 2x2 average pooling, 1 the identity).
        grid_hw: ``(gh, gw)``; ``None``: the square ``s x s`` grid of the official model.

    Returns:
        (``[P, dh, dw]`` float32 in [0, 1], ``[P]`` bool: the grid is constant (then filled with 0.5)).
    """
    p, n = sim.shape
    gh, gw = grid_shape(n, grid_hw)
    dh, dw = gh // down_sample, gw // down_sample
    if dh < 1 or dw < 1:
        raise ValueError(f"down_sample={down_sample} is larger than the {gh}x{gw} token grid")
    grid = sim.float().reshape(p, 1, gh, gw)
    if (dh, dw) != (gh, gw):
        grid = F.interpolate(grid, size=(dh, dw), mode="bilinear", align_corners=False)
    grid, constant = minmax_normalize(grid.reshape(p, dh * dw), dim=-1)
    return grid.reshape(p, dh, dw), constant


def padded_selection_grid(sim: Tensor, image_hw: tuple[int, int], down_sample: int,
                          grid_hw: tuple[int, int] | None = None, view: str = "center_crop") -> Tensor:
    """The official padded selection grid of one item (for inspection and visualisation; spec 2.4.2).

    Args:
        sim: ``[N]`` raw similarities.
        image_hw: original (H, W).
        grid_hw, view: the token grid and how it covers the image (:data:`VIEWS`); defaults: the official case.

    Returns:
        ``[h, w]`` float32, values in [0, 1] and -1 in the aspect padding (cropped where the pad is -1; a ``full``
        view has no padding).
    """
    grid, _ = selection_grid(sim[None], down_sample, grid_hw)
    pad_h, pad_w = view_padding(image_hw, grid.shape[-1], view)
    return F.pad(grid[:, None], (pad_w, pad_w, pad_h, pad_h), value=-1.0)[0, 0]
