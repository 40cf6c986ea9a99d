"""Build the whole READ model from a config: real weights (hub ids / local paths) or tiny random models.

``build_read_model(cfg)`` returns ``(model, tokenizer)`` on the CPU; the caller moves it to its device.

Trainable set (official ``init_READ_model``, spec 1.6): LoRA (r, alpha, dropout from config) on ``q_proj`` and
``v_proj`` of the *language model only*, plus the full ``embed_tokens``, ``lm_head``, SAM ``mask_decoder`` and
``text_hidden_fcs``. Everything else (CLIP, projector, SAM image and prompt encoders, the rest of LLaMA) is frozen.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from read.config import ModelConfig, ReadConfig, SamConfig
from read.model.llava_backbone import output_vocab_mask
from read.model.projector import SegProjector
from read.model.qwen_tokenizer import QwenTokenizer
from read.model.read_model import ReadModel
from read.model.sam2_head import Sam2MaskHead, build_sam2_head
from read.model.sam_head import SamMaskHead, build_sam_head, infer_sam_head_sizes
from read.model.tokenizer import ReadTokenizer
from read.model.vlm_parts import parts_for
from read.utils.device import resolve_dtype
from read.utils.weights import CheckpointKeyError, load_state_dict_strict, load_torch_file

LANGUAGE_MODEL_PREFIX = "llava.model.language_model."
"""LLaVA's; each family's is ``read.model.vlm_parts`` ``<parts>.language_model_prefix``."""


def build_tokenizer(cfg: ModelConfig) -> ReadTokenizer | QwenTokenizer:
    """The tokenizer of ``model.vlm.kind`` with READ's added tokens: LLaVA's SentencePiece with official
    slow-tokenizer semantics, or Qwen2.5-VL's (``read.model.vlm_parts``)."""
    return parts_for(cfg.vlm.kind).build_tokenizer(cfg.vlm)


def build_sam(cfg: SamConfig) -> SamMaskHead | Sam2MaskHead:
    """The mask head of ``model.sam.kind``: SAM (loads ``cfg.checkpoint`` strictly, upstream key names) or SAM 2
    (:func:`read.model.sam2_head.build_sam2_head`).

    Raises:
        CheckpointKeyError: the checkpoint does not fit; the message names the keys and, when other
            ``model.sam.*`` sizes would load it, those values.
    """
    if cfg.kind == "sam2":
        return build_sam2_head(cfg)
    heads = dict(iou_head_hidden_dim=cfg.iou_head_hidden_dim, iou_head_depth=cfg.iou_head_depth,
                 num_multimask_outputs=cfg.num_multimask_outputs, global_attn_indexes=cfg.global_attn_indexes)
    if cfg.variant == "tiny":
        t = cfg.tiny
        assert t is not None
        sam = build_sam_head(
            "tiny",
            img_size=t.img_size,
            patch_size=t.patch_size,
            encoder_dim=t.encoder_dim,
            encoder_depth=t.encoder_depth,
            encoder_heads=t.encoder_heads,
            window_size=t.window_size,
            prompt_dim=t.prompt_dim,
            decoder_mlp_dim=t.decoder_mlp_dim,
            encoder_batch_size=cfg.encoder_batch_size,
            **heads,
        )
    else:
        sam = build_sam_head(cfg.variant, encoder_batch_size=cfg.encoder_batch_size, **heads)
    if cfg.checkpoint is not None:
        sd = load_torch_file(cfg.checkpoint)
        try:
            load_state_dict_strict(sam, sd, cfg.checkpoint)
        except CheckpointKeyError as e:
            implied = infer_sam_head_sizes(sd)
            differ = {k: v for k, v in implied.items() if v != _configured(cfg, sam, k)}
            if differ:
                hint = " ".join(f"model.sam.{k}={v}".replace(" ", "") for k, v in differ.items())
                raise CheckpointKeyError(f"{e}; this checkpoint loads with {hint}") from None
            raise
    return sam


def _configured(cfg: SamConfig, sam: SamMaskHead, key: str) -> object:
    """The value of SAM size ``key`` the built head actually has."""
    if key == "global_attn_indexes":
        return [i for i, blk in enumerate(sam.image_encoder.blocks) if blk.window_size == 0]
    return getattr(cfg, key)


def lora_target_regex(target_modules: list[str], prefix: str = LANGUAGE_MODEL_PREFIX) -> str:
    """Full-match regex selecting ``target_modules`` inside the language model only (CLIP and SAM also have
    ``q_proj``/``v_proj``-like names; the official code excludes them, spec 1.6). ``prefix``: where the language
    model's parameters start (LLaVA's by default)."""
    names = "|".join(re.escape(t) for t in target_modules)
    return rf"{re.escape(prefix)}.*\.({names})"


def apply_lora(model: ReadModel, cfg: ModelConfig) -> None:
    """Inject LoRA adapters (peft, in place; parameter names stay rooted at ``ReadModel``)."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = cfg.lora
    peft_cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias="none",
        target_modules=lora_target_regex(lora.target_modules, model.parts.language_model_prefix),
    )
    inject_adapter_in_model(peft_cfg, model, adapter_name="default")


def set_trainable(model: nn.Module, full_modules: list[str]) -> list[str]:
    """Freeze everything, then unfreeze LoRA weights and every module whose name ends with one of
    ``full_modules`` (e.g. ``lm_head``, ``embed_tokens``, ``mask_decoder``, ``text_hidden_fcs``).

    Returns the sorted trainable parameter names. Raises when a listed module matches nothing.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    for name, p in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            p.requires_grad_(True)
    for target in full_modules:
        hits = [m for n, m in model.named_modules() if n == target or n.endswith("." + target)]
        if not hits:
            raise ValueError(f"model.trainable names {target!r}, which matches no module")
        for m in hits:
            for p in m.parameters():
                p.requires_grad_(True)
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def build_point_prompter(cfg: ModelConfig, clip_size: int, sam_size: int, *, view: str = "center_crop",
                         frame: str = "longest_side"):
    """SasP prompter, or ``None`` when ``model.sasp.enabled`` is false (text-only prompting).

    ``view``: how the VLM's token grid covers the image; ``frame``: the mask decoder's input frame
    (``read.model.sasp_geometry.VIEWS`` / ``FRAMES``)."""
    if not cfg.sasp.enabled:
        return None
    from read.model.sasp import SimilarityAsPoints

    # presets are expanded once, by read.config.load_config (explicitly given keys win over the preset)
    return SimilarityAsPoints(cfg.sasp, clip_size=clip_size, sam_size=sam_size, view=view, frame=frame)


def build_read_model(cfg: ReadConfig | ModelConfig, *, loss_cfg=None, device: torch.device | None = None
                     ) -> tuple[ReadModel, ReadTokenizer]:
    """Build tokenizer and model from config. Seeds are the caller's business.

    Args:
        device: where the model lives (default: the CPU). Pretrained LLaVA weights are loaded straight onto it and
            the SAM checkpoint is memory-mapped, so a rank holds no CPU copy of the 7B weights; every random
            initialisation still happens on the CPU, so the same seed gives the same weights on any device.

    Returns:
        ``(model, tokenizer)``; the model's parameter dtype is ``model.vlm.dtype`` (SAM's prompt encoder and every
        buffer stay fp32).
    """
    if isinstance(cfg, ReadConfig):
        loss_cfg = loss_cfg or cfg.loss
        cfg = cfg.model
    tokenizer = build_tokenizer(cfg)
    if tokenizer.seg_token_id is None or tokenizer.image_token_id is None:
        raise ValueError("tokenizer lacks the [SEG] or image token")
    parts = parts_for(cfg.vlm.kind)
    vlm = parts.build(cfg.vlm, tokenizer, device)
    hidden = vlm.config.text_config.hidden_size
    sam = build_sam(cfg.sam)
    sam.seg_prompt = cfg.seg_prompt
    projector = SegProjector(hidden, cfg.out_dim)
    if sam.prompt_dim != cfg.out_dim:
        raise ValueError(f"model.out_dim={cfg.out_dim} but the mask decoder's prompt dim is {sam.prompt_dim}")
    model = ReadModel(
        vlm=vlm,
        vlm_kind=parts.kind,
        sam=sam,
        text_hidden_fcs=projector,
        seg_token_id=tokenizer.seg_token_id,
        image_token_id=tokenizer.image_token_id,
        loss_cfg=loss_cfg,
        point_prompter=build_point_prompter(cfg, parts.image_side(vlm), sam.img_size, view=parts.view,
                                            frame=sam.frame),
        seg_query=cfg.vlm.seg_query,
        output_vocab=output_vocab_mask(tokenizer, vlm.get_output_embeddings().weight.shape[0]),
    )
    if cfg.lora.enabled:
        apply_lora(model, cfg)  # peft initialises the LoRA matrices on the CPU, then moves them to the base layer
    set_trainable(model, cfg.trainable)
    if device is not None:
        model.to(device)
    cast_parameters(model, resolve_dtype(cfg.vlm.dtype))
    return model, tokenizer


FP32_MODULES = ("sam.prompt_encoder",)
"""Modules whose parameters stay float32 in every model dtype (``SamMaskHead`` explains why)."""


@torch.no_grad()
def cast_parameters(model: nn.Module, dtype: torch.dtype, keep_fp32: tuple[str, ...] = FP32_MODULES) -> None:
    """Cast floating-point *parameters* to ``dtype`` in place; buffers and the ``keep_fp32`` modules untouched.

    ``model.to(bf16)`` would also cast buffers: LLaMA's rotary ``inv_freq`` would become bf16 (RoPE off by up to
    ~0.8 rad at positions 600-700, where the answer and [SEG] sit after the 576 image tokens) and SAM's positional
    Gaussian matrix would be bf16-rounded. The official model computes both in fp32.
    """
    for name, module in model.named_modules():
        if any(name == k or name.startswith(k + ".") for k in keep_fp32):
            continue
        for p in module.parameters(recurse=False):
            if p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRA adapter into its base weight (W += alpha/r * B A) and remove the adapter modules.

    Returns the number of merged layers. Raises if there is nothing to merge (a second merge is refused).
    """
    from peft.tuners.lora import LoraLayer

    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    if not targets:
        raise ValueError("no LoRA layers to merge (already merged, or LoRA disabled)")
    for name, module in targets:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    return len(targets)


@torch.no_grad()
def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
