"""Scenes and the training draw shared by the five semantic-segmentation sources (official
``SemSegDataset.__getitem__``, ``dataloaders/sem_seg_dataset.py:179-319``).

A *scene* is one loaded image with its *units*, the things a conversation row can ask about:

* label-map sources (ADE20K, COCO-Stuff, Mapillary): one unit per valid class present in the label map
  (ascending id); its mask is ``label == id`` (uint8, 255 copied from the label's ignore pixels);
* COCO-format sources (PACO-LVIS, PASCAL-Part): one unit per *annotation* (instance) of the image, in file
  order; its name is the annotation's category and its mask is that one instance (``annToMask(ann)``), not the
  union of the category's instances (official ``:203-216``, ``:286-295``). Two instances of one category are two
  units with the same name and different masks.

The draw (:meth:`SemSegSource.draw`): up to ``num_classes_per_sample`` units with the official
``select_samples`` rule (:func:`select_indices`: a random sample when there are at least that many, else all of
them in order), and the same rule on the *negative pool*, the class ids absent from the image
(:meth:`SemSegSource.negative_pool`). True premise: one row per unit with ``SHORT_QUESTION`` /
``SHORT_ANSWER``; false premises: one row per (negative, unit) pair with ``NEG_ANSWER`` (denial) or
``CORRECT_ANSWER`` (correction, ``gt_name`` = the unit's name), masks ``[0, H, W]``, ``exists`` all False.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from read.data.base import DataError, Sample, check_index
from read.data.coco_masks import decode_segmentation
from read.data.sem_seg_labels import IGNORE, ClassName, render_class_name
from read.data.templates import (
    CORRECT_ANSWER_TEMPLATE,
    NEG_ANSWER_TEMPLATE,
    SHORT_ANSWER_TEMPLATE,
    SHORT_QUESTION_TEMPLATE,
    choose,
)

MODES: tuple[str, str, str] = ("True_Premise", "False_Premise_Denial", "False_Premise_Correction")
MODE_PROBS: tuple[float, float, float] = (0.85, 0.07, 0.08)


def choose_mode(rng: np.random.Generator, probs: Sequence[float]) -> str:
    """One of :data:`MODES` with probabilities ``probs`` (official ``random.choices(choices, weights)``)."""
    u = rng.random()
    acc = 0.0
    for mode, p in zip(MODES, probs, strict=True):
        acc += p
        if u < acc:
            return mode
    return MODES[-1]


def select_indices(n: int, k: int, rng: np.random.Generator) -> list[int]:
    """The official ``select_samples`` on ``n`` items: ``k`` distinct indices in random order when ``n >= k``
    (``random.sample``), else all ``n`` in order."""
    if n >= k:
        return [int(i) for i in rng.choice(n, size=k, replace=False)]
    return list(range(n))


def ann_to_mask(ann: dict, h: int, w: int, source: str) -> np.ndarray:
    """A COCO annotation's ``segmentation`` as uint8 0/1 ``[h, w]`` (:func:`read.data.coco_masks.decode_segmentation`:
    polygons with fewer than 3 points are skipped, RLE sizes must match the image)."""
    return decode_segmentation(ann.get("segmentation"), h, w, f"{source}: annotation {ann.get('id')}")


class Scene:
    """One loaded image and its units (module docstring).

    Attributes:
        image: RGB uint8 ``[H, W, 3]``.
        path: the image file.
        source: the label or annotation file (messages, meta).
        present: sorted ids of the classes present (negatives are the others).
        unit_classes: class id of each unit, in unit order.
    """

    def __init__(self, image: np.ndarray, path: Path, source: str, present: list[int], unit_classes: list[int]):
        self.image = image
        self.path = path
        self.source = source
        self.present = present
        self.unit_classes = unit_classes

    def mask(self, unit: int) -> np.ndarray:  # pragma: no cover - overridden
        """uint8 ``[H, W]`` mask of unit ``unit``."""
        raise NotImplementedError

    def unit_ids(self, units: list[int]) -> list[int] | None:
        """Annotation ids of ``units`` (COCO-format scenes), else ``None``."""
        return None


class LabelScene(Scene):
    """A label-map image: units are the present class ids."""

    def __init__(self, image: np.ndarray, path: Path, source: str, label: np.ndarray, present: list[int]):
        super().__init__(image, path, source, present, list(present))
        self.label = label

    def mask(self, unit: int) -> np.ndarray:
        m = (self.label == self.unit_classes[unit]).astype(np.uint8)
        m[self.label == IGNORE] = IGNORE
        return m


class CocoScene(Scene):
    """A COCO-format image: units are its annotations (``anns``) with class ids ``unit_classes``."""

    def __init__(self, image: np.ndarray, path: Path, source: str, anns: list[dict], unit_classes: list[int]):
        super().__init__(image, path, source, sorted(set(unit_classes)), unit_classes)
        self.anns = anns

    def mask(self, unit: int) -> np.ndarray:
        h, w = self.image.shape[:2]
        return ann_to_mask(self.anns[unit], h, w, self.source)

    def unit_ids(self, units: list[int]) -> list[int] | None:
        return [self.anns[u].get("id") for u in units]


class SemSegSource:
    """Shared draw logic of the five sources. Subclasses set ``name``/``classes`` and implement ``__len__`` and
    ``_scene(i)``."""

    name: str = ""
    classes: list[ClassName]

    def __init__(self, num_classes_per_sample: int, max_resample: int, mode_probs: Sequence[float]):
        if num_classes_per_sample < 1:
            raise ValueError(f"num_classes_per_sample must be >= 1, got {num_classes_per_sample}")
        if max_resample < 1:
            raise ValueError(f"max_resample must be >= 1, got {max_resample}")
        if len(mode_probs) != 3 or any(p < 0 for p in mode_probs) or abs(sum(mode_probs) - 1) > 1e-6:
            raise ValueError(f"mode_probs must be 3 non-negative numbers summing to 1, got {mode_probs}")
        self.num_classes_per_sample = int(num_classes_per_sample)
        self.max_resample = int(max_resample)
        self.mode_probs = tuple(float(p) for p in mode_probs)

    # -- to implement -------------------------------------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _scene(self, index: int) -> Scene:  # pragma: no cover - overridden
        raise NotImplementedError

    def negative_pool(self, present: Sequence[int]) -> np.ndarray:
        """Class ids a false-premise row may ask about: every class id minus ``present`` (official ``:210-211``,
        ``:239-240``)."""
        return np.setdiff1d(np.arange(len(self.classes)), np.asarray(present, dtype=np.int64))

    # -- public -------------------------------------------------------------------------------------------
    def class_name(self, class_id: int) -> ClassName:
        return self.classes[class_id]

    def present_classes(self, index: int) -> list[int]:
        """Ids of the valid classes present in image ``index``."""
        return list(self._scene(self._check_index(index)).present)

    def negative_ids(self, index: int) -> list[int]:
        """The negative pool of image ``index`` (:meth:`negative_pool` of its present classes)."""
        return [int(c) for c in self.negative_pool(self.present_classes(index))]

    def _check_index(self, index: int) -> int:
        return check_index(index, len(self), self.name, "images")

    def __getitem__(self, index: int) -> Sample:
        """Image ``index`` with one true-premise row per unit (unit order); templates and ``obj:part``
        renderings drawn from ``np.random.default_rng(index)``.

        Raises:
            DataError: unreadable files, or no valid class in the image (naming the file).
        """
        index = self._check_index(index)
        scene = self._scene(index)
        if not scene.unit_classes:
            raise DataError(f"{scene.source}: no valid class in the label (image {scene.path})")
        rng = np.random.default_rng(index)
        return self._build(scene, "True_Premise", list(range(len(scene.unit_classes))), [], rng, index)

    def sample(self, rng: np.random.Generator) -> Sample:
        """One training draw from this source alone (mode, image, units, templates from ``rng``)."""
        return self.draw(rng, choose_mode(rng, self.mode_probs))

    def draw(self, rng: np.random.Generator, mode: str) -> Sample:
        """A training draw with a given mode (the image is re-drawn while it has no unit)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (expected one of {MODES})")
        tried: list[str] = []
        for _ in range(self.max_resample):
            index = int(rng.integers(len(self)))
            scene = self._scene(index)
            if scene.unit_classes:
                break
            tried.append(str(scene.source))
        else:
            raise DataError(
                f"{tried[-1]}: no valid class in the label; {self.max_resample} draws from {self.name} gave "
                f"only unlabelled images (last ones: {tried[-3:]})"
            )
        k = self.num_classes_per_sample
        units = select_indices(len(scene.unit_classes), k, rng)
        pool = self.negative_pool(scene.present)
        neg = [int(pool[i]) for i in select_indices(len(pool), k, rng)]
        if not neg:
            mode = "True_Premise"  # nothing absent to ask about (the official code would crash)
        return self._build(scene, mode, units, neg, rng, index)

    def _build(
        self, scene: Scene, mode: str, units: list[int], neg: list[int], rng: np.random.Generator, index: int
    ) -> Sample:
        h, w = scene.image.shape[:2]
        convs: list[list[tuple[str, str | None]]] = []
        pos_names: list[str] = []
        neg_names: list[str] = []
        if mode == "True_Premise":
            masks = []
            for u in units:
                name = render_class_name(self.classes[scene.unit_classes[u]], rng).lower()
                q = choose(SHORT_QUESTION_TEMPLATE, rng).format(class_name=name)
                a = choose(SHORT_ANSWER_TEMPLATE, rng).format(class_name=name)
                convs.append([(q, a)])
                pos_names.append(name)
                masks.append(scene.mask(u))
            mask_arr = np.stack(masks) if masks else np.zeros((0, h, w), dtype=np.uint8)
            exists = [True] * len(convs)
            neg_out: list[int] = neg
        else:
            # Official: row i pairs negative i with unit i (it crashes when there are fewer negatives).
            pairs = list(zip(neg, units, strict=False))
            for c_neg, u in pairs:
                neg_name = render_class_name(self.classes[c_neg], rng).lower()
                q = choose(SHORT_QUESTION_TEMPLATE, rng).format(class_name=neg_name)
                if mode == "False_Premise_Denial":
                    a = choose(NEG_ANSWER_TEMPLATE, rng).format(class_name=neg_name)
                else:
                    pos_name = render_class_name(self.classes[scene.unit_classes[u]], rng).lower()
                    a = choose(CORRECT_ANSWER_TEMPLATE, rng).format(class_name=neg_name, gt_name=pos_name)
                    pos_names.append(pos_name)
                convs.append([(q, a)])
                neg_names.append(neg_name)
            mask_arr = np.zeros((0, h, w), dtype=np.uint8)
            exists = [False] * len(convs)
            units = units[: len(pairs)] if mode == "False_Premise_Correction" else []
            neg_out = neg[: len(pairs)]
        return Sample(
            image=scene.image,
            conversations=convs,
            masks=mask_arr,
            exists=exists,
            name=str(scene.path),
            meta={
                "dataset": self.name,
                "mode": mode,
                "index": index,
                "image_path": str(scene.path),
                "source": str(scene.source),
                "present_ids": list(scene.present),
                "class_ids": [scene.unit_classes[u] for u in units],
                "ann_ids": scene.unit_ids(units),
                "negative_ids": neg_out,
                "classes": pos_names,
                "negatives": neg_names,
            },
        )
