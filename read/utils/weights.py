"""Strict weight loading with errors that name the file and the offending keys."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn


class CheckpointKeyError(RuntimeError):
    """Missing or unexpected keys (or shape mismatches) when loading a checkpoint strictly."""


def _preview(keys: list[str], n: int = 8) -> str:
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state_dict_strict(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    source: str,
    *,
    allow_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
) -> None:
    """Load ``state_dict`` into ``module``; any missing/unexpected key not explicitly allowed is an error.

    Args:
        source: file or description used in error messages.
        allow_missing / allow_unexpected: key prefixes that may be absent / extra.
    """
    allow_missing = tuple(allow_missing)
    allow_unexpected = tuple(allow_unexpected)
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state_dict and not k.startswith(allow_missing))
    unexpected = sorted(k for k in state_dict if k not in own and not k.startswith(allow_unexpected))
    shape_bad = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_preview(unexpected)}")
    if shape_bad:
        problems.append(f"{len(shape_bad)} shape mismatches: {_preview(shape_bad)}")
    if problems:
        raise CheckpointKeyError(f"{source}: wrong checkpoint keys for {type(module).__name__}: " + "; ".join(problems))
    filtered = {k: v for k, v in state_dict.items() if k in own}
    module.load_state_dict(filtered, strict=False)


def load_torch_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a ``.pth``/``.bin`` (``weights_only=True``) or ``.safetensors`` state dict, with a clear error.

    Both are memory-mapped: tensor data is read from the file when it is used (copied into the model), not when
    the file is opened, and the pages are shared by every process on the node that reads the same file. A 7B
    release therefore costs no private host RAM per rank (``torch.load(mmap=True)``; files written by
    torch < 1.6, which are not zip archives, cannot be mapped and are read whole).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))  # safetensors maps the file itself
        else:
            try:
                sd = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "zipfile" not in str(e) and "mmap" not in str(e):
                    raise
                sd = torch.load(p, map_location="cpu", weights_only=True)  # legacy (pre-zip) format
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise RuntimeError(f"{p}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise RuntimeError(f"{p}: not a flat state dict of tensors")
    return sd
