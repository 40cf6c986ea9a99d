"""Qwen2.5-VL as READ's vision-language part (issue 18), with SAM 2, on tiny random models: the ChatML rows and
their labels, the dynamic-resolution grids by hand, hidden states against transformers' own forward, forward +
backward, the exact trainable set, SasP on the non-square grids against a per-query loop, strict save / load, and
[SEG] states from cached generation against a teacher-forced forward."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from read.config import load_config
from read.data.base import Sample
from read.data.qwen_inputs import QwenCollator, qwen_conversation
from read.data.synthetic import draw_rectangles
from read.model.builder import build_read_model
from read.model.generate import greedy_generate, segment_generated_detail
from read.model.sasp import similarity_as_points

CFG = "configs/model/tiny_qwen25vl_sam2.yaml"
SIZES = [(60, 80), (90, 50)]


@pytest.fixture(scope="module")
def qwen():
    cfg = load_config(CFG)
    torch.manual_seed(0)
    model, tok = build_read_model(cfg)
    return model, tok, cfg


def make_samples(answers: bool = True, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for h, w in SIZES:
        image, masks, names = draw_rectangles(rng, h, w, num_shapes=2)
        q = "<image>\nWhat is {} in this image? Please output segmentation mask."
        convs = [[(q.format(n), "Sure, it is [SEG]." if answers else None)] for n in names]
        out.append(Sample(image=image, conversations=convs, masks=np.stack(masks) if answers else None))
    return out


def collate(model, tok, cfg, samples):
    return QwenCollator.for_model(tok, model, cfg.model.vlm, max_length=512)(samples)


def test_chatml_row_and_labels(qwen):
    _, tok, _ = qwen
    ids, labels = qwen_conversation(tok, [("<image>\nWhat is it?", "It is [SEG].")], 6)
    vision = "<|vision_start|>" + "<|image_pad|>" * 6 + "<|vision_end|>"
    assert tok.decode(ids.tolist()) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + vision
        + "What is it?<|im_end|>\n<|im_start|>assistant\nIt is [SEG].<|im_end|>\n")
    assert tok.decode(ids[labels != -100].tolist()) == "It is [SEG].<|im_end|>"
    assert int((ids == tok.image_token_id).sum()) == 6 and int((ids == tok.seg_token_id).sum()) == 1
    gen_ids, gen_labels = qwen_conversation(tok, [("<image>\nWhat is it?", None)], 6)
    assert tok.decode(gen_ids.tolist()).endswith("<|im_start|>assistant\n") and bool((gen_labels == -100).all())


def test_dynamic_grids_by_hand(qwen):
    """smart_resize with factor 28: 60 x 80 -> 56 x 84 (4 x 6 patches, 2 x 3 tokens); 90 x 50 -> 84 x 56."""
    model, tok, cfg = qwen
    batch = collate(model, tok, cfg, make_samples())
    assert batch.image_grid_thw.tolist() == [[1, 4, 6], [1, 6, 4]]
    assert batch.pixel_values_clip.shape == (24 + 24, 3 * 2 * 14 * 14)
    assert (batch.input_ids == tok.image_token_id).sum(1).tolist() == [6, 6, 6, 6]
    assert model.parts.image_grids(model.vlm, batch).tolist() == [[2, 3], [3, 2]]


def test_hidden_states_equal_transformers_forward(qwen):
    """One row per image (so transformers' own forward takes the images in row order): our vision-once scatter and
    3-D RoPE positions give its last hidden states."""
    model, tok, cfg = qwen
    samples = make_samples()
    for s in samples:
        s.conversations = s.conversations[:1]
        s.masks = s.masks[:1]
    batch = collate(model, tok, cfg, samples)
    with torch.no_grad():
        ours = model.hidden_states(batch)
        ref = model.vlm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              pixel_values=batch.pixel_values_clip, image_grid_thw=batch.image_grid_thw,
                              mm_token_type_ids=(batch.input_ids == tok.image_token_id).int()).last_hidden_state
    valid = batch.attention_mask.bool()
    torch.testing.assert_close(ours[valid], ref[valid], rtol=1e-5, atol=1e-5)


def test_exact_trainable_set(qwen):
    model, _, cfg = qwen
    expect = {n for n, _ in model.named_parameters()
              if n.startswith("sam.mask_decoder.") or n.startswith("text_hidden_fcs.")}
    for i in range(cfg.model.vlm.tiny_qwen.num_hidden_layers):
        for proj in ("q_proj", "v_proj"):
            for ab in ("lora_A", "lora_B"):
                expect.add(f"qwen.model.language_model.layers.{i}.self_attn.{proj}.{ab}.default.weight")
    expect |= {"qwen.model.language_model.embed_tokens.weight", "qwen.lm_head.weight"}
    assert set(model.trainable_parameter_names()) == expect
    assert not any("visual" in n for n in expect)


def test_forward_backward_and_sasp_on_the_grids(qwen):
    model, tok, cfg = qwen
    model = copy.deepcopy(model).train()
    batch = collate(model, tok, cfg, make_samples())
    out = model(batch)
    assert [tuple(m.shape) for m in out.pred_masks] == [(2, 60, 80), (2, 90, 50)]
    assert all(np.isfinite(v) for v in out.loss.as_floats().values())
    out.loss.total.backward()
    got = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0}
    assert any("lora_B" in n for n in got) and "qwen.lm_head.weight" in got and "sam.mask_decoder.conv_s0.weight" in got
    # SasP, query by query: the row's image states found by a plain loop, on that image's own (non-square) grid
    model.eval()
    with torch.no_grad():
        hidden = model.hidden_states(batch)
        out = model(batch)
    grids = {0: (2, 3), 1: (3, 2)}
    for p, (r, c) in enumerate(zip(out.queries.rows.tolist(), out.queries.cols.tolist(), strict=True)):
        pos = [t for t in range(batch.input_ids.shape[1]) if int(batch.input_ids[r, t]) == tok.image_token_id]
        sim = hidden[r, pos] @ hidden[r, c]
        b = int(batch.row_to_image[r])
        coords, labels = similarity_as_points(sim, SIZES[b], num_points=10, t_pos=0.8, t_neg=0.2, down_sample=1,
                                              grid_hw=grids[b], view="full")
        k = coords.shape[0]
        torch.testing.assert_close(out.points.coords_image[p, :k], coords)
        torch.testing.assert_close(out.points.labels[p, :k], labels)
        assert not bool(out.points.valid[p, k:].any())


def test_strict_save_load_round_trip(qwen, tmp_path):
    from read.model.fingerprint import base_record
    from read.model.run_weights import load_trainable, save_trainable
    from read.utils.weights import CheckpointKeyError

    model, _, _ = qwen
    src = copy.deepcopy(model)
    with torch.no_grad():
        for p in src.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    save_trainable(tmp_path, src, base_record(src))
    dst = copy.deepcopy(model)
    load_trainable(dst, tmp_path)
    for (n, p), (_, q) in zip(src.named_parameters(), dst.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    torch.manual_seed(0)
    other, _ = build_read_model(load_config("configs/model/tiny_llava_sam2.yaml"))
    with pytest.raises(CheckpointKeyError, match="qwen"):
        load_trainable(other, tmp_path)


@pytest.fixture(scope="module")
def scripted(qwen):
    """The tiny model taught (Adam on its language model) to answer with [SEG] tokens, so generation emits them."""
    model, tok, cfg = qwen
    model = copy.deepcopy(model)
    batch = collate(model, tok, cfg, make_samples())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    torch.manual_seed(0)
    for _ in range(60):
        loss = model.compute_loss(model.hidden_states(batch), batch.labels, [], []).ce
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok, cfg


def test_generation_seg_states_equal_teacher_forcing(scripted):
    model, tok, cfg = scripted
    batch = collate(model, tok, cfg, make_samples(answers=False))
    with torch.no_grad():
        gen = greedy_generate(model, batch, max_new_tokens=12, eos_id=tok.eos_id, pad_id=tok.pad_id, tokenizer=tok)
    assert gen.texts == ["Sure, it is [SEG]."] * 4
    assert gen.num_queries == 4 and gen.image_grids.tolist() == [[2, 3], [3, 2]]
    # teacher-forced forward over the generated sequences: the state before each [SEG] is the generated one
    full = copy.copy(batch)
    full.input_ids, full.attention_mask = gen.sequences, gen.attention_mask
    with torch.no_grad():
        hidden = model.hidden_states(full)
    for p, (r, s) in enumerate(zip(gen.seg_rows.tolist(), gen.seg_steps.tolist(), strict=True)):
        t = gen.prompt_length + s - 1  # model.seg_query == "before"
        torch.testing.assert_close(gen.seg_hidden[p], hidden[r, t], rtol=1e-4, atol=1e-4)
    detail = segment_generated_detail(model, batch, gen)
    assert [[tuple(m.shape) for m in row] for row in detail.masks] == [[(60, 80)], [(60, 80)], [(90, 50)], [(90, 50)]]
    assert detail.points.grid_hw.tolist() == [[2, 3], [2, 3], [3, 2], [3, 2]]


def test_seg_and_rej_are_added_to_a_tokenizer_without_them():
    """A released Qwen tokenizer has no [SEG]: it is added as one special token after the existing ids (and [REJ]
    after it), listed in ``new_token_ids`` (their embedding rows get fresh values), never split by the BPE."""
    import json as _json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from read.model.qwen_tokenizer import QwenTokenizer

    full = QwenTokenizer.build_tiny(600).hf
    d = _json.loads(full.backend_tokenizer.to_str())
    d["added_tokens"] = [a for a in d["added_tokens"] if a["content"] != "[SEG]"]
    d["model"]["vocab"].pop("[SEG]", None)
    base = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_json.dumps(d)), pad_token="<|endoftext|>",
                                   eos_token="<|im_end|>")
    n = len(base)
    tok = QwenTokenizer(base, rej_token="[REJ]")
    assert tok.new_token_ids == (n, n + 1) and (tok.seg_token_id, tok.rej_token_id) == (n, n + 1)
    ids = tok.encode("it is [SEG], not [REJ].")
    assert ids.count(n) == 1 and ids.count(n + 1) == 1
    assert tok.decode(ids) == "it is [SEG], not [REJ]."
