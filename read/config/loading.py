"""YAML files with ``_base_`` inheritance and duplicate-key refusal, ``${env:VAR,default}`` expansion, SasP
presets, command-line overrides, cross-field validation and saving (module docstring of ``read.config``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from read.config.convert import from_dict, to_dict
from read.config.schema import EVAL_DATASETS, MIXTURE_KEYS, SASP_PRESETS, ConfigError, ReadConfig

__all__ = ["env_source", "load_config", "parse_overrides", "save_config", "validate"]


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
    if m.vlm.pretrained is None and m.vlm.kind == "llava" and m.vlm.tiny is None:
        raise ConfigError(f"{src}: model.vlm.pretrained is null, so model.vlm.tiny must give the random-init sizes")
    if m.vlm.pretrained is None and m.vlm.kind == "qwen2_5_vl" and m.vlm.tiny_qwen is None:
        raise ConfigError(f"{src}: model.vlm.pretrained is null, so model.vlm.tiny_qwen must give the random-init "
                          "sizes of the Qwen2.5-VL")
    if not 0 < m.vlm.min_pixels <= m.vlm.max_pixels:
        raise ConfigError(f"{src}: model.vlm needs 0 < min_pixels <= max_pixels, got {m.vlm.min_pixels} and "
                          f"{m.vlm.max_pixels}")
    if m.sam.kind == "sam" and m.sam.variant == "tiny" and m.sam.tiny is None:
        raise ConfigError(f"{src}: model.sam.variant is tiny, so model.sam.tiny must be given")
    if m.sam.kind == "sam2" and m.sam.checkpoint is None and (m.sam.variant != "tiny" or m.sam.tiny_sam2 is None):
        raise ConfigError(f"{src}: model.sam.kind=sam2 without model.sam.checkpoint needs model.sam.variant=tiny and "
                          "model.sam.tiny_sam2 (a random tiny SAM 2)")
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
    if t.optimizer == "deepspeed_fused_adam" and t.engine == "torch":
        raise ConfigError(f"{src}: train.optimizer=deepspeed_fused_adam needs train.engine=deepspeed (or auto on CUDA)")
    if t.keep_best is not None and not t.eval_every:
        raise ConfigError(f"{src}: train.keep_best={t.keep_best} needs train.eval_every (validation steps)")
    if t.eval_every is not None and t.eval_every < 1:
        raise ConfigError(f"{src}: train.eval_every must be >= 1 or null")
    sam = m.sam
    if sam.iou_head_hidden_dim < 1 or sam.iou_head_depth < 1 or sam.num_multimask_outputs < 1:
        raise ConfigError(f"{src}: model.sam.iou_head_hidden_dim/iou_head_depth/num_multimask_outputs must be >= 1")
    if d.style == "gsva" and not m.vlm.rej_token:
        raise ConfigError(f"{src}: data.style=gsva answers absent targets with [REJ]: set model.vlm.rej_token='[REJ]'")
    e = cfg.eval
    if e.dataset == "grefcoco" and not m.vlm.rej_token:
        raise ConfigError(f"{src}: eval.dataset=grefcoco needs model.vlm.rej_token (GSVA's [REJ])")
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
