"""What every dataset returns, and the small contract datasets follow.

A dataset object has:
* ``name``: its registry name (``reason_seg``, ``refcoco``, ``ade20k``, ...);
* ``__len__``: number of deterministic items (images, or (image, query) pairs for evaluation sets);
* ``__getitem__(i) -> Sample``: deterministic item ``i`` (evaluation, ``check_data``);
* ``sample(rng) -> Sample``: one *training* draw with the official random behaviour (random image, random
  classes/queries, random templates), all randomness taken from ``rng`` so the mixture can make it depend on
  (seed, epoch, rank, index) only.

Masks keep the source's ignore label 255 wherever the annotation has one; the loss decides what ignore pixels
mean (``loss.ignore_mode``; official training: background).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class DataError(ValueError):
    """Bad input data. The message always names the file and the problem."""


@dataclass
class Sample:
    """One image with its conversations.

    Attributes:
        image: RGB uint8 ``[H, W, 3]``.
        conversations: one entry per conversation row, each a list of (question, answer) rounds. The first
            question contains ``<image>`` (official templates start with ``"<image>\\n"``). An answer may be
            ``None`` for generation prompts (the prompt then ends with ``"ASSISTANT:"``).
        masks: ``[n, H, W]`` uint8 with values {0, 1, 255}, one per ``[SEG]`` in the answers in row-major order
            (``n`` may be 0: VQA, false premises). ``None`` when the sample has no mask supervision at all.
        exists: per conversation row, whether the queried target is present (FP / R-RefCOCO); for GSVA-style
            samples and gRefCOCO, per answer slot (expression) instead.
        name: identifier used in errors and logs (usually the image path).
        meta: free-form extras (dataset, split, ids, is_sentence, query kind, ...).
    """

    image: np.ndarray
    conversations: list[list[tuple[str, str | None]]]
    masks: np.ndarray | None = None
    exists: list[bool] | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise :class:`DataError` when the image, masks and answers disagree."""
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise DataError(f"{self.name}: image must be RGB uint8 [H, W, 3], got {self.image.dtype} {self.image.shape}")
        if self.masks is None:
            return
        h, w = self.image.shape[:2]
        if self.masks.ndim != 3 or self.masks.shape[1:] != (h, w):
            raise DataError(f"{self.name}: masks {self.masks.shape} do not match the image size {(h, w)}")
        n_seg = sum((a or "").count("[SEG]") for conv in self.conversations for _, a in conv)
        if n_seg != self.masks.shape[0]:
            raise DataError(f"{self.name}: {n_seg} [SEG] in the answers but {self.masks.shape[0]} masks")


class SegDataset(Protocol):
    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def sample(self, rng: np.random.Generator) -> Sample: ...



def check_index(index: int, n: int, name: str, unit: str = "items") -> int:
    """``index`` into ``n`` items as a list takes it (negative counts from the end), made non-negative."""
    if not -n <= index < n:
        raise IndexError(f"{name}: index {index} out of range for {n} {unit}")
    return index % n


def locate_in_concat(offsets: np.ndarray, index: int) -> tuple[int, int]:
    """(part, local index) of non-negative global ``index`` in parts laid end to end.

    ``offsets`` is ``cumsum([0] + part_lengths)``.
    """
    k = int(np.searchsorted(offsets, index, side="right") - 1)
    return k, index - int(offsets[k])
