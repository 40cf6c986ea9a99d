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

The steps live in ``sasp_geometry`` (1, 2, 5), ``sasp_points`` (3) and ``sasp_dtoc`` (4); their public functions
are re-exported here. ``SimilarityAsPoints`` strings them together for the model; ``similarity_as_points`` is the one-item public
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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from read.config import SASP_PRESETS as _CONFIG_SASP_PRESETS
from read.config import SasPConfig
from read.model.sasp_dtoc import dense_similarity_map, discrete_to_continuous
from read.model.sasp_geometry import (
    as_hw_list,
    aspect_padding,
    grid_shape,
    minmax_normalize,
    padded_selection_grid,
    sam_preprocess_shape,
    selection_grid,
    similarity_map,
    to_input_frame,
    to_sam_frame,
    token_side,
)
from read.model.sasp_points import select_points

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
    "to_input_frame",
    "to_sam_frame",
    "token_side",
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
    grid_hw: tuple[int, int] | None = None,
    view: str = "center_crop",
) -> tuple[Tensor, Tensor, Tensor]:
    """SasP for P similarity rows with per-row image sizes; equals a loop of :func:`similarity_as_points`.

    Args:
        sim: ``[P, N]`` raw similarities (any float dtype; gradients flow back into it through DtoC), every row on
            the same token grid.
        image_hw: ``[P, 2]`` original (H, W) per row (tensor or sequence of pairs).
        num_points, t_pos, t_neg, down_sample: official selection (spec 2.4); ``t_pos``/``t_neg``/
            ``num_points`` are ignored by ``variant="paper"``.
        clip_size: CLIP input side (undoing its centre crop in the dense map).
        continuous: apply DtoC; ``False`` returns the truncated integer coordinates as float.
        variant: ``"official"`` or ``"paper"`` (see module docstring).
        eps: paper variant threshold width.
        window: DtoC half-width for the squared kernel (``SasPConfig.dtoc_window``).
        grid_hw: ``(gh, gw)`` token grid, ``N = gh * gw`` (``None``: square, the official case).
        view: how the grid covers the image (``read.model.sasp_geometry.VIEWS``): ``center_crop`` (LLaVA, official)
            or ``full`` (dynamic-resolution models such as Qwen2.5-VL).

    Returns:
        coords ``[P, K, 2]`` float32 (x, y) original-image pixels, labels ``[P, K]`` int64 in {1, 0, -1},
        valid ``[P, K]`` bool (False only for slots beyond the available cells: label -1, coords 0).
        ``K = min(num_points, dh * dw)`` (official) or ``dh * dw`` (paper), ``dh x dw`` the selection grid.
    """
    if variant not in ("official", "paper"):
        raise ValueError(f"variant must be 'official' or 'paper', got {variant!r}")
    if sim.dim() != 2:
        raise ValueError(f"sim must be [P, N], got shape {tuple(sim.shape)}")
    p = sim.shape[0]
    hw = as_hw_list(image_hw, p)
    grid, constant = selection_grid(sim, down_sample, grid_hw)
    if variant == "official":
        coords, labels, valid = select_points(
            grid, constant, hw, num_points=num_points, t_pos=t_pos, t_neg=t_neg, view=view
        )
        distance = "squared"
    else:
        flat = grid.reshape(p, -1)
        mu = flat.mean(dim=-1)
        sigma = flat.std(dim=-1, unbiased=False)
        coords, labels, valid = select_points(
            grid, constant, hw, num_points=None, t_pos=mu + eps * sigma, t_neg=mu - eps * sigma, view=view
        )
        distance = "euclidean"
    coords = coords.float()
    if continuous and coords.numel() > 0:
        gh, gw = grid_shape(sim.shape[1], grid_hw)
        tokens, _ = minmax_normalize(sim.float(), dim=-1)
        coords = discrete_to_continuous(
            tokens.reshape(p, gh, gw), coords, hw, clip_size, window=window, distance=distance, view=view
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
    grid_hw: tuple[int, int] | None = None,
    view: str = "center_crop",
) -> tuple[Tensor, Tensor]:
    """SasP for one [SEG] query (spec 2.3-2.6).

    Args:
        sim: ``[N]`` raw similarities over ``N = gh * gw`` image tokens, row-major (square unless ``grid_hw``).
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
        grid_hw=grid_hw,
        view=view,
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
        coords: ``[P, K, 2]`` float32 (x, y) in the mask decoder's input frame (before its own +0.5).
        labels: ``[P, K]`` int64 in {1, 0, -1}.
        coords_image: ``[P, K, 2]`` float32 (x, y) in original-image pixels.
        similarity: ``[P, N]`` raw similarities (model dtype), for visualisation; with per-query grids, row p holds
            ``gh_p * gw_p`` values followed by padding.
        valid: ``[P, K]`` bool; False marks inert filler slots (label -1), see module docstring.
        grid_hw: ``[P, 2]`` token grid of each query, or ``None`` (square grids of ``N`` tokens).
    """

    coords: Tensor
    labels: Tensor
    coords_image: Tensor
    similarity: Tensor
    valid: Tensor
    grid_hw: Tensor | None = None

    def query_similarity(self, p: int) -> Tensor:
        """Query ``p``'s similarities over its own grid: ``[gh * gw]`` (no padding)."""
        if self.grid_hw is None:
            return self.similarity[p]
        gh, gw = (int(v) for v in self.grid_hw[p])
        return self.similarity[p, : gh * gw]


class SimilarityAsPoints:
    """Parameter-free SasP point prompter (not an ``nn.Module``: nothing to train, move or save).

    Args:
        cfg: SasP settings, used as given (``read.config.load_config`` has already expanded ``cfg.preset``,
            with explicitly written keys winning). ``cfg.enabled`` is not consulted (the model uses no prompter
            when SasP is off).
        clip_size: CLIP input side (336 for the released models; unused by a ``full`` view).
        sam_size: the mask decoder's input side S (1024).
        view: how the VLM's token grid covers the image (``center_crop``: LLaVA-1.5, official; ``full``:
            dynamic-resolution VLMs such as Qwen2.5-VL).
        frame: the mask decoder's input frame (``longest_side``: SAM, official; ``square``: SAM 2).
    """

    def __init__(self, cfg: SasPConfig, *, clip_size: int, sam_size: int, view: str = "center_crop",
                 frame: str = "longest_side") -> None:
        self.cfg = cfg
        self.clip_size = int(clip_size)
        self.sam_size = int(sam_size)
        self.view = view
        self.frame = frame

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"SimilarityAsPoints(variant={c.variant}, num_points={c.num_points}, t_pos={c.t_pos}, t_neg={c.t_neg}, "
            f"down_sample={c.down_sample}, continuous={c.continuous}, clip_size={self.clip_size}, "
            f"sam_size={self.sam_size}, view={self.view}, frame={self.frame})"
        )

    def _points(self, sim: Tensor, image_hw: Tensor | Sequence, grid_hw: tuple[int, int] | None
                ) -> tuple[Tensor, Tensor, Tensor]:
        c = self.cfg
        return similarity_as_points_batched(
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
            grid_hw=grid_hw,
            view=self.view,
        )

    def __call__(self, image_hidden: Tensor, seg_hidden: Tensor, image_hw: Tensor | Sequence,
                 grid_hw: Tensor | None = None) -> PointPrompts:
        """Point prompts for P queries.

        Args:
            image_hidden: ``[P, N, C]`` image-token states (row-major over each query's grid; padded to N when the
                grids differ); seg_hidden: ``[P, C]``; image_hw: ``[P, 2]`` original (H, W).
            grid_hw: ``[P, 2]`` token grid of each query, or ``None``: every query on the square grid of N tokens
                (the official case, computed in one batch exactly as before grids existed).

        Returns:
            :class:`PointPrompts`; queries on different grids are computed grid by grid and their point sets padded
            to a common K with inert slots (label -1, ``valid`` False).
        """
        sim = similarity_map(image_hidden, seg_hidden)
        hw = torch.as_tensor(as_hw_list(image_hw, sim.shape[0]), dtype=torch.long).reshape(-1, 2)
        if grid_hw is None:
            coords_image, labels, valid = self._points(sim, hw, None)
        else:
            coords_image, labels, valid = self._grouped_points(sim, hw, grid_hw)
        coords = to_input_frame(coords_image, hw, self.sam_size, self.frame)
        return PointPrompts(coords=coords, labels=labels, coords_image=coords_image, similarity=sim, valid=valid,
                            grid_hw=grid_hw)

    def _grouped_points(self, sim: Tensor, hw: Tensor, grid_hw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """SasP grid by grid (queries on one grid form one batch), scattered back in query order."""
        grids = [tuple(int(v) for v in row) for row in grid_hw.reshape(-1, 2).tolist()]
        if len(grids) != sim.shape[0]:
            raise ValueError(f"got {len(grids)} token grids for {sim.shape[0]} queries")
        parts = {}
        for g in sorted(set(grids)):
            idx = [i for i, x in enumerate(grids) if x == g]
            n = g[0] * g[1]
            if n > sim.shape[1]:
                raise ValueError(f"a {g[0]}x{g[1]} token grid needs {n} image states, the query has {sim.shape[1]}")
            parts[g] = (idx, self._points(sim[idx, :n], hw[idx], g))
        k = max(out[0].shape[1] for _, out in parts.values())
        p = sim.shape[0]
        coords = sim.new_zeros(p, k, 2, dtype=torch.float32)
        labels = torch.full((p, k), -1, dtype=torch.long, device=sim.device)
        valid = torch.zeros(p, k, dtype=torch.bool, device=sim.device)
        for idx, (c, lab, v) in parts.values():
            rows = torch.tensor(idx, dtype=torch.long, device=sim.device)
            kk = c.shape[1]
            coords = coords.index_put((rows[:, None], torch.arange(kk, device=sim.device)[None]), c)
            labels[rows, :kk] = lab
            valid[rows, :kk] = v
        return coords, labels, valid
