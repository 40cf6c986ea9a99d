"""The trainable weights of a run: ``trainable.safetensors`` plus the ``base.json`` record of the frozen base.

A checkpoint directory (``<run>/checkpoints/step_XXXXXXXX``) holds every parameter with ``requires_grad`` (LoRA,
``embed_tokens``, ``lm_head``, the mask decoder, the [SEG] projection) by its name in ``ReadModel``, and the exact
digests of the base those weights belong to (:class:`read.model.fingerprint.BaseRecord`). Loading is strict: the
same names and shapes, and the same base, or an error naming the file and the first offending key or tensor.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from read.model.fingerprint import BaseRecord
from read.utils.run_dir import BASE_FILE, TRAINABLE_FILE, resolve_checkpoint
from read.utils.weights import CheckpointKeyError

__all__ = ["load_trainable", "read_base_record", "save_trainable", "trainable_state_dict"]


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """CPU copies of every parameter with ``requires_grad``, by name."""
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_trainable(directory: Path, model: nn.Module, base: BaseRecord) -> None:
    """Write ``trainable.safetensors`` and ``base.json`` into ``directory`` (which must exist)."""
    from safetensors.torch import save_file

    save_file(trainable_state_dict(model), str(Path(directory) / TRAINABLE_FILE))
    base.save(Path(directory) / BASE_FILE)


def read_base_record(checkpoint: Path) -> BaseRecord:
    """The ``base.json`` of a checkpoint directory.

    Raises:
        FileNotFoundError: the checkpoint has no base record (written by an older version, or not a checkpoint).
    """
    path = Path(checkpoint) / BASE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; a checkpoint records the exact base it was trained on and cannot be loaded without it"
        )
    return BaseRecord.load(path)


def load_trainable(model: nn.Module, path: str | Path, *, ours: BaseRecord | None = None) -> Path:
    """Strictly load a checkpoint's trainable weights into ``model`` after checking its base exactly.

    Args:
        path: a checkpoint directory, its ``trainable.safetensors``, or a run directory (latest checkpoint).
        ours: ``model``'s own base record, when already computed (otherwise the base is hashed now).

    Returns:
        The checkpoint directory that was loaded.

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (named).
        CheckpointKeyError: missing, unexpected or mis-shaped trainable tensors (named).
        read.model.fingerprint.BaseMismatchError: the model's frozen base differs (first tensor named).
    """
    from safetensors.torch import load_file

    ckpt = resolve_checkpoint(path)
    file = ckpt / TRAINABLE_FILE
    try:
        sd = load_file(str(file))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointKeyError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(sd))
    unexpected = sorted(set(sd) - set(params))
    shapes = sorted(n for n in set(sd) & set(params) if tuple(sd[n].shape) != tuple(params[n].shape))
    if missing or unexpected or shapes:
        raise CheckpointKeyError(
            f"{file}: trainable weights do not match the model: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), shape mismatches {shapes[:5]}"
        )
    read_base_record(ckpt).check(model, str(ckpt), ours=ours)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(sd[n].to(p.dtype))
    return ckpt
