"""Reading engine state without unpickling arbitrary objects.

``torch.load(weights_only=True)`` only rebuilds tensors, primitive containers and an explicit allowlist of
classes, so a pickle planted in a run folder cannot execute code when training resumes. Our own engine files
(``torch_engine.pt``) need no allowlist. DeepSpeed's ZeRO checkpoints hold four small DeepSpeed classes besides
tensors (measured with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on fp32, bf16 and fp16 ZeRO-2
checkpoints of deepspeed 0.19): they are allowlisted by name, and DeepSpeed's own loader (which calls
``torch.load`` with ``weights_only`` off) is replaced on the engine by :func:`install_safe_deepspeed_loader`.
"""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path

import torch

__all__ = ["DEEPSPEED_SAFE_GLOBALS", "UnsafeCheckpointError", "install_safe_deepspeed_loader", "safe_torch_load"]

DEEPSPEED_SAFE_GLOBALS: tuple[str, ...] = (
    "deepspeed.runtime.zero.config.ZeroStageEnum",  # an int Enum
    "deepspeed.utils.tensor_fragment.fragment_address",  # a dataclass (numel, start)
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",  # plain attribute holders (no __setstate__)
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
)
"""Classes a DeepSpeed engine checkpoint may name; any other global is refused."""


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file names a class or function outside the allowlist (it could run code)."""


def _resolve(qualname: str) -> object:
    module, _, name = qualname.rpartition(".")
    return getattr(importlib.import_module(module), name)


def safe_torch_load(path: str | Path, map_location=None, allowed: tuple[str, ...] = ()) -> object:  # noqa: ANN001
    """``torch.load(path, weights_only=True)`` with ``allowed`` classes (qualified names) added.

    Raises:
        UnsafeCheckpointError: the file needs another global (named) or is not a torch checkpoint.
    """
    classes = [_resolve(q) for q in allowed]
    try:
        with torch.serialization.safe_globals(classes):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as e:
        found = re.search(r"(?:Unsupported global|GLOBAL)[: ]+(?:GLOBAL )?([\w.]+)", str(e))
        what = f"it names {found.group(1)}" if found else f"{type(e).__name__}: {str(e).splitlines()[0]}"
        raise UnsafeCheckpointError(
            f"{path}: refused to load ({what}); checkpoint files are read with weights_only=True and may only "
            "hold tensors, plain containers and an allowlist of classes"
        ) from None


def install_safe_deepspeed_loader(ds_engine) -> None:  # noqa: ANN001 - deepspeed.DeepSpeedEngine
    """Make ``ds_engine.load_checkpoint`` read every file with :func:`safe_torch_load` and the DeepSpeed allowlist
    (instead of DeepSpeed's ``torch.load`` with ``weights_only`` off)."""
    ce = getattr(ds_engine, "checkpoint_engine", None)
    if ce is None or not hasattr(ce, "load"):
        raise RuntimeError("this DeepSpeed version has no engine.checkpoint_engine.load to secure")

    def load(path, map_location=None):  # noqa: ANN001, ANN202 - DeepSpeed's signature
        return safe_torch_load(path, map_location, DEEPSPEED_SAFE_GLOBALS)

    ce.load = load
