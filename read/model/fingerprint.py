"""Exact content fingerprints of model weights.

A run's checkpoint holds only the trainable tensors; the frozen *base* they were trained on (LLaMA, CLIP, the
projector, SAM's encoders, the q/v base weights under LoRA, ...) is rebuilt from the config and ``train.init``.
:class:`BaseRecord` stores a sha256 of every base tensor (dtype, shape and bytes), so loading can check that the
rebuilt base is *exactly* the one trained on, and name the first tensor that differs. The same digests identify
a whole model for evaluation records (:func:`model_digest`).

Cost: one pass of sha256 over the bytes, in up to 8 threads (hashlib runs outside the GIL), done once on the CPU
when a model is built, never per training step; ``scripts/bench_fingerprint.py`` measures it (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["BaseMismatchError", "BaseRecord", "base_record", "digest_of", "model_digest", "tensor_digest"]

FORMAT = "read-base"
VERSION = 1


class BaseMismatchError(RuntimeError):
    """The frozen weights of a model are not the ones a checkpoint was trained on (the message names them)."""


def tensor_digest(t: Tensor) -> str:
    """sha256 (hex) of a tensor's dtype, shape and bytes (moved to the CPU)."""
    x = t.detach()
    if x.device.type != "cpu":
        x = x.cpu()
    h = hashlib.sha256(f"{x.dtype}|{tuple(x.shape)}|".encode())
    if x.numel():
        h.update(x.contiguous().reshape(-1).view(torch.uint8).numpy())  # no copy; hashlib releases the GIL
    return h.hexdigest()


def _digests(tensors: Mapping[str, Tensor]) -> dict[str, str]:
    """:func:`tensor_digest` of every tensor, in a thread pool (sha256 runs outside the GIL)."""
    workers = max(1, min(8, os.cpu_count() or 1))
    if workers == 1 or len(tensors) < 2:
        return {n: tensor_digest(t) for n, t in tensors.items()}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(tensors, pool.map(tensor_digest, tensors.values()), strict=True))


def digest_of(digests: Mapping[str, str]) -> str:
    """One sha256 over ``name=digest`` lines, sorted by name."""
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(f"{name}={digests[name]}\n".encode())
    return h.hexdigest()


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@dataclass
class BaseRecord:
    """The frozen base of a model: per-tensor digests, their dtypes, and where the weights came from.

    Attributes:
        tensors: state-dict name -> :func:`tensor_digest` for every tensor that is not a trainable parameter
            (frozen parameters and persistent buffers).
        dtypes: name -> dtype string of those tensors (a model built in another precision is named as such).
        sources: provenance for messages only (``llava``, ``sam``, ``release``, ``seed``); never compared.
    """

    tensors: dict[str, str]
    dtypes: dict[str, str]
    sources: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return digest_of(self.tensors)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, "digest": self.digest, **asdict(self)}, indent=1)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> BaseRecord:
        """Read a ``base.json``; a malformed file is a ``ValueError`` naming it."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: unreadable base record ({type(e).__name__}: {e})") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("tensors"), dict):
            raise ValueError(f"{path}: not a {FORMAT} record")
        if int(data.get("version", 0)) > VERSION:
            raise ValueError(f"{path}: base record version {data['version']} is newer than this code ({VERSION})")
        return cls(tensors=dict(data["tensors"]), dtypes=dict(data.get("dtypes", {})), sources=data.get("sources", {}))

    def check(self, model: nn.Module, source: str, *, ours: BaseRecord | None = None) -> None:
        """Raise :class:`BaseMismatchError` unless ``model``'s base is exactly this one.

        Args:
            source: the checkpoint, for the message.
            ours: ``model``'s own record when already computed (skips hashing the model again).
        """
        mine = ours if ours is not None else base_record(model)
        if mine.tensors == self.tensors:
            return
        missing = sorted(set(self.tensors) - set(mine.tensors))
        extra = sorted(set(mine.tensors) - set(self.tensors))
        differ = sorted(n for n in set(self.tensors) & set(mine.tensors) if self.tensors[n] != mine.tensors[n])
        parts = []
        if differ:
            first = differ[0]
            dt = ""
            if self.dtypes.get(first) and mine.dtypes.get(first) and self.dtypes[first] != mine.dtypes[first]:
                dt = f" (trained in {self.dtypes[first]}, built now in {mine.dtypes[first]}: set model.vlm.dtype)"
            parts.append(f"{len(differ)} base tensors differ, first {first}{dt}")
        if missing:
            parts.append(f"{len(missing)} base tensors missing from the model, first {missing[0]}")
        if extra:
            parts.append(f"{len(extra)} base tensors not in the checkpoint's base, first {extra[0]}")
        raise BaseMismatchError(
            f"{source}: the model's frozen base is not the one these weights were trained on: {'; '.join(parts)}. "
            f"Trained on {_describe(self.sources)}; built now from {_describe(mine.sources)}"
        )


def _describe(sources: Mapping) -> str:
    keys = ("llava", "sam", "release", "seed")
    items = [f"{k}={sources[k]}" for k in keys if sources.get(k) is not None]
    return ", ".join(items) or "unknown sources"


@torch.no_grad()
def base_record(model: nn.Module, sources: Mapping | None = None) -> BaseRecord:
    """Digests of every state-dict tensor of ``model`` that is not a trainable parameter."""
    trainable = trainable_names(model)
    frozen = {n: t for n, t in model.state_dict().items() if n not in trainable}
    dtypes = {n: str(t.dtype).replace("torch.", "") for n, t in frozen.items()}
    return BaseRecord(tensors=_digests(frozen), dtypes=dtypes, sources=dict(sources or {}))


@torch.no_grad()
def model_digest(model: nn.Module, base: BaseRecord | None = None) -> str:
    """A digest of all weights of ``model`` (every state-dict tensor). With ``base`` (the model's own base
    record), only the trainable tensors are hashed now: cheap enough to call at every evaluation."""
    trainable = trainable_names(model)
    if base is None:
        base = base_record(model)
    digests = dict(base.tensors)
    digests.update(_digests({n: t for n, t in model.state_dict().items() if n in trainable}))
    return digest_of(digests)
