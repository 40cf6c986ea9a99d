"""Similarity maps of a [SEG] query: against the language model's image tokens (paper Eq. 5, Fig. 1(c)) and against
the SAM mask decoder's image tokens (Fig. 1(d) / Fig. 4(b)), brought to the image's size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from read.analysis.siou import normalise_map

__all__ = ["sam_decoder_similarity", "sam_map_to_image", "seg_token_index"]


def seg_token_index(sam, num_sparse: int) -> int | None:  # noqa: ANN001 - SamMaskHead
    """Position of the [SEG] prompt in the decoder's token sequence ``[iou | mask tokens | sparse prompts]``: the
    last sparse prompt (``[points | pad | [SEG]]``), or ``None`` when SAM gets no [SEG] (``model.seg_prompt`` off)."""
    if not getattr(sam, "seg_prompt", True) and num_sparse > 1:
        return None
    return 1 + int(sam.mask_decoder.num_mask_tokens) + num_sparse - 1


@torch.no_grad()
def sam_decoder_similarity(sam, image_embedding: Tensor, sparse: Tensor, dense: Tensor) -> Tensor | None:  # noqa: ANN001
    """Dot products between the [SEG] token and the image tokens at the output of SAM's two-way transformer.

    The mask decoder's transformer updates both the prompt tokens and the e x e image tokens; this is the [SEG]
    token's output state against every updated image token (a plain dot product, like Eq. 5; the official debug
    hook used CLIP-Surgery's form on a token that is not [SEG], spec 8, so this is our reading of Fig. 1(d)).

    Args:
        sam: the SAM head (``read.model.sam_head.SamMaskHead``) or a SAM 2 head (``Sam2MaskHead``: its decoder's
            token sequence starts with an object-score token; ``image_embedding`` is then its list of feature levels
            and ``sparse``/``dense`` are ``[1, n, T, D]``/``[1, D, e, e]``, its ``prompt_tokens``).
        image_embedding: ``[1, D, e, e]``; sparse: ``[n, T, D]``, dense: ``[n, D, e, e]``
            (``SamMaskHead.prompt_tokens`` of n queries of this image).

    Returns:
        ``[n, e, e]`` float32, or ``None`` when the prompts hold no [SEG].
    """
    if getattr(sam, "frame", "longest_side") == "square":
        return _sam2_decoder_similarity(sam, image_embedding, sparse, dense)
    dec = sam.mask_decoder
    idx = seg_token_index(sam, sparse.shape[1])
    if idx is None:
        return None
    n = sparse.shape[0]
    dtype = image_embedding.dtype
    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)[None].expand(n, -1, -1)
    tokens = torch.cat([out_tokens.to(dtype), sparse.to(dtype)], dim=1)
    src = image_embedding.expand(n, -1, -1, -1) + dense.to(dtype)
    pos = sam.prompt_encoder.get_dense_pe().to(dtype).expand(n, -1, -1, -1)
    hs, keys = dec.transformer(src, pos, tokens)  # [n, T', D], [n, e*e, D]
    e = image_embedding.shape[-1]
    return torch.einsum("nkd,nd->nk", keys.float(), hs[:, idx].float()).reshape(n, e, e)


def _sam2_decoder_similarity(sam, levels: list[Tensor], sparse: Tensor, dense: Tensor) -> Tensor | None:  # noqa: ANN001
    """:func:`sam_decoder_similarity` for SAM 2: tokens ``[object score | iou | mask tokens | sparse prompts]``."""
    n, t = sparse.shape[1], sparse.shape[2]
    if not getattr(sam, "seg_prompt", True) and t > 1:
        return None
    dec = sam.mask_decoder
    dt = dec.iou_token.weight.dtype
    out_tokens = torch.cat([dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.to(dt)[None, None].expand(1, n, -1, -1), sparse.to(dt)], dim=2)
    idx = tokens.shape[2] - 1  # the [SEG] prompt, last
    src = (levels[-1].to(dt) + dense.to(dt)).repeat_interleave(n, dim=0)
    pos = sam.image_positional_embeddings().to(dt).repeat_interleave(n, dim=0)
    hs, keys = dec.transformer(point_embeddings=tokens, image_embeddings=src, image_positional_embeddings=pos,
                               attention_similarity=None)  # [1, n, T', D], [n, 1, e*e, D]
    e_h, e_w = levels[-1].shape[-2:]
    return torch.einsum("nkd,nd->nk", keys[:, 0].float(), hs[0, :, idx].float()).reshape(n, e_h, e_w)


def sam_map_to_image(m: Tensor, sam_size: int, input_hw: tuple[int, int], image_hw: tuple[int, int]) -> Tensor:
    """An ``[e, e]`` map on SAM's (padded) input frame -> ``[H, W]`` float32 in [0, 1] over the image: min-max
    normalised, resized to ``sam_size``, cropped to the resized image ``input_hw`` (SAM pads bottom/right),
    resized to the original size, as SAM's own mask post-processing."""
    x = normalise_map(m).float()[None, None]
    x = F.interpolate(x, (sam_size, sam_size), mode="bilinear", align_corners=False)
    x = x[..., : input_hw[0], : input_hw[1]]
    return F.interpolate(x, tuple(int(v) for v in image_hw), mode="bilinear", align_corners=False)[0, 0]
