"""GSVA-style training datasets (``data.style: gsva``): several expressions or classes in one question, answered
slot by slot with ``[SEG]`` for a present target and ``[REJ]`` for an absent one (GSVA, CVPR 2024, 3.3-3.4;
``LeapLabTHU/GSVA`` ``data/refer_seg_dataset.py`` and ``data/sem_seg_dataset.py``).

Referring expressions (:class:`GSVAReferSegDataset`; refCLEF/refCOCO/refCOCO+/refCOCOg through
:class:`~read.data.refer.ReferAnnotations`, gRefCOCO through :class:`~read.data.grefer.GRefCOCO`), one draw:

1. a sub-dataset uniformly, one of its images uniformly (images with a ref of ``split``);
2. every sentence of every ref of that image (refs in file order, then sentences); ``num_classes_per_sample`` of
   them without replacement when there are at least that many, else all in order;
3. one answer-template index ``c`` (``ANSWER_LIST_MODE4_*``) for the whole answer, then one
   ``SHORT_QUESTION_LIST_MODE4`` question template;
4. expressions ``t = sent.strip().strip('.')`` (an empty one or one with ``"||"`` is a DataError, the official code
   asserts); question ``template.format(class_name=", ".join(ts).lower())``; slot
   ``ANSWER_LIST_MODE4_TEMPLATE[c].format(class_name=t)`` (``t`` not lower-cased), with every ``"SEG"`` of the slot
   replaced by ``"REJ"`` when the expression's mask is empty (``mask.sum() < 1``: a no-target gRefCOCO expression,
   or an annotation without pixels); answer ``START[c] + " " + ", ".join(slots) + END[c]``;
5. an image whose slots are all ``[REJ]`` is re-drawn from step 1 (official ``return self.__getitem__(0)``, which
   re-draws at random), at most ``max_redraw`` times.

Beyond GSVA: R-RefCOCO / FP-RefCOCO sentences that do not exist (``exist`` false / ``is_false_premise`` true)
get an empty mask, hence ``[REJ]`` (GSVA never reads those datasets; without this their ref's object would be
segmented), so ``neg_refer_seg`` / ``correct_refer_seg`` can also be drawn in this style.

Semantic segmentation (:class:`GSVASemSegDataset`, the project's five sources and their scene logic): a source
uniformly, an image uniformly (re-drawn from the source choice while it has no unit), up to
``num_classes_per_sample`` units (present classes of a label map, annotations of PACO-LVIS / PASCAL-Part, chosen
by :func:`~read.data.sem_seg_draw.select_indices`), names rendered (``obj part`` / ``the part of the obj``),
then ``c`` and the question template as above. Every slot is ``[SEG]`` (GSVA's semantic draw has no negatives and
no false premises), and its slots are joined with ``","`` **without a space** (official ``",".join``, unlike the
referring draw's ``", "``). The class mask is the sampled class id's (official: the first class with that name,
the same unless two classes share a name).

The Sample of a draw: one conversation row ``[(question, answer)]``; ``masks`` uint8 ``[n_seg, H, W]``, one per
``[SEG]`` slot in answer order (``[REJ]`` slots have no mask; GSVA's model takes no mask loss for them);
``exists`` one bool per slot; ``meta["slots"]`` (``"seg"``/``"rej"``), ``meta["expressions"]``,
``meta["image_path"]``, ``meta["dataset"]`` (the sub-dataset). GSVA's ReasonSeg and VQA draws are LISA's
(:mod:`read.data.gsva_reason`, :class:`read.data.vqa.VQADataset`).

``__getitem__(i)`` is deterministic (image ``i``, draws from ``np.random.default_rng(i)``) and never re-draws:
an all-``[REJ]`` item is returned as it is (``meta["all_rej"]``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from read.data import templates as T
from read.data.base import DataError, Sample, check_index, locate_in_concat
from read.data.grefer import GREFCOCO, GRefCOCO
from read.data.io import load_image
from read.data.refer import ReferAnnotations, sentence_exists
from read.data.sem_seg import SEM_SEG_DATASETS, SemSegDataset
from read.data.sem_seg_draw import Scene, SemSegSource, select_indices
from read.data.sem_seg_labels import CocoStuffClassList, render_class_name

__all__ = [
    "DEFAULT_GSVA_REFER_SEG",
    "GSVAReferSegDataset",
    "GSVASemSegDataset",
    "gsva_answer",
    "gsva_question",
    "gsva_slot",
    "open_refer",
    "strip_expression",
]

DEFAULT_GSVA_REFER_SEG = ("refclef", "refcoco", "refcoco+", "refcocog")


def strip_expression(text: str, where: str) -> str:
    """``text.strip().strip('.')`` (official); an empty text or one containing ``"||"`` is a DataError."""
    t = str(text).strip()
    if t == "" or "||" in t:
        raise DataError(f"{where}: expression {text!r} is empty or contains '||'")
    return t.strip(".")


def gsva_question(template: str, texts: Sequence[str]) -> str:
    """``template.format(class_name=", ".join(texts).lower())``."""
    return template.format(class_name=", ".join(texts).lower())


def gsva_slot(choice: int, text: str, present: bool) -> str:
    """``ANSWER_LIST_MODE4_TEMPLATE[choice]`` with ``text``; every ``SEG`` becomes ``REJ`` when absent."""
    slot = T.GSVA_ANSWER_LIST_MODE4_TEMPLATE[choice].format(class_name=text)
    return slot if present else slot.replace("SEG", "REJ")


def gsva_answer(choice: int, slots: Sequence[str], sep: str = ", ") -> str:
    """``START[choice] + " " + sep.join(slots) + END[choice]`` (``sep``: ``", "`` referring, ``","`` semantic)."""
    return T.GSVA_ANSWER_LIST_MODE4_START[choice] + " " + sep.join(slots) + T.GSVA_ANSWER_LIST_MODE4_END[choice]


def _choose_templates(rng: np.random.Generator) -> tuple[int, int]:
    """(answer choice ``c``, question template index), in the official order."""
    c = int(rng.integers(len(T.GSVA_ANSWER_LIST_MODE4_START)))
    q = int(rng.integers(len(T.GSVA_SHORT_QUESTION_LIST_MODE4)))
    return c, q


def _stack(masks: list[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    return np.stack(masks).astype(np.uint8) if masks else np.zeros((0, *hw), dtype=np.uint8)


def _parse(datasets: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(datasets, str):
        datasets = [d for d in datasets.split("||") if d]
    out = tuple(datasets)
    if not out:
        raise ValueError("no datasets given")
    return out


def open_refer(root: str | os.PathLike, dataset: str) -> ReferAnnotations | GRefCOCO:
    """gRefCOCO's reader for ``grefcoco``, the REFER reader (project splitBy) for the others."""
    return GRefCOCO(root) if dataset == GREFCOCO else ReferAnnotations(root, dataset)


# ----------------------------------------------------------------------------------------------------------
# Referring expressions
# ----------------------------------------------------------------------------------------------------------


class GSVAReferSegDataset:
    """GSVA's referring-expression draw over REFER datasets and gRefCOCO (module docstring).

    Args:
        root: dataset root holding ``refer_seg/``.
        datasets: sub-datasets (tuple or ``"a||b"``), e.g. ``("refclef", "refcoco", "refcoco+", "refcocog",
            "grefcoco")``.
        num_classes_per_sample: most expressions per question (GSVA's script: 3 by default, 5 suggested).
        split: the split images and refs come from.
        name: registry name (``refer_seg``, ``neg_refer_seg``, ``correct_refer_seg``).
        max_redraw: draws in a row that may give an all-``[REJ]`` image before :class:`DataError`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        datasets: str | Sequence[str] = DEFAULT_GSVA_REFER_SEG,
        *,
        num_classes_per_sample: int = 3,
        split: str = "train",
        name: str = "refer_seg",
        max_redraw: int = 100,
    ) -> None:
        if num_classes_per_sample < 1:
            raise ValueError(f"num_classes_per_sample must be >= 1, got {num_classes_per_sample}")
        if max_redraw < 1:
            raise ValueError(f"max_redraw must be >= 1, got {max_redraw}")
        self.root = Path(root)
        self.datasets = _parse(datasets)
        self.num_classes_per_sample = int(num_classes_per_sample)
        self.split = split
        self.name = name
        self.max_redraw = int(max_redraw)
        self.anns = [open_refer(self.root, d) for d in self.datasets]
        self.image_ids: list[list[int]] = [a.image_ids(split) for a in self.anns]
        self._offsets = np.cumsum([0] + [len(x) for x in self.image_ids])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> Sample:
        index = check_index(index, len(self), self.name, "images")
        k, local = locate_in_concat(self._offsets, index)
        image_id = self.image_ids[k][local]
        sample = self._build(k, image_id, np.random.default_rng(index), allow_all_rej=True)
        assert sample is not None
        return sample

    def sample(self, rng: np.random.Generator) -> Sample:
        """One official draw; an all-``[REJ]`` image is re-drawn (sub-dataset and image again)."""
        tried = []
        for attempt in range(self.max_redraw):
            k = int(rng.integers(len(self.anns)))
            ids = self.image_ids[k]
            image_id = ids[int(rng.integers(len(ids)))]
            sample = self._build(k, image_id, rng, allow_all_rej=False)
            if sample is not None:
                sample.meta["redraws"] = attempt
                return sample
            tried.append(f"{self.anns[k].refs_path} image {image_id}")
        raise DataError(
            f"{tried[-1]}: {self.max_redraw} draws in a row gave only [REJ] slots (every sampled expression has an "
            f"empty target); last ones: {tried[-3:]}"
        )

    def _queries(self, ann, image_id: int) -> list[tuple[dict, dict]]:
        return [(ref, sent) for ref in ann.refs_by_image(image_id, self.split) for sent in ref["sentences"]]

    def _build(self, k: int, image_id: int, rng: np.random.Generator, *, allow_all_rej: bool) -> Sample | None:
        ann = self.anns[k]
        qs = self._queries(ann, image_id)
        if not qs:
            raise DataError(f"{ann.refs_path}: image {image_id} has no sentences in split {self.split!r}")
        n = self.num_classes_per_sample
        picked = [int(i) for i in rng.choice(len(qs), size=n, replace=False)] if len(qs) >= n else list(range(len(qs)))
        qs = [qs[i] for i in picked]
        where = f"{ann.refs_path}: image {image_id}"
        texts = [strip_expression(sent["sent"], where) for _, sent in qs]
        hw = ann.image_hw(image_id)
        by_ref: dict[int, np.ndarray] = {}
        masks = []
        for ref, sent in qs:
            if not sentence_exists(sent):
                masks.append(np.zeros(hw, dtype=np.uint8))
                continue
            rid = int(ref["ref_id"])
            if rid not in by_ref:
                by_ref[rid] = (ann.target_mask(ref["ann_id"], image_id=image_id) > 0).astype(np.uint8)
            masks.append(by_ref[rid])
        present = [bool(m.sum() >= 1) for m in masks]
        c, qi = _choose_templates(rng)
        if not any(present) and not allow_all_rej:
            return None
        question = gsva_question(T.GSVA_SHORT_QUESTION_LIST_MODE4[qi], texts)
        answer = gsva_answer(c, [gsva_slot(c, t, p) for t, p in zip(texts, present, strict=True)])
        path = ann.image_path(image_id)
        image = load_image(path)
        if image.shape[:2] != hw:
            raise DataError(f"{path}: image is {image.shape[0]}x{image.shape[1]} but {ann.instances_path} says "
                            f"{hw[0]}x{hw[1]}")
        sample = Sample(
            image=image,
            conversations=[[(question, answer)]],
            masks=_stack([m for m, p in zip(masks, present, strict=True) if p], hw),
            exists=present,
            name=str(path),
            meta={
                "dataset": ann.dataset,
                "component": self.name,
                "split": self.split,
                "image_id": int(image_id),
                "image_path": str(path),
                "slots": ["seg" if p else "rej" for p in present],
                "expressions": texts,
                "sentences": [str(s["sent"]) for _, s in qs],
                "ref_ids": [int(r["ref_id"]) for r, _ in qs],
                "ann_ids": [r["ann_id"] for r, _ in qs],
                "sent_ids": [int(s["sent_id"]) if "sent_id" in s else None for _, s in qs],
                "answer_choice": c,
                "question_template": qi,
                "all_rej": not any(present),
            },
        )
        sample.validate()
        return sample


# ----------------------------------------------------------------------------------------------------------
# Semantic segmentation
# ----------------------------------------------------------------------------------------------------------


class GSVASemSegDataset:
    """GSVA's semantic-segmentation draw over the project's five sources (module docstring).

    Args:
        root: data root.
        datasets: sub-datasets from ``ade20k``, ``cocostuff``, ``pascal_part``, ``paco_lvis``, ``mapillary``.
        num_classes_per_sample: most classes per question.
        max_redraw: draws in a row of an image without any unit before :class:`DataError`.
        cocostuff_class_list: as :class:`~read.data.sem_seg.SemSegDataset`.
    """

    name = "sem_seg"

    def __init__(
        self,
        root: str | os.PathLike,
        datasets: str | Sequence[str] = SEM_SEG_DATASETS,
        *,
        num_classes_per_sample: int = 3,
        max_redraw: int = 10,
        cocostuff_class_list: CocoStuffClassList = "official",
    ) -> None:
        if max_redraw < 1:
            raise ValueError(f"max_redraw must be >= 1, got {max_redraw}")
        self.base = SemSegDataset(root, datasets, num_classes_per_sample=num_classes_per_sample,
                                  cocostuff_class_list=cocostuff_class_list)
        self.sources: list[SemSegSource] = self.base.sources
        self.num_classes_per_sample = int(num_classes_per_sample)
        self.max_redraw = int(max_redraw)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Sample:
        source, local = self.base.locate(index)
        scene = source._scene(local)
        if not scene.unit_classes:
            raise DataError(f"{scene.source}: no valid class in the label (image {scene.path})")
        return self._build(source, scene, local, np.random.default_rng(index % len(self)))

    def sample(self, rng: np.random.Generator) -> Sample:
        """One official draw: source, image (re-drawn from the source choice while it has no unit), units."""
        tried = []
        for _ in range(self.max_redraw):
            source = self.sources[int(rng.integers(len(self.sources)))]
            index = int(rng.integers(len(source)))
            scene = source._scene(index)
            if scene.unit_classes:
                return self._build(source, scene, index, rng)
            tried.append(str(scene.source))
        raise DataError(f"{tried[-1]}: no valid class in the label; {self.max_redraw} draws gave only unlabelled "
                        f"images (last ones: {tried[-3:]})")

    def _build(self, source: SemSegSource, scene: Scene, index: int, rng: np.random.Generator) -> Sample:
        units = select_indices(len(scene.unit_classes), self.num_classes_per_sample, rng)
        names = [render_class_name(source.classes[scene.unit_classes[u]], rng) for u in units]
        c, qi = _choose_templates(rng)
        for name in names:
            strip_expression(name, f"{scene.source}: class name")  # official asserts: non-empty, no "||"
        question = gsva_question(T.GSVA_SHORT_QUESTION_LIST_MODE4[qi], names)
        answer = gsva_answer(c, [gsva_slot(c, name, True) for name in names], sep=",")
        h, w = scene.image.shape[:2]
        sample = Sample(
            image=scene.image,
            conversations=[[(question, answer)]],
            masks=_stack([scene.mask(u) for u in units], (h, w)),
            exists=[True] * len(units),
            name=str(scene.path),
            meta={
                "dataset": source.name,
                "component": self.name,
                "index": index,
                "image_path": str(scene.path),
                "source": str(scene.source),
                "slots": ["seg"] * len(units),
                "expressions": names,
                "class_ids": [scene.unit_classes[u] for u in units],
                "ann_ids": scene.unit_ids(units),
                "answer_choice": c,
                "question_template": qi,
            },
        )
        sample.validate()
        return sample
