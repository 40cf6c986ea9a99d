"""LLaVA-1.5 on transformers' native ``LlavaForConditionalGeneration`` (no vendored LLaVA).

Differences from the official LLaVA fork, and how they are bridged:

* The official code inserts one ``-200`` placeholder and expands it inside the model (``L + 575`` positions).
  Here the tokenizer already emits N copies of a real ``<image>`` id, so the sequence the language model sees is
  identical (``[..., <im_start>, N image features, <im_end>, ...]``) and hidden states align 1:1 with ids.
* CLIP runs once per *image* and its features are scattered into every conversation row of that image (the
  official code re-runs CLIP per row; identical values, fewer FLOPs). CLIP and the projector are frozen and run
  under ``no_grad`` as in the official ``CLIPVisionTower``.
* The CE loss is computed only at supervised positions (same value as the official flattened token mean, without
  materialising ``[R, T, V]`` logits unless asked for), and only over the official output vocabulary
  (:func:`output_vocab_mask`): llava-hf pads ``lm_head`` to 32064 rows and has ``<image>``/``<pad>`` entries that
  the official model does not have (it has 32003 rows), so a softmax over all rows would change the loss and the
  ``lm_head``/``embed_tokens`` gradients.
* Token rows new to the checkpoint (``[SEG]``, ``<im_start>``, ``<im_end>`` on a llava-hf base) are initialised
  as the official ``resize_token_embeddings`` (transformers 4.31) does: fresh N(0, initializer_range) rows in both
  ``embed_tokens`` and ``lm_head`` (:func:`init_new_token_rows`). On a llava-hf base those ids fall inside its
  padded 32064 rows, so without this they would silently start from llava-hf's padding values.

Shape shorthand: R rows (conversations), T tokens, B images, N image tokens per image, C hidden, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    """``auto`` -> ``flash_attention_2`` when CUDA is available and flash-attn actually imports, else ``sdpa``.

    Package metadata (transformers' ``is_flash_attn_2_available``) is not enough: a wheel built for another torch or
    CUDA is "installed" and then fails to load its extension (``undefined symbol``) when the model is built. So
    flash-attn is import-tested (``from flash_attn import flash_attn_func`` loads the CUDA extension): under ``auto`` a
    failure falls back to ``sdpa`` with one warning naming the error; an explicit ``flash_attention_2`` that fails
    raises ``ImportError``. Any other name is returned unchanged.
    """
    hint = "pip install flash-attn --no-build-isolation"

    def flash_attn_import_error() -> str | None:
        """``None`` when flash-attn and its CUDA extension import, else the error in one line."""
        from transformers.utils import is_flash_attn_2_available

        if not is_flash_attn_2_available():
            return "flash-attn is not installed (or transformers does not accept its version)"
        try:
            import flash_attn  # noqa: F401
            from flash_attn import flash_attn_func  # noqa: F401  (loads flash_attn_2_cuda)
        except Exception as e:  # ImportError, OSError (undefined symbol), RuntimeError, ...
            return f"import flash_attn failed: {type(e).__name__}: {' '.join(str(e).split())}"
        return None

    if name == "flash_attention_2":
        error = flash_attn_import_error()
        if error is not None:
            raise ImportError(f"attn_implementation=flash_attention_2 needs a working flash-attn ({error}): {hint}")
        return name
    if name != "auto":
        return name
    from transformers.utils import is_flash_attn_2_available

    if not (torch.cuda.is_available() and is_flash_attn_2_available()):
        return "sdpa"  # no CUDA, or flash-attn not installed: nothing to warn about
    error = flash_attn_import_error()
    if error is None:
        return "flash_attention_2"
    from read.utils.logging import get_logger

    get_logger().warning("attn_implementation=auto: flash-attn is installed but unusable (%s); using sdpa. "
                         "Reinstall it for this torch: %s", error, hint)
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


def build_llava(cfg: VLMConfig, tokenizer: ReadTokenizer, device: torch.device | None = None
                ) -> LlavaForConditionalGeneration:
    """Load ``cfg.pretrained`` (hub id or local llava-hf directory) or build a random tiny model.

    The model's image-token id is set to the tokenizer's ``<image>`` id, and the embeddings are grown (never
    shrunk: llava-hf pads its vocabulary to 32064) when the tokenizer has more ids than the model has rows.

    Args:
        device: load the pretrained weights straight onto this device (transformers reads the safetensors shards
            memory-mapped and places each tensor there), so a process never holds a CPU copy of the 7B weights.
            ``None``: the CPU.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    attn = resolve_attn_implementation(cfg.attn_implementation)
    dtype = resolve_dtype(cfg.dtype)
    if cfg.pretrained is None:
        t = cfg.tiny
        if t is None:
            raise ValueError("model.vlm.pretrained is null and model.vlm.tiny is not set")
        text = LlamaConfig(
            vocab_size=max(len(tokenizer), t.vocab_rows or 0),
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
        placement = {"device_map": {"": str(device)}} if device is not None and device.type != "cpu" else {}
        try:
            model = LlavaForConditionalGeneration.from_pretrained(cfg.pretrained, dtype=dtype, attn_implementation=attn,
                                                                  **placement)
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
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if cfg.pretrained is not None:  # a random tiny model has no trained rows to keep apart
        init_new_token_rows(model, tokenizer.new_token_ids, mean=cfg.mean_resizing)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model


@torch.no_grad()
def init_new_token_rows(llava: LlavaForConditionalGeneration, ids: Sequence[int], *, mean: bool = False) -> None:
    """Initialise the ``embed_tokens`` and ``lm_head`` rows of tokens the checkpoint did not have.

    Official (spec 1.2/1.3): ``resize_token_embeddings`` in transformers 4.31 builds new matrices with the model's
    ``_init_weights`` (Normal(0, ``initializer_range`` = 0.02)) and copies the old rows, so the new rows of *both*
    matrices are fresh normal draws (the global torch RNG: seed first). ``mean=True`` uses instead the mean of the
    other rows (LLaVA's ``initialize_vision_tokenizer``; not what READ does).

    Args:
        ids: row indices to initialise (``ReadTokenizer.new_token_ids``); rows past the matrices are an error.
    """
    if not ids:
        return
    idx = torch.tensor(sorted(set(int(i) for i in ids)), dtype=torch.long)
    std = float(getattr(llava.config.text_config, "initializer_range", 0.02))
    for weight in (llava.get_input_embeddings().weight, llava.lm_head.weight):
        if int(idx.max()) >= weight.shape[0]:
            raise ValueError(f"new token id {int(idx.max())} is outside the {weight.shape[0]} vocabulary rows")
        if mean:
            keep = torch.ones(weight.shape[0], dtype=torch.bool)
            keep[idx] = False
            rows = weight[keep].float().mean(0, keepdim=True).expand(len(idx), -1)
        else:
            rows = torch.empty(len(idx), weight.shape[1], dtype=torch.float32).normal_(0.0, std)
        weight[idx.to(weight.device)] = rows.to(weight.dtype).to(weight.device)


def output_vocab_mask(tokenizer: ReadTokenizer, rows: int) -> Tensor:
    """``[rows]`` bool: the official output vocabulary inside a ``rows``-row ``lm_head``.

    True for every tokenizer id except ``tokenizer.non_output_ids`` (the image token, llava-hf's ``<pad>``); False
    for rows past the tokenizer (llava-hf's padding rows 32005..32063). On a model started from an official
    release this is exactly rows ``[0, 32003)``; on llava-hf it is the 32000 SentencePiece ids plus ``[SEG]``,
    ``<im_start>``, ``<im_end>`` (the same 32003 entries as the official vocabulary, at other ids).
    """
    if len(tokenizer) > rows:
        raise ValueError(f"the tokenizer has {len(tokenizer)} ids but lm_head only {rows} rows")
    mask = torch.zeros(rows, dtype=torch.bool)
    mask[: len(tokenizer)] = True
    mask[list(tokenizer.non_output_ids)] = False
    return mask


def enable_activation_checkpointing(llava: LlavaForConditionalGeneration) -> None:
    """Gradient (activation) checkpointing with the non-reentrant torch implementation, through whichever API the
    installed transformers offers (``activation_checkpointing_enable`` from 5.23; ``gradient_checkpointing_enable``,
    deprecated there, before)."""
    kwargs = {"use_reentrant": False}
    if hasattr(llava, "activation_checkpointing_enable"):
        llava.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers < 5.23
        llava.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def cache_kwargs(module: torch.nn.Module, cache) -> dict:
    """The keyword that passes a KV cache to a transformers decoder: ``cache=`` from transformers 5.24,
    ``past_key_values=`` (deprecated there) before."""
    import inspect

    name = _CACHE_KW.get(type(module))
    if name is None:
        params = inspect.signature(module.forward).parameters
        name = "cache" if "cache" in params else "past_key_values"
        _CACHE_KW[type(module)] = name
    return {name: cache}


_CACHE_KW: dict[type, str] = {}


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


def lm_logits(llava: LlavaForConditionalGeneration, hidden: Tensor, output_vocab: Tensor | None = None) -> Tensor:
    """fp32 ``lm_head`` logits ``[..., V]``; ``-inf`` outside ``output_vocab`` (``[V]`` bool) when given."""
    logits = llava.lm_head(hidden).float()
    if output_vocab is not None:
        logits = logits.masked_fill(~output_vocab.to(logits.device), float("-inf"))
    return logits


def causal_lm_loss(
    llava: LlavaForConditionalGeneration, hidden: Tensor, labels: Tensor, output_vocab: Tensor | None = None
) -> Tensor:
    """Shifted token cross-entropy, mean over every supervised token of every row (official CE).

    Logits are formed only where a target exists. With no supervised token the loss is ``0`` (transformers
    would return NaN), still attached to the graph through ``lm_head``. With ``output_vocab`` the softmax runs over those rows only
    (the official vocabulary; see :func:`output_vocab_mask`): rows outside it get no probability and no gradient.

    Args:
        hidden: ``[R, T, C]``; labels: ``[R, T]`` with ``-100`` = ignore; output_vocab: ``[V]`` bool or ``None``.

    Raises:
        ValueError: a supervised target outside ``output_vocab``.
    """
    shift_labels = labels[:, 1:]
    sel = shift_labels != IGNORE_INDEX
    if not bool(sel.any()):  # 0, but through lm_head: every trainable weight takes part in every backward (ZeRO)
        return llava.lm_head(hidden[:, :1]).float().sum() * 0.0
    h = hidden[:, :-1][sel]
    targets = shift_labels[sel]
    if output_vocab is None:
        return F.cross_entropy(llava.lm_head(h).float(), targets)
    vocab = output_vocab.to(targets.device)
    if not bool(vocab[targets].all()):
        bad = sorted(set(targets[~vocab[targets]].tolist()))
        raise ValueError(f"supervised token ids {bad[:5]} lie outside the output vocabulary")
    n = int(vocab.sum())
    weight = llava.lm_head.weight
    if bool(vocab[:n].all()):  # a prefix (models started from an official release): slice, no masking needed
        logits = F.linear(h, weight[:n]).float()
        return F.cross_entropy(logits, targets)
    return F.cross_entropy(lm_logits(llava, h, vocab), targets)
