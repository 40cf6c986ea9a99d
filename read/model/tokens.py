"""Token-position rules: where the [SEG] query state is read, and where the image tokens are.

Official rule (spec 1.7, inherited from LISA, see LISA issue #71 "we need a one-token offset"): the
"[SEG] embedding" is the last-layer, post-norm hidden state at the position *before* the [SEG] token, i.e. the
state that predicts [SEG]. With transformers' native LLaVA the image placeholder is already expanded in
``input_ids``, so hidden states align 1:1 with ids and no "num_patches - 1" padding hack is needed:
``mask[:, :-1] = input_ids[:, 1:] == seg_id``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def seg_query_mask(input_ids: Tensor, seg_token_id: int, mode: Literal["before", "on"] = "before") -> Tensor:
    """Boolean mask of the positions whose hidden state is used as a [SEG] query.

    Args:
        input_ids: ``[R, T]`` token ids (image placeholder already expanded).
        seg_token_id: id of the [SEG] token.
        mode: ``before`` (official): position j is selected when token j+1 is [SEG]. ``on``: [SEG] itself.

    Returns:
        ``[R, T]`` bool. For ``before``, the last column is always False.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [R, T], got shape {tuple(input_ids.shape)}")
    is_seg = input_ids == seg_token_id
    if mode == "on":
        return is_seg
    if mode != "before":
        raise ValueError(f"unknown seg query mode {mode!r} (expected 'before' or 'on')")
    mask = torch.zeros_like(is_seg)
    mask[:, :-1] = is_seg[:, 1:]
    return mask


def seg_query_positions(
    input_ids: Tensor, seg_token_id: int, mode: Literal["before", "on"] = "before"
) -> tuple[Tensor, Tensor]:
    """``(rows, cols)``, each ``[P]``, of the query states in row-major order (row, then position)."""
    rows, cols = seg_query_mask(input_ids, seg_token_id, mode).nonzero(as_tuple=True)
    return rows, cols


def gather_image_states(
    hidden: Tensor, input_ids: Tensor, rows: Tensor, image_token_id: int
) -> Tensor:
    """Image-token hidden states of the given rows.

    Args:
        hidden: ``[R, T, C]`` last-layer states.
        input_ids: ``[R, T]``.
        rows: ``[P]`` row index of each query.
        image_token_id: id of the (expanded) image token.

    Returns:
        ``[P, N, C]`` with N the number of image tokens per row, in sequence (= row-major patch) order.

    Raises:
        ValueError: when the selected rows do not all hold the same positive number of image tokens.
    """
    if rows.numel() == 0:
        return hidden.new_zeros(0, 0, hidden.shape[-1])
    ids = input_ids[rows]
    is_img = ids == image_token_id
    counts = is_img.sum(1)
    n = int(counts[0])
    if n == 0 or bool((counts != n).any()):
        raise ValueError(
            f"every row with a [SEG] needs the same number of image tokens; got counts {counts.tolist()}"
        )
    return hidden[rows][is_img].view(rows.numel(), n, hidden.shape[-1])


def gather_image_states_padded(
    hidden: Tensor, input_ids: Tensor, rows: Tensor, image_token_id: int
) -> tuple[Tensor, Tensor]:
    """Image-token hidden states of the given rows when rows may hold different numbers of image tokens (one image
    each, of any grid: dynamic-resolution VLMs).

    Args:
        hidden: ``[R, T, C]``; input_ids: ``[R, T]``; rows: ``[P]``; image_token_id: the image token's id.

    Returns:
        (``[P, N_max, C]`` states in sequence (= row-major patch) order, zero after each row's own ``N_p``;
        ``[P]`` long ``N_p``).

    Raises:
        ValueError: a selected row has no image token.
    """
    c = hidden.shape[-1]
    if rows.numel() == 0:
        return hidden.new_zeros(0, 0, c), rows.new_zeros(0)
    is_img = input_ids[rows] == image_token_id
    counts = is_img.sum(1)
    if bool((counts == 0).any()):
        bad = rows[counts == 0].tolist()
        raise ValueError(f"rows {bad} have a [SEG] query but no image token")
    n_max = int(counts.max())
    out = hidden.new_zeros(rows.numel(), n_max, c)
    slot = is_img.long().cumsum(1) - 1  # [P, T] index of each image token within its row
    p_idx = torch.arange(rows.numel(), device=rows.device)[:, None].expand_as(is_img)
    out = out.index_put((p_idx[is_img], slot[is_img]), hidden[rows][is_img])
    return out, counts


def query_image_states(hidden: Tensor, input_ids: Tensor, rows: Tensor, image_token_id: int, *, per_image_grids: bool
                       ) -> Tensor:
    """``[P, N, C]`` image-token states of the query rows: :func:`gather_image_states` (one grid for every image), or
    with ``per_image_grids`` :func:`gather_image_states_padded` (padded to the largest grid)."""
    if per_image_grids:
        return gather_image_states_padded(hidden, input_ids, rows, image_token_id)[0]
    return gather_image_states(hidden, input_ids, rows, image_token_id)
