"""Typed configuration: one dataclass schema, YAML instances with single inheritance, ``key=value`` overrides.

A YAML file is an instance of :class:`ReadConfig`. It may name one parent with ``_base_: relative/path.yaml``;
the parent is loaded first (recursively) and the child's mapping is merged into it key by key. Command-line
overrides are dotted ``key=value`` pairs whose values are parsed as YAML scalars (``true``, ``3``, ``1e-4``,
``[a, b]``, ``null``). Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key.

Every run writes its resolved config (``save_config``); ``load_config(run_dir / "config.yaml")`` rebuilds it.
"""

from read.config.convert import from_dict, to_dict
from read.config.loading import env_source, load_config, parse_overrides, save_config, validate
from read.config.schema import (
    EVAL_DATASETS,
    MIXTURE_KEYS,
    SASP_PRESETS,
    ConfigError,
    DataConfig,
    EvalConfig,
    LoRAConfig,
    LossConfig,
    ModelConfig,
    ReadConfig,
    SamConfig,
    SasPConfig,
    TinyLlavaConfig,
    TinyQwenConfig,
    TinySam2Config,
    TinySamConfig,
    TrainConfig,
    VLMConfig,
)

__all__ = [
    "EVAL_DATASETS",
    "MIXTURE_KEYS",
    "SASP_PRESETS",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LoRAConfig",
    "LossConfig",
    "ModelConfig",
    "ReadConfig",
    "SamConfig",
    "SasPConfig",
    "TinyLlavaConfig",
    "TinyQwenConfig",
    "TinySam2Config",
    "TinySamConfig",
    "TrainConfig",
    "VLMConfig",
    "env_source",
    "from_dict",
    "load_config",
    "parse_overrides",
    "save_config",
    "to_dict",
    "validate",
]
