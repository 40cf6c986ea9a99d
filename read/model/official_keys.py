"""Official READ / LISA / SESAME checkpoints <-> this project's ``ReadModel`` (spec 7.1-7.4).

Key layouts
-----------
*Merged release* (what the official ``merge_lora_weights_and_save_hf_model.py`` writes and what is
published on the Hugging Face Hub; ``READForCausalLM`` state dict without the CLIP tower, spec 7.2)::

    model.embed_tokens.weight                    -> llava.model.language_model.embed_tokens.weight
    model.layers.N.*                             -> llava.model.language_model.layers.N.*
    model.norm.weight                            -> llava.model.language_model.norm.weight
    lm_head.weight                               -> llava.lm_head.weight
    model.mm_projector.0.* / model.mm_projector.2.*
                                                 -> llava.model.multi_modal_projector.linear_1.* / linear_2.*
    model.visual_model.{image_encoder,prompt_encoder,mask_decoder}.*
                                                 -> sam.{image_encoder,prompt_encoder,mask_decoder}.*
    model.text_hidden_fcs.*                      -> text_hidden_fcs.*
    model.vision_tower.vision_tower.vision_model.*  (never in releases; DeepSpeed dumps)
                                                 -> llava.model.vision_tower.*

Deliberately dropped: ``rotary_emb.inv_freq`` (a buffer that transformers 4.31 saved; recomputed here)
and the CLIP ``embeddings.position_ids`` buffer (non-persistent in transformers 5). Any other key raises
``ValueError``.

*Unmerged DeepSpeed / peft-0.4 layout* (``zero_to_fp32.py`` output of the training ``PeftModel``, spec
7.1): every key above prefixed with ``base_model.model.``; a LoRA-wrapped linear keeps its base weight
under the plain name and adds ``lora_A.default.weight`` / ``lora_B.default.weight``. The base weight
maps to our peft name ``...q_proj.base_layer.weight`` and the LoRA matrices keep their names.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "EMBED",
    "LM_HEAD",
    "VISION",
    "VOCAB_KEYS",
    "OfficialConversion",
    "convert_official_state_dict",
    "official_to_read_key",
    "read_to_official_key",
]

PEFT_PREFIX = "base_model.model."
"""Prefix of every key of the unmerged official (peft 0.4) state dict."""
DEFAULT_LORA_TARGETS = ("q_proj", "v_proj")
"""Official ``--lora_target_modules`` default (spec 1.6)."""

# Our side.
LM = "llava.model.language_model."
VISION = "llava.model.vision_tower."
PROJECTOR = "llava.model.multi_modal_projector."
LM_HEAD = "llava.lm_head.weight"
EMBED = LM + "embed_tokens.weight"
VOCAB_KEYS = (EMBED, LM_HEAD)

# Official side.
O_EMBED = "model.embed_tokens.weight"
O_LM_HEAD = "lm_head.weight"
O_NORM = "model.norm.weight"
O_LAYERS = "model.layers."
O_PROJECTOR = "model.mm_projector."
O_SAM = "model.visual_model."
O_FCS = "model.text_hidden_fcs."
O_VISION = "model.vision_tower.vision_tower.vision_model."

SAM_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")
_PROJECTOR_LAYERS = {"0": "linear_1", "2": "linear_2"}
_PROJECTOR_LAYERS_INV = {v: k for k, v in _PROJECTOR_LAYERS.items()}

# LLaMA decoder-layer parameters (the only names accepted under ``model.layers.N.``).
_LAYER_PARAM = re.compile(
    r"(?P<idx>\d+)\.(?P<module>self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.(?P<param>weight|bias)"
    r"|(?P<idx2>\d+)\.(?:input_layernorm|post_attention_layernorm)\.weight"
)
_LAYER_LORA = re.compile(
    r"(?P<idx>\d+)\.(?P<module>self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.lora_[AB]\.default\.weight"
)
_INV_FREQ = re.compile(r"model\.(?:layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq")



def _unknown(key: str, why: str = "") -> ValueError:
    extra = f" ({why})" if why else ""
    return ValueError(
        f"unknown checkpoint key {key!r}: not part of the official READ/LISA/SESAME layout{extra}"
    )


# --------------------------------------------------------------------------------------------------------------
# Key mapping
# --------------------------------------------------------------------------------------------------------------


def official_to_read_key(key: str, *, lora_targets: Collection[str] = DEFAULT_LORA_TARGETS) -> str | None:
    """Our parameter name for one official key, or ``None`` for a key that is deliberately dropped.

    Args:
        key: a merged-layout key (``model.layers.0.mlp.up_proj.weight``) or an unmerged peft-0.4 one
            (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight``).
        lora_targets: module names wrapped by LoRA in the unmerged layout (their base ``weight``/``bias``
            map to ``base_layer.weight``/``base_layer.bias``). Ignored for merged keys.

    Raises:
        ValueError: the key (named in the message) is not part of the official layout, or is a LoRA key
            without the ``base_model.model.`` prefix, or a LoRA key of a module outside ``lora_targets``.
    """
    peft = key.startswith(PEFT_PREFIX)
    k = key[len(PEFT_PREFIX) :] if peft else key
    if _INV_FREQ.fullmatch(k):
        return None
    if k == O_EMBED:
        return EMBED
    if k == O_LM_HEAD:
        return LM_HEAD
    if k == O_NORM:
        return LM + "norm.weight"
    if k.startswith(O_LAYERS):
        rest = k[len(O_LAYERS) :]
        m = _LAYER_LORA.fullmatch(rest)
        if m is not None:
            if not peft:
                raise _unknown(
                    key, "LoRA weights only exist in the unmerged layout, under 'base_model.model.'"
                )
            if m["module"].rsplit(".", 1)[1] not in lora_targets:
                raise _unknown(key, f"LoRA weights of a module outside lora_targets={sorted(lora_targets)}")
            return LM + "layers." + rest
        m = _LAYER_PARAM.fullmatch(rest)
        if m is None:
            raise _unknown(key)
        if peft and m["module"] is not None and m["module"].rsplit(".", 1)[1] in lora_targets:
            return f"{LM}layers.{m['idx']}.{m['module']}.base_layer.{m['param']}"
        return LM + "layers." + rest
    if k.startswith(O_PROJECTOR):
        idx, _, param = k[len(O_PROJECTOR) :].partition(".")
        if idx not in _PROJECTOR_LAYERS or param not in ("weight", "bias"):
            raise _unknown(key)
        return f"{PROJECTOR}{_PROJECTOR_LAYERS[idx]}.{param}"
    if k.startswith(O_SAM):
        rest = k[len(O_SAM) :]
        part, _, inner = rest.partition(".")
        if part not in SAM_PARTS or not inner:
            raise _unknown(key, f"SAM keys are {', '.join(O_SAM + p + '.*' for p in SAM_PARTS)}")
        return "sam." + rest
    if k.startswith(O_FCS):
        return "text_hidden_fcs." + k[len(O_FCS) :]
    if k.startswith(O_VISION):
        rest = k[len(O_VISION) :]
        if rest == "embeddings.position_ids":
            return None
        return VISION + rest
    raise _unknown(key)


def read_to_official_key(key: str) -> str | None:
    """The merged-layout official name of one of our parameter names; ``None`` for the CLIP tower (releases
    do not carry it).

    Raises:
        ValueError: a LoRA name (``lora_A``/``lora_B``/``base_layer``: merge first) or a name outside the
            model.
    """
    if ".lora_A." in key or ".lora_B." in key or ".base_layer." in key:
        raise ValueError(
            f"{key!r} is a LoRA parameter: the official merged layout has no LoRA; merge the adapters first "
            "(read.model.builder.merge_lora(model))"
        )
    if key.startswith(VISION):
        return None
    if key == EMBED:
        return O_EMBED
    if key == LM_HEAD:
        return O_LM_HEAD
    if key == LM + "norm.weight":
        return O_NORM
    if key.startswith(LM + "layers."):
        return O_LAYERS + key[len(LM + "layers.") :]
    if key.startswith(PROJECTOR):
        layer, _, param = key[len(PROJECTOR) :].partition(".")
        if layer in _PROJECTOR_LAYERS_INV:
            return f"{O_PROJECTOR}{_PROJECTOR_LAYERS_INV[layer]}.{param}"
    if key.startswith("sam.") and key.split(".")[1] in SAM_PARTS:
        return O_SAM + key[len("sam.") :]
    if key.startswith("text_hidden_fcs."):
        return O_FCS + key[len("text_hidden_fcs.") :]
    raise ValueError(f"{key!r} has no counterpart in the official READ layout")


def _infer_lora_targets(keys: Collection[str]) -> tuple[str, ...]:
    """Module names (``q_proj``, ``v_proj``, ...) carrying LoRA weights in an unmerged state dict."""
    targets = set()
    for key in keys:
        if key.startswith(PEFT_PREFIX + O_LAYERS):
            m = _LAYER_LORA.fullmatch(key[len(PEFT_PREFIX + O_LAYERS) :])
            if m is not None:
                targets.add(m["module"].rsplit(".", 1)[1])
    return tuple(sorted(targets))


@dataclass
class OfficialConversion:
    """Result of :func:`convert_official_state_dict`.

    Attributes:
        state_dict: our names -> tensors.
        sources: our name -> the official key it came from (for error messages).
        layout: ``merged`` (a release) or ``peft`` (unmerged DeepSpeed/peft-0.4 dump).
        lora_targets: LoRA-wrapped module names found (``peft`` layout only).
        dropped: official keys deliberately skipped (``rotary_emb.inv_freq``, CLIP ``position_ids``).
        unknown: official keys outside the layout (only when converted with ``strict=False``).
    """

    state_dict: dict[str, Tensor]
    sources: dict[str, str]
    layout: Literal["merged", "peft"]
    lora_targets: tuple[str, ...] = ()
    dropped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def convert_official_state_dict(
    state_dict: Mapping[str, Tensor], *, strict: bool = True
) -> OfficialConversion:
    """Rename a whole official state dict (merged or unmerged layout, detected from the keys).

    In the unmerged layout the LoRA targets are inferred from the ``lora_A``/``lora_B`` keys present.

    Raises:
        ValueError: a mix of prefixed and unprefixed keys; with ``strict``, any unknown key (all are named).
    """
    keys = list(state_dict)
    n_peft = sum(k.startswith(PEFT_PREFIX) for k in keys)
    if 0 < n_peft < len(keys):
        plain = next(k for k in keys if not k.startswith(PEFT_PREFIX))
        raise ValueError(
            f"mixed checkpoint layout: {n_peft} keys start with {PEFT_PREFIX!r} and "
            f"{len(keys) - n_peft} do not (e.g. {plain!r})"
        )
    layout: Literal["merged", "peft"] = "peft" if keys and n_peft == len(keys) else "merged"
    targets = _infer_lora_targets(keys) if layout == "peft" else ()
    out = OfficialConversion(state_dict={}, sources={}, layout=layout, lora_targets=targets)
    errors: list[str] = []
    for key, value in state_dict.items():
        try:
            ours = official_to_read_key(key, lora_targets=targets)
        except ValueError as e:
            errors.append(str(e))
            out.unknown.append(key)
            continue
        if ours is None:
            out.dropped.append(key)
            continue
        if ours in out.state_dict:  # cannot happen with the rules above; guards future edits
            raise ValueError(f"official keys {out.sources[ours]!r} and {key!r} both map to {ours!r}")
        out.state_dict[ours] = value
        out.sources[ours] = key
    if errors and strict:
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ValueError(f"{len(errors)} unknown checkpoint keys: " + "; ".join(errors[:5]) + more)
    return out
