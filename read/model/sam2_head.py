"""SAM 2 mask head built from transformers' ``Sam2Model`` parts (image prediction only; no video memory).

Why transformers and not Meta's ``sam2`` package: the ``sam2`` wheel is a source distribution that pulls in hydra
and iopath and compiles a CUDA extension at install time, while transformers (already a dependency) ships the
same image model with safetensors checkpoints (``facebook/sam2.1-hiera-large``), strict key reporting and configs
small enough for a random tiny model. The predictions agree with ``Sam2Model.forward`` (tested).

The head is composed like :class:`read.model.sam_head.SamMaskHead`: the frozen Hiera encoder + FPN neck run once per
image; the prompt encoder embeds the SasP points (and its pad point), the projected [SEG] embedding is appended
*after* them (``[points | pad point | [SEG]]``), and the decoder's mask token 0 is kept. Differences from SAM, all
SAM 2's own: the input frame is the image resized to ``S x S`` (aspect not kept, ``frame = "square"``), the decoder
also reads the two high-resolution FPN levels through its ``conv_s0``/``conv_s1`` (trainable with the decoder, so
they run here, after the frozen encoder, not inside it as ``Sam2Model.get_image_features`` does), and low-resolution
masks are resized straight to the original size.

Shape shorthand: B images, P queries, K points per query, D prompt dim (256), e = S / 16 (64 at 1024 px).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from read.model.sam_head import PromptEncoderInFp32


class Sam2MaskHead(PromptEncoderInFp32):
    """Frozen SAM 2 image encoder + prompt encoder, trainable mask decoder, fed with points and [SEG].

    Parameter names equal transformers' ``Sam2Model`` ones (``vision_encoder.*``, ``prompt_encoder.*``,
    ``mask_decoder.*``, ``shared_image_embedding.*``, ``no_memory_embedding``), so its checkpoints load strictly.
    The prompt encoder stays float32 (as in ``SamMaskHead``: DtoC's sub-pixel offsets survive).
    """

    frame = "square"

    def __init__(self, model: nn.Module, *, encoder_batch_size: int = 4, seg_prompt: bool = True,
                 dynamic_multimask: bool = False) -> None:
        super().__init__()
        self.vision_encoder = model.vision_encoder
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.shared_image_embedding = model.shared_image_embedding
        self.no_memory_embedding = model.no_memory_embedding
        self.mask_decoder.dynamic_multimask_via_stability = dynamic_multimask
        self.encoder_batch_size = encoder_batch_size
        self.seg_prompt = seg_prompt

    @property
    def img_size(self) -> int:
        """Input side S (1024 for the released models)."""
        return int(self.prompt_encoder.input_image_size)

    @property
    def prompt_dim(self) -> int:
        return int(self.prompt_encoder.hidden_size)

    @torch.no_grad()
    def encode_images(self, pixel_values: Tensor) -> list[Tensor]:
        """Frozen Hiera encoder + FPN neck, in chunks of ``encoder_batch_size`` images.

        Args:
            pixel_values: ``[B, 3, S, S]`` (:func:`read.data.transforms.sam2_preprocess`).

        Returns:
            three levels, high to low resolution: ``[B, D, 4e, 4e]``, ``[B, D, 2e, 2e]``, ``[B, D, e, e]`` (the last
            with the "no memory" embedding added, as SAM 2 does for a single image).
        """
        dtype = next(self.vision_encoder.parameters()).dtype
        levels: list[list[Tensor]] = []
        for chunk in pixel_values.split(max(1, self.encoder_batch_size), dim=0):
            out = self.vision_encoder(chunk.to(dtype), return_dict=True)
            levels.append(list(out.fpn_hidden_states))
        feats = [torch.cat([c[i] for c in levels], dim=0) for i in range(len(levels[0]))]
        feats[-1] = feats[-1] + self.no_memory_embedding.reshape(1, -1, 1, 1).to(feats[-1].dtype)
        return feats

    def image_positional_embeddings(self) -> Tensor:
        """``[1, D, e, e]`` dense positional encoding of the image embedding grid (``Sam2Model``'s)."""
        h, w = self.prompt_encoder.image_embedding_size
        pe = self.shared_image_embedding.positional_embedding
        y = (torch.arange(h, device=pe.device, dtype=pe.dtype) + 0.5) / h
        x = (torch.arange(w, device=pe.device, dtype=pe.dtype) + 0.5) / w
        grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)  # [h, w, 2] (x, y)
        return self.shared_image_embedding(grid).permute(2, 0, 1)[None]

    def prompt_tokens(self, seg_embeddings: Tensor, coords: Tensor | None, labels: Tensor | None
                      ) -> tuple[Tensor, Tensor]:
        """Sparse ``[1, n, K + 2, D]`` (points, pad point, [SEG]; ``[1, n, 1, D]`` without points, ``[1, n, K + 1,
        D]`` with ``seg_prompt`` off) and dense ``[1, D, e, e]`` prompts for the n queries of one image."""
        dtype = seg_embeddings.dtype
        if coords is None:
            sparse = seg_embeddings[None, :, None, :]
        else:
            if labels is None:
                raise ValueError("point coordinates given without labels")
            pts = self.prompt_encoder._embed_points(coords.float()[None], labels.to(torch.int64)[None], pad=True)
            sparse = pts.to(dtype)
            if self.seg_prompt:
                sparse = torch.cat([sparse, seg_embeddings[None, :, None, :]], dim=2)
        h, w = self.prompt_encoder.image_embedding_size
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w).to(dtype)
        return sparse, dense

    def forward(
        self,
        image_embeddings: list[Tensor],
        seg_embeddings: Tensor,
        query_image: Tensor,
        sam_input_hw: Tensor,
        image_hw: Tensor,
        coords: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> list[Tensor]:
        """Decode one mask per query (same contract as :meth:`read.model.sam_head.SamMaskHead.forward`).

        Args:
            image_embeddings: :meth:`encode_images` of the B images.
            seg_embeddings: ``[P, D]``; query_image: ``[P]``; sam_input_hw: ``[B, 2]`` (unused: the whole ``S x S``
                frame is the image); image_hw: ``[B, 2]`` original sizes; coords/labels: ``[P, K, 2]``/``[P, K]`` in
                the ``S x S`` frame, or ``None``.

        Returns:
            Per image b, ``[n_b, H_b, W_b]`` float32 logits, its queries in their original order.
        """
        del sam_input_hw
        pe = self.image_positional_embeddings()
        out: list[Tensor] = []
        for b in range(image_embeddings[0].shape[0]):
            idx = (query_image == b).nonzero(as_tuple=True)[0]
            h, w = (int(v) for v in image_hw[b])
            if idx.numel() == 0:
                out.append(image_embeddings[-1].new_zeros(0, h, w, dtype=torch.float32))
                continue
            emb = image_embeddings[-1][b : b + 1]
            s0 = self.mask_decoder.conv_s0(image_embeddings[0][b : b + 1].to(self.mask_decoder.conv_s0.weight.dtype))
            s1 = self.mask_decoder.conv_s1(image_embeddings[1][b : b + 1].to(self.mask_decoder.conv_s1.weight.dtype))
            sparse, dense = self.prompt_tokens(
                seg_embeddings[idx],
                None if coords is None else coords[idx],
                None if labels is None else labels[idx],
            )
            dt = self.mask_decoder.iou_token.weight.dtype
            low_res, _, _, _ = self.mask_decoder(
                image_embeddings=emb.to(dt),
                image_positional_embeddings=pe.to(dt),
                sparse_prompt_embeddings=sparse.to(dt),
                dense_prompt_embeddings=dense.to(dt),
                multimask_output=False,
                high_resolution_features=[s0.to(dt), s1.to(dt)],
            )
            masks = F.interpolate(low_res[0].float(), (h, w), mode="bilinear", align_corners=False)
            out.append(masks[:, 0])
        return out


def tiny_sam2_config(t) -> object:  # noqa: ANN001 - read.config.TinySam2Config
    """transformers ``Sam2Config`` of a tiny random SAM 2 (sizes from ``model.sam.tiny_sam2``)."""
    from transformers import Sam2Config
    from transformers.models.sam2.configuration_sam2 import (
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    if t.image_size % 32:
        raise ValueError(f"model.sam.tiny_sam2.image_size={t.image_size} must be a multiple of 32")
    stride4 = t.image_size // 4
    backbone = Sam2HieraDetConfig(
        hidden_size=t.embed_dim_per_stage[0], num_attention_heads=t.heads_per_stage[0],
        image_size=[t.image_size, t.image_size], blocks_per_stage=list(t.blocks_per_stage),
        embed_dim_per_stage=list(t.embed_dim_per_stage), num_attention_heads_per_stage=list(t.heads_per_stage),
        window_size_per_stage=list(t.window_size_per_stage), global_attention_blocks=list(t.global_attention_blocks),
        window_positional_embedding_background_size=list(t.pos_embed_background or [max(1, math.isqrt(stride4))] * 2),
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone, backbone_channel_list=list(reversed(t.embed_dim_per_stage)),
        backbone_feature_sizes=[[stride4, stride4], [stride4 // 2, stride4 // 2], [stride4 // 4, stride4 // 4]],
        fpn_hidden_size=t.hidden_size,
    )
    prompt = Sam2PromptEncoderConfig(hidden_size=t.hidden_size, image_size=t.image_size, patch_size=16)
    decoder = Sam2MaskDecoderConfig(hidden_size=t.hidden_size, mlp_dim=t.decoder_mlp_dim,
                                    num_attention_heads=t.decoder_heads, iou_head_hidden_dim=t.hidden_size)
    return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def build_sam2_model(cfg) -> nn.Module:  # noqa: ANN001 - read.config.SamConfig
    """transformers ``Sam2Model``: loaded from ``cfg.checkpoint`` (hub id or local directory, every key required,
    none unexpected) or, with ``variant: tiny`` and no checkpoint, a random tiny one from ``cfg.tiny_sam2``."""
    from transformers import Sam2Model

    from read.utils.weights import CheckpointKeyError

    if cfg.checkpoint is None:
        if cfg.variant != "tiny" or cfg.tiny_sam2 is None:
            raise ValueError("model.sam.kind=sam2 without a checkpoint needs model.sam.variant=tiny and "
                             "model.sam.tiny_sam2")
        return Sam2Model(tiny_sam2_config(cfg.tiny_sam2))
    try:
        model, info = Sam2Model.from_pretrained(cfg.checkpoint, output_loading_info=True)
    except OSError as e:
        raise OSError(f"cannot load SAM 2 from {cfg.checkpoint!r}: {e}. Give model.sam.checkpoint as a local "
                      "directory in transformers layout (a download of facebook/sam2.1-hiera-large) when the hub "
                      "is unreachable.") from e
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        parts = "; ".join(f"{k.replace('_', ' ')}: {sorted(map(str, v))[:5]}" for k, v in bad.items())
        raise CheckpointKeyError(f"{cfg.checkpoint}: the SAM 2 checkpoint does not fit ({parts})")
    return model


def build_sam2_head(cfg) -> Sam2MaskHead:  # noqa: ANN001 - read.config.SamConfig
    """:class:`Sam2MaskHead` from ``model.sam`` (``kind: sam2``)."""
    return Sam2MaskHead(build_sam2_model(cfg), encoder_batch_size=cfg.encoder_batch_size,
                        dynamic_multimask=cfg.dynamic_multimask)
