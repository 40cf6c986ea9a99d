"""KV-cached batched greedy generation (read.model.generate) against plain references.

The tiny random model is first taught (a few dozen Adam steps on its language model) to answer four fixed
prompts with scripted answers, so that generation really emits [SEG] (zero, one or two per row) and EOS at
different steps. Every check compares against something computed independently: a no-cache loop that re-runs
the whole sequence each step, a teacher-forced forward over the generated sequences (ReadModel.hidden_states /
ReadModel.forward), or the same rows decoded one at a time.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from read.data.conversation import build_prompt, wrap_image_tokens
from read.data.synthetic import draw_rectangles
from read.data.transforms import preprocess_image
from read.model import llava_backbone as lb
from read.model.batch import Batch
from read.model.generate import GenerationOutput, greedy_generate, left_pad, segment_generated

# (question, scripted answer) per image; rows have different prompt lengths, so left padding matters
QA = [
    [
        ("<image>\nSegment the red one.", "Sure, [SEG]."),
        ("<image>\nIs there a dog in this picture? Please output segmentation mask.", "No, there is no dog."),
    ],
    [
        (
            "<image>\nWhat are the two shapes in this image? Please output segmentation masks.",
            "They are [SEG] and [SEG].",
        ),
        ("<image>\nWhere is the blue square?", "It is [SEG]."),
    ],
]
SEGS_PER_ROW = [1, 0, 2, 1]
MAX_NEW = 16


def build_batch(model, tok, images, qas, *, with_answer: bool) -> Batch:
    """Right-padded batch of ``qas[b]`` rows for image b (prompts end with "ASSISTANT:" unless ``with_answer``).

    ``labels`` (with_answer only) supervise the answer and its ``</s>``.
    """
    n_img = lb.num_image_tokens(model.llava)
    rows, labels, r2i, clips, sams, hws, sam_hws = [], [], [], [], [], [], []
    for b, (image, pairs) in enumerate(zip(images, qas, strict=True)):
        clip, sam, geom = preprocess_image(
            image, clip_size=lb.clip_image_size(model.llava), sam_size=model.sam.img_size
        )
        clips.append(clip)
        sams.append(sam)
        hws.append(geom.orig_hw)
        sam_hws.append(geom.sam_input_hw)
        for q, a in pairs:
            prompt = tok.encode_with_image(build_prompt([(wrap_image_tokens(q), None)]), n_img)
            full = (
                tok.encode_with_image(build_prompt([(wrap_image_tokens(q), a)]), n_img)
                if with_answer
                else prompt
            )
            assert full[: len(prompt)] == prompt
            rows.append(full)
            labels.append([-100] * len(prompt) + full[len(prompt) :])
            r2i.append(b)
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), tok.pad_id, dtype=torch.long)
    am = torch.zeros_like(ids)
    lab = torch.full_like(ids, -100)
    for i, (r, lb_) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        am[i, : len(r)] = 1
        lab[i, : len(lb_)] = torch.tensor(lb_)
    return Batch(
        input_ids=ids,
        attention_mask=am,
        pixel_values_clip=torch.stack(clips),
        pixel_values_sam=torch.stack(sams),
        row_to_image=torch.tensor(r2i, dtype=torch.long),
        image_hw=torch.tensor(hws, dtype=torch.long),
        sam_input_hw=torch.tensor(sam_hws, dtype=torch.long),
        labels=lab if with_answer else None,
    )


@pytest.fixture(scope="module")
def scripted(tiny_model):
    """A copy of the tiny model that answers the four prompts of ``QA`` with the scripted answers."""
    base, tok = tiny_model
    model = copy.deepcopy(base).eval()
    rng = np.random.default_rng(0)
    images = [draw_rectangles(rng, 60, 80, num_shapes=2)[0], draw_rectangles(rng, 90, 50, num_shapes=2)[0]]
    train = build_batch(model, tok, images, QA, with_answer=True)
    params = list(model.llava.model.language_model.parameters()) + list(model.llava.lm_head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=3e-3)
    torch.manual_seed(0)
    with torch.no_grad():
        embeds = lb.embed_inputs(model.llava, train.input_ids, train.pixel_values_clip, train.row_to_image)
    sel = train.labels[:, 1:] != -100
    for _ in range(400):
        hidden = lb.language_model_forward(model.llava, embeds, train.attention_mask)
        loss = lb.causal_lm_loss(model.llava, hidden, train.labels)
        with torch.no_grad():
            pred = model.llava.lm_head(hidden[:, :-1][sel]).argmax(-1)
        if loss.item() < 0.05 and bool((pred == train.labels[:, 1:][sel]).all()):
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    else:
        raise AssertionError(f"the tiny model did not learn the scripted answers (loss {loss.item():.3f})")
    for p in params:
        p.requires_grad_(False)
    prompts = build_batch(model, tok, images, QA, with_answer=False)
    return model, tok, images, prompts


def generate(model, tok, batch, **kw) -> GenerationOutput:
    kw.setdefault("max_new_tokens", MAX_NEW)
    return greedy_generate(model, batch, eos_id=tok.eos_id, pad_id=tok.pad_id, tokenizer=tok, **kw)


def reference_generate(model, batch, *, max_new_tokens, eos_id, pad_id, allowed_vocab=None, banned=()):
    """No cache: every step re-embeds (CLIP included) and re-runs the whole left-padded sequence."""
    llava = model.llava
    ids, am = batch.input_ids.clone(), batch.attention_mask.clone().long()
    # left padding, written independently of read.model.generate.left_pad
    for i in range(ids.shape[0]):
        n = int(am[i].sum())
        real = ids[i, :n].clone()
        ids[i] = pad_id
        ids[i, ids.shape[1] - n :] = real
        am[i] = 0
        am[i, ids.shape[1] - n :] = 1
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            embeds = lb.embed_inputs(llava, ids, batch.pixel_values_clip, batch.row_to_image)
            pos = torch.clamp(torch.cumsum(am, 1) - 1, min=0)
            h = llava.model.language_model(
                inputs_embeds=embeds, attention_mask=am, position_ids=pos, use_cache=False
            ).last_hidden_state
            logits = llava.lm_head(h[:, -1]).float()
            if allowed_vocab is not None:
                logits[:, allowed_vocab:] = -float("inf")
            for b in banned:
                logits[:, b] = -float("inf")
            nxt = logits.argmax(-1)
            nxt[done] = pad_id
            ids = torch.cat([ids, nxt[:, None]], 1)
            am = torch.cat([am, (~done).long()[:, None]], 1)
            done |= nxt == eos_id
            if done.all():
                break
    return ids, am


def row_batch(batch: Batch, row: int) -> Batch:
    """Row ``row`` alone, with only its image, padding removed."""
    n = int(batch.attention_mask[row].sum())
    b = int(batch.row_to_image[row])
    return Batch(
        input_ids=batch.input_ids[row : row + 1, :n],
        attention_mask=batch.attention_mask[row : row + 1, :n],
        pixel_values_clip=batch.pixel_values_clip[b : b + 1],
        pixel_values_sam=batch.pixel_values_sam[b : b + 1],
        row_to_image=torch.zeros(1, dtype=torch.long),
        image_hw=batch.image_hw[b : b + 1],
        sam_input_hw=batch.sam_input_hw[b : b + 1],
    )


# ------------------------------------------------------------------------------------------------------------


def test_left_pad_moves_padding_and_drops_labels(tiny_model):
    _, tok = tiny_model
    pad = tok.pad_id
    ids = torch.tensor([[5, 6, 7, pad, pad], [8, 9, 10, 11, 12], [13, pad, pad, pad, pad]])
    am = (ids != pad).long()
    batch = Batch(
        input_ids=ids,
        attention_mask=am,
        pixel_values_clip=torch.zeros(1, 3, 2, 2),
        pixel_values_sam=torch.zeros(1, 3, 2, 2),
        row_to_image=torch.zeros(3, dtype=torch.long),
        image_hw=torch.tensor([[2, 2]]),
        sam_input_hw=torch.tensor([[2, 2]]),
        labels=ids.clone(),
    )
    lp = left_pad(batch, pad)
    assert lp.input_ids.tolist() == [[pad, pad, 5, 6, 7], [8, 9, 10, 11, 12], [pad, pad, pad, pad, 13]]
    assert lp.attention_mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]
    assert lp.labels is None
    again = left_pad(lp, pad)  # already left-padded: unchanged
    assert torch.equal(again.input_ids, lp.input_ids) and torch.equal(again.attention_mask, lp.attention_mask)


def test_scripted_answers_seg_counts_and_eos(scripted):
    model, tok, _, prompts = scripted
    gen = generate(model, tok, prompts)
    assert gen.texts == [
        tok.decode(tok.encode(a, add_bos=False), skip_special_tokens=True) for qa in QA for _, a in qa
    ]
    assert [t.count(tok.seg_token_id) for t in gen.new_tokens] == SEGS_PER_ROW
    assert gen.has_seg.tolist() == [n > 0 for n in SEGS_PER_ROW]
    assert gen.seg_rows.tolist() == [0, 2, 2, 3]
    for p, (row, step) in enumerate(zip(gen.seg_rows.tolist(), gen.seg_steps.tolist(), strict=True)):
        assert int(gen.sequences[row, gen.prompt_length + step]) == tok.seg_token_id, p
    # every row stopped at its EOS (before max_new_tokens); finished rows emit pad with attention 0
    new = gen.sequences[:, gen.prompt_length :]
    assert new.shape[1] == max(len(t) for t in gen.new_tokens) + 1 < MAX_NEW
    for row, toks in enumerate(gen.new_tokens):
        k = len(toks)
        assert new[row, :k].tolist() == toks and int(new[row, k]) == tok.eos_id
        assert (new[row, k + 1 :] == tok.pad_id).all()
        assert gen.attention_mask[row, gen.prompt_length :].tolist() == [1] * (k + 1) + [0] * (
            new.shape[1] - k - 1
        )
    assert gen.seg_hidden.shape == (4, model.llava.config.text_config.hidden_size)
    assert gen.image_hidden.shape[:2] == (4, lb.num_image_tokens(model.llava))


def test_kv_cache_equals_no_cache_reference(scripted):
    model, tok, _, prompts = scripted
    gen = generate(model, tok, prompts)
    ids, am = reference_generate(
        model,
        prompts,
        max_new_tokens=MAX_NEW,
        eos_id=tok.eos_id,
        pad_id=tok.pad_id,
        banned=[tok.image_token_id],
    )
    assert torch.equal(gen.sequences, ids)
    assert torch.equal(gen.attention_mask, am)
    # the untrained model (no EOS before max_new_tokens: the length limit stops decoding)
    base = scripted[0]
    rnd = copy.deepcopy(base)
    torch.manual_seed(1)
    with torch.no_grad():
        rnd.llava.lm_head.weight.normal_(0, 0.5)
    gen = generate(rnd, tok, prompts, max_new_tokens=6)
    ids, am = reference_generate(
        rnd,
        prompts,
        max_new_tokens=6,
        eos_id=tok.eos_id,
        pad_id=tok.pad_id,
        allowed_vocab=len(tok),
        banned=[tok.image_token_id],
    )
    assert gen.sequences.shape[1] == gen.prompt_length + 6
    assert torch.equal(gen.sequences, ids)


def test_batch_of_four_equals_rows_alone(scripted):
    model, tok, _, prompts = scripted
    assert len(set(prompts.attention_mask.sum(1).tolist())) == 4  # four different prompt lengths
    gen = generate(model, tok, prompts)
    masks = segment_generated(model, prompts, gen)
    assert [len(m) for m in masks] == SEGS_PER_ROW  # no mask without [SEG], two for two
    assert not torch.allclose(masks[2][0], masks[2][1])
    for row in range(4):
        one = row_batch(prompts, row)
        g1 = generate(model, tok, one)
        assert g1.new_tokens[0] == gen.new_tokens[row] and g1.texts[0] == gen.texts[row]
        sel = gen.seg_rows == row
        torch.testing.assert_close(g1.seg_hidden, gen.seg_hidden[sel], atol=1e-4, rtol=1e-4)
        m1 = segment_generated(model, one, g1)[0]
        assert len(m1) == len(masks[row])
        h, w = prompts.image_hw[prompts.row_to_image[row]].tolist()
        for a, b in zip(m1, masks[row], strict=True):
            assert a.dtype == torch.float32 and a.shape == (h, w) == b.shape
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["before", "on"])
@pytest.mark.parametrize("max_new", [MAX_NEW, 4])
def test_seg_states_equal_teacher_forcing(scripted, monkeypatch, mode, max_new):
    """max_new = 4 ends every [SEG] row right on its first [SEG] ("on" needs one extra step there)."""
    model, tok, _, prompts = scripted
    monkeypatch.setattr(model, "seg_query", mode)
    gen = generate(model, tok, prompts, max_new_tokens=max_new)
    expected_rows = [0, 2, 2, 3] if max_new == MAX_NEW else [0, 2, 3]
    assert gen.seg_rows.tolist() == expected_rows
    if max_new == 4:
        assert (gen.seg_steps == 3).all() and gen.sequences.shape[1] == gen.prompt_length + 4
    # teacher forcing over the generated sequences: ReadModel's own [SEG] rule and hidden states
    tf = Batch(
        input_ids=gen.sequences,
        attention_mask=gen.attention_mask,
        pixel_values_clip=prompts.pixel_values_clip,
        pixel_values_sam=prompts.pixel_values_sam,
        row_to_image=prompts.row_to_image,
        image_hw=prompts.image_hw,
        sam_input_hw=prompts.sam_input_hw,
    )
    with torch.no_grad():
        hidden = model.hidden_states(tf)
        queries = model.find_queries(tf)
        out = model(tf)
    assert queries.rows.tolist() == gen.seg_rows.tolist()
    torch.testing.assert_close(gen.seg_hidden, hidden[queries.rows, queries.cols], atol=1e-4, rtol=1e-4)
    offset = 1 if mode == "before" else 0
    assert (queries.cols == gen.prompt_length + gen.seg_steps - offset).all()
    # image-token states of the prefill
    is_img = gen.sequences[gen.seg_rows] == tok.image_token_id
    ref_img = hidden[gen.seg_rows][is_img].view(len(gen.seg_rows), -1, hidden.shape[-1])
    torch.testing.assert_close(gen.image_hidden, ref_img, atol=1e-4, rtol=1e-4)
    # masks from the generated states == ReadModel.forward's masks on the teacher-forced sequences
    masks = segment_generated(model, prompts, gen)
    for b, pred in enumerate(out.pred_masks):
        mine = [m for row in range(4) if int(prompts.row_to_image[row]) == b for m in masks[row]]
        assert len(mine) == pred.shape[0]
        for k, m in enumerate(mine):
            torch.testing.assert_close(m, pred[k], atol=1e-4, rtol=0)


def test_banned_and_out_of_vocab_ids_never_chosen(scripted):
    model, tok, _, prompts = scripted
    gen = generate(model, tok, prompts)
    kw = dict(max_new_tokens=MAX_NEW, eos_id=tok.eos_id, pad_id=tok.pad_id)
    # ban the first token of row 0 (the argmax there) and [SEG] itself
    first = gen.new_tokens[0][0]
    banned = [first, tok.seg_token_id]
    g = generate(model, tok, prompts, banned_ids=banned)
    new = g.sequences[:, g.prompt_length :]
    assert not bool(torch.isin(new, torch.tensor(banned)).any())
    assert not bool(g.has_seg.any()) and g.seg_hidden.shape[0] == 0
    assert segment_generated(model, prompts, g) == [[], [], [], []]
    ids, _ = reference_generate(model, prompts, banned=[*banned, tok.image_token_id], **kw)
    assert torch.equal(g.sequences, ids)
    # allowed_vocab cuts off [SEG] (602) and everything above
    g = generate(model, tok, prompts, allowed_vocab=tok.seg_token_id)
    assert int(g.sequences[:, g.prompt_length :].max()) < tok.seg_token_id
    ids, _ = reference_generate(
        model, prompts, allowed_vocab=tok.seg_token_id, banned=[tok.image_token_id], **kw
    )
    assert torch.equal(g.sequences, ids)
    # make the image token and an id >= allowed_vocab the argmax everywhere: neither is ever chosen
    beyond = len(tok) - 1
    bias = torch.zeros(model.llava.lm_head.out_features)
    bias[[tok.image_token_id, beyond]] = 1e4
    handle = model.llava.lm_head.register_forward_hook(lambda m, a, out: out + bias)
    try:
        g = generate(model, tok, prompts, allowed_vocab=beyond)
    finally:
        handle.remove()
    assert torch.equal(g.sequences, gen.sequences) and g.new_tokens == gen.new_tokens
