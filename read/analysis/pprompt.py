"""P_prompt (READ paper §3.2, Table 1, Appendix Fig. 5): SAM prompted by similarity points only, no [SEG].

The k highest-similarity cells of the [SEG] map are positive points and the k lowest negative ones. The official
analysis used CLIP-Surgery's rule (spec 8): the token map bilinearly down-sampled by 2, min-max normalised, and
``k = min(#cells >= t, #cells // 2)`` with t = 0.8; that is the default (``k=None``) and an integer ``k`` fixes it.
The cells are READ's selection grid (aspect padding never selected) and the points use SasP's discrete pixel
coordinates, so P_prompt and SasP points sit on the same pixels. SAM runs with ``multimask_output=True`` and the
mask with the highest predicted IoU is kept, as the official ``SamPredictor.predict`` call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from read.model.sasp_geometry import padded_selection_grid

__all__ = ["extreme_points", "points_prompt_mask"]


def _stable_order(values: Tensor, descending: bool) -> Tensor:
    return torch.sort(-values if descending else values, stable=True).indices


def extreme_points(sim: Tensor, image_hw: tuple[int, int], *, k: int | None = None, t: float = 0.8,
                   down_sample: int = 2) -> tuple[Tensor, Tensor]:
    """The k highest cells (label 1, value descending) then the k lowest (label 0, ascending); ties in raster order.

    Args:
        sim: ``[N]`` raw similarities of one [SEG] (``N = s * s``).
        image_hw: original (H, W).
        k: points of each kind; ``None``: ``min(#(grid >= t), #cells // 2)`` (official analysis). Capped at
            ``#cells // 2`` so the two sets never overlap.

    Returns:
        coords ``[2k, 2]`` int64 (x, y) in image pixels, labels ``[2k]`` int64.
    """
    grid = padded_selection_grid(sim, image_hw, down_sample).double()  # -1 outside the image's aspect
    hg, wg = grid.shape
    flat = grid.reshape(-1)
    cells = (flat >= 0).nonzero(as_tuple=True)[0]  # raster order
    values = flat[cells]
    cap = cells.numel() // 2
    k_eff = min(int((values >= t).sum()), cap) if k is None else min(int(k), cap)
    if k_eff < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    pos = cells[_stable_order(values, descending=True)[:k_eff]]
    neg = cells[_stable_order(values, descending=False)[:k_eff]]
    idx = torch.cat([pos, neg])
    h, w = (float(v) for v in image_hw)
    x = torch.minimum((idx % wg).double().add(0.5) * (w / wg), torch.tensor(w - 1)).floor().long()
    y = torch.minimum((idx // wg).double().add(0.5) * (h / hg), torch.tensor(h - 1)).floor().long()
    labels = torch.cat([torch.ones(k_eff, dtype=torch.long), torch.zeros(k_eff, dtype=torch.long)])
    return torch.stack([x, y], dim=-1), labels


@torch.no_grad()
def points_prompt_mask(sam, image_embedding: Tensor, coords_sam: Tensor, labels: Tensor,  # noqa: ANN001
                       input_hw: tuple[int, int], image_hw: tuple[int, int]) -> tuple[Tensor, float]:
    """One mask from point prompts only: SAM's prompt encoder (it appends its pad point) and mask decoder with
    three outputs, the one with the highest predicted IoU kept, post-processed to the image's size.

    Args:
        sam: a ``read.model.sam_head.SamMaskHead`` (the model's adapted decoder or the original SAM).
        image_embedding: ``[1, D, e, e]`` from that SAM's image encoder.
        coords_sam: ``[K, 2]`` (x, y) in SAM's resized input frame; labels: ``[K]``.

    Returns:
        (fp32 ``[H, W]`` logits, predicted IoU of the kept mask). With K = 0 nothing is asked: an all-negative map
        and score 0.
    """
    h, w = (int(v) for v in image_hw)
    if coords_sam.shape[0] == 0:
        return torch.full((h, w), -1.0, device=image_embedding.device), 0.0
    dtype = image_embedding.dtype
    sparse, dense = sam.prompt_encoder(points=(coords_sam[None].float(), labels[None].to(torch.int64)), boxes=None,
                                       masks=None)
    low, iou = sam.mask_decoder(image_embeddings=image_embedding,
                                image_pe=sam.prompt_encoder.get_dense_pe().to(dtype),
                                sparse_prompt_embeddings=sparse.to(dtype), dense_prompt_embeddings=dense.to(dtype),
                                multimask_output=True)
    best = int(iou[0].float().argmax())
    logits = sam.postprocess(low[:, best:best + 1], input_hw, (h, w))[0, 0]
    return logits, float(iou[0, best])
