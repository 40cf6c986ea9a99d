"""Checks that an official release fits the model built for it: every architecture field of its ``config.json``
and its vocabulary (token ids vs. released embedding rows). A mismatch raises, naming the field or token: a base
whose ``rms_norm_eps`` differs, say, would otherwise load silently and change every mask."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from read.model.tokenizer import ReadTokenizer

__all__ = ["check_release_config", "check_released_vocab", "read_release_config"]

_TEXT_INT_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "max_position_embeddings")
"""``config.json`` fields compared with the language model's config (LLaMA defaults apply when absent)."""
_PROJECTORS = {"mlp2x_gelu": "gelu"}
"""Official ``mm_projector_type`` values this project builds, and the matching ``projector_hidden_act``."""


def read_release_config(directory: Path) -> dict | None:
    """The release's ``config.json`` as a dict (``None`` when the folder has none).

    Raises:
        ValueError: an unreadable or non-object file (named).
    """
    path = Path(directory) / "config.json"
    if Path(directory).is_file():  # a single state-dict file: its folder may hold the config
        path = Path(directory).parent / "config.json"
    if not path.is_file():
        return None
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable config ({type(e).__name__}: {e})") from e
    if not isinstance(conf, dict):
        raise ValueError(f"{path}: not a JSON object")
    return conf


def _rope_theta(text_config: Any) -> float:
    params = getattr(text_config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(getattr(text_config, "rope_theta", 10000.0))


def check_release_config(model: nn.Module, tokenizer: ReadTokenizer | None, directory: Path,
                         released_rows: int | None = None) -> None:
    """Compare every architecture field of the release's ``config.json`` (when present) with the built model.

    Checked: the LLaMA sizes (hidden, intermediate, layers, heads, KV heads, positions), ``rms_norm_eps``,
    ``rope_theta`` (10000 when absent, transformers 4.31's default), ``rope_scaling``, ``hidden_act``,
    ``tie_word_embeddings``, ``vocab_size`` (= the released embedding rows), ``mm_hidden_size`` (CLIP width),
    ``mm_vision_select_layer``, ``mm_vision_select_feature``, ``mm_projector_type``, ``mm_use_im_start_end`` (vs.
    the tokenizer), ``mm_use_im_patch_token`` and ``out_dim`` (the [SEG] projection). Fields a config lacks are not
    checked, except where the official code had a default.

    Raises:
        ValueError: naming every field that differs, with both values.
    """
    conf = read_release_config(directory)
    if conf is None:
        return
    path = (Path(directory).parent if Path(directory).is_file() else Path(directory)) / "config.json"
    llava_conf = model.llava.config
    text, vision = llava_conf.text_config, llava_conf.vision_config
    bad: list[str] = []

    def differ(name: str, theirs: Any, ours: Any) -> None:
        if isinstance(theirs, float) or isinstance(ours, float):
            same = theirs is not None and ours is not None and math.isclose(float(theirs), float(ours),
                                                                              rel_tol=1e-9, abs_tol=0.0)
        else:
            same = theirs == ours
        if not same:
            bad.append(f"{name}={theirs!r} (model built: {ours!r})")

    for name in _TEXT_INT_FIELDS:
        if name in conf:
            differ(name, int(conf[name]), int(getattr(text, name)))
    if "rms_norm_eps" in conf:
        differ("rms_norm_eps", float(conf["rms_norm_eps"]), float(text.rms_norm_eps))
    differ("rope_theta", float(conf.get("rope_theta", 10000.0)), _rope_theta(text))
    theirs_scaling = conf.get("rope_scaling")
    ours_scaling = getattr(text, "rope_scaling", None)
    if isinstance(ours_scaling, dict) and ours_scaling.get("rope_type", "default") == "default":
        ours_scaling = None
    differ("rope_scaling", theirs_scaling, ours_scaling)
    if "hidden_act" in conf:
        differ("hidden_act", conf["hidden_act"], getattr(text, "hidden_act", None))
    if "tie_word_embeddings" in conf:
        differ("tie_word_embeddings", bool(conf["tie_word_embeddings"]), bool(llava_conf.tie_word_embeddings))
    if "vocab_size" in conf and released_rows is not None:
        differ("vocab_size", int(conf["vocab_size"]), released_rows)
    if "mm_hidden_size" in conf:
        differ("mm_hidden_size", int(conf["mm_hidden_size"]), int(vision.hidden_size))
    if "mm_vision_select_layer" in conf:
        differ("mm_vision_select_layer", int(conf["mm_vision_select_layer"]), int(llava_conf.vision_feature_layer))
    if "mm_vision_select_feature" in conf:
        ours = {"default": "patch", "full": "cls_patch"}.get(llava_conf.vision_feature_select_strategy)
        differ("mm_vision_select_feature", conf["mm_vision_select_feature"], ours)
    if "mm_projector_type" in conf:
        act = _PROJECTORS.get(conf["mm_projector_type"])
        if act is None:
            bad.append(f"mm_projector_type={conf['mm_projector_type']!r} (this project builds {sorted(_PROJECTORS)})")
        else:
            differ("mm_projector_type", conf["mm_projector_type"],
                   "mlp2x_gelu" if llava_conf.projector_hidden_act == act else llava_conf.projector_hidden_act)
    if "mm_use_im_start_end" in conf and tokenizer is not None:
        differ("mm_use_im_start_end", bool(conf["mm_use_im_start_end"]), bool(tokenizer.use_im_start_end))
    if conf.get("mm_use_im_patch_token"):
        bad.append("mm_use_im_patch_token=True (READ never uses <im_patch>; this project does not build it)")
    if "out_dim" in conf:
        differ("out_dim", int(conf["out_dim"]), int(model.text_hidden_fcs[0][2].out_features))
    if bad:
        raise ValueError(
            f"{path}: the release does not match the model built for it: {'; '.join(bad)}. Build the model from "
            "the matching config (e.g. configs/model/read_13b.yaml for a 13B release, model.vlm.use_im_start_end)"
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
