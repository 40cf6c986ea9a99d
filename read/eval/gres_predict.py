"""gRefCOCO predictions (GSVA): one slot per expression, ``[SEG]`` (a mask) or ``[REJ]`` (absent target).

Two protocols (spec ../shared/spec/GSVA_EVAL.md):

* ``teacher_forced`` (GSVA's ``eval_gres``, ``model/modeling_lisa_gsva.py:145-190``): the ground-truth answer is fed
  in; the model's decision at each slot is its argmax at the position before the slot token: a ground-truth
  ``[SEG]`` slot counts as rejected when that argmax is not ``[SEG]``, a ground-truth ``[REJ]`` slot when it is
  ``[REJ]``. Then every ``[REJ]`` of the input is replaced by ``[SEG]`` and the model is run again, so every slot
  gets a mask. ``eval.rej_rule="reeval"`` (the code) scores a rejected target with that mask; ``"empty"`` (the
  paper, 3.4, and ReLA's evaluator) scores it with an empty mask.
* ``generate``: the model answers by itself (greedy, KV cache). The k-th ``[SEG]``/``[REJ]`` it emits is the slot of
  the k-th expression; a ``[REJ]`` gives an empty mask without calling SAM. A slot the model never emits
  (``missing``) counts as a wrong decision: an empty mask, "rejected" for a target and "not rejected" for a
  no-target expression.

Each function returns, per image, ``masks`` (bool ``[n_expr, H, W]``), ``rejected`` (list of bool), ``slots``
(``seg``/``rej``/``missing``, what the model decided) and, when generating, ``texts``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from read.model import llava_backbone as lb
from read.model.batch import Batch

__all__ = ["answer_slots", "predict_gres_generate", "predict_gres_teacher_forced"]


def answer_slots(tokens: list[int], seg_id: int, rej_id: int) -> list[str]:
    """The slots of a generated answer in order: ``seg`` for every ``[SEG]`` id, ``rej`` for every ``[REJ]`` id."""
    return ["seg" if t == seg_id else "rej" for t in tokens if t in (seg_id, rej_id)]


@torch.no_grad()
def predict_gres_teacher_forced(model, batch: Batch, tokenizer, *, rej_rule: str = "reeval") -> list[dict]:  # noqa: ANN001
    """Teacher-forced gRefCOCO predictions for a batch whose rows hold the ground-truth answers (one row per
    image). See the module docstring."""
    seg, rej = tokenizer.seg_token_id, tokenizer.rej_token_id
    if rej is None:
        raise ValueError("gRefCOCO needs the [REJ] token: set model.vlm.rej_token")
    ids = batch.input_ids
    hidden = model.hidden_states(batch)
    rows, cols = ((ids == seg) | (ids == rej)).nonzero(as_tuple=True)  # row-major: the slots in answer order
    top = lb.lm_logits(model.vlm, hidden[rows, cols - 1], getattr(model, "output_vocab", None)).argmax(-1)
    gt_seg = ids[rows, cols] == seg
    rejected = torch.where(gt_seg, top != seg, top == rej)
    every_seg = ids.masked_fill(ids == rej, seg)  # re-run with every slot as [SEG]
    out = model(replace(batch, input_ids=every_seg, labels=None, gt_masks=None))
    results = []
    slot_image = batch.row_to_image[rows]
    for b, logits in enumerate(out.pred_masks):
        rej_b = rejected[slot_image == b].tolist()
        masks = (logits > 0).cpu().numpy()
        if masks.shape[0] != len(rej_b):
            raise RuntimeError(f"image {b}: {masks.shape[0]} masks for {len(rej_b)} slots")
        if rej_rule == "empty":
            masks[np.asarray(rej_b, dtype=bool)] = False
        results.append({"masks": masks, "rejected": rej_b, "slots": ["rej" if r else "seg" for r in rej_b]})
    return results


@torch.no_grad()
def predict_gres_generate(model, batch: Batch, tokenizer, n_expressions: list[int], *,  # noqa: ANN001
                          max_new_tokens: int) -> list[dict]:
    """gRefCOCO predictions from the model's own answers (one prompt row per image, ``n_expressions[b]``
    expressions asked about image ``b``). See the module docstring."""
    from read.model.generate import greedy_generate, left_pad, segment_generated

    seg, rej = tokenizer.seg_token_id, tokenizer.rej_token_id
    if rej is None:
        raise ValueError("gRefCOCO needs the [REJ] token: set model.vlm.rej_token")
    padded = left_pad(batch, tokenizer.pad_id)
    gen = greedy_generate(model, padded, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                          pad_id=tokenizer.pad_id)
    seg_masks = segment_generated(model, padded, gen)  # SAM runs for the [SEG] slots only
    results = []
    for r in range(padded.input_ids.shape[0]):
        b = int(padded.row_to_image[r])
        h, w = (int(v) for v in padded.image_hw[b])
        emitted = answer_slots(gen.new_tokens[r], seg, rej)
        row_masks = iter(seg_masks[r])
        masks, rejected, slots = [], [], []
        for k in range(n_expressions[b]):
            kind = emitted[k] if k < len(emitted) else "missing"
            if kind == "seg":
                masks.append((next(row_masks) > 0).cpu().numpy())
                rejected.append(False)
            else:
                masks.append(np.zeros((h, w), dtype=bool))
                rejected.append(kind == "rej")  # a missing slot is fixed up by the caller (needs the ground truth)
            slots.append(kind)
        results.append({"masks": np.stack(masks) if masks else np.zeros((0, h, w), bool), "rejected": rejected,
                        "slots": slots, "texts": tokenizer.decode(gen.new_tokens[r], skip_special_tokens=True)})
    return results
