"""SasP: Similarity-as-Points (READ's one new module; spec section 2, paper Algorithm 1).

Parameter-free. Turns the similarity between the [SEG] query state and the image-token states into SAM point
prompts:

1. ``similarity_map``: plain dot product ``S = h_img @ h_seg`` (spec 2.2).
2. ``selection_grid``: ``S`` on its ``s x s`` token grid, bilinearly down-sampled to ``s // down_sample``,
   min-max normalised (spec 2.4.1). ``padded_selection_grid`` adds the ``-1`` aspect padding (spec 2.4.2).
3. ``select_points``: positives (``>= t_pos``, descending), negatives (``0 <= v <= t_neg``, ascending), neutral
   (raster order), labels 1 / 0 / -1, the first ``num_points``, integer (truncated) pixel coordinates
   (spec 2.4.3-2.5).
4. ``discrete_to_continuous``: DtoC (spec 2.6), computed exactly but only in a ``(2r+1)^2`` window around each
   point, with the dense map's values there obtained straight from the ``s x s`` token map (the two bilinear
   resizes and the zero padding composed analytically), so a 12 MP image costs the same as a small one.
5. ``to_sam_frame``: scale to SAM's resized input frame like ``ResizeLongestSide.apply_coords`` (spec 2.7.1).
   The upstream ``PromptEncoder`` adds the +0.5 pixel-centre shift and appends its own pad point: not done here.

``SimilarityAsPoints`` strings these together for the model; ``similarity_as_points`` is the one-item public
function and ``similarity_as_points_batched`` its batched form.

Conventions (deliberate, documented choices):

* Output coordinates are float32 whatever the input dtype; the maps are fp32 from the similarity onward. The
  official code interpolates the selection grid in the model dtype before casting; here ``S`` is cast to fp32
  first (only matters for bf16 values that straddle a threshold).
* Constant map: the official min-max divides by ``max - min = 0`` and gives NaN (spec 10.34). Here a constant
  map normalises to the constant **0.5** (no NaN, no infinite gradients) and, in the selection, a constant grid
  yields **no positives and no negatives**: every selected point is neutral (label -1). A constant map carries no
  spatial information, so the prompt degenerates to the text-only ([SEG]-only) prompting of LISA/SESAME instead
  of asserting foreground/background at arbitrary places. Coordinates are still the first ``num_points`` cells in
  raster order, and DtoC on a constant map is well defined (uniform ``p``).
* Ties: both class orders use a stable sort, so equal values keep raster order (the official CUDA ``argsort``
  is unstable, spec 10.33).
* Aspect padding follows the official integer rules exactly: ``scale = side / min(H, W)``,
  ``new = int(H * scale)``, ``pad = (new - side) // 2`` (Python floats). For about 4 % of image sizes the
  floating-point product falls just below ``side`` and ``pad`` is -1; like ``F.pad`` in the official code, that
  *crops* one row/column on each side. Cropped grid cells are never selected.
* Discrete coordinates use the official float formula ``int(min((col + 0.5) * (W / w), W - 1))`` in float64.
* Fewer candidate cells than ``num_points`` (only possible with a tiny token grid, e.g. the 8 x 8 test model):
  the batched functions keep a fixed ``K`` and mark the missing slots with label -1, coordinate 0 and
  ``valid=False``; SAM treats a -1 label as "not a point", so such slots are inert. The one-item function
  returns only the valid points.
* Variant ``paper`` (Algorithm 1) changes exactly three things: thresholds ``mu +- eps * sigma`` of the
  normalised selection grid (population std over its ``ds x ds`` cells; the -1 padding is not part of S),
  Euclidean instead of squared distance in DtoC, and every selectable cell becomes a point (Algorithm 1 loops
  over ``I = I+ u I- u I0``), i.e. no ``num_points`` cap. The grid, padding, ordering and truncation stay
  official. If ``eps = 0`` a cell can satisfy both thresholds; it is labelled positive. A grid with ``sigma = 0``
  is constant and handled as above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from read.config import SASP_PRESETS as _CONFIG_SASP_PRESETS
from read.config import SasPConfig

__all__ = [
    "SASP_PRESETS",
    "PointPrompts",
    "SimilarityAsPoints",
    "aspect_padding",
    "dense_similarity_map",
    "discrete_to_continuous",
    "minmax_normalize",
    "padded_selection_grid",
    "select_points",
    "selection_grid",
    "similarity_as_points",
    "similarity_as_points_batched",
    "similarity_map",
    "sam_preprocess_shape",
    "to_sam_frame",
]

# --------------------------------------------------------------------------------------------------------------
# Presets (spec 2.10)
# --------------------------------------------------------------------------------------------------------------

# One table for the whole project: the config loader applies the same presets at YAML level (``read.config``).
# read_7b: 30 / 0.8 / 0.2 / down_sample 2; read_13b_eval: 60 / 0.6 / 0.2 / 1; read_13b_stage1: 10 / 0.8 / 0.2 / 1;
# read_13b_stage2: 30 / 0.8 / 0.2 / 1, where the README gives only num_points = 30 and the thresholds and
# down_sample are ASSUMED unchanged from stage 1 (the README restates only what changed).
SASP_PRESETS = _CONFIG_SASP_PRESETS


# --------------------------------------------------------------------------------------------------------------
# Similarity and normalisation
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


def _token_side(n: int) -> int:
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


def _as_hw_list(image_hw: Tensor | Sequence, p: int) -> list[tuple[int, int]]:
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
    hw = _as_hw_list(image_hw, coords.shape[0])
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
    s = _token_side(n)
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
) -> tuple[Tensor, Tensor, Tensor]:
    """Point classes, official order and truncated pixel coordinates (spec 2.4.2-2.5), batched.

    Order: positives (``v >= t_pos``) by value descending, negatives (``0 <= v <= t_neg``) ascending, neutral
    cells in raster order; ties keep raster order (stable). Cells cropped by a -1 aspect pad are never selected.
    Raster order on the unpadded ``ds x ds`` grid equals raster order on the padded grid, so no padded tensor is
    built.

    Args:
        grid: ``[P, ds, ds]`` normalised selection grid; constant: ``[P]`` (from :func:`selection_grid`).
        image_hw: ``[P, 2]`` original (H, W).
        num_points: keep the first ``num_points`` (``None``: all cells, the paper variant).
        t_pos, t_neg: floats or ``[P]`` tensors (per-item thresholds of the paper variant).

    Returns:
        coords ``[P, K, 2]`` int64 (x, y) in original-image pixels (truncated; 0 where invalid),
        labels ``[P, K]`` int64 in {1, 0, -1}, valid ``[P, K]`` bool, with ``K = min(num_points, ds * ds)``.
    """
    p, ds, _ = grid.shape
    dev = grid.device
    hw = _as_hw_list(image_hw, p)
    v = grid.reshape(p, ds * ds)
    t_pos_t = torch.as_tensor(t_pos, dtype=v.dtype, device=dev).reshape(-1, 1)
    t_neg_t = torch.as_tensor(t_neg, dtype=v.dtype, device=dev).reshape(-1, 1)

    pads = torch.tensor([aspect_padding(x, ds) for x in hw], dtype=torch.long, device=dev).reshape(-1, 2)
    pad_h, pad_w = pads[:, :1], pads[:, 1:]
    rows = torch.arange(ds, device=dev).repeat_interleave(ds)[None]  # [1, L]
    cols = torch.arange(ds, device=dev).repeat(ds)[None]
    inside = (
        (rows + pad_h >= 0)
        & (rows + pad_h < ds + 2 * pad_h)
        & (cols + pad_w >= 0)
        & (cols + pad_w < ds + 2 * pad_w)
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

    k = ds * ds if num_points is None else min(int(num_points), ds * ds)
    idx = order[:, :k]
    sel_cls = cls.gather(1, idx)
    valid = sel_cls < 3
    labels = torch.full((p, k), -1, dtype=torch.long, device=dev)
    labels = torch.where(sel_cls == 0, torch.ones_like(labels), labels)
    labels = torch.where(sel_cls == 1, torch.zeros_like(labels), labels)

    # Official coordinates: x = int(min((col + 0.5) * W / w, W - 1)) on the padded h x w grid (float64 here).
    size = torch.tensor(hw, dtype=torch.float64, device=dev).reshape(-1, 2)  # (H, W)
    h_grid = (ds + 2 * pad_h).double()
    w_grid = (ds + 2 * pad_w).double()
    col_p = (idx % ds + pad_w).double()
    row_p = (idx // ds + pad_h).double()
    x = torch.minimum((col_p + 0.5) * (size[:, 1:] / w_grid), size[:, 1:] - 1).floor().long()
    y = torch.minimum((row_p + 0.5) * (size[:, :1] / h_grid), size[:, :1] - 1).floor().long()
    coords = torch.stack([x, y], dim=-1)
    coords = torch.where(valid[..., None], coords, torch.zeros_like(coords))
    return coords, labels, valid


# --------------------------------------------------------------------------------------------------------------
# Dense map at original resolution (spec 2.3) and Discrete-to-Continuous (spec 2.6)
# --------------------------------------------------------------------------------------------------------------


def dense_similarity_map(sim: Tensor, image_hw: tuple[int, int], clip_size: int) -> Tensor:
    """The official dense map ``origin_sm`` of one item, materialised (spec 2.3; for visualisation).

    min-max over the N tokens -> ``s x s`` -> bilinear to ``clip_size`` -> zero aspect padding -> bilinear to
    (H, W) (``align_corners=False``). DtoC never builds this; it evaluates the same values in small windows.

    Args:
        sim: ``[N]`` raw similarities.
        image_hw: original (H, W).
        clip_size: CLIP input side (336 for the released models).

    Returns:
        ``[H, W]`` float32 (0.5 inside the crop for a constant map).
    """
    s = _token_side(sim.shape[-1])
    m, _ = minmax_normalize(sim.float().reshape(1, -1), dim=-1)
    m = F.interpolate(
        m.reshape(1, 1, s, s), size=(clip_size, clip_size), mode="bilinear", align_corners=False
    )
    pad_h, pad_w = aspect_padding(image_hw, clip_size)
    m = F.pad(m, (pad_w, pad_w, pad_h, pad_h), value=0.0)
    h, w = int(image_hw[0]), int(image_hw[1])
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

    The dense map is separable: ``D = A_y m A_x^T`` with ``m`` the ``s x s`` token map; this returns the rows of
    ``A`` for the requested output indices (each row has at most 4 non-zeros).

    Args:
        pix: ``[...]`` int64 output pixel indices (must lie in ``[0, out_size)``).
        out_size, pad: tensors broadcastable to ``pix``: output length (H or W) and the per-side padding
            (may be -1: cropping).

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
    tokens: Tensor, ys: Tensor, xs: Tensor, size_hw: Tensor, pads: Tensor, clip_size: int
) -> Tensor:
    """Dense-map values on the grid ``ys x xs`` per point, without materialising the map.

    Args:
        tokens: ``[P, s, s]`` min-max normalised token map (float32).
        ys, xs: ``[P, K, R]`` int64 pixel rows / columns (clamped into the image by the caller).
        size_hw: ``[P, 2]`` int64 (H, W); pads: ``[P, 2]`` int64 CLIP aspect padding (pad_h, pad_w).

    Returns:
        ``[P, K, R, R]`` float32, ``[p, k, a, b] = origin_sm[ys[p, k, a], xs[p, k, b]]``.
    """
    s = tokens.shape[-1]
    ay = _composed_resize_weights(ys, size_hw[:, 0, None, None], pads[:, 0, None, None], clip_size, s)
    ax = _composed_resize_weights(xs, size_hw[:, 1, None, None], pads[:, 1, None, None], clip_size, s)
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
) -> Tensor:
    """DtoC (spec 2.6), exact up to the weights outside a ``(2r+1)^2`` window, batched.

    Official: ``p = softmax(origin_sm)`` over all H*W pixels; ``w_i = exp(-d_i) p_i`` normalised;
    ``x_hat = sum_i g_x,i w_i``. The global softmax normaliser cancels, so per point
    ``w = softmax_window(origin_sm_i - d_i)``; outside the window ``exp(-d)`` is below fp32 resolution
    (see :func:`_effective_window`). The window's map values come from :func:`_dense_window`. The result is
    accumulated as ``x + sum_i (g_x,i - x) w_i`` (sub-ulp accurate). Differentiable w.r.t. ``tokens``.

    Args:
        tokens: ``[P, s, s]`` float32 min-max normalised token map (``minmax_normalize`` of the raw S).
        points: ``[P, K, 2]`` (x, y) original-image pixels (integer-valued in the official pipeline; any float
            inside the image works).
        image_hw: ``[P, 2]`` original (H, W).
        clip_size: CLIP input side.
        window: half-width r for the squared kernel.
        distance: ``"squared"`` (official) or ``"euclidean"`` (paper Eq. 7 / Algorithm 1).

    Returns:
        ``[P, K, 2]`` float32 continuous (x, y).
    """
    if distance not in ("squared", "euclidean"):
        raise ValueError(f"distance must be 'squared' or 'euclidean', got {distance!r}")
    p, k = points.shape[:2]
    dev = tokens.device
    hw = _as_hw_list(image_hw, p)
    size = torch.tensor(hw, dtype=torch.long, device=dev).reshape(-1, 2)
    pads = torch.tensor([aspect_padding(x, clip_size) for x in hw], dtype=torch.long, device=dev).reshape(
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
        clip_size,
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


# --------------------------------------------------------------------------------------------------------------
# End-to-end functions
# --------------------------------------------------------------------------------------------------------------


def similarity_as_points_batched(
    sim: Tensor,
    image_hw: Tensor | Sequence,
    *,
    num_points: int = 30,
    t_pos: float = 0.8,
    t_neg: float = 0.2,
    down_sample: int = 2,
    clip_size: int = 336,
    continuous: bool = True,
    variant: str = "official",
    eps: float = 0.5,
    window: int = 4,
) -> tuple[Tensor, Tensor, Tensor]:
    """SasP for P similarity rows with per-row image sizes; equals a loop of :func:`similarity_as_points`.

    Args:
        sim: ``[P, N]`` raw similarities (any float dtype; gradients flow back into it through DtoC).
        image_hw: ``[P, 2]`` original (H, W) per row (tensor or sequence of pairs).
        num_points, t_pos, t_neg, down_sample: official selection (spec 2.4); ``t_pos``/``t_neg``/
            ``num_points`` are ignored by ``variant="paper"``.
        clip_size: CLIP input side (undoing its centre crop in the dense map).
        continuous: apply DtoC; ``False`` returns the truncated integer coordinates as float.
        variant: ``"official"`` or ``"paper"`` (see module docstring).
        eps: paper variant threshold width.
        window: DtoC half-width for the squared kernel (``SasPConfig.dtoc_window``).

    Returns:
        coords ``[P, K, 2]`` float32 (x, y) original-image pixels, labels ``[P, K]`` int64 in {1, 0, -1},
        valid ``[P, K]`` bool (False only for slots beyond the available cells: label -1, coords 0).
        ``K = min(num_points, ds^2)`` (official) or ``ds^2`` (paper).
    """
    if variant not in ("official", "paper"):
        raise ValueError(f"variant must be 'official' or 'paper', got {variant!r}")
    if sim.dim() != 2:
        raise ValueError(f"sim must be [P, N], got shape {tuple(sim.shape)}")
    p = sim.shape[0]
    hw = _as_hw_list(image_hw, p)
    grid, constant = selection_grid(sim, down_sample)
    if variant == "official":
        coords, labels, valid = select_points(
            grid, constant, hw, num_points=num_points, t_pos=t_pos, t_neg=t_neg
        )
        distance = "squared"
    else:
        flat = grid.reshape(p, -1)
        mu = flat.mean(dim=-1)
        sigma = flat.std(dim=-1, unbiased=False)
        coords, labels, valid = select_points(
            grid, constant, hw, num_points=None, t_pos=mu + eps * sigma, t_neg=mu - eps * sigma
        )
        distance = "euclidean"
    coords = coords.float()
    if continuous and coords.numel() > 0:
        s = _token_side(sim.shape[1])
        tokens, _ = minmax_normalize(sim.float(), dim=-1)
        coords = discrete_to_continuous(
            tokens.reshape(p, s, s), coords, hw, clip_size, window=window, distance=distance
        )
        coords = torch.where(valid[..., None], coords, torch.zeros_like(coords))
    return coords, labels, valid


def similarity_as_points(
    sim: Tensor,
    image_hw: tuple[int, int],
    *,
    num_points: int = 30,
    t_pos: float = 0.8,
    t_neg: float = 0.2,
    down_sample: int = 2,
    clip_size: int = 336,
    continuous: bool = True,
    variant: str = "official",
    eps: float = 0.5,
    window: int = 4,
) -> tuple[Tensor, Tensor]:
    """SasP for one [SEG] query (spec 2.3-2.6).

    Args:
        sim: ``[N]`` raw similarities over ``N = s * s`` image tokens, row-major.
        image_hw: original image (H, W).
        (others: see :func:`similarity_as_points_batched`.)

    Returns:
        coords ``[K, 2]`` float32 (x, y) in original-image pixels (after DtoC when ``continuous``; else the
        official truncated integers as float), labels ``[K]`` int64 in {1, 0, -1}, in the official order.
        Only valid points are returned, so ``K = min(num_points, selectable cells)`` (official) or the number of
        selectable cells (paper).
    """
    if sim.dim() != 1:
        raise ValueError(f"sim must be [N], got shape {tuple(sim.shape)}")
    coords, labels, valid = similarity_as_points_batched(
        sim[None],
        [tuple(image_hw)],
        num_points=num_points,
        t_pos=t_pos,
        t_neg=t_neg,
        down_sample=down_sample,
        clip_size=clip_size,
        continuous=continuous,
        variant=variant,
        eps=eps,
        window=window,
    )
    keep = valid[0]
    return coords[0][keep], labels[0][keep]


# --------------------------------------------------------------------------------------------------------------
# The prompter used by the model
# --------------------------------------------------------------------------------------------------------------


@dataclass
class PointPrompts:
    """SasP output for P [SEG] queries.

    Attributes:
        coords: ``[P, K, 2]`` float32 (x, y) in SAM's resized input frame (before SAM's own +0.5).
        labels: ``[P, K]`` int64 in {1, 0, -1}.
        coords_image: ``[P, K, 2]`` float32 (x, y) in original-image pixels.
        similarity: ``[P, N]`` raw similarities (model dtype), for visualisation.
        valid: ``[P, K]`` bool; False marks inert filler slots (label -1), see module docstring.
    """

    coords: Tensor
    labels: Tensor
    coords_image: Tensor
    similarity: Tensor
    valid: Tensor


class SimilarityAsPoints:
    """Parameter-free SasP point prompter (not an ``nn.Module``: nothing to train, move or save).

    Args:
        cfg: SasP settings, used as given (``read.config.load_config`` has already expanded ``cfg.preset``,
            with explicitly written keys winning). ``cfg.enabled`` is not consulted (the model uses no prompter
            when SasP is off).
        clip_size: CLIP input side (336 for the released models).
        sam_size: SAM input side (1024).
    """

    def __init__(self, cfg: SasPConfig, *, clip_size: int, sam_size: int) -> None:
        self.cfg = cfg
        self.clip_size = int(clip_size)
        self.sam_size = int(sam_size)

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"SimilarityAsPoints(variant={c.variant}, num_points={c.num_points}, t_pos={c.t_pos}, t_neg={c.t_neg}, "
            f"down_sample={c.down_sample}, continuous={c.continuous}, clip_size={self.clip_size}, "
            f"sam_size={self.sam_size})"
        )

    def __call__(self, image_hidden: Tensor, seg_hidden: Tensor, image_hw: Tensor | Sequence) -> PointPrompts:
        """``[P, N, C]`` image-token states, ``[P, C]`` [SEG] states, ``[P, 2]`` original (H, W) -> prompts."""
        c = self.cfg
        sim = similarity_map(image_hidden, seg_hidden)
        coords_image, labels, valid = similarity_as_points_batched(
            sim,
            image_hw,
            num_points=c.num_points,
            t_pos=c.t_pos,
            t_neg=c.t_neg,
            down_sample=c.down_sample,
            clip_size=self.clip_size,
            continuous=c.continuous,
            variant=c.variant,
            eps=c.eps,
            window=c.dtoc_window,
        )
        coords = to_sam_frame(coords_image, image_hw, self.sam_size)
        return PointPrompts(
            coords=coords, labels=labels, coords_image=coords_image, similarity=sim, valid=valid
        )
