"""Samples -> :class:`Batch` for Qwen2.5-VL: its image processor, the ChatML conversation and its labels.

Image: the Qwen2-VL image processor of transformers (``smart_resize`` to a multiple of 28 px between
``min_pixels`` and ``max_pixels``, CLIP mean/std, 14-px patches over two identical frames), giving each image's
flattened patches and its ``(1, h, w)`` patch grid; ``h * w / 4`` ``<|image_pad|>`` tokens stand for it.

Conversation (Qwen2.5-VL's chat template, the default system prompt)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n<|vision_start|><|image_pad|>...<|vision_end|>QUESTION<|im_end|>\\n
    <|im_start|>assistant\\nANSWER<|im_end|>\\n                                  (one block per round)

The ``<image>`` placeholder of READ's questions (with its newline) becomes the vision block. Labels: every answer
and its ``<|im_end|>`` (what Qwen2.5-VL's fine-tuning supervises), nothing else. A generation prompt ends with
``<|im_start|>assistant\\n``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from read.data.base import Sample
from read.data.collate import assemble_batch
from read.data.conversation import IGNORE_INDEX
from read.data.transforms import mask_input
from read.model.batch import Batch

__all__ = ["QWEN_SYSTEM", "QwenCollator", "QwenImageProcessor", "collate_qwen", "qwen_conversation"]

QWEN_SYSTEM = "You are a helpful assistant."


class QwenImageProcessor:
    """transformers' ``Qwen2VLImageProcessor`` with the pixel bounds of ``model.vlm`` (picklable, built lazily)."""

    def __init__(self, *, min_pixels: int, max_pixels: int, patch_size: int = 14, merge_size: int = 2) -> None:
        self.kw = dict(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size, merge_size=merge_size)
        self._proc = None

    def __getstate__(self) -> dict:
        return {"kw": self.kw, "_proc": None}

    def __call__(self, image: np.ndarray) -> tuple[Tensor, Tensor]:
        """RGB uint8 ``[H, W, 3]`` -> (``[h * w, 1176]`` patches, ``[3]`` grid ``(1, h, w)``)."""
        if self._proc is None:
            from transformers import Qwen2VLImageProcessor

            self._proc = Qwen2VLImageProcessor(**self.kw)
        out = self._proc(images=[image], return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"][0]


def qwen_conversation(tokenizer, turns: list[tuple[str, str | None]], num_image_tokens: int
                      ) -> tuple[Tensor, Tensor]:
    """Input ids and labels of one ChatML conversation row (see the module docstring).

    Args:
        tokenizer: :class:`read.model.qwen_tokenizer.QwenTokenizer`.
        turns: ``(question, answer)`` rounds; ``answer=None`` only for the last round (a generation prompt).
        num_image_tokens: ``<|image_pad|>`` tokens for the ``<image>`` of the first question.

    Returns:
        ``(input_ids, labels)``, both ``LongTensor[T]``.
    """
    vision = "<|vision_start|>" + "<|image_pad|>" * num_image_tokens + "<|vision_end|>"
    ids: list[int] = []
    labels: list[int] = []

    def add(text: str, supervised: bool) -> None:
        piece = tokenizer.encode(text)
        ids.extend(piece)
        labels.extend(piece if supervised else [IGNORE_INDEX] * len(piece))

    add(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n", False)
    for i, (question, answer) in enumerate(turns):
        q = question.replace("<image>\n", vision).replace("<image>", vision)
        add(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n", False)
        if answer is None:
            if i != len(turns) - 1:
                raise ValueError("only the last round of a conversation may have no answer")
            break
        add(f"{answer}<|im_end|>", True)
        add("\n", False)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


def collate_qwen(
    samples: list[Sample],
    tokenizer,
    *,
    images: QwenImageProcessor,
    sam_size: int,
    sam_frame: str = "square",
    max_length: int | None = None,
) -> Batch:
    """Preprocess images for Qwen2.5-VL and the mask decoder, build and tokenise ChatML rows, stack.

    ``max_length`` counts tokens after image expansion; a cut that would drop a ``[SEG]`` raises
    :class:`read.data.base.DataError` naming the sample (as :func:`read.data.collate.collate`).
    """
    patches, grids, sams, hws, sam_hws, n_tokens = [], [], [], [], [], []
    merge = int(images.kw["merge_size"])
    for s in samples:
        if s.image.ndim != 3 or s.image.shape[2] != 3 or s.image.dtype != np.uint8:
            raise ValueError(f"{s.name}: expected an RGB uint8 image [H, W, 3], got {s.image.dtype} {s.image.shape}")
        pix, grid = images(s.image)
        sam, sam_hw = mask_input(s.image, sam_size, sam_frame)
        patches.append(pix)
        grids.append(grid)
        sams.append(sam)
        hws.append((int(s.image.shape[0]), int(s.image.shape[1])))
        sam_hws.append(sam_hw)
        n_tokens.append(int(grid[1] // merge) * int(grid[2] // merge))
    return assemble_batch(samples, tokenizer, lambda b, turns: qwen_conversation(tokenizer, turns, n_tokens[b]),
                          max_length=max_length, pixel_values_vlm=torch.cat(patches, dim=0),
                          pixel_values_sam=torch.stack(sams), image_hw=hws, sam_input_hw=sam_hws,
                          image_grid_thw=torch.stack(grids).long())


class QwenCollator:
    """Picklable ``samples -> Batch`` for DataLoader workers (training and evaluation of a Qwen2.5-VL model)."""

    def __init__(self, tokenizer, *, min_pixels: int, max_pixels: int, patch_size: int, merge_size: int,
                 sam_size: int, sam_frame: str, max_length: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.images = QwenImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size,
                                         merge_size=merge_size)
        self.kw = dict(sam_size=sam_size, sam_frame=sam_frame, max_length=max_length)

    @classmethod
    def for_model(cls, tokenizer, model, vlm_cfg, *, max_length: int | None = None) -> QwenCollator:
        """The collator of a built Qwen2.5-VL ``ReadModel`` (patch and merge sizes from the model, pixel bounds from
        ``model.vlm``)."""
        vc = model.vlm.config.vision_config
        return cls(tokenizer, min_pixels=vlm_cfg.min_pixels, max_pixels=vlm_cfg.max_pixels,
                   patch_size=int(vc.patch_size), merge_size=int(vc.spatial_merge_size), sam_size=model.sam.img_size,
                   sam_frame=model.sam.frame, max_length=max_length)

    def __call__(self, samples: list[Sample]) -> Batch:
        return collate_qwen(samples, self.tokenizer, images=self.images, **self.kw)
