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

Vocabulary
----------
Releases have ``embed_tokens`` / ``lm_head`` with 32003 rows (``[SEG]=32000, <im_start>=32001,
<im_end>=32002``, spec 1.3). Our tokenizer, read from the same folder, appends ``<image>=32003``
(transformers' LLaVA needs a real image token, spec 7.4), and the model built from a llava-hf base has
32064 rows (llava-hf pads its vocabulary). :func:`load_released_checkpoint` copies the released rows into
rows ``[0, 32003)`` and leaves the others as they are. That is safe because:

* row ``32003`` (``<image>``) of ``embed_tokens`` is never read: the image features replace the
  embeddings at every ``<image>`` position before the language model runs;
* every id the tokenizer can produce apart from ``<image>`` is checked to lie inside the released rows,
  and ``<image>`` to lie outside them, so no released row is shadowed and no used token is untrained.

The ``lm_head`` rows past the release (``<image>`` and llava-hf's padding) are *not* part of the
official model: the official vocabulary has ``released_vocab_size`` entries (returned in the report).
Greedy decoding that must match the official model restricts its logits to ``[:released_vocab_size]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from read.utils.weights import CheckpointKeyError, load_torch_file

if TYPE_CHECKING:  # pragma: no cover
    from read.model.read_model import ReadModel
    from read.model.tokenizer import ReadTokenizer

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "OfficialConversion",
    "check_released_vocab",
    "convert_official_state_dict",
    "load_released_checkpoint",
    "official_to_read_key",
    "read_hf_state_dict",
    "read_to_official_key",
    "read_to_official_state_dict",
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

CONFIG_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)
"""``config.json`` fields of a release compared with the model's text config before loading."""


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


# --------------------------------------------------------------------------------------------------------------
# Reading a Hugging Face model folder
# --------------------------------------------------------------------------------------------------------------

_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _load_index(index_path: Path) -> dict[str, str]:
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{index_path}: cannot read the shard index ({type(e).__name__}: {e})") from e
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path}: no 'weight_map' mapping keys to shard files")
    for k, v in weight_map.items():
        if not isinstance(v, str) or not v or "/" in v or "\\" in v:
            raise ValueError(f"{index_path}: weight_map[{k!r}] = {v!r} is not a shard file name")
    return weight_map


def _load_sharded(directory: Path, index_path: Path) -> dict[str, Tensor]:
    weight_map = _load_index(index_path)
    by_shard: dict[str, set[str]] = {}
    for key, shard in weight_map.items():
        by_shard.setdefault(shard, set()).add(key)
    out: dict[str, Tensor] = {}
    for shard, expected in sorted(by_shard.items()):
        path = directory / shard
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard listed in {index_path.name} is missing")
        try:
            sd = load_torch_file(path)
        except RuntimeError as e:
            raise RuntimeError(f"{e} [shard of {directory}, listed in {index_path.name}]") from e
        absent = sorted(expected - set(sd))
        extra = sorted(set(sd) - expected)
        if absent or extra:
            raise ValueError(
                f"{path} does not match {index_path.name}: "
                f"{len(absent)} listed keys absent ({', '.join(absent[:5])}), "
                f"{len(extra)} keys not listed for this shard ({', '.join(extra[:5])})"
            )
        out.update(sd)
    return out


def read_hf_state_dict(directory: str | Path) -> dict[str, Tensor]:
    """All tensors of a Hugging Face model folder (on the CPU, in the stored dtype).

    Looks for, in this order: ``model.safetensors``, ``model.safetensors.index.json`` (sharded),
    ``pytorch_model.bin``, ``pytorch_model.bin.index.json`` (sharded). ``.bin`` files are read with
    ``torch.load(weights_only=True)``. Holds the whole state dict in memory (~14 GB for a 7B bf16 release).

    Raises:
        FileNotFoundError: the folder or a listed shard does not exist, or the folder has no weights file
            (the message names the folder and the file names looked for).
        RuntimeError: a weights file that cannot be read (named in the message).
        ValueError: a malformed index, or a shard whose keys differ from the index.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {d}")
    for single, index in zip(_SINGLE_FILES, _INDEX_FILES, strict=True):
        if (d / single).is_file():
            return load_torch_file(d / single)
        if (d / index).is_file():
            return _load_sharded(d, d / index)
    looked = [name for pair in zip(_SINGLE_FILES, _INDEX_FILES, strict=True) for name in pair]
    raise FileNotFoundError(f"{d}: no weights found (looked for {', '.join(looked)})")


# --------------------------------------------------------------------------------------------------------------
# Loading a release into a ReadModel
# --------------------------------------------------------------------------------------------------------------


def _is_lora_key(key: str) -> bool:
    return ".lora_A." in key or ".lora_B." in key


def _base_layer_name(key: str) -> str | None:
    """``a.q_proj.weight -> a.q_proj.base_layer.weight`` (where a merged weight lands in a LoRA model)."""
    for suffix in (".weight", ".bias"):
        if key.endswith(suffix):
            return key[: -len(suffix)] + ".base_layer" + suffix
    return None


def _preview(items: list[str], n: int = 8) -> str:
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _official_name(key: str) -> str:
    """Our name plus its official merged-layout name, for messages."""
    plain = key.replace(".base_layer.", ".")
    try:
        official = read_to_official_key(plain)
    except ValueError:
        official = None
    return f"{key} (official {official})" if official else key


def _check_release_config(model: nn.Module, directory: Path) -> None:
    """Compare the architecture fields of the release's ``config.json`` (if any) with the model."""
    path = directory / "config.json"
    if not path.is_file():
        return
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable config ({type(e).__name__}: {e})") from e
    text = model.llava.config.text_config
    bad = []
    for name in CONFIG_FIELDS:
        ours, theirs = getattr(text, name, None), conf.get(name)
        if theirs is not None and ours is not None and int(theirs) != int(ours):
            bad.append(f"{name}={theirs} (model: {ours})")
    if bad:
        raise ValueError(
            f"{path} describes another model size than the one built: {', '.join(bad)}; build the model "
            "from the config of the matching size (e.g. configs/model/read_13b.yaml for a 13B release)"
        )


def check_released_vocab(
    model: nn.Module, tokenizer: ReadTokenizer, released_rows: int, directory: Path
) -> None:
    """Token ids vs. the released embedding rows (see the module docstring).

    Raises:
        ValueError: the tokenizer is not the release's (``[SEG]``/``<im_start>``/``<im_end>`` outside the
            released rows, ``<image>`` inside them, another id outside them, ids differing from
            ``added_tokens.json``), or the model was built with another tokenizer.
    """
    if model.seg_token_id != tokenizer.seg_token_id or model.image_token_id != tokenizer.image_token_id:
        raise ValueError(
            f"the model was built for [SEG]={model.seg_token_id}, <image>={model.image_token_id} but the "
            f"tokenizer has [SEG]={tokenizer.seg_token_id}, <image>={tokenizer.image_token_id}"
        )
    hint = (
        f"build the tokenizer from the release folder (model.vlm.tokenizer={directory}), which keeps the "
        "official ids and appends <image> after them"
    )
    image = tokenizer.image_token_id
    if image < released_rows:
        raise ValueError(
            f"{directory}: the tokenizer's image token id {image} falls inside the {released_rows} released "
            f"vocabulary rows (the release gives that row to another token); {hint}"
        )
    inside = {
        "[SEG]": tokenizer.seg_token_id,
        "<im_start>": tokenizer.im_start_id,
        "<im_end>": tokenizer.im_end_id,
    }
    for name, idx in inside.items():
        if idx is not None and not 0 <= idx < released_rows:
            raise ValueError(
                f"{directory}: the release has {released_rows} vocabulary rows but the tokenizer's {name} "
                f"id is {idx}; {hint}"
            )
    for idx in range(released_rows, len(tokenizer)):
        if idx != image:
            raise ValueError(
                f"{directory}: token {tokenizer.id_to_token(idx)!r} (id {idx}) has no row in the release "
                f"({released_rows} rows); only the image token may lie past the released vocabulary"
            )
    added_path = directory / "added_tokens.json"
    if added_path.is_file():
        try:
            added = json.loads(added_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{added_path}: unreadable ({type(e).__name__}: {e})") from e
        for content, idx in added.items():
            try:
                ours = tokenizer.token_to_id(content)
            except ValueError:
                ours = None
            if ours != int(idx):
                raise ValueError(
                    f"{added_path}: {content!r} has id {idx} there but {ours} in the tokenizer; {hint}"
                )


@torch.no_grad()
def load_released_checkpoint(
    model: ReadModel, tokenizer: ReadTokenizer, directory: str | Path, *, strict: bool = True
) -> dict:
    """Load an official READ / SESAME / LISA checkpoint folder into ``model`` in place.

    ``model`` is built from a llava-hf base config of the same size with the tokenizer of the release folder
    (``model.vlm.tokenizer=<directory>``); the CLIP tower is not in releases and stays the base's. Every other
    parameter must be present with the same name and shape, except ``embed_tokens``/``lm_head`` whose
    released rows are copied into the first rows (see the module docstring). Also accepts the unmerged
    DeepSpeed/peft-0.4 layout when the model has LoRA adapters of the same rank.

    With LoRA injected in the model and a merged release, the merged weights go into the ``base_layer``
    weights; the adapters must still be at their initial state (``lora_B == 0``) so the model equals the
    merged release.

    Args:
        strict: raise ``CheckpointKeyError`` on missing or unexpected keys and ``ValueError`` on unknown
            key names; ``False`` loads what matches and lists the rest in the report. Shape mismatches and
            token-id inconsistencies always raise.

    Returns:
        Report: ``directory``, ``layout`` (``merged``/``peft``), ``loaded_keys`` (count), ``skipped_keys``
        (dropped by design), ``kept_from_base`` (count of CLIP keys not in the release), ``missing_keys``,
        ``unexpected_keys``, ``unknown_keys`` (non-empty only with ``strict=False``), ``lora`` (``absent``,
        ``base_layer``: merged weights under untouched adapters, ``loaded``: adapters loaded too),
        ``released_vocab_size`` (= embedding rows copied), ``model_vocab_rows``.

    Raises:
        FileNotFoundError / RuntimeError / ValueError: see :func:`read_hf_state_dict`; ``ValueError`` for a
        ``config.json`` of another size, tokenizer mismatches, adapters not at their initial state.
        CheckpointKeyError: missing/unexpected keys (strict) or shape mismatches, naming the folder and keys.
    """
    directory = Path(directory)
    _check_release_config(model, directory)
    conv = convert_official_state_dict(read_hf_state_dict(directory), strict=strict)
    own = model.state_dict()
    model_has_lora = any(_is_lora_key(k) for k in own)

    plan: dict[str, str] = {}  # our model key -> converted key
    unexpected: list[str] = []
    for key in conv.state_dict:
        if key in own:
            plan[key] = key
            continue
        alt = _base_layer_name(key)
        if conv.layout == "merged" and alt is not None and alt in own:
            plan[alt] = key
        else:
            unexpected.append(conv.sources[key])
    allow_missing_lora = conv.layout == "merged" and model_has_lora
    missing = [
        k
        for k in own
        if k not in plan and not k.startswith(VISION) and not (allow_missing_lora and _is_lora_key(k))
    ]
    kept_from_base = sum(1 for k in own if k.startswith(VISION) and k not in plan)

    # Shapes (always strict); the vocabulary matrices may have fewer rows than ours.
    shape_bad: list[str] = []
    vocab_rows: dict[str, int] = {}
    for target, key in plan.items():
        src, dst = conv.state_dict[key], own[target]
        if target in VOCAB_KEYS:
            if src.dim() != 2 or src.shape[1] != dst.shape[1] or src.shape[0] > dst.shape[0]:
                shape_bad.append(
                    f"{conv.sources[key]}: release {tuple(src.shape)} vs model {tuple(dst.shape)}"
                )
            else:
                vocab_rows[target] = src.shape[0]
        elif tuple(src.shape) != tuple(dst.shape):
            shape_bad.append(f"{conv.sources[key]}: release {tuple(src.shape)} vs model {tuple(dst.shape)}")
    if len(set(vocab_rows.values())) > 1:
        shape_bad.append(f"embed_tokens and lm_head have different row counts in the release: {vocab_rows}")

    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing keys: {_preview([_official_name(k) for k in missing])}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_preview(sorted(unexpected))}")
    if shape_bad:
        problems.append(f"{len(shape_bad)} shape mismatches: {_preview(shape_bad)}")
    if problems and conv.layout == "peft" and not model_has_lora:
        problems.append(
            f"the checkpoint is an unmerged LoRA dump (LoRA on {list(conv.lora_targets)}): build the model "
            "with model.lora.enabled=true and the training rank/targets, or merge the dump first"
        )
    if problems:
        raise CheckpointKeyError(
            f"{directory}: released checkpoint does not fit the model: " + "; ".join(problems)
        )

    released_rows = next(iter(vocab_rows.values()), None)
    if released_rows is not None:
        check_released_vocab(model, tokenizer, released_rows, directory)

    lora_state = "absent"
    if model_has_lora:
        if conv.layout == "merged":
            nonzero = [k for k, v in own.items() if ".lora_B." in k and bool(v.any())]
            if nonzero:
                raise ValueError(
                    f"{directory}: the model's LoRA adapters are not at their initial state (lora_B != 0 "
                    f"in {_preview(nonzero, 3)}); a merged release loaded under them would not equal the "
                    "release. Load into a freshly built model."
                )
            lora_state = "base_layer"
        else:
            lora_state = "loaded"

    for target, key in plan.items():
        src, dst = conv.state_dict[key], own[target]
        if target in VOCAB_KEYS:
            dst[: src.shape[0]].copy_(src)
        else:
            dst.copy_(src)

    model_rows = own[EMBED].shape[0] if EMBED in own else None
    return {
        "directory": str(directory),
        "layout": conv.layout,
        "loaded_keys": len(plan),
        "skipped_keys": sorted(conv.dropped),
        "kept_from_base": kept_from_base,
        "missing_keys": sorted(missing),
        "unexpected_keys": sorted(unexpected),
        "unknown_keys": sorted(conv.unknown),
        "lora": lora_state,
        "released_vocab_size": released_rows,
        "model_vocab_rows": model_rows,
    }


# --------------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------------


def read_to_official_state_dict(model: ReadModel, *, vocab_rows: int | None = None) -> dict[str, Tensor]:
    """Our model in the official merged layout (spec 7.2): no CLIP tower, vocabulary matrices truncated.

    Merges nothing: a model with LoRA layers is refused (call ``read.model.builder.merge_lora(model)`` first).
    The tensors share memory with the model except the truncated ``embed_tokens``/``lm_head`` (copies).

    Args:
        vocab_rows: rows of ``embed_tokens``/``lm_head`` to keep. Default: the image token id, i.e. the
            official vocabulary when the tokenizer came from a release (``<image>`` appended after it).

    Raises:
        ValueError: LoRA layers present, or ``vocab_rows`` that would drop ``[SEG]`` or keep ``<image>``.
    """
    sd = model.state_dict()
    lora = [k for k in sd if _is_lora_key(k) or ".base_layer." in k]
    if lora:
        raise ValueError(
            f"the model has LoRA layers ({_preview(lora, 2)}); merge them first with "
            "read.model.builder.merge_lora(model) — the official merged layout has no LoRA"
        )
    rows = model.image_token_id if vocab_rows is None else int(vocab_rows)
    n_embed = sd[EMBED].shape[0]
    if not 0 < rows <= n_embed:
        raise ValueError(f"vocab_rows={rows} is outside (0, {n_embed}]")
    if model.seg_token_id >= rows:
        raise ValueError(
            f"[SEG] (id {model.seg_token_id}) would fall outside the exported {rows} rows: the official "
            "layout needs the tokenizer's ids in the official order ([SEG], <im_start>, <im_end> before "
            "<image>)"
        )
    if model.image_token_id < rows:
        raise ValueError(
            f"the image token (id {model.image_token_id}) lies inside the exported {rows} rows; the official "
            "vocabulary has no <image> token"
        )
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        official = read_to_official_key(key)
        if official is None:
            continue
        out[official] = value[:rows].clone() if key in VOCAB_KEYS else value.detach()
    return out
