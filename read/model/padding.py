"""Left padding for batched decoding, position ids that ignore padding, and protection of padded positions
against what attention kernels return on fully masked rows. Shape shorthand: R rows, T tokens."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import Tensor

from read.model.batch import Batch

__all__ = ["left_pad", "position_ids_from_mask", "zero_padded_positions"]


def left_pad(batch: Batch, pad_id: int) -> Batch:
    """The same rows with the padding moved to the left (ids and attention mask); labels dropped.

    The attended tokens of each row keep their order and are right-aligned, so this also accepts a batch that is
    already left-padded. ``gt_masks`` and the image tensors are kept unchanged.
    """
    ids, am = batch.input_ids, batch.attention_mask.bool()
    r, t = ids.shape
    lengths = am.sum(1)
    # destination column of every attended token: its rank among the row's attended tokens + the left pad
    rank = am.long().cumsum(1) - 1
    dest = rank + (t - lengths)[:, None]
    new_ids = torch.full_like(ids, pad_id)
    new_am = torch.zeros_like(batch.attention_mask)
    row_idx = torch.arange(r, device=ids.device)[:, None].expand(r, t)
    new_ids[row_idx[am], dest[am]] = ids[am]
    new_am[row_idx[am], dest[am]] = 1
    return replace(batch, input_ids=new_ids, attention_mask=new_am, labels=None)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """``cumsum(mask) - 1`` clamped at 0: real tokens get 0, 1, 2, ... whatever the padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


# --------------------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------------------


@contextmanager
def zero_padded_positions(lm: torch.nn.Module, valid: Tensor):
    """Set every decoder layer's output to 0 at padded positions (``valid``: ``[R, T]`` bool) while inside.

    With left padding, a padded query position attends to nothing. Attention kernels differ on such fully masked
    rows: CPU SDPA returns 0, some CUDA kernels return NaN. A NaN there becomes the next layer's value vector at a
    masked key, and ``0 * NaN`` in the attention product spreads it to every real token of the row (which then
    decodes to id 0, never [SEG]). Zeroing the padded positions after each layer makes decoding independent of
    what a kernel returns there; the real positions never attend to them, so nothing else changes.
    """
    keep = valid[..., None]

    def hook(_module, _inputs, output):  # noqa: ANN001, ANN202 - torch hook signature
        if isinstance(output, tuple):
            return (torch.where(keep, output[0], 0.0).to(output[0].dtype), *output[1:])
        return torch.where(keep, output, 0.0).to(output.dtype)

    handles = [layer.register_forward_hook(hook) for layer in lm.layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
