"""Qwen2.5-VL on transformers' native ``Qwen2_5_VLForConditionalGeneration``, as READ's vision-language part.

What differs from LLaVA-1.5 (``read.model.llava_backbone``), and how it is handled:

* Dynamic resolution: each image is resized to a multiple of 28 px (``min_pixels``..``max_pixels``), cut into
  14-px patches (two identical temporal frames) and every 2x2 patches are merged into one token. An image of
  ``gh x gw`` merged patches has ``gh * gw`` ``<|image_pad|>`` tokens, so rows of different images hold different
  numbers of image tokens, and the token grid spans the *whole* image (SasP view ``full``).
* Positions are 3-D (multimodal RoPE): text tokens advance all three axes together; image tokens get
  (t, row, column) offsets. They come from the model's own ``get_rope_index``; during generation the next token
  of a row is at ``1 + max position`` of that row, for all three axes.
* The vision tower (with its patch merger) runs once per *image* under ``no_grad`` (frozen, as CLIP in READ)
  and its features are scattered into every conversation row of that image.

Shape shorthand: R rows, T tokens, B images, N_b image tokens of image b, C hidden size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from read.config import VLMConfig
from read.model.llava_backbone import (
    enable_activation_checkpointing,
    init_new_token_rows,
    resolve_attn_implementation,
)
from read.utils.device import resolve_dtype

if TYPE_CHECKING:  # pragma: no cover
    from read.model.qwen_tokenizer import QwenTokenizer

__all__ = ["build_qwen", "embed_inputs", "image_features", "language_model_forward", "merged_grids",
           "rope_positions"]


def build_qwen(cfg: VLMConfig, tokenizer: QwenTokenizer, device: torch.device | None = None):
    """Load ``cfg.pretrained`` (hub id or local directory) or build a random tiny Qwen2.5-VL from ``cfg.tiny_qwen``.

    The special-token ids of the model config are set from the tokenizer, and the embeddings are grown when the
    tokenizer has more ids than the model has rows (``[SEG]`` on a released checkpoint: its 151665 tokenizer ids fit
    in the 151936 rows, so nothing grows, and the ``[SEG]`` rows are freshly initialised).
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    attn = resolve_attn_implementation(cfg.attn_implementation)
    dtype = resolve_dtype(cfg.dtype)
    ids = dict(image_token_id=tokenizer.image_token_id,
               video_token_id=tokenizer.token_to_id("<|video_pad|>"),
               vision_start_token_id=tokenizer.token_to_id("<|vision_start|>"),
               vision_end_token_id=tokenizer.token_to_id("<|vision_end|>"))
    if cfg.pretrained is None:
        t = cfg.tiny_qwen
        if t is None:
            raise ValueError("model.vlm.pretrained is null and model.vlm.tiny_qwen is not set")
        head_dim = t.hidden_size // t.num_attention_heads
        half = head_dim // 2
        section = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]  # 128-dim heads: [16, 24, 24]
        text = dict(vocab_size=max(len(tokenizer), t.vocab_rows or 0), hidden_size=t.hidden_size,
                    intermediate_size=t.intermediate_size, num_hidden_layers=t.num_hidden_layers,
                    num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
                    max_position_embeddings=max(cfg.model_max_length, 64), pad_token_id=tokenizer.pad_id,
                    tie_word_embeddings=t.tie_word_embeddings,
                    eos_token_id=tokenizer.eos_id, bos_token_id=None,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": section})
        vision = dict(depth=t.vision_depth, hidden_size=t.vision_hidden_size, intermediate_size=t.vision_intermediate_size,
                      num_heads=t.vision_num_heads, out_hidden_size=t.hidden_size, patch_size=t.patch_size,
                      spatial_merge_size=t.spatial_merge_size, temporal_patch_size=2, window_size=t.window_size,
                      fullatt_block_indexes=list(t.fullatt_block_indexes))
        conf = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=t.tie_word_embeddings,
                                **ids)
        model = Qwen2_5_VLForConditionalGeneration._from_config(conf, attn_implementation=attn, dtype=dtype)
    else:
        placement = {"device_map": {"": str(device)}} if device is not None and device.type != "cpu" else {}
        try:
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(cfg.pretrained, dtype=dtype,
                                                                       attn_implementation=attn, **placement)
        except OSError as e:
            raise OSError(f"cannot load Qwen2.5-VL from {cfg.pretrained!r}: {e}. Give model.vlm.pretrained as a "
                          "local directory (a download of Qwen/Qwen2.5-VL-3B-Instruct) when the hub is "
                          "unreachable.") from e
        for k, v in ids.items():
            if getattr(model.config, k) != v:
                raise ValueError(f"{cfg.pretrained}: config {k}={getattr(model.config, k)} but the tokenizer says {v}")
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if cfg.pretrained is not None:
        init_new_token_rows(model, tokenizer.new_token_ids, mean=cfg.mean_resizing)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model


def merged_grids(qwen, image_grid_thw: Tensor) -> Tensor:
    """``[B, 2]`` token grid (rows, columns of merged patches) of each image from its ``[B, 3]`` patch grid."""
    m = int(qwen.config.vision_config.spatial_merge_size)
    return image_grid_thw[:, 1:] // m


def image_features(qwen, pixel_values: Tensor, image_grid_thw: Tensor) -> list[Tensor]:
    """Frozen vision tower + merger: per image ``[N_b, C]`` in the language model's dtype.

    Args:
        pixel_values: ``[sum of patches, 3 * 2 * 14 * 14]`` (the Qwen2-VL image processor's flattened patches).
        image_grid_thw: ``[B, 3]``.
    """
    with torch.no_grad():
        out = qwen.model.get_image_features(pixel_values=pixel_values, image_grid_thw=image_grid_thw,
                                            return_dict=True)
    return list(out.pooler_output)


def embed_inputs(qwen, input_ids: Tensor, pixel_values: Tensor, image_grid_thw: Tensor, row_to_image: Tensor
                 ) -> Tensor:
    """Token embeddings with each row's image features at its ``<|image_pad|>`` positions.

    Args:
        input_ids: ``[R, T]``, each row holding 0 or exactly ``N_b`` image tokens of its image b.
        pixel_values, image_grid_thw: the B images (see :func:`image_features`).
        row_to_image: ``[R]``.

    Returns:
        ``[R, T, C]``.
    """
    embeds = qwen.get_input_embeddings()(input_ids)
    is_img = input_ids == qwen.config.image_token_id
    if not bool(is_img.any()):
        return embeds
    feats = [f.to(embeds.dtype) for f in image_features(qwen, pixel_values, image_grid_thw)]
    counts = is_img.sum(1).tolist()
    pieces = []
    for r, n in enumerate(counts):
        if n == 0:
            continue
        f = feats[int(row_to_image[r])]
        if n != f.shape[0]:
            raise ValueError(f"row {r} holds {n} image tokens but its image gives {f.shape[0]} features")
        pieces.append(f)
    return embeds.masked_scatter(is_img[..., None], torch.cat(pieces, dim=0))


def rope_positions(qwen, input_ids: Tensor, attention_mask: Tensor, image_grid_thw: Tensor, row_to_image: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """3-D RoPE positions ``[3, R, T]`` of every row (its image's grid for its image tokens) and ``[R]`` the position
    of each row's next token (``1 + max``), from the model's own ``get_rope_index``. Padded positions hold 0."""
    img = (input_ids == qwen.config.image_token_id) & attention_mask.bool()
    rows_with = img.any(1)
    grids = image_grid_thw[row_to_image[rows_with]] if bool(rows_with.any()) else None
    pos, delta = qwen.model.get_rope_index(input_ids, mm_token_type_ids=img.int(), image_grid_thw=grids,
                                           attention_mask=attention_mask)
    return pos, attention_mask.long().sum(1) + delta.reshape(-1).to(attention_mask.device)


def language_model_forward(qwen, inputs_embeds: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
    """The Qwen2 decoder; returns the last-layer, post-norm hidden states ``[R, T, C]``."""
    out = qwen.model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                    position_ids=position_ids, use_cache=False)
    return out.last_hidden_state
