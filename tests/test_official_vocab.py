"""The language loss and greedy decoding use the official vocabulary, never llava-hf's extra rows; new token rows are
initialised as the official resize_token_embeddings does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, make_tiny_batch
from release_helpers import (
    FULL_RELEASE_CONFIG,
    RELEASED_ROWS,
    official_release_dict,
    write_release,
    write_tokenizer_files,
)

from read.config import load_config
from read.model.builder import build_read_model
from read.model.convert import load_released_checkpoint
from read.model.generate import greedy_generate, left_pad


def released_model(tmp_path):
    """A tiny model loaded from a tiny official release (603 rows; <image>=603 appended by our tokenizer), with its
    lm_head rows past the release made large, as llava-hf's padding rows could be."""
    folder = tmp_path / "release"
    write_tokenizer_files(folder)
    cfg = load_config(TINY, [f"model.vlm.tokenizer={folder}", "model.lora.enabled=false"])
    torch.manual_seed(5)
    source, _ = build_read_model(cfg)
    write_release(folder, official_release_dict(source), shards=1, config=FULL_RELEASE_CONFIG)
    torch.manual_seed(6)
    model, tok = build_read_model(cfg)
    load_released_checkpoint(model, tok, folder)
    with torch.no_grad():
        model.llava.lm_head.weight[RELEASED_ROWS:] = 5.0  # the <image> row: not an official token
    return model.eval(), tok, cfg


def test_ce_on_an_official_release_is_over_the_official_vocabulary(tmp_path):
    model, tok, cfg = released_model(tmp_path)
    assert model.llava.lm_head.weight.shape[0] == RELEASED_ROWS + 1
    batch = make_tiny_batch(model, tok, cfg, seed=4)
    with torch.no_grad():
        hidden = model.hidden_states(batch)
        ours = model.compute_loss(hidden, batch.labels, [], []).ce
    # by hand: logits over the 603 released rows only, shifted token mean over supervised positions
    w = model.llava.lm_head.weight[:RELEASED_ROWS]
    targets = batch.labels[:, 1:]
    sel = targets != -100
    logits = hidden[:, :-1][sel] @ w.T
    expected = F.cross_entropy(logits.float(), targets[sel])
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
    # over every row (what a softmax over llava-hf's lm_head would give) it is different
    everything = F.cross_entropy((hidden[:, :-1][sel] @ model.llava.lm_head.weight.T).float(), targets[sel])
    assert abs(everything.item() - ours.item()) > 1e-3
    # and the rows outside the vocabulary get no gradient
    model.train()
    model.zero_grad()
    model.compute_loss(model.hidden_states(batch), batch.labels, [], []).ce.backward()
    grad = model.llava.lm_head.weight.grad
    assert float(grad[RELEASED_ROWS:].abs().max()) == 0.0 and float(grad[:RELEASED_ROWS].abs().max()) > 0


def test_greedy_decoding_never_leaves_the_official_vocabulary(tiny_model, tiny_cfg):
    """llava-hf's <pad> row (601 in the tiny llava-hf-ordered vocabulary) made the argmax everywhere: decoding
    never emits it; with the restriction lifted it would (so the test can fail)."""
    import copy

    model, tok = tiny_model
    model = copy.deepcopy(model).eval()
    pad_row = tok.token_to_id("<pad>")
    with torch.no_grad():
        model.llava.lm_head.weight[pad_row] = 50.0
    batch = left_pad(make_tiny_batch(model, tok, tiny_cfg, seed=2), tok.pad_id)
    kw = dict(max_new_tokens=4, eos_id=tok.eos_id, pad_id=tok.pad_id)
    gen = greedy_generate(model, batch, **kw)
    new = gen.sequences[:, gen.prompt_length:][gen.attention_mask[:, gen.prompt_length:].bool()]
    assert not bool((new == pad_row).any()) and not bool((new == tok.image_token_id).any())
    model.output_vocab = None
    free = greedy_generate(model, batch, **kw)
    assert bool((free.sequences[:, free.prompt_length:] == pad_row).any())


def test_llava_hf_pad_and_image_rows_are_outside_the_vocabulary(tiny_model):
    model, tok = tiny_model
    # the tiny tokenizer is ordered like llava-hf: <image>=600, <pad>=601, then [SEG], <im_start>, <im_end>
    assert (tok.token_to_id("<image>"), tok.token_to_id("<pad>"), tok.seg_token_id) == (600, 601, 602)
    vocab = model.output_vocab
    assert vocab.shape[0] == model.llava.lm_head.weight.shape[0]
    assert vocab.sum() == 600 + 3 and not vocab[600] and not vocab[601] and vocab[602:605].all()
