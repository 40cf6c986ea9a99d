"""Semantic- and part-segmentation training data: ADE20K, COCO-Stuff, Mapillary, PACO-LVIS, PASCAL-Part.

On-disk layouts (spec 4.1, ``root`` = the data root, the official ``--dataset_dir``)::

    ade20k/images/training/*.jpg            image
    ade20k/annotations/training/<stem>.png  label, 0 = unlabelled, 1..150 = classes
    ade20k/ade20k_classes.json              JSON list of the class names, index = class id
    cocostuff/train2017/<stem>.png          label, 0..181 = classes, 255 = unlabelled
    coco/train2017/<stem>.jpg               its image
    cocostuff/cocostuff_classes.txt         optional: compared with the packaged official list (see below)
    mapillary/config_v2.0.json              labels[].readable (lower-cased), index = label value
    mapillary/training/v2.0/labels/*.png    label (palette PNG, value = class index)
    mapillary/training/images/<stem>.jpg    its image
    vlpart/paco/annotations/paco_lvis_v1_train.json   COCO-format; images coco/<file_name>
    vlpart/pascal_part/train.json                     COCO-format; images
                                                      vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages/<file_name>

Class lists (:mod:`read.data.sem_seg_labels`): the official code reads ``dataloaders/ade20k_classes.json`` and
``dataloaders/cocostuff_classes.txt`` relative to the working directory (spec 10.23). READ's COCO-Stuff list
ships with this package and is used by default; a class file at the path above (or given) that differs from it
is reported with a warning, and ``cocostuff_class_list="file"`` uses the file instead. The ADE20K list is read
from the data root; a missing file raises :class:`DataError` naming it.

Training draw (:meth:`SemSegDataset.sample`, spec 4.2 "SemSeg"; details in :mod:`read.data.sem_seg_draw`): mode
True_Premise 0.85 / False_Premise_Denial 0.07 / False_Premise_Correction 0.08, a uniformly chosen sub-dataset,
a random image (re-drawn, a bounded number of times, while it has nothing to ask about), up to
``num_classes_per_sample`` units (label maps: present classes; PACO-LVIS / PASCAL-Part: annotations, each with
its own instance mask) and the same number of absent class ids as negatives, one conversation row per unit with
a random ``SHORT_QUESTION_TEMPLATE`` question and a ``SHORT_ANSWER`` / ``NEG_ANSWER`` / ``CORRECT_ANSWER``
answer. False-premise rows have no ``[SEG]``: masks ``[0, H, W]`` and ``exists`` all False. All randomness
comes from the caller's generator.

This module keeps every name it has always exported; the code lives in :mod:`read.data.sem_seg_labels` (class
lists, label maps), :mod:`read.data.sem_seg_draw` (scenes, the draw) and :mod:`read.data.sem_seg_sources` (the
five sources).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from read.data.base import Sample, check_index, locate_in_concat
from read.data.sem_seg_draw import MODE_PROBS, MODES, SemSegSource, choose_mode
from read.data.sem_seg_labels import (
    IGNORE,
    ClassName,
    CocoStuffClassList,
    ade20k_remap,
    load_ade20k_classes,
    load_cocostuff_classes,
    load_mapillary_classes,
    official_cocostuff_classes,
    paco_category_name,
    pascal_part_category_name,
    read_label_png,
    render_class_name,
    resolve_cocostuff_classes,
)
from read.data.sem_seg_sources import ADE20K, PACOLVIS, SOURCES, COCOStuff, Mapillary, PascalPart

__all__ = [
    "MODES",
    "MODE_PROBS",
    "SEM_SEG_DATASETS",
    "IGNORE",
    "ClassName",
    "ade20k_remap",
    "read_label_png",
    "load_ade20k_classes",
    "load_cocostuff_classes",
    "load_mapillary_classes",
    "official_cocostuff_classes",
    "resolve_cocostuff_classes",
    "paco_category_name",
    "pascal_part_category_name",
    "render_class_name",
    "required_paths",
    "ADE20K",
    "COCOStuff",
    "Mapillary",
    "PACOLVIS",
    "PascalPart",
    "SemSegDataset",
]

SEM_SEG_DATASETS: tuple[str, ...] = ("ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary")


def _parse(datasets: Sequence[str] | str) -> list[str]:
    if isinstance(datasets, str):
        datasets = [d for d in datasets.split("||") if d]
    if not datasets:
        raise ValueError("SemSegDataset needs at least one sub-dataset")
    unknown = [d for d in datasets if d not in SOURCES]
    if unknown:
        raise ValueError(f"unknown semantic-segmentation datasets {unknown} (expected from {sorted(SOURCES)})")
    return list(datasets)


def required_paths(root: str | os.PathLike, dataset: str) -> list[Path]:
    """Files and folders sub-dataset ``dataset`` opens first under ``root`` (no listing, no decoding).

    Raises:
        ValueError: an unknown sub-dataset name.
    """
    (name,) = _parse([dataset])
    return SOURCES[name].required_paths(root)


class SemSegDataset:
    """The official semantic-segmentation training dataset (spec 4.2 "SemSeg").

    Args:
        root: data root (official ``--dataset_dir``).
        datasets: sub-datasets, from ``ade20k``, ``cocostuff``, ``pascal_part``, ``paco_lvis``, ``mapillary``
            (official ``--sem_seg_data``; a ``"a||b"`` string is accepted).
        num_classes_per_sample: units (conversation rows) per image, official script value 3.
        max_resample: draws of an image without a valid class before :class:`DataError`.
        mode_probs: (True_Premise, False_Premise_Denial, False_Premise_Correction), official 0.85/0.07/0.08.
        cocostuff_class_list: ``"official"`` (packaged list) or ``"file"`` (``<root>/cocostuff/
            cocostuff_classes.txt``), see :func:`~read.data.sem_seg_labels.resolve_cocostuff_classes`.

    ``__len__``/``__getitem__`` index the sub-datasets' images one after another (deterministic items);
    ``sample(rng)`` is the official draw: mode, then a uniformly chosen sub-dataset, then its image draw.
    """

    name = "sem_seg"

    def __init__(
        self,
        root: str | os.PathLike,
        datasets: Sequence[str] | str = SEM_SEG_DATASETS,
        *,
        num_classes_per_sample: int = 3,
        max_resample: int = 10,
        mode_probs: Sequence[float] = MODE_PROBS,
        cocostuff_class_list: CocoStuffClassList = "official",
    ):
        names = _parse(datasets)
        self.root = Path(root)
        self.mode_probs = tuple(float(p) for p in mode_probs)
        common = {"num_classes_per_sample": num_classes_per_sample, "max_resample": max_resample,
                  "mode_probs": mode_probs}
        self.sources: list[SemSegSource] = [
            COCOStuff(self.root, class_list=cocostuff_class_list, **common)
            if d == "cocostuff"
            else SOURCES[d](self.root, **common)
            for d in names
        ]
        self.num_classes_per_sample = int(num_classes_per_sample)
        self._offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[SemSegSource, int]:
        """(sub-dataset, its local index) of global item ``index``."""
        k, local = locate_in_concat(self._offsets, check_index(index, len(self), "sem_seg"))
        return self.sources[k], local

    def __getitem__(self, index: int) -> Sample:
        source, local = self.locate(index)
        return source[local]

    def sample(self, rng: np.random.Generator) -> Sample:
        mode = choose_mode(rng, self.mode_probs)
        source = self.sources[int(rng.integers(len(self.sources)))]
        return source.draw(rng, mode)
