"""GSVA's ReasonSeg draw (``LeapLabTHU/GSVA`` ``data/reason_seg_dataset.py``): LISA's, with LISA's templates and
no false premise. Images and annotations come from the project's reader (:mod:`read.data.reason_seg`).

One draw (all randomness from the caller's ``rng``):

1. a random image; ``num_classes_per_sample`` of its queries without replacement when it has at least that many,
   else all of them in order;
2. when the image has an explanation (``<root>/reason_seg/ReasonSeg/explanatory/train.json``, a JSON list of
   ``{"image", "query", "outputs"}``) and ``explanatory != -1``: ``choice = 2`` with probability ``explanatory``,
   else 0 or 1 uniformly; otherwise plain answers;
3. one conversation row per query: question ``LONG_QUESTION_LIST`` with ``sent=query`` (``is_sentence``) or
   ``SHORT_QUESTION_LIST`` with ``class_name=query.lower()``; answer a random ``ANSWER_LIST`` entry (plain, or
   choice 0); choice 1: answer ``ANSWER_LIST`` entry + ``" " + outputs``, question replaced by
   ``"<image>\\n" + query + " " + EXPLANATORY_QUESTION_LIST entry``; choice 2: question ``"<image>\\n" + query``,
   answer ``outputs`` (no ``[SEG]``);
4. masks: the image's mask once per ``[SEG]`` row (the project keeps 255 ignore pixels, the loss decides; the
   official passes ``mask == 1``); choice 2 has no mask (``[0, H, W]``).

GSVA's script default is ``explanatory=0.1`` and it *requires* the explanation file; here a missing file turns
explanations off (logged once), so LISA-only data still trains.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from read.data import templates as T
from read.data.base import DataError, Sample, check_index
from read.data.io import load_json
from read.data.reason_seg import ReasonSegDataset
from read.utils.logging import get_logger

__all__ = ["EXPLANATORY_FILE", "GSVAReasonSegDataset", "load_explanations"]

EXPLANATORY_FILE = ("reason_seg", "ReasonSeg", "explanatory", "train.json")


def load_explanations(path: str | os.PathLike) -> dict[str, dict]:
    """``{image file name: {"query", "outputs"}}`` from LISA's explanatory JSON.

    Raises:
        DataError: malformed JSON or an entry without ``image`` / ``outputs`` strings.
    """
    p = Path(path)
    data = load_json(p)
    if not isinstance(data, list):
        raise DataError(f"{p}: expected a JSON list of {{'image', 'query', 'outputs'}} entries")
    out: dict[str, dict] = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("image"), str) or not isinstance(
            item.get("outputs"), str
        ):
            raise DataError(f"{p}: entry #{i} needs 'image' and 'outputs' strings")
        out[item["image"]] = {"query": item.get("query"), "outputs": item["outputs"]}
    return out


def _choose(items: list[str], rng: np.random.Generator) -> str:
    return items[int(rng.integers(len(items)))]


class GSVAReasonSegDataset:
    """GSVA's (= LISA's) ReasonSeg training draw (module docstring).

    Args:
        root: dataset root (``reason_seg/ReasonSeg/<split>``).
        split: ``train`` (official ``ReasonSeg|train``), or splits joined with ``_``.
        num_classes_per_sample: most queries (rows) per draw.
        explanatory: probability of the text-only explanation answer for an image that has one; ``-1`` never
            uses explanations (official ``--explanatory``, default 0.1).
        explanatory_file: the explanation JSON; ``None`` -> ``<root>/reason_seg/ReasonSeg/explanatory/train.json``
            when it exists.
    """

    name = "reason_seg"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        num_classes_per_sample: int = 3,
        explanatory: float = 0.1,
        explanatory_file: str | os.PathLike | None = None,
    ) -> None:
        if explanatory != -1 and not 0.0 <= explanatory <= 1.0:
            raise ValueError(f"explanatory must be -1 or in [0, 1], got {explanatory}")
        self.base = ReasonSegDataset(root, split, num_classes_per_sample=num_classes_per_sample)
        self.split = split
        self.explanatory = float(explanatory)
        self.explanations: dict[str, dict] = {}
        path = Path(explanatory_file) if explanatory_file is not None else Path(root).joinpath(*EXPLANATORY_FILE)
        if explanatory != -1:
            if path.is_file() or explanatory_file is not None:
                self.explanations = load_explanations(path)
            else:
                get_logger().info("%s: no ReasonSeg explanations; GSVA-style reason_seg draws answer without them",
                                  path)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Sample:
        index = check_index(index, len(self), self.name, "images")
        return self._build(index, np.random.default_rng(index))

    def sample(self, rng: np.random.Generator) -> Sample:
        return self._build(int(rng.integers(len(self))), rng)

    def _build(self, index: int, rng: np.random.Generator) -> Sample:
        image, anno, img_path = self.base._load(index)
        inds = self.base._pick(len(anno.texts), rng)
        texts = [anno.texts[i] for i in inds]
        expl = self.explanations.get(img_path.name) if self.explanatory != -1 else None
        choice = None
        if expl is not None:
            choice = 2 if rng.random() < self.explanatory else int(rng.integers(2))
        convs = []
        for text in texts:
            if anno.is_sentence:
                question = _choose(T.GSVA_LONG_QUESTION_LIST, rng).format(sent=text)
            else:
                question = _choose(T.GSVA_SHORT_QUESTION_LIST, rng).format(class_name=text.lower())
            if choice == 1:
                answer = _choose(T.GSVA_ANSWER_LIST, rng) + " " + expl["outputs"]
                question = "<image>\n" + text + " " + _choose(T.GSVA_EXPLANATORY_QUESTION_LIST, rng)
            elif choice == 2:
                answer = expl["outputs"]
                question = "<image>\n" + text
            else:
                answer = _choose(T.GSVA_ANSWER_LIST, rng)
            convs.append([(question, answer)])
        h, w = image.shape[:2]
        n_seg = sum(a.count("[SEG]") for conv in convs for _, a in conv)
        masks = np.repeat(anno.mask[None], n_seg, axis=0) if n_seg else np.zeros((0, h, w), dtype=np.uint8)
        sample = Sample(
            image=image,
            conversations=convs,
            masks=masks,
            exists=[True] * len(convs),
            name=str(img_path),
            meta={
                "dataset": self.name,
                "split": self.split,
                "image_path": str(img_path),
                "json_path": anno.path,
                "is_sentence": anno.is_sentence,
                "slots": ["seg"] * n_seg,
                "expressions": texts,
                "explanatory_choice": choice,
            },
        )
        sample.validate()
        return sample
