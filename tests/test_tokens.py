"""The [SEG] query-position rule (spec 1.7) on hand-built sequences."""

from __future__ import annotations

import pytest
import torch

from read.model.tokens import gather_image_states, seg_query_mask, seg_query_positions

SEG, IMG = 99, 77


def test_before_rule_selects_the_token_preceding_seg():
    ids = torch.tensor([[1, 5, 9, 7, SEG, 3, 2, 0], [1, 4, SEG, 8, SEG, 2, 0, 0], [1, 4, 4, 4, 4, 4, 4, 4]])
    rows, cols = seg_query_positions(ids, SEG, "before")
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 3), (1, 1), (1, 3)]
    rows, cols = seg_query_positions(ids, SEG, "on")
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 4), (1, 2), (1, 4)]


def test_seg_at_position_zero_has_no_predecessor():
    ids = torch.tensor([[SEG, 1, 2]])
    assert not seg_query_mask(ids, SEG).any()
    with pytest.raises(ValueError):
        seg_query_mask(ids[0], SEG)


def test_gather_image_states():
    ids = torch.tensor([[1, IMG, IMG, 5, SEG], [1, 6, IMG, IMG, SEG]])
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    out = gather_image_states(hidden, ids, torch.tensor([1, 0]), IMG)
    assert out.shape == (2, 2, 3)
    assert torch.equal(out[0], hidden[1, 2:4]) and torch.equal(out[1], hidden[0, 1:3])
    bad = torch.tensor([[1, IMG, IMG, 5, SEG], [1, 6, 6, IMG, SEG]])
    with pytest.raises(ValueError, match="same number of image tokens"):
        gather_image_states(hidden, bad, torch.tensor([0, 1]), IMG)
