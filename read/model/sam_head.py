"""SAM mask head built from the unmodified ``segment_anything`` classes (spec 1.5, 2.7).

The official code vendors a modified SAM whose prompt encoder takes ``text_embeds``. We compose around the
upstream classes instead: the upstream ``PromptEncoder`` embeds the point prompts (and appends its pad point when
no box is given), and the projected [SEG] embedding is concatenated *after* them, giving the official order
``[points | pad point | [SEG]]``.

Shape shorthand: B images, P queries ([SEG] tokens), K points per query, D = prompt dim (256),
e = image-embedding side (64 for SAM at 1024 px), S = SAM input side (1024).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _sam_modules():
    try:
        from segment_anything.modeling import (
            ImageEncoderViT,
            MaskDecoder,
            PromptEncoder,
            TwoWayTransformer,
        )
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise ImportError("segment_anything is missing: pip install segment-anything==1.0") from e
    return ImageEncoderViT, PromptEncoder, MaskDecoder, TwoWayTransformer


# Upstream ViT sizes (segment_anything/build_sam.py): embed dim, depth, heads, global-attention blocks.
SAM_VARIANTS: dict[str, tuple[int, int, int, list[int]]] = {
    "vit_h": (1280, 32, 16, [7, 15, 23, 31]),
    "vit_l": (1024, 24, 16, [5, 11, 17, 23]),
    "vit_b": (768, 12, 12, [2, 5, 8, 11]),
}


class PromptEncoderInFp32(nn.Module):
    """Base of the mask heads: the ``prompt_encoder`` child stays float32 whatever dtype the module is cast to (see
    :class:`SamMaskHead`)."""

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - torch signature
        super()._apply(fn, recurse)
        self.prompt_encoder.float()
        return self


class SamMaskHead(PromptEncoderInFp32):
    """Frozen SAM image encoder + prompt encoder, trainable mask decoder, fed with points and [SEG].

    Parameter names equal the upstream SAM checkpoint's (``image_encoder.*``, ``prompt_encoder.*``,
    ``mask_decoder.*``), so ``sam_vit_h_4b8939.pth`` loads with ``strict=True``.

    The prompt encoder is kept in float32 whatever dtype the rest of the model is cast to: its random Fourier
    matrix cannot be bf16 (upstream forces the coordinates to fp32 and the matmul would fail), and fp32 keeps the
    Discrete-to-Continuous sub-pixel offsets that bf16 would round away (spec 2.8; a documented difference from
    the official bf16 run). Its outputs are cast to the decoder's dtype.

    ``frame = "longest_side"``: SAM's input frame (``ResizeLongestSide`` + bottom/right zero padding); the point
    prompter maps its points into it (``read.model.sasp_geometry.to_input_frame``).
    """

    frame = "longest_side"

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        encoder_batch_size: int = 4,
        seg_prompt: bool = True,
    ) -> None:
        super().__init__()
        self.seg_prompt = seg_prompt
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.encoder_batch_size = encoder_batch_size

    @property
    def img_size(self) -> int:
        """SAM input side S (1024 for the released models)."""
        return int(self.image_encoder.img_size)

    @property
    def prompt_dim(self) -> int:
        """Prompt / decoder width D (256)."""
        return int(self.prompt_encoder.embed_dim)

    @torch.no_grad()
    def encode_images(self, pixel_values: Tensor) -> Tensor:
        """Frozen image encoder, in chunks of ``encoder_batch_size`` images (no per-image cache flushing).

        Args:
            pixel_values: ``[B, 3, S, S]`` already normalised and zero-padded (dataset side, spec 4.4).

        Returns:
            ``[B, D, e, e]`` image embeddings in the encoder's dtype.
        """
        dtype = next(self.image_encoder.parameters()).dtype
        chunks = [
            self.image_encoder(chunk.to(dtype))
            for chunk in pixel_values.split(max(1, self.encoder_batch_size), dim=0)
        ]
        return torch.cat(chunks, dim=0)

    def prompt_tokens(
        self, seg_embeddings: Tensor, coords: Tensor | None, labels: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Sparse and dense prompts for n queries of one image.

        Args:
            seg_embeddings: ``[n, D]`` projected [SEG] states.
            coords: ``[n, K, 2]`` (x, y) in the SAM input frame, or ``None`` (text-only prompting).
            labels: ``[n, K]`` in {1, 0, -1}, or ``None``.

        Returns:
            sparse ``[n, K + 1 + 1, D]`` (points, upstream pad point, [SEG]) or ``[n, 1, D]`` without points
            (``[n, K + 1, D]`` when ``seg_prompt`` is off: points only, an ablation),
            dense ``[n, D, e, e]``; both in the dtype of ``seg_embeddings``.
        """
        n = seg_embeddings.shape[0]
        dtype = seg_embeddings.dtype
        if coords is None:
            _, dense = self.prompt_encoder(points=None, boxes=None, masks=None)
            sparse = seg_embeddings[:, None, :]
        else:
            if labels is None:
                raise ValueError("point coordinates given without labels")
            pts, dense = self.prompt_encoder(
                points=(coords.float(), labels.to(torch.int64)), boxes=None, masks=None
            )
            sparse = pts.to(dtype)
            if self.seg_prompt:
                sparse = torch.cat([sparse, seg_embeddings[:, None, :]], dim=1)
        dense = dense.to(dtype).expand(n, -1, -1, -1)
        return sparse, dense

    def postprocess(self, low_res: Tensor, input_hw: tuple[int, int], original_hw: tuple[int, int]) -> Tensor:
        """Upstream ``Sam.postprocess_masks``: ``[n, 1, 4e, 4e]`` -> fp32 ``[n, 1, H, W]`` logits."""
        masks = F.interpolate(low_res.float(), (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_hw[0], : input_hw[1]]
        return F.interpolate(masks, original_hw, mode="bilinear", align_corners=False)

    def forward(
        self,
        image_embeddings: Tensor,
        seg_embeddings: Tensor,
        query_image: Tensor,
        sam_input_hw: Tensor,
        image_hw: Tensor,
        coords: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> list[Tensor]:
        """Decode one mask per query.

        Args:
            image_embeddings: ``[B, D, e, e]``.
            seg_embeddings: ``[P, D]``.
            query_image: ``[P]`` image index of each query.
            sam_input_hw: ``[B, 2]`` resized (pre-padding) size of each image in the SAM frame.
            image_hw: ``[B, 2]`` original size of each image.
            coords, labels: ``[P, K, 2]`` / ``[P, K]`` point prompts in the SAM frame, or ``None``.

        Returns:
            Per image b, ``[n_b, H_b, W_b]`` float32 logits, its queries in their original order.
        """
        dense_pe = self.prompt_encoder.get_dense_pe()
        out: list[Tensor] = []
        for b in range(image_embeddings.shape[0]):
            idx = (query_image == b).nonzero(as_tuple=True)[0]
            h, w = (int(v) for v in image_hw[b])
            if idx.numel() == 0:
                out.append(image_embeddings.new_zeros(0, h, w, dtype=torch.float32))
                continue
            emb = image_embeddings[b : b + 1]
            sparse, dense = self.prompt_tokens(
                seg_embeddings[idx],
                None if coords is None else coords[idx],
                None if labels is None else labels[idx],
            )
            low_res, _ = self.mask_decoder(
                image_embeddings=emb,
                image_pe=dense_pe.to(emb.dtype),
                sparse_prompt_embeddings=sparse.to(emb.dtype),
                dense_prompt_embeddings=dense.to(emb.dtype),
                multimask_output=False,  # official: keep mask token 0 only
            )
            in_hw = (int(sam_input_hw[b, 0]), int(sam_input_hw[b, 1]))
            out.append(self.postprocess(low_res, in_hw, (h, w))[:, 0])
        return out


def build_sam_head(
    variant: str,
    *,
    img_size: int = 1024,
    patch_size: int = 16,
    encoder_dim: int | None = None,
    encoder_depth: int | None = None,
    encoder_heads: int | None = None,
    global_attn_indexes: list[int] | None = None,
    window_size: int = 14,
    prompt_dim: int = 256,
    decoder_mlp_dim: int = 2048,
    encoder_batch_size: int = 4,
    iou_head_hidden_dim: int = 256,
    iou_head_depth: int = 3,
    num_multimask_outputs: int = 3,
) -> SamMaskHead:
    """Build a randomly initialised SAM head with the upstream classes.

    ``variant`` in ``vit_h | vit_l | vit_b`` gives the released encoder architectures (SAM at 1024 px; the encoder
    size arguments are ignored, except ``global_attn_indexes`` when given); ``tiny`` uses the given sizes (tests,
    quickstart). The decoder's IoU head and number of mask tokens are configurable for every variant, so a SAM
    checkpoint with other head sizes loads strictly (``model.sam.*``).
    """
    ImageEncoderViT, PromptEncoder, MaskDecoder, TwoWayTransformer = _sam_modules()
    if variant in SAM_VARIANTS:
        encoder_dim, encoder_depth, encoder_heads, default_global = SAM_VARIANTS[variant]
        global_attn_indexes = default_global if global_attn_indexes is None else global_attn_indexes
        img_size, patch_size, window_size, prompt_dim, decoder_mlp_dim = 1024, 16, 14, 256, 2048
    elif variant != "tiny":
        raise ValueError(f"unknown SAM variant {variant!r} (expected vit_h, vit_l, vit_b or tiny)")
    assert encoder_dim and encoder_depth and encoder_heads
    if global_attn_indexes is None:
        global_attn_indexes = [encoder_depth - 1]
    bad = [i for i in global_attn_indexes if not 0 <= i < encoder_depth]
    if bad:
        raise ValueError(f"global_attn_indexes {bad} are outside the encoder's {encoder_depth} blocks")
    side = img_size // patch_size
    image_encoder = ImageEncoderViT(
        depth=encoder_depth,
        embed_dim=encoder_dim,
        img_size=img_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=encoder_heads,
        patch_size=patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=global_attn_indexes,
        window_size=window_size,
        out_chans=prompt_dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=prompt_dim,
        image_embedding_size=(side, side),
        input_image_size=(img_size, img_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=num_multimask_outputs,
        transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=decoder_mlp_dim, num_heads=8),
        transformer_dim=prompt_dim,
        iou_head_depth=iou_head_depth,
        iou_head_hidden_dim=iou_head_hidden_dim,
    )
    return SamMaskHead(
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        encoder_batch_size=encoder_batch_size,
    )


def infer_sam_head_sizes(state_dict: dict[str, Tensor]) -> dict[str, object]:
    """The configurable SAM sizes a state dict (upstream key names) implies: ``global_attn_indexes`` (blocks whose
    relative-position table spans the whole 64x64 grid), ``iou_head_hidden_dim``, ``iou_head_depth`` and
    ``num_multimask_outputs``. Used to tell the user which ``model.sam.*`` values load a given checkpoint."""
    out: dict[str, object] = {}
    rel = {int(k.split(".")[2]): v.shape[0] for k, v in state_dict.items()
           if k.startswith("image_encoder.blocks.") and k.endswith(".attn.rel_pos_h")}
    if rel:
        longest = max(rel.values())
        out["global_attn_indexes"] = sorted(i for i, n in rel.items() if n == longest)
    iou = sorted(k for k in state_dict if k.startswith("mask_decoder.iou_prediction_head.layers.")
                 and k.endswith(".weight"))
    if iou:
        out["iou_head_hidden_dim"] = int(state_dict[iou[0]].shape[0])
        out["iou_head_depth"] = len(iou)
    if "mask_decoder.mask_tokens.weight" in state_dict:
        out["num_multimask_outputs"] = int(state_dict["mask_decoder.mask_tokens.weight"].shape[0]) - 1
    return out
