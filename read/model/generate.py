"""Batched greedy generation with a KV cache, and masks for the [SEG] tokens it emits (spec 1.7, 5.3, 6).

Deviation from the official code (spec 10.12), on purpose:

* The official ``evaluate`` calls transformers-4.31 ``generate`` with ``use_cache=False``: every step re-runs
  CLIP + projector and the whole sequence (O(T^2) per answer, ~8-9 h per FP-RefCOCO split), then reads the
  [SEG] states from the last step's ``hidden_states[-1]`` over ``sequences[:, :-1]`` with the
  "num_patches - 1" shifted mask. It also runs one row at a time (spec 10.10).
* Here CLIP runs once per *image* in the prefill (features scattered into every row of that image with
  ``row_to_image``, :func:`read.model.llava_backbone.embed_inputs`), then one token per step is decoded with a
  ``DynamicCache``, for any number of rows at once (left padding, position ids = cumulative sum of the
  attention mask - 1, so every row sees exactly the positions it would see alone).
* The [SEG] query state is read at the step that emits [SEG], never by a second forward pass:
  ``seg_query == "before"`` (official): the last-layer, post-norm state at the position whose logits produced
  [SEG]; ``"on"``: the state computed when [SEG] is fed back in (one more step, run even when [SEG] is the last
  token allowed by ``max_new_tokens``). The image-token states used by SasP are the prefill's last-layer states
  at the image positions.

Because attention is causal, the state of position ``t`` depends only on tokens ``<= t``; the cached states and the
prefill image states are therefore the same as those of a teacher-forced forward over the final sequence (what
the official code reads), up to floating-point summation order. ``tests/test_generate.py`` checks both this and
token-for-token equality with a plain no-cache loop.

Other choices:

* Logits are restricted before the argmax to the official output vocabulary (``model.output_vocab``: never
  llava-hf's padding rows 32005..32063, its ``<pad>`` or the image token, which the official model does not
  have), and further by ``allowed_vocab`` / ``banned_ids`` when given; the image token is always banned (feeding it
  back would break the one-image-per-row invariant of the image-token gather).
* A row stops at EOS (kept in ``sequences``, excluded from ``new_tokens``); afterwards it emits ``pad_id`` with
  attention mask 0. Decoding stops when every row is done or after ``max_new_tokens`` tokens.
* Every [SEG] of every row gets its own mask (the official code keeps only the first and crashes on a second,
  spec 10.10/10.11). Whether a row "sees" the object (official "See": any [SEG] and a non-empty first mask) is
  left to the caller: ``GenerationOutput.has_seg`` and the masks of :func:`segment_generated` give both parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from read.model import llava_backbone as lb
from read.model.batch import Batch
from read.model.padding import left_pad, position_ids_from_mask, zero_padded_positions
from read.model.tokens import gather_image_states, query_image_states

if TYPE_CHECKING:  # pragma: no cover
    from read.model.read_model import ReadModel

__all__ = [
    "GeneratedSegments",
    "GenerationOutput",
    "zero_padded_positions",
    "greedy_generate",
    "left_pad",
    "position_ids_from_mask",
    "segment_generated",
    "segment_generated_detail",
    "segment_queries",
]


@dataclass
class GenerationOutput:
    """Result of :func:`greedy_generate`. R rows, P emitted [SEG] tokens (row-major), C hidden size.

    Attributes:
        sequences: ``[R, T_prompt + T_new]`` left-padded prompt followed by the generated ids (EOS included,
            ``pad_id`` after a row has finished).
        attention_mask: ``[R, T_prompt + T_new]`` the mask the decoder used (0 on left padding and on the
            ``pad_id`` emitted after EOS).
        prompt_length: ``T_prompt`` (the generated part is ``sequences[:, prompt_length:]``).
        new_tokens: per row, the generated ids up to and excluding EOS.
        texts: per row, ``tokenizer.decode(new_tokens, skip_special_tokens=True)``, or ``None`` without tokenizer.
        seg_rows, seg_steps: ``[P]`` row and generation step (0-based index into the generated part) of every
            emitted [SEG], row-major then by step.
        seg_hidden: ``[P, C]`` the [SEG] query states (rule given by ``model.seg_query``).
        image_hidden: ``[P, N, C]`` the prefill's last-layer states at the image tokens of each query's row, or
            ``None`` when the rows of the queries do not all hold the same positive number of image tokens. For a
            VLM with per-image grids (``image_grids`` set) the rows are padded to the largest grid.
        has_seg: ``[R]`` bool, whether the row emitted at least one [SEG].
        image_grids: ``[B, 2]`` token grid of each image (dynamic-resolution VLMs), ``None``: square grids.
    """

    sequences: Tensor
    attention_mask: Tensor
    prompt_length: int
    new_tokens: list[list[int]]
    texts: list[str] | None
    seg_rows: Tensor
    seg_steps: Tensor
    seg_hidden: Tensor
    image_hidden: Tensor | None
    has_seg: Tensor
    image_grids: Tensor | None = None

    @property
    def num_queries(self) -> int:
        return int(self.seg_rows.numel())


def _restrict(logits: Tensor, allowed_vocab: int | None, banned: Tensor, output_vocab: Tensor | None) -> Tensor:
    """``-inf`` outside ``output_vocab``, on ids ``>= allowed_vocab`` and on ``banned`` ids."""
    if output_vocab is not None:
        logits = logits.masked_fill(~output_vocab, float("-inf"))
    if allowed_vocab is not None and allowed_vocab < logits.shape[-1]:
        logits[..., allowed_vocab:] = float("-inf")
    if banned.numel():
        logits[..., banned] = float("-inf")
    return logits


@torch.no_grad()
def greedy_generate(
    model: ReadModel,
    batch: Batch,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    allowed_vocab: int | None = None,
    banned_ids: Sequence[int] = (),
    tokenizer=None,
) -> GenerationOutput:
    """Greedy decoding of every row of ``batch`` at once (KV cache, left padding).

    Args:
        model: the READ model (put it in ``eval()`` mode first; LoRA dropout would otherwise be active).
        batch: prompts (right- or left-padded, e.g. from ``collate`` with answers ``None``), their images.
        max_new_tokens: the most tokens generated per row (EOS included).
        eos_id, pad_id: end-of-sequence id; id emitted by finished rows and used for the left padding.
        allowed_vocab: ids ``>= allowed_vocab`` are never chosen; ``None`` = ``len(tokenizer)`` when a tokenizer
            is given, else no limit. ``model.output_vocab`` applies in every case.
        banned_ids: ids never chosen (``model.image_token_id`` is always added).
        tokenizer: optional, to decode ``texts`` (``skip_special_tokens=True``, as the official test script).

    Returns:
        :class:`GenerationOutput`.
    """
    from transformers import DynamicCache

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if model.seg_query not in ("before", "on"):
        raise ValueError(f"unknown seg_query {model.seg_query!r} (expected 'before' or 'on')")
    if allowed_vocab is None and tokenizer is not None:
        allowed_vocab = len(tokenizer)
    vlm = model.vlm
    lm = vlm.model.language_model
    embed = vlm.get_input_embeddings()
    device = embed.weight.device
    seg_id = model.seg_token_id
    output_vocab = getattr(model, "output_vocab", None)
    if output_vocab is not None:
        output_vocab = output_vocab.to(device)

    lp = left_pad(batch, pad_id).to(device)
    ids, am = lp.input_ids, lp.attention_mask.long()
    r, t0 = ids.shape
    banned = torch.tensor(
        sorted({*map(int, banned_ids), int(model.image_token_id)}), dtype=torch.long, device=device
    )

    # ---- prefill: the vision encoder once per image, the whole prompt once
    cache = DynamicCache(config=lm.config)
    embeds, positions, next_pos = model.parts.prefill(vlm, ids, am, lp)  # next_pos: [R] next token's position
    with zero_padded_positions(lm, am.bool()):
        out = lm(
            inputs_embeds=embeds,
            attention_mask=am,
            position_ids=positions,
            use_cache=True,
            **lb.cache_kwargs(lm, cache),
        )
    prefill_hidden = out.last_hidden_state  # [R, T0, C]
    h = prefill_hidden[:, -1]  # state of the last prompt token (left padding: real for every row)

    generated: list[Tensor] = []
    gen_mask: list[Tensor] = []
    finished = torch.zeros(r, dtype=torch.bool, device=device)
    seg_states: dict[tuple[int, int], Tensor] = {}
    pending: list[tuple[int, int]] = []  # "on" mode: [SEG]s whose state comes from the next forward
    step = 0
    while step < max_new_tokens and not bool(finished.all()):
        logits = _restrict(vlm.lm_head(h).float(), allowed_vocab, banned, output_vocab)
        tok = logits.argmax(-1)
        active = ~finished
        tok = torch.where(active, tok, torch.full_like(tok, pad_id))
        generated.append(tok)
        gen_mask.append(active.long())
        for row in (active & (tok == seg_id)).nonzero(as_tuple=True)[0].tolist():
            if model.seg_query == "before":
                seg_states[(row, step)] = h[row]
            else:
                pending.append((row, step))
        finished = finished | (active & (tok == eos_id))
        step += 1
        stop = bool(finished.all()) or step >= max_new_tokens
        if stop and not pending:
            break
        # feed the new tokens back (also the extra step that computes the state *on* a final [SEG])
        am = torch.cat([am, gen_mask[-1][:, None]], dim=1)
        out = lm(
            inputs_embeds=embed(tok[:, None]),
            attention_mask=am,
            position_ids=model.parts.step_positions(next_pos),
            use_cache=True,
            **lb.cache_kwargs(lm, cache),
        )
        h = out.last_hidden_state[:, -1]
        next_pos = next_pos + gen_mask[-1]
        for row, s in pending:
            seg_states[(row, s)] = h[row]
        pending = []
        if stop:
            break

    new = torch.stack(generated, dim=1) if generated else ids.new_zeros(r, 0)
    new_am = torch.stack(gen_mask, dim=1) if gen_mask else am.new_zeros(r, 0)
    sequences = torch.cat([ids, new], dim=1)
    attention_mask = torch.cat([lp.attention_mask.long(), new_am], dim=1)

    new_tokens: list[list[int]] = []
    for row in range(r):
        toks = new[row][new_am[row].bool()].tolist()
        if toks and toks[-1] == eos_id:
            toks = toks[:-1]
        new_tokens.append(toks)
    texts = (
        [tokenizer.decode(t, skip_special_tokens=True) for t in new_tokens] if tokenizer is not None else None
    )

    keys = sorted(seg_states)  # row-major, then by step
    c = prefill_hidden.shape[-1]
    seg_rows = torch.tensor([k[0] for k in keys], dtype=torch.long, device=device)
    seg_steps = torch.tensor([k[1] for k in keys], dtype=torch.long, device=device)
    seg_hidden = torch.stack([seg_states[k] for k in keys]) if keys else prefill_hidden.new_zeros(0, c)
    image_grids = model.parts.image_grids(vlm, lp)
    if image_grids is None:
        image_hidden = _image_states(prefill_hidden, ids, seg_rows, model.image_token_id)
    else:
        image_hidden = query_image_states(prefill_hidden, ids, seg_rows, model.image_token_id, per_image_grids=True)
    has_seg = torch.zeros(r, dtype=torch.bool, device=device)
    has_seg[seg_rows] = True
    return GenerationOutput(
        sequences=sequences,
        attention_mask=attention_mask,
        prompt_length=t0,
        new_tokens=new_tokens,
        texts=texts,
        seg_rows=seg_rows,
        seg_steps=seg_steps,
        seg_hidden=seg_hidden,
        image_hidden=image_hidden,
        has_seg=has_seg,
        image_grids=image_grids,
    )


def _image_states(hidden: Tensor, ids: Tensor, rows: Tensor, image_token_id: int) -> Tensor | None:
    """Prefill image-token states of the query rows ``[P, N, C]``; ``None`` if their counts differ or are 0."""
    if rows.numel() == 0:
        return hidden.new_zeros(0, 0, hidden.shape[-1])
    counts = (ids[rows] == image_token_id).sum(1)
    if int(counts[0]) == 0 or bool((counts != counts[0]).any()):
        return None
    return gather_image_states(hidden, ids, rows, image_token_id)


# --------------------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------------------


def segment_queries(
    model: ReadModel,
    seg_hidden: Tensor,
    image_hidden: Tensor | None,
    query_image: Tensor,
    pixel_values_sam: Tensor,
    image_hw: Tensor,
    sam_input_hw: Tensor,
) -> list[Tensor]:
    """SasP + [SEG] projection + SAM for P given query states; one fp32 ``[H, W]`` logit map per query.

    :meth:`ReadModel.segment_states` (as :meth:`ReadModel.segment` uses it), from the query and image-token states
    directly; the SAM image encoder runs only on the images that have a query (once each, shared by their queries).

    Args:
        seg_hidden: ``[P, C]``; image_hidden: ``[P, N, C]`` (needed only with a point prompter).
        query_image: ``[P]`` image index of each query.
        pixel_values_sam: ``[B, 3, S, S]``; image_hw, sam_input_hw: ``[B, 2]``.
    """
    return _segment_queries(model, seg_hidden, image_hidden, query_image, pixel_values_sam, image_hw,
                            sam_input_hw)[0]


def _segment_queries(model, seg_hidden, image_hidden, query_image, pixel_values_sam, image_hw, sam_input_hw,
                     grid_hw=None):
    """:func:`segment_queries` and the point prompts (``None`` without a point prompter); ``grid_hw``: ``[P, 2]``
    token grid of each query (dynamic-resolution VLMs)."""
    if int(seg_hidden.shape[0]) == 0:
        return [], None
    per_image, _, local, points = model.segment_states(
        seg_hidden, image_hidden, query_image, pixel_values_sam, image_hw, sam_input_hw, grid_hw=grid_hw
    )
    # per_image[b] holds image b's queries in their original order: hand them back in query order
    taken = [0] * len(per_image)
    masks: list[Tensor] = []
    for b in local.tolist():
        masks.append(per_image[b][taken[b]])
        taken[b] += 1
    return masks, points


@dataclass
class GeneratedSegments:
    """Masks and prompts of the generated [SEG] tokens (P queries, row-major then emission order, as
    ``GenerationOutput.seg_rows``).

    Attributes:
        masks: per row, one fp32 ``[H, W]`` logit map per [SEG] (original size of the row's image).
        points: the SasP prompts of the P queries (``read.model.sasp.PointPrompts``), ``None`` without SasP.
        similarity: ``[P, N]`` fp32 dot products of each [SEG] state with its row's N image-token states
            (``None`` when the rows' image-token counts differ); computed also when SasP is off.
    """

    masks: list[list[Tensor]]
    points: object | None
    similarity: Tensor | None


@torch.no_grad()
def segment_generated(model: ReadModel, batch: Batch, gen: GenerationOutput) -> list[list[Tensor]]:
    """Masks of the generated [SEG] tokens: per row, one fp32 ``[H, W]`` logit map per [SEG] (original size of
    the row's image), in emission order; an empty list for a row without [SEG].

    ``batch`` is the batch given to :func:`greedy_generate` (only its images and ``row_to_image`` are used).
    """
    return segment_generated_detail(model, batch, gen).masks


@torch.no_grad()
def segment_generated_detail(model: ReadModel, batch: Batch, gen: GenerationOutput) -> GeneratedSegments:
    """:func:`segment_generated` with the SasP prompts and the similarity maps of the queries."""
    from read.model.sasp_geometry import similarity_map

    device = gen.seg_hidden.device
    batch = batch.to(device)
    query_image = batch.row_to_image[gen.seg_rows]
    masks, points = _segment_queries(
        model,
        gen.seg_hidden,
        gen.image_hidden,
        query_image,
        batch.pixel_values_sam,
        batch.image_hw,
        batch.sam_input_hw,
        None if gen.image_grids is None else gen.image_grids.to(device)[query_image],
    )
    out: list[list[Tensor]] = [[] for _ in range(gen.sequences.shape[0])]
    for row, m in zip(gen.seg_rows.tolist(), masks, strict=True):
        out[row].append(m)
    sim = None
    if points is not None:
        sim = points.similarity.float()
    elif gen.image_hidden is not None and gen.num_queries > 0:  # per-grid rows: padded, see gen.image_grids
        sim = similarity_map(gen.image_hidden, gen.seg_hidden).float()
    return GeneratedSegments(masks=out, points=points, similarity=sim)
