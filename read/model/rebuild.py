"""One way to rebuild a run's model, used by training, evaluation, merge and everything after them.

A model is always: the architecture and base weights the config builds (``build_read_model``, seeded with
``train.seed`` so random tiny parts are reproduced), then the official release its base comes from (``train.init:
released`` names it; otherwise the ``base.json`` of the checkpoint being loaded, or of the ``train.init: checkpoint``
source, records it), then the weights asked for:

* ``trainable``: one of our checkpoints or run directories. Its ``base.json`` must equal the rebuilt base exactly
  (:class:`read.model.fingerprint.BaseRecord`), so trainable weights can never be combined with another base;
* ``full``: a standalone model (``model.safetensors`` + ``config.yaml``, e.g. from ``scripts/merge_lora.py``);
* ``released``: an official READ / SESAME / LISA folder (``read.model.convert``);
* nothing: the model as ``train.init`` leaves it (training starts here).

Full and released weights replace every tensor except CLIP, so ``train.init`` is not applied before them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from read.config import ReadConfig
from read.model.fingerprint import BaseRecord, base_record, model_digest
from read.model.run_weights import load_trainable, read_base_record
from read.utils.device import seed_everything
from read.utils.run_dir import TRAINABLE_FILE, resolve_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from read.model.read_model import ReadModel
    from read.model.tokenizer import ReadTokenizer

__all__ = ["BuiltModel", "build_for_training", "check_paths", "init_release", "rebuild", "weights_kind"]

WeightsKind = Literal["trainable", "full", "released", "built"]


@dataclass
class BuiltModel:
    """A rebuilt model (on the CPU) and what was loaded into it.

    Attributes:
        base: the model's own base record (digests of every tensor that is not trainable).
        weights: the checkpoint directory, model file or release folder that was loaded (``None``: as built).
        kind: ``trainable``, ``full``, ``released`` or ``built``.
        digest: digest of all weights now in the model (evaluation outputs are keyed by it).
        release: the release folder that provided the base (``train.init``), if any.
    """

    model: ReadModel
    tokenizer: ReadTokenizer
    base: BaseRecord
    weights: Path | None
    kind: WeightsKind
    digest: str
    release: Path | None = None


def weights_kind(path: Path) -> WeightsKind:
    """``trainable`` (our run / checkpoint), ``full`` (standalone model) or ``released`` (official folder).

    Raises:
        FileNotFoundError: the path does not exist or holds none of these (named).
    """
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        if path.name == TRAINABLE_FILE:
            return "trainable"
        # model.safetensors of a standalone model (merge_lora.py, convert_released_ckpt.py); an official dump
        # (``zero_to_fp32.py`` output such as GSVA's ``gsva-7b-ft-gres.bin``) is loaded as a release
        return "full" if path.suffix == ".safetensors" else "released"
    if (path / TRAINABLE_FILE).is_file() or (path / "checkpoints").is_dir() or path.name == "checkpoints":
        return "trainable"
    if (path / "model.safetensors").is_file() and (path / "config.yaml").is_file():
        return "full"
    if (path / "config.json").is_file() or any(path.glob("pytorch_model*.bin")) or any(path.glob("model*.safetensors")):
        return "released"
    raise FileNotFoundError(f"{path}: not a run, checkpoint, standalone model or released checkpoint folder")


def _existing(path: str | Path | None, key: str) -> Path:
    if not path:
        raise FileNotFoundError(f"{key} is not set")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{key}: {p} does not exist")
    return p


def init_release(cfg: ReadConfig, checkpoint: Path | None = None) -> Path | None:
    """The official release folder whose weights form the base, if any.

    ``train.init: released`` names it (``train.init_checkpoint``). Otherwise the base record of a checkpoint says
    which release its base came from: the checkpoint being loaded (``checkpoint``), or, for ``train.init:
    checkpoint``, the source checkpoint (a fine-tune of a fine-tune of SESAME still sits on SESAME's frozen weights).
    Reading the loaded checkpoint's own record means a stage-2 run stays loadable after stage 1 is deleted.

    Raises:
        FileNotFoundError: the release (or the source checkpoint) no longer exists; the message says how to
            point at a moved release.
    """
    t = cfg.train
    if t.init == "released":
        return _existing(t.init_checkpoint, "train.init_checkpoint")
    if checkpoint is None and t.init == "checkpoint":
        checkpoint = resolve_checkpoint(_existing(t.init_checkpoint, "train.init_checkpoint"))
    if checkpoint is None:
        return None
    release = read_base_record(checkpoint).sources.get("release")
    if not release:
        return None
    if not Path(release).exists():
        raise FileNotFoundError(
            f"{checkpoint}/base.json: the release this checkpoint's base came from, {release}, does not exist; "
            "if it moved, pass train.init=released train.init_checkpoint=<its new folder>"
        )
    return Path(release)


def _sources(cfg: ReadConfig, release: Path | None) -> dict:
    m = cfg.model
    return {
        "llava": m.vlm.pretrained or f"random tiny LLaVA (seed {cfg.train.seed})",
        "sam": m.sam.checkpoint or f"random {'SAM 2' if m.sam.kind == 'sam2' else 'SAM'} {m.sam.variant} "
               f"(seed {cfg.train.seed})",
        "release": str(release) if release is not None else None,
        "seed": cfg.train.seed,
    }


def _build(cfg: ReadConfig, device: torch.device | None):
    from read.model.builder import build_read_model

    seed_everything(cfg.train.seed)
    return build_read_model(cfg, device=device)


def _build_base(cfg: ReadConfig, checkpoint: Path | None = None, device: torch.device | None = None
                ) -> tuple[ReadModel, ReadTokenizer, Path | None, BaseRecord]:
    from read.model.convert import load_released_checkpoint

    release = init_release(cfg, checkpoint)
    model, tokenizer = _build(cfg, device)
    if release is not None:
        load_released_checkpoint(model, tokenizer, release)
    return model, tokenizer, release, base_record(model, _sources(cfg, release))


def build_for_training(cfg: ReadConfig, device: torch.device | None = None) -> BuiltModel:
    """The model a run with ``cfg`` starts from: built, ``train.init`` applied (a ``checkpoint`` init is loaded
    strictly, its base checked exactly). ``device``: where to build it (see ``build_read_model``)."""
    model, tokenizer, release, base = _build_base(cfg, None, device)
    weights = None
    kind: WeightsKind = "built"
    if cfg.train.init == "checkpoint":
        weights = load_trainable(model, cfg.train.init_checkpoint, ours=base)
        kind = "trainable"
    return BuiltModel(model, tokenizer, base, weights, kind, model_digest(model, base), release)


def rebuild(cfg: ReadConfig, weights: str | Path | None, device: torch.device | None = None) -> BuiltModel:
    """Rebuild the model ``cfg`` describes with ``weights`` loaded strictly (see the module docstring), on
    ``device`` (default: the CPU; building on the GPU keeps the weights out of host memory).

    Raises:
        FileNotFoundError: ``weights`` or a path the config names does not exist (named).
        read.utils.weights.CheckpointKeyError / read.model.fingerprint.BaseMismatchError: weights that do not
            fit the model or its base (the first offending key or tensor is named).
    """
    if weights is None:
        return build_for_training(cfg, device)
    path = Path(weights)
    kind = weights_kind(path)
    if kind == "trainable":
        model, tokenizer, release, base = _build_base(cfg, resolve_checkpoint(path), device)
        loaded = load_trainable(model, path, ours=base)
        return BuiltModel(model, tokenizer, base, loaded, kind, model_digest(model, base), release)
    model, tokenizer = _build(cfg, device)
    if kind == "full":
        from safetensors.torch import load_file

        from read.utils.weights import load_state_dict_strict

        file = path if path.is_file() else path / "model.safetensors"
        load_state_dict_strict(model, load_file(str(file)), str(file))
        loaded = file
    else:
        from read.model.convert import load_released_checkpoint

        load_released_checkpoint(model, tokenizer, path)
        loaded = path
    base = base_record(model, {**_sources(cfg, None), "weights": str(loaded)})
    return BuiltModel(model, tokenizer, base, loaded, kind, model_digest(model, base))


def _looks_local(value: str) -> bool:
    """A path rather than a hub id (``org/name``): starts with ``.``, ``/`` or ``~``, or has several ``/``."""
    return value.startswith((".", "/", "~")) or "\\" in value or value.count("/") > 1


def check_paths(cfg: ReadConfig, weights: str | Path | None = None, *, weights_key: str = "eval.weights") -> None:
    """Fail before building anything when a path the config names does not exist (all of them in one message,
    naming the key and, for ``${env:VAR,default}`` values, the variable). Hub ids are not checked here.

    Raises:
        FileNotFoundError: one or more paths are missing.
    """
    from read.config import env_source

    problems: list[str] = []

    def need(key: str, value: str | Path | None, *, always: bool = True) -> None:
        if value is None or value == "":
            return
        text = str(value)
        if (always or _looks_local(text)) and not Path(text).expanduser().exists():
            problems.append(f"{key}: {text} does not exist{env_source(cfg, key)}")

    need(weights_key, weights)
    # a checkpoint init only matters before training: loading weights reads the base from their own record
    if cfg.train.init == "released" or (cfg.train.init == "checkpoint" and weights is None):
        need("train.init_checkpoint", cfg.train.init_checkpoint)
    need("model.sam.checkpoint", cfg.model.sam.checkpoint, always=cfg.model.sam.kind == "sam")  # SAM 2: hub id or dir
    need("model.vlm.tokenizer", cfg.model.vlm.tokenizer, always=False)
    need("model.vlm.pretrained", cfg.model.vlm.pretrained, always=False)
    if problems:
        raise FileNotFoundError("; ".join(problems))
