"""Samples -> :class:`Batch`: both image views, tokenised conversation rows, labels, masks, geometry."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from read.data.base import Sample
from read.data.conversation import build_prompt, tokenize_conversation, wrap_image_tokens
from read.data.transforms import preprocess_image
from read.data.types import Batch


def collate(
    samples: list[Sample],
    tokenizer,
    *,
    num_image_tokens: int,
    clip_size: int,
    sam_size: int,
    use_im_start_end: bool = True,
    conv_template: str = "llava_v1",
) -> Batch:
    """Preprocess images, build and tokenise prompts (right padding with ``tokenizer.pad_id``), stack.

    Returns a :class:`Batch` whose ``labels``/``gt_masks`` are set when every sample has masks.
    """
    clips, sams, hws, sam_hws, masks = [], [], [], [], []
    ids_rows: list[Tensor] = []
    label_rows: list[Tensor] = []
    row_to_image: list[int] = []
    for b, s in enumerate(samples):
        clip, sam, geom = preprocess_image(s.image, clip_size=clip_size, sam_size=sam_size)
        clips.append(clip)
        sams.append(sam)
        hws.append(geom.orig_hw)
        sam_hws.append(geom.sam_input_hw)
        for turns in s.conversations:
            turns = [(wrap_image_tokens(q, use_im_start_end), a) for q, a in turns]
            prompt = build_prompt(turns, template=conv_template)
            ids, labels = tokenize_conversation(tokenizer, prompt, num_image_tokens)
            ids_rows.append(ids)
            label_rows.append(labels)
            row_to_image.append(b)
        if s.masks is not None:
            masks.append(torch.from_numpy(np.ascontiguousarray(s.masks)))
    t = max(len(r) for r in ids_rows)
    pad = tokenizer.pad_id
    input_ids = torch.full((len(ids_rows), t), pad, dtype=torch.long)
    labels = torch.full((len(ids_rows), t), -100, dtype=torch.long)
    attn = torch.zeros((len(ids_rows), t), dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(ids_rows, label_rows, strict=True)):
        input_ids[i, : len(ids)] = ids
        labels[i, : len(lab)] = lab
        attn[i, : len(ids)] = 1
    has_masks = len(masks) == len(samples)
    return Batch(
        input_ids=input_ids,
        attention_mask=attn,
        pixel_values_clip=torch.stack(clips),
        pixel_values_sam=torch.stack(sams),
        row_to_image=torch.tensor(row_to_image, dtype=torch.long),
        image_hw=torch.tensor(hws, dtype=torch.long),
        sam_input_hw=torch.tensor(sam_hws, dtype=torch.long),
        labels=labels if has_masks else None,
        gt_masks=masks if has_masks else None,
    )
