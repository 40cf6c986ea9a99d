"""LLaVA-1.5 on transformers' native ``LlavaForConditionalGeneration`` (no vendored LLaVA).

Differences from the official LLaVA fork, and how they are bridged:

* The official code inserts one ``-200`` placeholder and expands it inside the model (``L + 575`` positions).
  Here the tokenizer already emits N copies of a real ``<image>`` id, so the sequence the language model sees is
  identical (``[..., <im_start>, N image features, <im_end>, ...]``) and hidden states align 1:1 with ids.
* CLIP runs once per *image* and its features are scattered into every conversation row of that image (the
  official code re-runs CLIP per row; identical values, fewer FLOPs). CLIP and the projector are frozen and run
  under ``no_grad`` as in the official ``CLIPVisionTower``.
* The CE loss is computed only at supervised positions (same value as the official flattened token mean, without
  materialising ``[R, T, V]`` logits unless asked for).

Shape shorthand: R rows (conversations), T tokens, B images, N image tokens per image, C hidden, V vocabulary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from read.config import VLMConfig
from read.utils.device import resolve_dtype

if TYPE_CHECKING:  # pragma: no cover
    from transformers import LlavaForConditionalGeneration

    from read.model.tokenizer import ReadTokenizer

IGNORE_INDEX = -100


def resolve_attn_implementation(name: str) -> str:
    """``auto`` -> ``flash_attention_2`` when CUDA and flash-attn are available, else ``sdpa``."""
    if name != "auto":
        if name == "flash_attention_2":
            from transformers.utils import is_flash_attn_2_available

            if not is_flash_attn_2_available():
                raise ImportError(
                    "attn_implementation=flash_attention_2 needs flash-attn: pip install flash-attn --no-build-isolation"
                )
        return name
    from transformers.utils import is_flash_attn_2_available

    if torch.cuda.is_available() and is_flash_attn_2_available():
        return "flash_attention_2"
    return "sdpa"


def num_image_tokens(llava: LlavaForConditionalGeneration) -> int:
    """Image tokens per image: ``(image_size / patch_size)^2`` (576 for LLaVA-1.5 at 336 px; CLS dropped)."""
    vc = llava.config.vision_config
    n = (vc.image_size // vc.patch_size) ** 2
    if llava.config.vision_feature_select_strategy != "default":
        n += 1
    return n


def clip_image_size(llava: LlavaForConditionalGeneration) -> int:
    """CLIP input side (336 for LLaVA-1.5)."""
    return int(llava.config.vision_config.image_size)


def build_llava(cfg: VLMConfig, tokenizer: ReadTokenizer) -> LlavaForConditionalGeneration:
    """Load ``cfg.pretrained`` (hub id or local llava-hf directory) or build a random tiny model.

    The model's image-token id is set to the tokenizer's ``<image>`` id, and the embeddings are grown (never
    shrunk: llava-hf pads its vocabulary to 32064) when the tokenizer has more ids than the model has rows.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    attn = resolve_attn_implementation(cfg.attn_implementation)
    dtype = resolve_dtype(cfg.dtype)
    if cfg.pretrained is None:
        t = cfg.tiny
        if t is None:
            raise ValueError("model.vlm.pretrained is null and model.vlm.tiny is not set")
        text = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=t.hidden_size,
            intermediate_size=t.intermediate_size,
            num_hidden_layers=t.num_hidden_layers,
            num_attention_heads=t.num_attention_heads,
            num_key_value_heads=t.num_attention_heads,
            max_position_embeddings=max(cfg.model_max_length, 64),
            pad_token_id=tokenizer.pad_id,
            bos_token_id=tokenizer.bos_id,
            eos_token_id=tokenizer.eos_id,
            tie_word_embeddings=False,
        )
        vision = CLIPVisionConfig(
            hidden_size=t.vision_hidden_size,
            intermediate_size=t.vision_intermediate_size,
            num_hidden_layers=t.vision_num_hidden_layers,
            num_attention_heads=t.vision_num_attention_heads,
            image_size=t.image_size,
            patch_size=t.patch_size,
        )
        conf = LlavaConfig(
            text_config=text,
            vision_config=vision,
            image_token_index=tokenizer.image_token_id,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            projector_hidden_act="gelu",
            image_seq_length=(t.image_size // t.patch_size) ** 2,
            tie_word_embeddings=False,
        )
        model = LlavaForConditionalGeneration._from_config(conf, attn_implementation=attn, dtype=dtype)
    else:
        try:
            model = LlavaForConditionalGeneration.from_pretrained(cfg.pretrained, dtype=dtype, attn_implementation=attn)
        except OSError as e:
            raise OSError(
                f"cannot load LLaVA from {cfg.pretrained!r}: {e}. Give model.vlm.pretrained as a local directory "
                "in llava-hf layout (e.g. a download of llava-hf/llava-1.5-7b-hf) when the hub is unreachable."
            ) from e
    image_id = tokenizer.image_token_id
    model.config.image_token_id = image_id
    model.model.config.image_token_id = image_id
    vocab = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=cfg.mean_resizing)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def image_features(llava: LlavaForConditionalGeneration, pixel_values: Tensor) -> Tensor:
    """Frozen CLIP (layer -2, CLS dropped) + projector.

    Args:
        pixel_values: ``[B, 3, S, S]`` CLIP-normalised, centre-cropped images.

    Returns:
        ``[B, N, C]`` in the language model's dtype.
    """
    vt_dtype = next(llava.model.vision_tower.parameters()).dtype
    with torch.no_grad():
        out = llava.model.get_image_features(pixel_values=pixel_values.to(vt_dtype), return_dict=True)
    feats = out.pooler_output
    return torch.stack(list(feats), dim=0) if isinstance(feats, list | tuple) else feats


def embed_inputs(
    llava: LlavaForConditionalGeneration, input_ids: Tensor, pixel_values: Tensor, row_to_image: Tensor
) -> Tensor:
    """Token embeddings with each row's image features written at its image-token positions.

    Args:
        input_ids: ``[R, T]``, each row holding either 0 or exactly N image tokens.
        pixel_values: ``[B, 3, S, S]``.
        row_to_image: ``[R]`` image index of each row.

    Returns:
        ``[R, T, C]`` input embeddings.
    """
    embeds = llava.get_input_embeddings()(input_ids)
    image_id = llava.config.image_token_id
    is_img = input_ids == image_id
    if not bool(is_img.any()):
        return embeds
    feats = image_features(llava, pixel_values).to(embeds.dtype)  # [B, N, C]
    n = feats.shape[1]
    counts = is_img.sum(1)
    bad = ((counts != 0) & (counts != n)).nonzero(as_tuple=True)[0]
    if bad.numel():
        raise ValueError(
            f"rows {bad.tolist()} hold {counts[bad].tolist()} image tokens but each image gives {n} features"
        )
    rows_with_image = counts == n
    per_row = feats[row_to_image[rows_with_image]]  # [R', N, C]
    return embeds.masked_scatter(is_img[..., None] & rows_with_image[:, None, None], per_row)


def language_model_forward(
    llava: LlavaForConditionalGeneration, inputs_embeds: Tensor, attention_mask: Tensor
) -> Tensor:
    """Run the LLaMA decoder; returns the last-layer, post-norm hidden states ``[R, T, C]``."""
    out = llava.model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def causal_lm_loss(llava: LlavaForConditionalGeneration, hidden: Tensor, labels: Tensor) -> Tensor:
    """Shifted token cross-entropy, mean over every supervised token of every row (official CE).

    Logits are formed only where a target exists. With no supervised token the loss is ``0`` (transformers
    would return NaN), still attached to the graph.

    Args:
        hidden: ``[R, T, C]``; labels: ``[R, T]`` with ``-100`` = ignore.
    """
    shift_labels = labels[:, 1:]
    sel = shift_labels != IGNORE_INDEX
    if not bool(sel.any()):
        return hidden.float().sum() * 0.0
    h = hidden[:, :-1][sel]
    logits = llava.lm_head(h).float()
    return F.cross_entropy(logits, shift_labels[sel])
