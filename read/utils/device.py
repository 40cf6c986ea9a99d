"""Device, dtype and seeding helpers. The caller picks the device; the library never hard-codes CUDA calls."""

from __future__ import annotations

import random

import numpy as np
import torch

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    """``"fp32" | "bf16" | "fp16"`` -> torch dtype."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (expected one of {sorted(DTYPES)})") from None


def _mps_or_cpu() -> torch.device:
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def get_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA if available, else MPS, else CPU; otherwise ``torch.device(name)``.

    Process-agnostic (``cuda`` means the current CUDA device): a launcher's rank must use :func:`resolve_device`.
    """
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return _mps_or_cpu()


def resolve_device(name: str, local_rank: int, *, cuda_available: bool | None = None,
                   device_count: int | None = None) -> torch.device:
    """The device of the process with local rank ``local_rank`` (``LOCAL_RANK``, 0 for a plain process).

    * ``auto``: ``cuda:LOCAL_RANK`` when CUDA is available, else MPS when available, else CPU;
    * ``cuda`` (no index): ``cuda:LOCAL_RANK``, so each rank of a node gets its own GPU;
    * ``cuda:K``: kept as given (every rank on GPU K: for one process, or when the launcher already restricted each
      process to one GPU);
    * anything else (``cpu``, ``mps``, ...): ``torch.device(name)``.

    A local rank with no GPU of its own (``LOCAL_RANK >= device_count``), ``cuda`` without CUDA and an index past
    the visible devices are a ``ValueError`` naming the ``device`` setting. ``cuda_available`` and ``device_count``
    default to what torch sees (given explicitly by tests).
    """
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if name == "auto" and not cuda_available:
        return _mps_or_cpu()
    dev = torch.device("cuda" if name == "auto" else name)
    if dev.type != "cuda":
        return dev
    if not cuda_available:
        raise ValueError(f"device: {name} but torch sees no CUDA device (torch.cuda.is_available() is False); "
                         "use device: auto or device: cpu")
    if device_count is None:
        device_count = torch.cuda.device_count()
    if dev.index is not None:
        if dev.index >= device_count:
            raise ValueError(f"device: {name} but only {device_count} CUDA device(s) are visible on this node "
                             "(check CUDA_VISIBLE_DEVICES)")
        return dev
    if local_rank < 0:
        raise ValueError(f"LOCAL_RANK={local_rank} is negative; device: {name} needs a rank >= 0")
    if local_rank >= device_count:
        raise ValueError(f"device: {name} puts this process on cuda:{local_rank} (LOCAL_RANK={local_rank}), but only "
                         f"{device_count} CUDA device(s) are visible on this node: start at most {device_count} "
                         "process(es) per node (--num_gpus / hostfile slots), or check CUDA_VISIBLE_DEVICES")
    return torch.device("cuda", local_rank)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
