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


def get_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA if available, else MPS, else CPU; otherwise ``torch.device(name)``."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
