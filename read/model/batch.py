"""Batch record shared by the data pipeline, the model and the trainer.

It lives in the model layer because the model consumes it and must never import ``read.data``; the data pipeline
(``read.data.collate``) builds it.

Shape shorthand: R conversation rows, T tokens, B images, S_c CLIP side, S SAM side, n_b masks of image b.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class Batch:
    """One micro-batch.

    Attributes:
        input_ids: ``[R, T]`` with the image placeholder expanded to N image-token ids.
        attention_mask: ``[R, T]`` (1 = token, 0 = padding).
        labels: ``[R, T]`` with -100 where not supervised, or ``None`` (inference).
        pixel_values_clip: the vision-language model's pixels: LLaVA ``[B, 3, S_c, S_c]`` CLIP-normalised centre
            crops; Qwen2.5-VL ``[sum of patches, 1176]`` flattened patches of every image (with ``image_grid_thw``).
        pixel_values_sam: ``[B, 3, S, S]`` SAM-normalised, resized-longest-side, zero-padded images.
        row_to_image: ``[R]`` long, image index of each row (replaces the official ``offset``).
        image_hw: ``[B, 2]`` long, original (H, W).
        sam_input_hw: ``[B, 2]`` long, (h', w') after resize-longest-side, before padding.
        gt_masks: per image ``[n_b, H_b, W_b]`` uint8/long with values {0, 1, 255}; ``None`` at inference.
            The j-th mask of image b belongs to the j-th [SEG] of that image's rows in row-major order.
        image_grid_thw: ``[B, 3]`` long (Qwen2.5-VL): each image's patch grid (t, h, w); ``None`` for LLaVA.
    """

    input_ids: Tensor
    attention_mask: Tensor
    pixel_values_clip: Tensor
    pixel_values_sam: Tensor
    row_to_image: Tensor
    image_hw: Tensor
    sam_input_hw: Tensor
    labels: Tensor | None = None
    gt_masks: list[Tensor] | None = None
    image_grid_thw: Tensor | None = None

    @property
    def num_images(self) -> int:
        return int(self.pixel_values_sam.shape[0])

    def map_tensors(self, fn) -> Batch:  # noqa: ANN001 - fn(field name, tensor) -> tensor
        """A copy with ``fn(field_name, tensor)`` applied to every tensor (also those in lists)."""
        changes = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                changes[f.name] = fn(f.name, v)
            elif isinstance(v, list):
                changes[f.name] = [fn(f.name, t) for t in v]
        return replace(self, **changes)

    def pin_memory(self) -> Batch:
        """Every tensor in page-locked host memory (the DataLoader's ``pin_memory`` hook), so the copy to the GPU can
        run without blocking (:meth:`to` with ``non_blocking=True``)."""
        return self.map_tensors(lambda _, t: t.pin_memory())

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None, *, non_blocking: bool = False
           ) -> Batch:
        """Move every tensor to ``device``; cast only the two image tensors to ``dtype`` when given.

        The cast happens after the move, so with ``non_blocking`` (pinned host tensors) every copy is asynchronous
        (casting first would copy an unpinned temporary and block)."""

        def move(name: str, t: Tensor) -> Tensor:
            t = t.to(device, non_blocking=non_blocking)
            return t.to(dtype) if dtype is not None and name.startswith("pixel_values") else t

        return self.map_tensors(move)
