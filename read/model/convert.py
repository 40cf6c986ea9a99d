"""Official READ / LISA / SESAME checkpoints <-> this project's ``ReadModel`` (spec 7.1-7.4): loading a release folder
into a model, and exporting a merged model in the official layout. Key renaming lives in
``read.model.official_keys``, reading HF folders in ``read.model.hf_folder``, the release checks in
``read.model.release_checks``; their public names are re-exported here.

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

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from read.model.hf_folder import read_hf_state_dict
from read.model.official_keys import (
    DEFAULT_LORA_TARGETS,
    EMBED,
    VISION,
    VOCAB_KEYS,
    OfficialConversion,
    convert_official_state_dict,
    official_to_read_key,
    read_to_official_key,
)
from read.model.release_checks import check_release_config, check_released_vocab
from read.utils.weights import CheckpointKeyError

if TYPE_CHECKING:  # pragma: no cover
    from read.model.read_model import ReadModel
    from read.model.tokenizer import ReadTokenizer

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "OfficialConversion",
    "check_release_config",
    "check_released_vocab",
    "convert_official_state_dict",
    "load_released_checkpoint",
    "official_to_read_key",
    "read_hf_state_dict",
    "read_to_official_key",
    "read_to_official_state_dict",
]

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
    check_release_config(model, tokenizer, directory)  # sizes first: before reading 14 GB of weights
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
        check_release_config(model, tokenizer, directory, released_rows)
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
