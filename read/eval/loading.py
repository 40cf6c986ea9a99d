"""Load the weights an evaluation names: one of our runs/checkpoints, a converted model, or an official release."""

from __future__ import annotations

from pathlib import Path

from read.utils.logging import get_logger

log = get_logger()


def weights_kind(path: Path) -> str:
    """``trainable`` (our run / checkpoint), ``full`` (converted model dir) or ``released`` (official folder)."""
    if path.is_file():
        return "trainable" if path.name == "trainable.safetensors" else "full"
    if (path / "trainable.safetensors").is_file() or (path / "checkpoints").is_dir() or path.name == "checkpoints":
        return "trainable"
    if (path / "model.safetensors").is_file() and (path / "config.yaml").is_file():
        return "full"
    if (path / "config.json").is_file() or any(path.glob("pytorch_model*.bin")) or any(path.glob("model*.safetensors")):
        return "released"
    raise FileNotFoundError(f"{path}: not a run, checkpoint, converted model or released checkpoint folder")


def load_weights(model, tokenizer, path: str | Path | None) -> Path | None:
    """Load ``path`` into ``model`` strictly; returns the file/folder actually read (for the results' hash)."""
    if path is None:
        log.warning("no eval.weights given: evaluating the weights the config builds (base model)")
        return None
    path = Path(path)
    kind = weights_kind(path)
    if kind == "trainable":
        from read.train.checkpoint import load_trainable

        loaded = load_trainable(model, path)
        log.info("loaded trainable weights from %s", loaded)
        return loaded
    if kind == "full":
        from safetensors.torch import load_file

        from read.utils.weights import load_state_dict_strict

        file = path if path.is_file() else path / "model.safetensors"
        load_state_dict_strict(model, load_file(str(file)), str(file))
        log.info("loaded the full model from %s", file)
        return file
    from read.model.convert import load_released_checkpoint

    report = load_released_checkpoint(model, tokenizer, path)
    log.info("loaded the released checkpoint %s: %s", path, report)
    return path


def build_and_load(cfg, weights: str | Path | None):
    """Build the model ``cfg`` describes and load ``weights`` into it (see :func:`load_weights`).

    The seed is set to ``cfg.train.seed`` first, so the frozen parts of a random-init (tiny) base are rebuilt
    exactly as in training (the trainable checkpoint's base fingerprint checks this).

    Returns:
        ``(model, tokenizer, loaded)``: ``loaded`` is the file/folder actually read, or ``None``.
    """
    from read.model.builder import build_read_model
    from read.utils.device import seed_everything

    seed_everything(cfg.train.seed)
    model, tokenizer = build_read_model(cfg)
    return model, tokenizer, load_weights(model, tokenizer, weights)
