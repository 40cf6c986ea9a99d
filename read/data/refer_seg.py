"""Referring segmentation datasets: training draws (``refer_seg``, ``neg_refer_seg``, ``correct_refer_seg``) and
the per-image evaluation set (refCOCO validation, FP-RefCOCO "See"/"Segment").

Training draw (spec §4.2 "ReferSeg"), all randomness from the caller's ``rng``:

1. a sub-dataset uniformly, then one of its images (images that have at least one ref of ``split``);
2. all refs of that image in ``split`` and all their sentences; up to ``num_classes_per_sample`` of them without
   replacement (all of them, in file order, when there are fewer);
3. per sentence ``exists`` = ``not is_false_premise`` (FP-RefCOCO), else ``exist`` (R-RefCOCO), else True;
4. question = random ``SHORT_QUESTION_TEMPLATE`` with ``class_name = sentence.lower()``; answer = random
   ``SHORT_ANSWER_TEMPLATE`` (exists), ``CORRECT_ANSWER_TEMPLATE`` with ``gt_name = gt_sent.lower()``
   (non-existent, FP-RefCOCO datasets), or ``NEG_ANSWER_TEMPLATE`` (non-existent, otherwise);
5. one binary mask per *existing* sentence at the original image size, ``[0, H, W]`` when there is none (the
   official code returns the resized SAM shape there, spec §10 item 1; we keep the original size).

Sentence fields (FP-RefCOCO / R-RefCOCO pickles, SESAME's release): each sentence dict of FP-RefCOCO carries
``is_false_premise`` (bool) and ``gt_sent`` (the corrected, true expression for a false premise); each sentence
of R-RefCOCO carries ``exist`` (bool). The keys are looked up per sentence, so a plain refCOCO sentence (no key)
exists. A false premise of an FP dataset without a non-empty ``gt_sent`` is a :class:`DataError`.

Masks are binarised (``> 0``): the official per-part *sum* (:meth:`ReferAnnotations.ann_to_mask`) can give 2
where polygon parts overlap, which is not a valid BCE target; the sample contract is {0, 1, 255}.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from read.data import templates as T
from read.data.base import DataError, Sample, check_index, locate_in_concat
from read.data.io import load_image
from read.data.refer import ReferAnnotations, is_false_premise_dataset, sentence_exists

DEFAULT_REFER_SEG = ("refclef", "refcoco", "refcoco+", "refcocog")
DEFAULT_NEG_REFER_SEG = ("R-refcocog", "R-refcoco", "R-refcoco+")
DEFAULT_CORRECT_REFER_SEG = ("fprefcocog", "fprefcoco", "fprefcoco+")


@dataclass
class _Query:
    ref: dict
    sent: dict
    index: int  # position among all sentences of the image (refs in file order, sentences in ref order)

    @property
    def text(self) -> str:
        return str(self.sent["sent"])

    @property
    def exists(self) -> bool:
        return sentence_exists(self.sent)

    @property
    def gt_sent(self) -> str:
        return str(self.sent.get("gt_sent", "") or "")


def _parse_datasets(datasets: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if isinstance(datasets, str):
        datasets = [d for d in datasets.split("||") if d]
    out = tuple(datasets)
    if not out:
        raise ValueError("no datasets given")
    return out


def _queries(ann: ReferAnnotations, image_id: int, split: str) -> list[_Query]:
    out: list[_Query] = []
    for ref in ann.refs_by_image(image_id, split):
        for sent in ref["sentences"]:
            out.append(_Query(ref=ref, sent=sent, index=len(out)))
    return out


def _load_checked_image(ann: ReferAnnotations, image_id: int) -> tuple[np.ndarray, Path]:
    path = ann.image_path(image_id)
    image = load_image(path)
    hw = ann.image_hw(image_id)
    if image.shape[:2] != hw:
        raise DataError(
            f"{path}: image is {image.shape[0]}x{image.shape[1]} but {ann.instances_path} says {hw[0]}x{hw[1]}"
        )
    return image, path


def _target(ann: ReferAnnotations, q: _Query, image_id: int) -> np.ndarray:
    return ann.target_mask(q.ref["ann_id"], image_id=image_id)


def _stack(masks: list[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    return np.stack(masks).astype(np.uint8) if masks else np.zeros((0, *hw), dtype=np.uint8)


def _meta(ann: ReferAnnotations, split: str, image_id: int, qs: list[_Query], path: Path) -> dict:
    return {
        "dataset": ann.dataset,
        "split": split,
        "image_id": int(image_id),
        "image_path": str(path),
        "ref_ids": [int(q.ref["ref_id"]) for q in qs],
        "ann_ids": [q.ref["ann_id"] for q in qs],
        "sent_ids": [int(q.sent["sent_id"]) if "sent_id" in q.sent else None for q in qs],
        "sent_indices": [q.index for q in qs],
        "sentences": [q.text for q in qs],
        "gt_sents": [q.gt_sent for q in qs],
    }


def _default_name(datasets: tuple[str, ...]) -> str:
    if all(is_false_premise_dataset(d) for d in datasets):
        return "correct_refer_seg"
    if all(d.startswith("R-") for d in datasets):
        return "neg_refer_seg"
    return "refer_seg"


class ReferSegDataset:
    """Training draws for ``refer_seg`` / ``neg_refer_seg`` / ``correct_refer_seg`` (module docstring).

    Args:
        root: dataset root holding ``refer_seg/``.
        datasets: sub-datasets (tuple or the official ``"a||b||c"`` string).
        num_classes_per_sample: most sentences per draw (official CLI: 3).
        split: REFER split the images and refs come from.
        name: registry name; default ``correct_refer_seg`` when all sub-datasets are FP-RefCOCO,
            ``neg_refer_seg`` when all are R-RefCOCO, else ``refer_seg``.

    ``__getitem__(i)`` is deterministic: image ``i`` of the concatenated (sub-dataset order, sorted image id)
    list, with sentences and templates drawn from ``np.random.default_rng(i)``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        datasets: str | tuple[str, ...] | list[str] = DEFAULT_REFER_SEG,
        *,
        num_classes_per_sample: int = 3,
        split: str = "train",
        name: str | None = None,
    ) -> None:
        if num_classes_per_sample < 1:
            raise ValueError(f"num_classes_per_sample must be >= 1, got {num_classes_per_sample}")
        self.root = Path(root)
        self.datasets = _parse_datasets(datasets)
        self.num_classes_per_sample = int(num_classes_per_sample)
        self.split = split
        self.name = name or _default_name(self.datasets)
        self.anns: list[ReferAnnotations] = [ReferAnnotations(self.root, d) for d in self.datasets]
        self.image_ids: list[list[int]] = [a.image_ids(split) for a in self.anns]
        self._offsets = np.cumsum([0] + [len(x) for x in self.image_ids])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> Sample:
        index = check_index(index, len(self), self.name, "images")
        k, local = locate_in_concat(self._offsets, index)
        image_id = self.image_ids[k][local]
        return self._build(k, image_id, np.random.default_rng(index))

    def sample(self, rng: np.random.Generator) -> Sample:
        """One official training draw (uniform sub-dataset, uniform image)."""
        k = int(rng.integers(len(self.anns)))
        ids = self.image_ids[k]
        image_id = ids[int(rng.integers(len(ids)))]
        return self._build(k, image_id, rng)

    def _build(self, k: int, image_id: int, rng: np.random.Generator) -> Sample:
        ann = self.anns[k]
        fp_dataset = is_false_premise_dataset(ann.dataset)
        qs = _queries(ann, image_id, self.split)
        if not qs:
            raise DataError(f"{ann.refs_path}: image {image_id} has no sentences in split {self.split!r}")
        if len(qs) >= self.num_classes_per_sample:
            picked = rng.choice(len(qs), size=self.num_classes_per_sample, replace=False)
            qs = [qs[int(i)] for i in picked]
        image, path = _load_checked_image(ann, image_id)
        convs, masks, exists = [], [], []
        for q in qs:
            cls = q.text.lower()
            question = T.choose(T.SHORT_QUESTION_TEMPLATE, rng).format(class_name=cls)
            if q.exists:
                answer = T.choose(T.SHORT_ANSWER_TEMPLATE, rng).format(class_name=cls)
                masks.append(_target(ann, q, image_id))
            elif fp_dataset:
                if not q.gt_sent:
                    raise DataError(
                        f"{ann.refs_path}: false-premise sentence {q.sent.get('sent_id')!r} ({q.text!r}) "
                        "has no 'gt_sent' correction"
                    )
                answer = T.choose(T.CORRECT_ANSWER_TEMPLATE, rng).format(
                    class_name=cls, gt_name=q.gt_sent.lower()
                )
            else:
                answer = T.choose(T.NEG_ANSWER_TEMPLATE, rng).format(class_name=cls)
            convs.append([(question, answer)])
            exists.append(q.exists)
        sample = Sample(
            image=image,
            conversations=convs,
            masks=_stack(masks, image.shape[:2]),
            exists=exists,
            name=str(path),
            meta=_meta(ann, self.split, image_id, qs, path),
        )
        sample.validate()
        return sample


class ReferSegEvalDataset:
    """Per-image evaluation set (official ``TestReferDataset``): one item per image (sorted image ids), every
    sentence of every ref of that image in ``split``.

    ``mode="teacher_forced"`` (refCOCO validation, spec §5.1): per sentence a random ``SHORT_QUESTION_TEMPLATE``
    and a random ``SHORT_ANSWER_TEMPLATE`` (with ``[SEG]``); ``masks`` holds one mask per sentence, a zero mask for
    a non-existent target (official ``include_nonexist=True``).

    ``mode="generate"`` (FP-RefCOCO "See"/"Segment", spec §5.3): the same questions with answer ``None``;
    ``masks`` is ``None`` (no ``[SEG]`` in the prompt) and the per-sentence ground truth is in
    ``meta["gt_masks"]`` ``[n, H, W]`` (zeros for false premises), with ``exists`` per sentence.

    Template choice (fixes spec §10 item 17): the official code draws from Python's global ``random`` seeded in
    the main process, so the templates depend on the worker count and iteration order. Here sentence ``j`` of
    image ``image_id`` always uses ``np.random.default_rng([template_seed, image_id, j])`` (question first, then
    answer), so it depends only on (template_seed, image id, sentence index).
    """

    MODES = ("teacher_forced", "generate")

    def __init__(
        self,
        root: str | os.PathLike,
        dataset: str,
        split: str,
        *,
        template_seed: int = 42,
        mode: str = "teacher_forced",
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.root = Path(root)
        self.dataset = dataset
        self.name = dataset
        self.split = split
        self.template_seed = int(template_seed)
        self.mode = mode
        self.ann = ReferAnnotations(self.root, dataset)
        self.image_ids: list[int] = self.ann.image_ids(split)

    def __len__(self) -> int:
        return len(self.image_ids)

    def template_rng(self, image_id: int, sent_index: int) -> np.random.Generator:
        if image_id < 0 or sent_index < 0:
            raise DataError(
                f"{self.ann.refs_path}: negative image id {image_id} / sentence index {sent_index}"
            )
        return np.random.default_rng([self.template_seed, int(image_id), int(sent_index)])

    def __getitem__(self, index: int) -> Sample:
        image_id = self.image_ids[check_index(index, len(self), f"{self.name}/{self.split}", "images")]
        ann = self.ann
        qs = _queries(ann, image_id, self.split)
        image, path = _load_checked_image(ann, image_id)
        hw = image.shape[:2]
        convs, masks, exists = [], [], []
        for q in qs:
            rng = self.template_rng(image_id, q.index)
            cls = q.text.lower()
            question = T.choose(T.SHORT_QUESTION_TEMPLATE, rng).format(class_name=cls)
            answer = (
                T.choose(T.SHORT_ANSWER_TEMPLATE, rng).format(class_name=cls)
                if self.mode == "teacher_forced"
                else None
            )
            convs.append([(question, answer)])
            exists.append(q.exists)
            masks.append(_target(ann, q, image_id) if q.exists else np.zeros(hw, dtype=np.uint8))
        gt = _stack(masks, hw)
        meta = _meta(ann, self.split, image_id, qs, path)
        meta["mode"] = self.mode
        if self.mode == "generate":
            meta["gt_masks"] = gt
        sample = Sample(
            image=image,
            conversations=convs,
            masks=gt if self.mode == "teacher_forced" else None,
            exists=exists,
            name=str(path),
            meta=meta,
        )
        sample.validate()
        return sample

    def sample(self, rng: np.random.Generator) -> Sample:
        """A uniformly random item (protocol completeness; evaluation iterates by index)."""
        return self[int(rng.integers(len(self)))]
