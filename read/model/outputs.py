"""Typed records passed between the model's parts (instead of tuples and raw dicts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class LossOutput:
    """Weighted loss parts of one micro-batch; ``total = ce + bce + dice`` (each already weighted)."""

    total: Tensor
    ce: Tensor
    bce: Tensor
    dice: Tensor
    num_masks: int

    def as_floats(self) -> dict[str, float]:
        """Detached Python floats for logging (one device-to-host transfer for the four values)."""
        keys = ("total", "ce", "bce", "dice")
        values = torch.stack([getattr(self, k).detach().float().reshape(()) for k in keys]).tolist()
        return dict(zip(keys, values, strict=True))


@dataclass
class SegQueries:
    """Where the [SEG] queries of a batch are.

    ``rows``/``cols``: ``[P]`` row and position (in the expanded sequence) of each query's hidden state, in
    row-major order (the official order). ``image``: ``[P]`` index of the image each query belongs to.
    """

    rows: Tensor
    cols: Tensor
    image: Tensor


@dataclass
class ReadOutput:
    """Result of ``ReadModel.forward``.

    ``pred_masks``: one ``[n_b, H_b, W_b]`` float32 logit tensor per image (original resolution), the queries of
    image b in row-major order. ``logits`` are the LM logits ``[R, T, V]`` (only when requested).
    ``points`` is the point prompter's output (``None`` when SasP is off).
    """

    loss: LossOutput | None
    pred_masks: list[Tensor]
    queries: SegQueries
    points: object | None = None
    logits: Tensor | None = None
    extras: dict = field(default_factory=dict)
