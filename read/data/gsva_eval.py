"""gRefCOCO evaluation items as GSVA builds them (``LeapLabTHU/GSVA`` ``data/dataset.py`` ``ValDataset`` for
``grefcoco|unc|<split>``; metrics in docs and ``read.eval``).

One item per image of the split (sorted image ids), with **all** sentences of all refs of that image in the split
(refs in file order, then sentences). Each sentence becomes ``s = sent.strip().lower()`` and the expression
``t = s.strip().strip('.')``. The prompt is GSVA's fixed string, reproduced with its spacing quirks:

* question ``"<image>\\n What are " + ", ".join(ts) + "in this image? Please output segmentation masks."``:
  a space after the newline, and **no space** between the last expression and ``"in"``
  (``"... the man on the leftin this image? ..."``);
* answer ``"Sure," + ", ".join(slots) + "."`` with slot ``f"{t}:[SEG]"``, or ``f"{t}:[REJ]"`` when the
  expression's ground truth is empty: **no space** after ``"Sure,"``.

The paper (3.3) writes "Please output the segmentation masks." and "Sure, {obj1}:[SEG], ...": the code's strings
are used here because the released models were evaluated with them.

``mode="teacher_forced"`` puts the answer in (GSVA's evaluation); ``mode="generate"`` leaves it ``None``.
Either way ``masks`` is ``None`` and the ground truth is ``meta["gt_masks"]`` uint8 ``[n_expr, H, W]`` (0/1
unions, all zero for a no-target expression), with ``exists`` = ``[mask.sum() > 0]`` and ``meta["slots"]``
(``"seg"``/``"rej"``) per expression.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from read.data import templates as T
from read.data.base import DataError, Sample, check_index
from read.data.grefer import GREFCOCO, GRefCOCO
from read.data.io import load_image

__all__ = ["GRefCOCOEvalDataset", "grefcoco_eval_answer", "grefcoco_eval_question"]


def grefcoco_eval_question(expressions: list[str]) -> str:
    """GSVA's gRefCOCO question for stripped expressions (quirks kept on purpose, module docstring):
    ``"<image>\\n What are " + ", ".join(expressions) + "in this image? Please output segmentation masks."``."""
    return T.GREFCOCO_EVAL_QUESTION_PREFIX + ", ".join(expressions) + T.GREFCOCO_EVAL_QUESTION_SUFFIX


def grefcoco_eval_answer(expressions: list[str], present: list[bool]) -> str:
    """GSVA's teacher-forced answer: ``"Sure," + ", ".join(f"{t}:[SEG]" / f"{t}:[REJ]") + "."`` (no space after
    ``"Sure,"``, as the official string)."""
    slots = [f"{t}:[SEG]" if p else f"{t}:[REJ]" for t, p in zip(expressions, present, strict=True)]
    return T.GREFCOCO_EVAL_ANSWER_PREFIX + ", ".join(slots) + T.GREFCOCO_EVAL_ANSWER_SUFFIX


class GRefCOCOEvalDataset:
    """gRefCOCO ``val`` / ``testA`` / ``testB`` evaluation items (module docstring).

    Args:
        root: dataset root holding ``refer_seg/grefcoco`` and the train2014 images.
        split: a split present in the refs file (``val``, ``testA``, ``testB``; ``train`` also works).
        mode: ``teacher_forced`` (answer in the prompt) or ``generate`` (answer ``None``).
        split_by: the ``grefs(<split_by>)`` file.
    """

    MODES = ("teacher_forced", "generate")
    name = GREFCOCO

    def __init__(
        self, root: str | os.PathLike, split: str = "val", *, mode: str = "teacher_forced", split_by: str = "unc"
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.root = Path(root)
        self.split = split
        self.mode = mode
        self.dataset = GREFCOCO
        self.ann = GRefCOCO(self.root, split_by)
        self.image_ids: list[int] = self.ann.image_ids(split)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Sample:
        image_id = self.image_ids[check_index(index, len(self), f"{self.name}/{self.split}", "images")]
        ann = self.ann
        pairs = [(ref, sent) for ref in ann.refs_by_image(image_id, self.split) for sent in ref["sentences"]]
        sents = [str(sent["sent"]).strip().lower() for _, sent in pairs]
        expressions = [s.strip().strip(".") for s in sents]
        hw = ann.image_hw(image_id)
        by_ref: dict[int, np.ndarray] = {}
        for ref, _ in pairs:
            rid = int(ref["ref_id"])
            if rid not in by_ref:
                by_ref[rid] = ann.ref_mask(ref)
        gt = np.stack([by_ref[int(ref["ref_id"])] for ref, _ in pairs]).astype(np.uint8)
        present = [bool(m.sum() > 0) for m in gt]
        path = ann.image_path(image_id)
        image = load_image(path)
        if image.shape[:2] != hw:
            raise DataError(f"{path}: image is {image.shape[0]}x{image.shape[1]} but {ann.instances_path} says "
                            f"{hw[0]}x{hw[1]}")
        question = grefcoco_eval_question(expressions)
        answer = grefcoco_eval_answer(expressions, present) if self.mode == "teacher_forced" else None
        sample = Sample(
            image=image,
            conversations=[[(question, answer)]],
            masks=None,
            exists=present,
            name=str(path),
            meta={
                "dataset": GREFCOCO,
                "split": self.split,
                "mode": self.mode,
                "image_id": int(image_id),
                "image_path": str(path),
                "gt_masks": gt,
                "slots": ["seg" if p else "rej" for p in present],
                "expressions": expressions,
                "sentences": [str(sent["sent"]) for _, sent in pairs],
                "sent_ids": [int(sent["sent_id"]) if "sent_id" in sent else None for _, sent in pairs],
                "ref_ids": [int(ref["ref_id"]) for ref, _ in pairs],
                "ann_ids": [GRefCOCO.ann_ids(ref) for ref, _ in pairs],
                "no_target": [GRefCOCO.is_no_target(ref) for ref, _ in pairs],
            },
        )
        sample.validate()
        return sample

    def sample(self, rng: np.random.Generator) -> Sample:
        """A uniformly random item (evaluation iterates by index)."""
        return self[int(rng.integers(len(self)))]
