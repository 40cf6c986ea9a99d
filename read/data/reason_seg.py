"""ReasonSeg (LISA) with SESAME's false-premise QAs: annotation reader, training draws, evaluation items.

On disk (spec 4.1): ``<root>/reason_seg/ReasonSeg/<split>/<stem>.jpg`` with a labelme-style ``<stem>.json``:

* ``shapes``: ``[{"label": str, "points": [[x, y], ...]}, ...]`` polygons;
* ``text``: list of queries (all about the same target);
* ``is_sentence``: whether the queries are sentences (long template) or names (short template);
* ``false_premise_QA`` (SESAME's "FP-Aug ReasonSeg", training only): ``[[query, is_sentence, answer], ...]``.

The annotation reader (mask rasterisation, shapes with fewer than 3 points, encodings) is
:mod:`read.data.reason_seg_anno`; its public names are re-exported here.

Differences from the official code, on purpose:

* Bad annotations raise :class:`~read.data.base.DataError` naming the file (malformed JSON, missing or
  wrongly typed keys, shapes without points or with non-numeric points, empty query lists, masks without
  foreground) instead of a KeyError deep in a worker or a silently wrong mask. Shapes with 1 or 2 points are
  drawn as the official reader draws them (a pixel, a line), with a warning.
* Spec 10.6: the official training draw indexes ``false_premise_QA`` for every sampled query in *both* modes,
  so it crashes when the key is missing (LISA's own JSONs) or shorter than the sampled queries. Here the
  false-premise mode is simply unavailable for such an image: a draw that picked it falls back to the true
  premise (``meta["fp_fallback"] = True``); the mode probability is unchanged for images that have enough QAs.
* Files are listed in sorted order (the official code uses ``glob`` order, which is filesystem dependent), so
  item ``i`` and the evaluation order are the same on every machine.
* Training masks keep the ignore label 255 (the official draw passes ``mask == 1``); the loss maps 255 to
  background under the official ``loss.ignore_mode``, which gives the same targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from read.data.base import DataError, Sample
from read.data.io import load_image
from read.data.reason_seg_anno import (
    IGNORE_VALUE,
    TARGET_VALUE,
    ReasonSegAnnotation,
    load_annotation,
    rasterise_shapes,
    read_is_sentence,
)
from read.data.templates import (
    LONG_ANSWER_TEMPLATE,
    LONG_QUESTION_TEMPLATE,
    SHORT_QUESTION_TEMPLATE,
    VAL_ANSWER,
    VAL_LONG_QUESTION,
    VAL_SHORT_QUESTION,
    choose,
)

__all__ = [
    "IGNORE_VALUE",
    "TARGET_VALUE",
    "ReasonSegAnnotation",
    "ReasonSegDataset",
    "ReasonSegEvalDataset",
    "list_split",
    "load_annotation",
    "rasterise_shapes",
    "required_paths",
]


def _split_dir(root, split: str) -> Path:
    return Path(root) / "reason_seg" / "ReasonSeg" / split


def required_paths(root, split: str) -> list[Path]:
    """The split directories ``split`` needs (``"train_val"`` -> train and val), without listing them."""
    return [_split_dir(root, part) for part in split.split("_")]


def list_split(root, split: str) -> list[tuple[Path, Path]]:
    """Sorted ``(image, json)`` pairs of ``split``; ``"train_val"`` joins splits as the official loader does.

    Raises:
        DataError: missing split directory, no image, or an image without its same-stem JSON.
    """
    pairs: list[tuple[Path, Path]] = []
    for part in split.split("_"):
        d = _split_dir(root, part)
        if not d.is_dir():
            raise DataError(f"{d}: ReasonSeg split directory not found")
        images = sorted(d.glob("*.jpg"))
        if not images:
            raise DataError(f"{d}: no .jpg image in the ReasonSeg split directory")
        for img in images:
            js = img.with_suffix(".json")
            if not js.is_file():
                raise DataError(f"{js}: annotation JSON missing for image {img.name}")
            pairs.append((img, js))
    return pairs


def _short_question(template: str, query: str) -> str:
    return template.format(class_name=query.lower())


def _long_question(template: str, query: str) -> str:
    return template.format(sent=query)


class ReasonSegDataset:
    """ReasonSeg training set (official ``ReasonSegDataset``, spec 4.2).

    Args:
        root: dataset root (contains ``reason_seg/ReasonSeg/<split>``).
        split: ``train`` (official); any split name, or several joined with ``_``.
        num_classes_per_sample: maximum number of queries (conversation rows) per draw.
        fp_mode_prob: probability of the False_Premise_Correction mode (official 0.15).

    ``sample(rng)``: a random image; mode false premise with ``fp_mode_prob``; ``k = min(len(text),
    num_classes_per_sample)`` queries (a random subset in random order when there are at least
    ``num_classes_per_sample``, else all in file order). True premise: long template with the query as-is if
    ``is_sentence``, else short template with the query lower-cased; answer a random ``LONG_ANSWER_TEMPLATE``;
    all rows share the image's mask (one copy per ``[SEG]``); ``exists`` all True. False premise: ``k`` QAs
    from ``false_premise_QA`` (sampled the same way), question from ``fp[0]`` as-is with the long/short
    template chosen by ``fp[1]``, answer ``fp[2]`` verbatim, masks ``[0, H, W]``, ``exists`` all False.

    ``__getitem__(i)``: image ``i`` (sorted order) as a deterministic true-premise item: its first ``k``
    queries, the first question template and the first answer template.
    """

    name = "reason_seg"

    def __init__(
        self,
        root,
        split: str = "train",
        *,
        num_classes_per_sample: int = 3,
        fp_mode_prob: float = 0.15,
    ) -> None:
        if num_classes_per_sample < 1:
            raise ValueError(f"num_classes_per_sample must be >= 1, got {num_classes_per_sample}")
        if not 0.0 <= fp_mode_prob <= 1.0:
            raise ValueError(f"fp_mode_prob must be in [0, 1], got {fp_mode_prob}")
        self.root = Path(root)
        self.split = split
        self.num_classes_per_sample = int(num_classes_per_sample)
        self.fp_mode_prob = float(fp_mode_prob)
        self.items = list_split(root, split)

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, index: int) -> tuple[np.ndarray, ReasonSegAnnotation, Path]:
        img_path, json_path = self.items[index]
        image = load_image(img_path)
        anno = load_annotation(json_path, image.shape[0], image.shape[1])
        return image, anno, img_path

    def _pick(self, n: int, rng: np.random.Generator | None) -> list[int]:
        # Official: random.sample(range(n), k) when n >= k, else range(n) in order.
        k = self.num_classes_per_sample
        if n >= k and rng is not None:
            return [int(i) for i in rng.choice(n, size=k, replace=False)]
        return list(range(min(n, k)))

    def _true_premise(
        self, image: np.ndarray, anno: ReasonSegAnnotation, inds: list[int], rng: np.random.Generator | None
    ) -> tuple[list, np.ndarray, list[bool]]:
        convs = []
        for i in inds:
            q = anno.texts[i]
            if anno.is_sentence:
                tpl = choose(LONG_QUESTION_TEMPLATE, rng) if rng is not None else LONG_QUESTION_TEMPLATE[0]
                question = _long_question(tpl, q)
            else:
                tpl = choose(SHORT_QUESTION_TEMPLATE, rng) if rng is not None else SHORT_QUESTION_TEMPLATE[0]
                question = _short_question(tpl, q)
            answer = choose(LONG_ANSWER_TEMPLATE, rng) if rng is not None else LONG_ANSWER_TEMPLATE[0]
            convs.append([(question, answer)])
        masks = np.repeat(anno.mask[None], len(inds), axis=0)
        return convs, masks, [True] * len(inds)

    def _make(self, image, anno, img_path, convs, masks, exists, mode: str, fallback: bool) -> Sample:
        return Sample(
            image=image,
            conversations=convs,
            masks=masks,
            exists=exists,
            name=str(img_path),
            meta={
                "dataset": self.name,
                "split": self.split,
                "json_path": anno.path,
                "is_sentence": anno.is_sentence,
                "mode": mode,
                "fp_fallback": fallback,
            },
        )

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        image, anno, img_path = self._load(index % len(self))
        inds = self._pick(len(anno.texts), None)
        convs, masks, exists = self._true_premise(image, anno, inds, None)
        return self._make(image, anno, img_path, convs, masks, exists, "true_premise", False)

    def sample(self, rng: np.random.Generator) -> Sample:
        index = int(rng.integers(len(self)))
        false_premise = bool(rng.random() < self.fp_mode_prob)
        image, anno, img_path = self._load(index)
        inds = self._pick(len(anno.texts), rng)
        fp = anno.false_premise_qa
        fallback = false_premise and (fp is None or len(fp) < len(inds))
        if not false_premise or fallback:
            convs, masks, exists = self._true_premise(image, anno, inds, rng)
            return self._make(image, anno, img_path, convs, masks, exists, "true_premise", fallback)
        fp_inds = self._pick(len(fp), rng)[: len(inds)]
        convs = []
        for j in fp_inds:
            query, q_is_sentence, answer = fp[j]
            if q_is_sentence:
                question = _long_question(choose(LONG_QUESTION_TEMPLATE, rng), query)
            else:  # fp[0] as-is: the official FP branch does not lower-case (spec 4.2)
                question = choose(SHORT_QUESTION_TEMPLATE, rng).format(class_name=query)
            convs.append([(question, answer)])
        h, w = image.shape[:2]
        masks = np.zeros((0, h, w), dtype=np.uint8)  # original size (official: the resized SAM shape)
        return self._make(
            image, anno, img_path, convs, masks, [False] * len(convs), "false_premise_correction", False
        )


class ReasonSegEvalDataset:
    """ReasonSeg validation/test items (official ``TestReasoningDataset`` with ``use_val_mode``, spec 5.1).

    One item per image in sorted file order (the official loader uses ``glob`` order, which depends on the
    filesystem; the metrics are order-independent). Only ``text[0]`` is used: LISA's fixed question
    ``VAL_LONG_QUESTION.format(sent=text[0])`` when ``is_sentence`` (query as-is), else
    ``VAL_SHORT_QUESTION.format(class_name=text[0].lower())``, exactly as the official val code; the answer is
    the fixed ``VAL_ANSWER`` (teacher forcing). ``masks`` is ``[1, H, W]`` with the raw 0/1/255 values.

    Args:
        subset: ``all``, ``short`` (``is_sentence`` false) or ``long`` (true): the test split's short/long-query
            numbers (official: by uncommenting two filters).
        generate_prompts: answers are ``None`` (prompt ends with ``ASSISTANT:``) for the generation protocol.
            The item then has no ``[SEG]`` to supervise, so ``masks`` is ``None`` and the ground truth is in
            ``meta["gt_masks"]`` (``[1, H, W]``), keeping :meth:`Sample.validate` meaningful.
    """

    name = "reason_seg"

    def __init__(
        self, root, split: str = "val", *, subset: str = "all", generate_prompts: bool = False
    ) -> None:
        if subset not in ("all", "short", "long"):
            raise ValueError(f"subset must be 'all', 'short' or 'long', got {subset!r}")
        self.root = Path(root)
        self.split = split
        self.subset = subset
        self.generate_prompts = bool(generate_prompts)
        items = list_split(root, split)
        if subset != "all":
            want = subset == "long"
            items = [(img, js) for img, js in items if self._is_sentence(js) == want]
        self.items = items

    @staticmethod
    def _is_sentence(json_path: Path) -> bool:
        return read_is_sentence(json_path)

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def question(query: str, is_sentence: bool) -> str:
        """LISA's fixed ReasonSeg evaluation question for one query."""
        if is_sentence:
            return VAL_LONG_QUESTION.format(sent=query)
        return VAL_SHORT_QUESTION.format(class_name=query.lower())

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        img_path, json_path = self.items[index % len(self)]
        image = load_image(img_path)
        anno = load_annotation(json_path, image.shape[0], image.shape[1])
        query = anno.texts[0]
        answer = None if self.generate_prompts else VAL_ANSWER
        gt = anno.mask[None].copy()
        meta = {
            "dataset": self.name,
            "split": self.split,
            "json_path": str(json_path),
            "is_sentence": anno.is_sentence,
            "query": query,
        }
        if self.generate_prompts:
            meta["gt_masks"] = gt
        return Sample(
            image=image,
            conversations=[[(self.question(query, anno.is_sentence), answer)]],
            masks=None if self.generate_prompts else gt,
            exists=[True],
            name=str(img_path),
            meta=meta,
        )

    def sample(self, rng: np.random.Generator) -> Sample:
        """A uniformly random item (evaluation sets have no training randomness of their own)."""
        return self[int(rng.integers(len(self)))]
