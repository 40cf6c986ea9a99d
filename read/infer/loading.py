"""Which config and which weights a path names, for :meth:`read.infer.ReadPipeline.from_pretrained`.

* a YAML config: the model it builds, with ``eval.weights`` when it names some (``configs/model/tiny.yaml`` runs
  without any weights);
* a run directory, a checkpoint inside one, or a standalone (merged) model: the ``config.yaml`` next to it (in the
  folder or up to two levels above: ``runs/x/checkpoints/step_00000080`` finds ``runs/x/config.yaml``);
* an official release folder (``config.json`` + ``pytorch_model*.bin``): ``configs/model/read_7b.yaml`` or
  ``read_13b.yaml`` by its ``hidden_size`` (4096 / 5120), its own tokenizer, no LoRA, SAM from the release. Give
  ``config=`` for anything else (a LISA/SESAME release with other SasP settings, a tiny test release); the
  release's tokenizer, no LoRA and no separate SAM checkpoint are applied to it too (:func:`release_overrides`).
"""

from __future__ import annotations

import json
from pathlib import Path

from read.config import ReadConfig, load_config
from read.model.rebuild import weights_kind

__all__ = ["RELEASE_CONFIGS", "resolve_model"]

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RELEASE_CONFIGS = {4096: "model/read_7b.yaml", 5120: "model/read_13b.yaml"}


def _find_config(path: Path) -> Path:
    start = path if path.is_dir() else path.parent
    for folder in (start, start.parent, start.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise FileNotFoundError(f"{path}: no config.yaml in it or in the two folders above it; pass config=")


def _release_config(path: Path, overrides: list[str]) -> ReadConfig:
    file = path / "config.json"
    try:
        hidden = int(json.loads(file.read_text())["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{file}: cannot read hidden_size ({exc}); pass config= for this release") from None
    name = RELEASE_CONFIGS.get(hidden)
    if name is None:
        raise ValueError(f"{file}: hidden_size {hidden} is neither READ-7B (4096) nor READ-13B (5120); pass config=")
    if not (CONFIGS / name).is_file():
        raise FileNotFoundError(f"{CONFIGS / name}: the bundled configs are not installed here; pass config=")
    return load_config(CONFIGS / name, [*release_overrides(path), *overrides])


def release_overrides(path: Path) -> list[str]:
    """What every release needs on top of a model config: its own tokenizer, no LoRA (releases are merged), SAM
    from the release (no separate SAM checkpoint), no gradient checkpointing."""
    return [f"model.vlm.tokenizer={path}", "model.vlm.gradient_checkpointing=false", "model.sam.checkpoint=null",
            "model.lora.enabled=false"]


def resolve_model(path: str | Path, config: str | Path | ReadConfig | None = None,
                  overrides: list[str] | tuple[str, ...] = ()) -> tuple[ReadConfig, Path | None]:
    """``(config, weights)`` for ``path`` (module docstring); ``weights`` is ``None`` for a config without any.

    Args:
        config: a YAML file or a :class:`ReadConfig` to use instead of the one found next to ``path``.
        overrides: ``key=value`` overrides applied to the config (not to a given :class:`ReadConfig`).

    Raises:
        FileNotFoundError: ``path`` does not exist or is none of the above (named).
    """
    p = Path(path).expanduser()
    overrides = list(overrides)
    if p.is_file() and p.suffix in (".yaml", ".yml"):
        cfg = load_config(p, overrides)
        return cfg, Path(cfg.eval.weights) if cfg.eval.weights else None
    kind = weights_kind(p)
    if isinstance(config, ReadConfig):
        return config, p
    if config is not None:
        base = release_overrides(p) if kind == "released" and p.is_dir() else []
        return load_config(config, [*base, *overrides]), p
    if kind == "released":
        if p.is_file():
            raise FileNotFoundError(f"{p}: a single-file official dump needs config= (the model it belongs to)")
        return _release_config(p, overrides), p
    return load_config(_find_config(p), overrides), p
