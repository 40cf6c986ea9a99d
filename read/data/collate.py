"""Samples -> :class:`Batch`: both image views, tokenised conversation rows, labels, masks, geometry."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from read.data.base import DataError, Sample
from read.data.conversation import build_prompt, tokenize_conversation, wrap_image_tokens
from read.data.transforms import preprocess_image
from read.model.batch import Batch


def collate(
    samples: list[Sample],
    tokenizer,
    *,
    num_image_tokens: int,
    clip_size: int,
    sam_size: int,
    use_im_start_end: bool = True,
    conv_template: str = "llava_v1",
    max_length: int | None = None,
    sam_frame: str = "longest_side",
) -> Batch:
    """Preprocess images, build and tokenise prompts (right padding with ``tokenizer.pad_id``), stack.

    ``max_length`` counts tokens *after* image expansion (the official ``model_max_length - 255`` assumed 256
    image tokens, spec 10.8). A longer row is cut at ``max_length`` unless the cut would remove a ``[SEG]``:
    that would silently misalign masks and queries, so it raises :class:`DataError` naming the sample instead.

    ``sam_frame``: the mask decoder's input frame (``longest_side``: SAM; ``square``: SAM 2).

    Returns a :class:`Batch` whose ``labels``/``gt_masks`` are set when every sample has masks.
    """
    clips, sams, hws, sam_hws = [], [], [], []
    for s in samples:
        clip, sam, geom = preprocess_image(s.image, clip_size=clip_size, sam_size=sam_size, sam_frame=sam_frame)
        clips.append(clip)
        sams.append(sam)
        hws.append(geom.orig_hw)
        sam_hws.append(geom.sam_input_hw)

    def tokenize(_b: int, turns: list) -> tuple[Tensor, Tensor]:
        turns = [(wrap_image_tokens(q, use_im_start_end), a) for q, a in turns]
        return tokenize_conversation(tokenizer, build_prompt(turns, template=conv_template), num_image_tokens)

    return assemble_batch(samples, tokenizer, tokenize, max_length=max_length, pixel_values_vlm=torch.stack(clips),
                          pixel_values_sam=torch.stack(sams), image_hw=hws, sam_input_hw=sam_hws)


def assemble_batch(samples: list[Sample], tokenizer, tokenize, *, max_length: int | None, pixel_values_vlm: Tensor,
                   pixel_values_sam: Tensor, image_hw: list, sam_input_hw: list,
                   image_grid_thw: Tensor | None = None) -> Batch:
    """The rows of every sample's conversations (``tokenize(image index, turns) -> (ids, labels)``), cut at
    ``max_length`` unless a ``[SEG]`` would be lost, right-padded, with the preprocessed images, sizes and masks.

    Returns a :class:`Batch` whose ``labels``/``gt_masks`` are set when every sample has masks."""
    ids_rows: list[Tensor] = []
    label_rows: list[Tensor] = []
    row_to_image: list[int] = []
    masks = []
    for b, s in enumerate(samples):
        for turns in s.conversations:
            ids, labels = tokenize(b, turns)
            if max_length is not None and len(ids) > max_length:
                ids, labels = truncate_keeping_seg(ids, labels, max_length, tokenizer.seg_token_id, s.name)
            ids_rows.append(ids)
            label_rows.append(labels)
            row_to_image.append(b)
        if s.masks is not None:
            masks.append(torch.from_numpy(np.ascontiguousarray(s.masks)))
    input_ids, labels, attn = stack_rows(ids_rows, label_rows, tokenizer.pad_id)
    has_masks = len(masks) == len(samples)
    return Batch(
        input_ids=input_ids,
        attention_mask=attn,
        pixel_values_clip=pixel_values_vlm,
        pixel_values_sam=pixel_values_sam,
        row_to_image=torch.tensor(row_to_image, dtype=torch.long),
        image_hw=torch.tensor(image_hw, dtype=torch.long),
        sam_input_hw=torch.tensor(sam_input_hw, dtype=torch.long),
        labels=labels if has_masks else None,
        gt_masks=masks if has_masks else None,
        image_grid_thw=image_grid_thw,
    )


def stack_rows(ids_rows: list[Tensor], label_rows: list[Tensor], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-pad ``[T_r]`` rows into ``(input_ids, labels, attention_mask)``, each ``[R, max T_r]`` (pad ``pad_id``,
    label -100, mask 0)."""
    t = max(len(r) for r in ids_rows)
    input_ids = torch.full((len(ids_rows), t), pad_id, dtype=torch.long)
    labels = torch.full((len(ids_rows), t), -100, dtype=torch.long)
    attn = torch.zeros((len(ids_rows), t), dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(ids_rows, label_rows, strict=True)):
        input_ids[i, : len(ids)] = ids
        labels[i, : len(lab)] = lab
        attn[i, : len(ids)] = 1
    return input_ids, labels, attn


def truncate_keeping_seg(
    ids: Tensor, labels: Tensor, max_length: int, seg_token_id: int, name: str = ""
) -> tuple[Tensor, Tensor]:
    """Cut ``[T]`` ids/labels to ``max_length``; refuse (DataError) when a ``[SEG]`` would be cut off."""
    seg_pos = (ids == seg_token_id).nonzero(as_tuple=True)[0]
    if seg_pos.numel() and int(seg_pos.max()) >= max_length:
        raise DataError(
            f"{name or '<sample>'}: a [SEG] at position {int(seg_pos.max())} lies beyond max_length={max_length}; "
            "shorten the query or raise model.vlm.model_max_length"
        )
    return ids[:max_length], labels[:max_length]
