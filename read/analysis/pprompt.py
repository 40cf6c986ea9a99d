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
import torch.nn.functional as F
from torch import Tensor

from read.model.sasp_geometry import padded_selection_grid

__all__ = ["extreme_points", "points_prompt_mask"]


def _stable_order(values: Tensor, descending: bool) -> Tensor:
    return torch.sort(-values if descending else values, stable=True).indices


def extreme_points(sim: Tensor, image_hw: tuple[int, int], *, k: int | None = None, t: float = 0.8,
                   down_sample: int = 2, grid_hw: tuple[int, int] | None = None, view: str = "center_crop"
                   ) -> tuple[Tensor, Tensor]:
    """The k highest cells (label 1, value descending) then the k lowest (label 0, ascending); ties in raster order.

    Args:
        sim: ``[N]`` raw similarities of one [SEG] (``N = s * s``, or ``gh * gw`` with ``grid_hw``).
        image_hw: original (H, W).
        k: points of each kind; ``None``: ``min(#(grid >= t), #cells // 2)`` (official analysis). Capped at
            ``#cells // 2`` so the two sets never overlap.
        grid_hw, view: the token grid and how it covers the image (``read.model.sasp_geometry.VIEWS``).

    Returns:
        coords ``[2k, 2]`` int64 (x, y) in image pixels, labels ``[2k]`` int64.
    """
    grid = padded_selection_grid(sim, image_hw, down_sample, grid_hw, view).double()  # -1 outside the aspect
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
        sam: a ``read.model.sam_head.SamMaskHead`` (the model's adapted decoder or the original SAM), or a SAM 2
            head (``Sam2MaskHead``).
        image_embedding: ``[1, D, e, e]`` from that SAM's image encoder (SAM 2: its list of feature levels).
        coords_sam: ``[K, 2]`` (x, y) in SAM's resized input frame; labels: ``[K]``.

    Returns:
        (fp32 ``[H, W]`` logits, predicted IoU of the kept mask). With K = 0 nothing is asked: an all-negative map
        and score 0.
    """
    h, w = (int(v) for v in image_hw)
    if coords_sam.shape[0] == 0:
        device = image_embedding[0].device if isinstance(image_embedding, list) else image_embedding.device
        return torch.full((h, w), -1.0, device=device), 0.0
    if getattr(sam, "frame", "longest_side") == "square":
        return _points_prompt_mask_sam2(sam, image_embedding, coords_sam, labels, (h, w))
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


def _points_prompt_mask_sam2(sam, levels: list[Tensor], coords: Tensor, labels: Tensor,  # noqa: ANN001
                             image_hw: tuple[int, int]) -> tuple[Tensor, float]:
    """:func:`points_prompt_mask` on a SAM 2 head (``read.model.sam2_head.Sam2MaskHead``): its prompt encoder (pad
    point appended), its decoder with three outputs and the high-resolution features, the best predicted IoU kept,
    resized to the image as SAM 2's predictor does. ``levels``: the head's ``encode_images`` of one image."""
    dec = sam.mask_decoder
    dt = dec.iou_token.weight.dtype
    sparse = sam.prompt_encoder._embed_points(coords.float()[None, None], labels.to(torch.int64)[None, None], pad=True)
    e_h, e_w = sam.prompt_encoder.image_embedding_size
    dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, e_h, e_w)
    s0 = dec.conv_s0(levels[0].to(dec.conv_s0.weight.dtype))
    s1 = dec.conv_s1(levels[1].to(dec.conv_s1.weight.dtype))
    low, iou, _, _ = dec(image_embeddings=levels[-1].to(dt), image_positional_embeddings=sam.image_positional_embeddings().to(dt),
                         sparse_prompt_embeddings=sparse.to(dt), dense_prompt_embeddings=dense.to(dt),
                         multimask_output=True, high_resolution_features=[s0.to(dt), s1.to(dt)])
    best = int(iou[0, 0].float().argmax())
    logits = F.interpolate(low[0, :, best:best + 1].float(), image_hw, mode="bilinear", align_corners=False)[0, 0]
    return logits, float(iou[0, 0, best])
