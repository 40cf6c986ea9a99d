"""SasP, step 4: Discrete-to-Continuous (spec 2.6), computed exactly in a window around each point, the dense map's
values there obtained straight from the token map (the two bilinear resizes and the padding composed
analytically). Pure functions; conventions in ``read.model.sasp``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from read.model.sasp_geometry import as_hw_list, grid_shape, minmax_normalize, view_padding

__all__ = ["dense_similarity_map", "discrete_to_continuous"]


# --------------------------------------------------------------------------------------------------------------
# Dense map at original resolution (spec 2.3) and Discrete-to-Continuous (spec 2.6)
# --------------------------------------------------------------------------------------------------------------


def dense_similarity_map(sim: Tensor, image_hw: tuple[int, int], clip_size: int,
                         grid_hw: tuple[int, int] | None = None, view: str = "center_crop") -> Tensor:
    """The official dense map ``origin_sm`` of one item, materialised (spec 2.3; for visualisation).

    ``center_crop`` (official): min-max over the N tokens -> ``s x s`` -> bilinear to ``clip_size`` -> zero aspect
    padding -> bilinear to (H, W) (``align_corners=False``). ``full``: min-max -> ``gh x gw`` -> bilinear to
    (H, W) (the grid spans the image; ``clip_size`` is not used). DtoC never builds this; it evaluates the same
    values in small windows.

    Args:
        sim: ``[N]`` raw similarities.
        image_hw: original (H, W).
        clip_size: CLIP input side (336 for the released models).
        grid_hw, view: the token grid (``None``: square) and how it covers the image
            (``read.model.sasp_geometry.VIEWS``).

    Returns:
        ``[H, W]`` float32 (0.5 inside the crop for a constant map).
    """
    gh, gw = grid_shape(sim.shape[-1], grid_hw)
    m, _ = minmax_normalize(sim.float().reshape(1, -1), dim=-1)
    m = m.reshape(1, 1, gh, gw)
    h, w = int(image_hw[0]), int(image_hw[1])
    if view == "full":
        return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    if gh != gw:
        raise ValueError(f"a center_crop token grid is square, got {gh}x{gw}")
    m = F.interpolate(m, size=(clip_size, clip_size), mode="bilinear", align_corners=False)
    pad_h, pad_w = view_padding(image_hw, clip_size, view)
    m = F.pad(m, (pad_w, pad_w, pad_h, pad_h), value=0.0)
    return F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0]


def _linear_taps(dst: Tensor, in_size: Tensor | int, out_size: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
    """Source taps of PyTorch's 1-D linear resize ``in_size -> out_size`` (``align_corners=False``) at ``dst``.

    Same rule as ATen: ``src = max((dst + 0.5) * in / out - 0.5, 0)``, ``i0 = min(floor(src), in - 1)``,
    ``lam = clamp(src - i0, 0, 1)``, ``i1 = i0 + (i0 < in - 1)``. Float64 index arithmetic.
    """
    in_f = torch.as_tensor(in_size, dtype=torch.float64, device=dst.device)
    src = ((dst + 0.5) * (in_f / out_size) - 0.5).clamp_min(0.0)
    i0 = torch.minimum(src.floor(), in_f - 1)
    lam = (src - i0).clamp(0.0, 1.0)
    i1 = torch.where(i0 < in_f - 1, i0 + 1, i0)
    return i0.long(), i1.long(), lam


def _composed_resize_weights(pix: Tensor, out_size: Tensor, pad: Tensor, clip_size: int, s: int) -> Tensor:
    """Rows of the 1-D operator ``s -> clip_size -> zero-pad(pad) -> out_size`` at output pixels ``pix``.

    The dense map is separable: ``D = A_y m A_x^T`` with ``m`` the ``gh x gw`` token map; this returns the rows of
    ``A`` for the requested output indices (each row has at most 4 non-zeros). With ``clip_size = s`` and
    ``pad = 0`` the first resize is the identity, so the operator is the single resize ``s -> out_size`` of a
    ``full`` view.

    Args:
        pix: ``[...]`` int64 output pixel indices (must lie in ``[0, out_size)``).
        out_size, pad: tensors broadcastable to ``pix``: output length (H or W) and the per-side padding
            (may be -1: cropping).
        clip_size: the intermediate length; s: the token count along this axis.

    Returns:
        ``[..., s]`` float64 weights.
    """
    padded = clip_size + 2 * pad
    o0, o1, lam_o = _linear_taps(pix.double(), padded, out_size.double())
    out = torch.zeros(*pix.shape, s, dtype=torch.float64, device=pix.device)
    for outer, w_outer in ((o0, 1.0 - lam_o), (o1, lam_o)):
        inner = outer - pad
        ok = (inner >= 0) & (inner < clip_size)
        w_outer = torch.where(ok, w_outer, torch.zeros_like(w_outer))
        inner = inner.clamp(0, clip_size - 1)
        j0, j1, lam_i = _linear_taps(inner.double(), s, clip_size)
        out.scatter_add_(-1, j0[..., None], (w_outer * (1.0 - lam_i))[..., None])
        out.scatter_add_(-1, j1[..., None], (w_outer * lam_i)[..., None])
    return out


def _dense_window(
    tokens: Tensor, ys: Tensor, xs: Tensor, size_hw: Tensor, pads: Tensor, inner_hw: tuple[int, int] | int
) -> Tensor:
    """Dense-map values on the grid ``ys x xs`` per point, without materialising the map.

    Args:
        tokens: ``[P, gh, gw]`` min-max normalised token map (float32).
        ys, xs: ``[P, K, R]`` int64 pixel rows / columns (clamped into the image by the caller).
        size_hw: ``[P, 2]`` int64 (H, W); pads: ``[P, 2]`` int64 aspect padding (pad_h, pad_w).
        inner_hw: the intermediate size: ``(clip_size, clip_size)`` (``center_crop``; an int means a square) or
            ``(gh, gw)`` (``full``).

    Returns:
        ``[P, K, R, R]`` float32, ``[p, k, a, b] = origin_sm[ys[p, k, a], xs[p, k, b]]``.
    """
    gh, gw = tokens.shape[-2:]
    if isinstance(inner_hw, int):
        inner_hw = (inner_hw, inner_hw)
    ay = _composed_resize_weights(ys, size_hw[:, 0, None, None], pads[:, 0, None, None], inner_hw[0], gh)
    ax = _composed_resize_weights(xs, size_hw[:, 1, None, None], pads[:, 1, None, None], inner_hw[1], gw)
    return torch.einsum("pkas,pst,pkbt->pkab", ay.to(tokens.dtype), tokens, ax.to(tokens.dtype))


def _effective_window(window: int, distance: str) -> int:
    """Half-width that drops the same negligible tail for both kernels.

    Squared distance: the first excluded ring has weight ``exp(-(r + 1)^2)`` (r = 4: 1.4e-11 relative).
    Euclidean: ``exp(-(r' + 1))``, so ``r' = (r + 1)^2 - 1`` (24 for r = 4) matches it.
    """
    return window if distance == "squared" else (window + 1) ** 2 - 1


def discrete_to_continuous(
    tokens: Tensor,
    points: Tensor,
    image_hw: Tensor | Sequence,
    clip_size: int,
    *,
    window: int = 4,
    distance: str = "squared",
    view: str = "center_crop",
) -> Tensor:
    """DtoC (spec 2.6), exact up to the weights outside a ``(2r+1)^2`` window, batched.

    Official: ``p = softmax(origin_sm)`` over all H*W pixels; ``w_i = exp(-d_i) p_i`` normalised;
    ``x_hat = sum_i g_x,i w_i``. The global softmax normaliser cancels, so per point
    ``w = softmax_window(origin_sm_i - d_i)``; outside the window ``exp(-d)`` is below fp32 resolution
    (see :func:`_effective_window`). The window's map values come from :func:`_dense_window`. The result is
    accumulated as ``x + sum_i (g_x,i - x) w_i`` (sub-ulp accurate). Differentiable w.r.t. ``tokens``.

    Args:
        tokens: ``[P, gh, gw]`` float32 min-max normalised token map (``minmax_normalize`` of the raw S; square
            for ``center_crop``).
        points: ``[P, K, 2]`` (x, y) original-image pixels (integer-valued in the official pipeline; any float
            inside the image works).
        image_hw: ``[P, 2]`` original (H, W).
        clip_size: CLIP input side.
        window: half-width r for the squared kernel.
        distance: ``"squared"`` (official) or ``"euclidean"`` (paper Eq. 7 / Algorithm 1).
        view: how the grid covers the image (see :func:`dense_similarity_map`).

    Returns:
        ``[P, K, 2]`` float32 continuous (x, y).
    """
    if distance not in ("squared", "euclidean"):
        raise ValueError(f"distance must be 'squared' or 'euclidean', got {distance!r}")
    p, k = points.shape[:2]
    dev = tokens.device
    hw = as_hw_list(image_hw, p)
    size = torch.tensor(hw, dtype=torch.long, device=dev).reshape(-1, 2)
    gh, gw = tokens.shape[-2:]
    if view == "center_crop" and gh != gw:
        raise ValueError(f"a center_crop token grid is square, got {gh}x{gw}")
    inner_hw = (clip_size, clip_size) if view == "center_crop" else (gh, gw)
    pads = torch.tensor([view_padding(x, clip_size, view) for x in hw], dtype=torch.long, device=dev).reshape(
        -1, 2
    )
    r = _effective_window(window, distance)
    offs = torch.arange(-r, r + 1, device=dev)
    pts = points.to(device=dev, dtype=torch.float64)
    base = pts.floor().long()  # [P, K, 2]
    xs = base[..., 0, None] + offs  # [P, K, R]
    ys = base[..., 1, None] + offs
    h = size[:, 0, None, None]
    w = size[:, 1, None, None]
    in_y = (ys >= 0) & (ys < h)
    in_x = (xs >= 0) & (xs < w)
    vals = _dense_window(
        tokens.float(),
        torch.minimum(ys.clamp_min(0), h - 1),
        torch.minimum(xs.clamp_min(0), w - 1),
        size,
        pads,
        inner_hw,
    )
    dx = (xs.double() - pts[..., 0, None]).float()  # [P, K, R] offsets of window columns from x
    dy = (ys.double() - pts[..., 1, None]).float()
    d2 = dy[..., :, None] ** 2 + dx[..., None, :] ** 2  # [P, K, R, R]
    dist = d2 if distance == "squared" else d2.sqrt()
    logits = (vals - dist).masked_fill(~(in_y[..., :, None] & in_x[..., None, :]), float("-inf"))
    wts = torch.softmax(logits.reshape(p, k, -1), dim=-1).reshape_as(logits)
    off_x = (wts * dx[..., None, :]).sum(dim=(-2, -1))
    off_y = (wts * dy[..., :, None]).sum(dim=(-2, -1))
    return torch.stack([off_x, off_y], dim=-1) + points.to(device=dev, dtype=torch.float32)
