"""Typed configuration: one dataclass schema, YAML instances with single inheritance, ``key=value`` overrides.

A YAML file is an instance of :class:`ReadConfig`. It may name one parent with ``_base_: relative/path.yaml``;
the parent is loaded first (recursively) and the child's mapping is merged into it key by key. Command-line
overrides are dotted ``key=value`` pairs whose values are parsed as YAML scalars (``true``, ``3``, ``1e-4``,
``[a, b]``, ``null``). Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key.

Every run writes its resolved config (``save_config``); ``load_config(run_dir / "config.yaml")`` rebuilds it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and, where known, the file."""


# --------------------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TinyLlavaConfig:
    """Sizes of a randomly initialised LLaVA (tests, quickstart). Vocabulary size comes from the tokenizer."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_hidden_layers: int = 2
    vision_num_attention_heads: int = 2
    image_size: int = 112
    """CLIP input side (the real model: 336)."""
    patch_size: int = 14
    tokenizer_vocab_size: int = 600
    """Size of the SentencePiece model trained in memory for the tiny tokenizer."""


@dataclass
class VLMConfig:
    """The LLaVA-1.5 backbone (transformers' native ``LlavaForConditionalGeneration``)."""

    pretrained: str | None = "llava-hf/llava-1.5-7b-hf"
    """Hub id or local directory in llava-hf layout. ``null`` builds a random model from ``tiny``."""
    tokenizer: str | None = None
    """Directory holding ``tokenizer.model`` (SentencePiece). Defaults to ``pretrained``."""
    tiny: TinyLlavaConfig | None = None
    dtype: Literal["fp32", "bf16", "fp16"] = "bf16"
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    """``auto``: flash_attention_2 when CUDA and flash-attn are available, else sdpa."""
    use_im_start_end: bool = True
    """Official: ``<image>`` is wrapped as ``<im_start><image><im_end>`` (spec 1.2)."""
    conv_template: Literal["llava_v1", "vicuna_v1"] = "llava_v1"
    """llava_v1 is the training prompt; vicuna_v1 is what the official test/demo scripts use (spec 4.5)."""
    seg_token: str = "[SEG]"
    image_token: str = "<image>"
    pad_token: str = "<unk>"
    """Official: pad = unk (id 0)."""
    seg_query: Literal["before", "on"] = "before"
    """``before``: the hidden state of the token preceding [SEG] (official, spec 1.7); ``on``: [SEG] itself."""
    mean_resizing: bool = False
    """Initialisation of new embedding rows. Official (transformers 4.31): Normal(0, 0.02), i.e. not mean-resized."""
    gradient_checkpointing: bool = False
    model_max_length: int = 2048
    """Maximum length in tokens after image expansion."""


@dataclass
class TinySamConfig:
    img_size: int = 128
    patch_size: int = 16
    encoder_dim: int = 32
    encoder_depth: int = 2
    encoder_heads: int = 2
    window_size: int = 4
    prompt_dim: int = 256
    decoder_mlp_dim: int = 64


@dataclass
class SamConfig:
    """SAM head built from the unmodified ``segment_anything`` classes."""

    variant: Literal["vit_h", "vit_l", "vit_b", "tiny"] = "vit_h"
    checkpoint: str | None = "sam_vit_h_4b8939.pth"
    """Path to the SAM state dict. ``null`` leaves SAM randomly initialised (tests, or weights loaded later)."""
    tiny: TinySamConfig | None = None
    encoder_batch_size: int = 4
    """Images per chunk through the frozen image encoder."""
    global_attn_indexes: list[int] | None = None
    """Image-encoder blocks with global attention. ``null``: the variant's (vit_h [7, 15, 23, 31], vit_l
    [5, 11, 17, 23], vit_b [2, 5, 8, 11]; tiny: the last block)."""
    iou_head_hidden_dim: int = 256
    """Width of the mask decoder's IoU-prediction MLP (256 in every released SAM)."""
    iou_head_depth: int = 3
    num_multimask_outputs: int = 3
    """Extra mask tokens of the decoder (READ uses mask token 0 only; the weights still exist)."""


@dataclass
class LoRAConfig:
    enabled: bool = True
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Linear layers of the *language model* only (never CLIP, the projector or SAM)."""


@dataclass
class SasPConfig:
    """Similarity-as-Points (spec section 2). Parameter-free: may differ between training and evaluation."""

    enabled: bool = True
    """False: text-only prompting (LISA/SESAME behaviour)."""
    preset: str | None = None
    """Named preset from ``SASP_PRESETS`` (below), expanded by ``load_config``; keys given explicitly win."""
    variant: Literal["official", "paper"] = "official"
    num_points: int = 30
    t_pos: float = 0.8
    t_neg: float = 0.2
    down_sample: int = 2
    continuous: bool = True
    """Discrete-to-Continuous refinement."""
    eps: float = 0.5
    """Paper variant only: thresholds mean +- eps * std."""
    dtoc_window: int = 4
    """Half-width in pixels of the local DtoC window (weights beyond it underflow in fp32)."""


@dataclass
class ModelConfig:
    name: str = "read_7b"
    vlm: VLMConfig = field(default_factory=VLMConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    sasp: SasPConfig = field(default_factory=SasPConfig)
    out_dim: int = 256
    """Output of the [SEG] projection MLP (H -> H -> out_dim); SAM's prompt dimension."""
    seg_prompt: bool = True
    """False: SAM is prompted by the SasP points only, without the [SEG] embedding (ablation, paper Table 6)."""
    trainable: list[str] = field(
        default_factory=lambda: ["lm_head", "embed_tokens", "mask_decoder", "text_hidden_fcs"]
    )
    """Modules trained in full besides LoRA (official ``init_READ_model``, spec 1.6)."""


@dataclass
class LossConfig:
    ce_weight: float = 1.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    ignore_mode: Literal["background", "mask"] = "background"
    """Pixels labelled 255: ``background`` = official (counted as 0); ``mask`` = excluded from BCE and Dice."""


# Official dataset keys of the training mixture (train_read.py --dataset, spec 3.6).
MIXTURE_KEYS = ("sem_seg", "refer_seg", "neg_refer_seg", "correct_refer_seg", "vqa", "reason_seg")


@dataclass
class DataConfig:
    """Datasets under one root, in the official on-disk layout (docs/DATA.md)."""

    root: str | None = None
    """Data root. ``null``: ``$READ_DATA_ROOT`` if set, else ``./dataset``."""
    datasets: list[str] = field(
        default_factory=lambda: ["sem_seg", "refer_seg", "correct_refer_seg", "vqa", "neg_refer_seg", "reason_seg"]
    )
    """Mixture components (official ``--dataset`` split on ``||``)."""
    sample_rates: list[float] = field(default_factory=lambda: [10.0, 1.0, 1.0, 1.0, 1.0, 10.0])
    sem_seg_data: list[str] = field(
        default_factory=lambda: ["ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary"]
    )
    refer_seg_data: list[str] = field(default_factory=lambda: ["refclef", "refcoco", "refcoco+", "refcocog"])
    neg_refer_seg_data: list[str] = field(default_factory=lambda: ["R-refcocog", "R-refcoco", "R-refcoco+"])
    correct_refer_seg_data: list[str] = field(default_factory=lambda: ["fprefcocog", "fprefcoco", "fprefcoco+"])
    reason_seg_split: str = "train"
    generate_synthetic: bool = False
    """Write the synthetic datasets under ``root`` first when they are missing (quickstart, tests)."""
    num_classes_per_sample: int = 3
    samples_per_epoch: int | None = None
    """``null``: batch_size x grad_accumulation x steps_per_epoch x world_size (official)."""
    on_error: Literal["raise", "skip"] = "raise"
    """A bad sample (corrupt image, malformed annotation): stop with the file named, or skip and count it."""
    workers: int = 2


@dataclass
class TrainConfig:
    """Optimisation and run control. The DeepSpeed JSON is generated from these fields (one source of truth)."""

    engine: Literal["auto", "deepspeed", "torch"] = "auto"
    """``auto``: DeepSpeed when CUDA is available, else the plain PyTorch engine (CPU, tests)."""
    epochs: int = 20
    steps_per_epoch: int = 500
    """Optimiser steps per epoch (official ``--steps_per_epoch``)."""
    max_steps: int | None = None
    """Stop after this many optimiser steps in total (the lr schedule still spans epochs x steps_per_epoch)."""
    max_minutes: float | None = None
    """Stop after this much training time (evaluation time excluded): a fixed compute budget."""
    eval_every: int | None = None
    """Every N optimiser steps, evaluate on ``eval.*`` (first ``eval_limit`` items) and log val gIoU/cIoU."""
    eval_limit: int | None = 100
    batch_size: int = 2
    """Images per micro-batch per device (``train_micro_batch_size_per_gpu``)."""
    grad_accumulation_steps: int = 10
    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 100
    """Linear warm-up from 0 (DeepSpeed WarmupDecayLR), then linear decay to 0 at epochs x steps_per_epoch."""
    grad_clip: float = 1.0
    zero_stage: int = 2
    deepspeed_config: str | None = "configs/deepspeed/zero2.json"
    """ZeRO knobs only (bucket sizes, overlap); batch, lr, optimiser and precision are injected from this YAML."""
    save_every: int = 500
    """Checkpoint every N optimiser steps (and at the end)."""
    keep_last: int = 2
    auto_resume: bool = True
    """Continue from the latest complete checkpoint in ``output_dir`` with the same data order and step."""
    max_nonfinite: int = 10
    """Stop after this many consecutive micro-batches with a non-finite loss."""
    log_every: int = 1
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])
    """Any of ``jsonl`` (always written), ``tensorboard``, ``wandb``."""
    progress: bool = True
    seed: int = 42
    init: Literal["llava", "released", "checkpoint"] = "llava"
    """``llava``: LLaVA weights + SAM from its .pth + fresh projection; ``released``: an official SESAME/READ
    merged folder (``init_checkpoint``); ``checkpoint``: trainable weights from one of our checkpoints."""
    init_checkpoint: str | None = None
    keep_best: Literal["ciou", "giou"] | None = None
    """Keep the checkpoint with the best validation metric (``eval.*`` every ``train.eval_every`` steps, on the
    first ``train.eval_limit`` items) in ``checkpoints/best``, besides the last ``keep_last``. Official
    ``train_read.py``: validate every epoch, keep the best cIoU (how the released checkpoints were chosen)."""


EVAL_DATASETS = ("reason_seg", "refclef", "refcoco", "refcoco+", "refcocog", "fprefcoco", "fprefcoco+", "fprefcocog",
                 "R-refcoco", "R-refcoco+", "R-refcocog")


@dataclass
class EvalConfig:
    """Evaluation protocol, dataset and decoding (spec 5)."""

    protocol: Literal["teacher_forced", "generate", "fp_refcoco"] = "teacher_forced"
    """``teacher_forced``: the official ReasonSeg/refCOCO validation (the answer with [SEG] is given);
    ``generate``: real inference (greedy, KV cache; the model must emit [SEG]); ``fp_refcoco``: See / Segment."""
    dataset: str = "reason_seg"
    split: str = "val"
    subset: Literal["all", "short", "long"] = "all"
    """ReasonSeg only: all queries, or short / long (``is_sentence``) ones."""
    batch_size: int = 4
    """Images per batch."""
    max_new_tokens: int = 64
    template_seed: int = 42
    """refCOCO-family question/answer templates are drawn from (template_seed, image id, sentence index)."""
    conv_template: Literal["llava_v1", "vicuna_v1"] | None = None
    """``null``: the training prompt (model.vlm.conv_template). ``vicuna_v1``: the official test/demo prompt."""
    multi_seg: Literal["first", "union"] = "first"
    """A generated answer with several [SEG]: score the first mask (official) or their union."""
    weights: str | None = None
    """Run directory, checkpoint directory, converted model directory or an official released folder."""
    output_dir: str | None = None
    """``null``: ``<output_dir>/eval/<dataset>_<split>_<protocol>``."""
    overlays: int = 0
    """Write overlay PNGs (mask, points, similarity heat-map) of the first N samples."""
    limit: int | None = None
    after_train: bool = False
    """Evaluate at the end of ``train.py`` (the quickstart does)."""


@dataclass
class ReadConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/default"
    device: str = "auto"
    """``auto``: cuda if available, else cpu."""


# Per-release SasP settings (spec 2.10). A config selects one with ``model.sasp.preset``; keys given explicitly
# next to the preset (in the same file, a child file or on the command line) win over the preset's values.
SASP_PRESETS: dict[str, dict[str, Any]] = {
    # READ-7B releases (ReasonSeg val/test, fprefcoco); also the 7B training setting.
    "read_7b": {"num_points": 30, "t_pos": 0.8, "t_neg": 0.2, "down_sample": 2},
    # READ-13B evaluation (the commented lines the official README asks users to uncomment).
    "read_13b_eval": {"num_points": 60, "t_pos": 0.6, "t_neg": 0.2, "down_sample": 1},
    # READ-13B training stage 1 (README): 10 points, down_sample 1.
    "read_13b_stage1": {"num_points": 10, "t_pos": 0.8, "t_neg": 0.2, "down_sample": 1},
    # READ-13B stage 2 (README says num_points 30 only; thresholds and down_sample assumed unchanged from stage 1).
    "read_13b_stage2": {"num_points": 30, "t_pos": 0.8, "t_neg": 0.2, "down_sample": 1},
}


# --------------------------------------------------------------------------------------------------------------
# Conversion from plain data to the schema (strict)
# --------------------------------------------------------------------------------------------------------------


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: null is not allowed (expected {_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} does not match {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        k_tp, v_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return {_convert(k, k_tp, key): _convert(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, prefix=key)
    if value is None:
        raise ConfigError(f"{key}: null is not allowed (expected {_type_name(tp)})")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads "1e-4" as a string; accept exponent notation
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported schema type {_type_name(tp)}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) mapping. Unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (valid keys{' under ' + prefix if prefix else ''}: {sorted(names)})"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{prefix}.{name}" if prefix else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from e


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (for YAML)."""
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------------------------------------------
# YAML loading with _base_ and overrides
# --------------------------------------------------------------------------------------------------------------


def _deep_merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_load(text: str):  # noqa: ANN202
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: _base_ cycle through {[str(p) for p in chain]}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _yaml_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {_one_line(e)}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("_base_", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: _base_ must be a single relative path (single inheritance)")
    parent = _read_yaml(path.parent / base, chain + (path,))
    return _deep_merge(parent, data)


def parse_overrides(overrides: list[str]) -> dict:
    """``["a.b=1", "c=[x, y]"]`` -> nested dict, values parsed as YAML scalars/flow collections."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: empty key")
        if not raw.strip():
            raise ConfigError(f"override {item!r}: empty value (write {key}=null for none, {key}='' for an empty string)")
        try:
            value = _yaml_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {_one_line(e)}") from e
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {p} was already given a scalar value")
        node[parts[-1]] = value
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> ReadConfig:
    """Load a YAML file (with its ``_base_`` chain) and apply overrides; validate against the schema.

    A path to a run directory is accepted and means ``<dir>/config.yaml``.

    SasP presets: the file's ``model.sasp.preset`` is expanded first (keys written next to it in the files win
    over the preset); then a preset given on the command line is expanded *over* the file's values (a saved run
    holds explicit values, which an explicit ``model.sasp.preset=...`` override must replace), and explicit
    ``model.sasp.*`` overrides win over everything.

    The keys whose values came from ``${env:VAR,default}`` are remembered (:func:`env_source`) so an error about a
    missing path can name the environment variable.
    """
    data: dict = {}
    src = "<defaults>"
    if path is not None:
        p = Path(path)
        if p.is_dir():
            p = p / "config.yaml"
        data = _read_yaml(p)
        src = str(p)
    env_used: dict[str, tuple[str, bool]] = {}
    try:
        data = _apply_sasp_preset(_expand_env(data, "", env_used))
        if overrides:
            cli = _expand_env(parse_overrides(overrides), "", env_used)
            cli_sasp = (cli.get("model") or {}).get("sasp") if isinstance(cli.get("model"), dict) else None
            if isinstance(cli_sasp, dict) and cli_sasp.get("preset") is not None:
                preset = _preset_values(cli_sasp["preset"])
                data = _deep_merge(data, {"model": {"sasp": preset}})
            data = _deep_merge(data, cli)
        cfg = from_dict(ReadConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{src}: {e}") from None
    validate(cfg, src)
    object.__setattr__(cfg, "_env_used", env_used)
    return cfg


def env_source(cfg: ReadConfig, key: str) -> str:
    """A hint naming the environment variable behind ``key`` (``""`` when the value was written literally)."""
    used = getattr(cfg, "_env_used", {}).get(key)
    if used is None:
        return ""
    var, is_set = used
    return f" ({var}={os.environ.get(var)!r})" if is_set else f" ({var} is not set; this is its default)"


_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?:,([^}]*))?\}")


def _expand_env(value: Any, key: str, used: dict[str, tuple[str, bool]] | None = None) -> Any:
    """Replace ``${env:NAME}`` / ``${env:NAME,default}`` inside string values (paths stay out of YAML files).

    ``used`` collects ``key -> (NAME, whether NAME was set)``.
    """
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{key}.{k}" if key else str(k), used) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{key}[{i}]", used) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if used is not None:
            used[key] = (name, name in os.environ)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise ConfigError(f"{key}: environment variable {name} is not set and has no default")
        return default

    out = _ENV.sub(sub, value)
    if out == "null":
        return None
    return out


def _preset_values(name: Any) -> dict:
    if name not in SASP_PRESETS:
        raise ConfigError(f"model.sasp.preset: unknown preset {name!r} (known: {sorted(SASP_PRESETS)})")
    return dict(SASP_PRESETS[name])


def _apply_sasp_preset(data: dict) -> dict:
    sasp = data.get("model", {}).get("sasp") if isinstance(data.get("model"), dict) else None
    if not isinstance(sasp, dict) or sasp.get("preset") is None:
        return data
    merged = {**_preset_values(sasp["preset"]), **sasp}
    return _deep_merge(data, {"model": {"sasp": merged}})


def validate(cfg: ReadConfig, src: str = "<config>") -> None:
    """Cross-field checks that a type alone cannot express."""
    m = cfg.model
    if m.vlm.pretrained is None and m.vlm.tiny is None:
        raise ConfigError(f"{src}: model.vlm.pretrained is null, so model.vlm.tiny must give the random-init sizes")
    if m.sam.variant == "tiny" and m.sam.tiny is None:
        raise ConfigError(f"{src}: model.sam.variant is tiny, so model.sam.tiny must be given")
    s = m.sasp
    if not 0.0 <= s.t_neg < s.t_pos <= 1.0:
        raise ConfigError(f"{src}: model.sasp needs 0 <= t_neg < t_pos <= 1, got t_neg={s.t_neg} t_pos={s.t_pos}")
    if s.num_points < 1 or s.down_sample < 1:
        raise ConfigError(f"{src}: model.sasp.num_points and model.sasp.down_sample must be >= 1")
    if not m.seg_prompt and not m.sasp.enabled:
        raise ConfigError(f"{src}: model.seg_prompt=false needs SasP (model.sasp.enabled): SAM would get no prompt")
    if m.lora.r < 1:
        raise ConfigError(f"{src}: model.lora.r must be >= 1")
    d = cfg.data
    if len(d.datasets) != len(d.sample_rates):
        raise ConfigError(
            f"{src}: data.datasets has {len(d.datasets)} entries but data.sample_rates has {len(d.sample_rates)}"
        )
    unknown = [k for k in d.datasets if k not in MIXTURE_KEYS]
    if unknown:
        raise ConfigError(f"{src}: data.datasets: unknown dataset {unknown[0]!r} (known: {list(MIXTURE_KEYS)})")
    t = cfg.train
    if min(t.epochs, t.steps_per_epoch, t.batch_size, t.grad_accumulation_steps, t.save_every, t.keep_last) < 1:
        raise ConfigError(f"{src}: train.epochs/steps_per_epoch/batch_size/grad_accumulation_steps/save_every/"
                          "keep_last must be >= 1")
    if len(t.betas) != 2:
        raise ConfigError(f"{src}: train.betas must have two values")
    bad = [r for r in t.report_to if r not in ("jsonl", "tensorboard", "wandb")]
    if bad:
        raise ConfigError(f"{src}: train.report_to: unknown reporter {bad[0]!r} (jsonl, tensorboard, wandb)")
    if t.init != "llava" and not t.init_checkpoint:
        raise ConfigError(f"{src}: train.init={t.init} needs train.init_checkpoint")
    if t.keep_best is not None and not t.eval_every:
        raise ConfigError(f"{src}: train.keep_best={t.keep_best} needs train.eval_every (validation steps)")
    if t.eval_every is not None and t.eval_every < 1:
        raise ConfigError(f"{src}: train.eval_every must be >= 1 or null")
    sam = m.sam
    if sam.iou_head_hidden_dim < 1 or sam.iou_head_depth < 1 or sam.num_multimask_outputs < 1:
        raise ConfigError(f"{src}: model.sam.iou_head_hidden_dim/iou_head_depth/num_multimask_outputs must be >= 1")
    e = cfg.eval
    if e.dataset not in EVAL_DATASETS:
        raise ConfigError(f"{src}: eval.dataset: unknown dataset {e.dataset!r} (known: {list(EVAL_DATASETS)})")
    if e.protocol == "fp_refcoco" and not e.dataset.startswith("fprefcoco"):
        raise ConfigError(f"{src}: eval.protocol=fp_refcoco needs an FP-RefCOCO dataset, got {e.dataset!r}")
    if e.batch_size < 1 or e.max_new_tokens < 1:
        raise ConfigError(f"{src}: eval.batch_size and eval.max_new_tokens must be >= 1")
    for name in ("ce_weight", "bce_weight", "dice_weight"):
        if getattr(cfg.loss, name) < 0:
            raise ConfigError(f"{src}: loss.{name} must be >= 0")


def save_config(cfg: ReadConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (no ``_base_``); ``load_config`` reads it back to an equal object."""
    p = Path(path)
    if p.suffix not in (".yaml", ".yml"):
        p = p / "config.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(p)
    return p
