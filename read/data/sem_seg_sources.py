"""The five semantic-segmentation sources: ADE20K, COCO-Stuff, Mapillary (label maps), PACO-LVIS and PASCAL-Part
(COCO-format part annotations). Layouts: :mod:`read.data.sem_seg`; draw logic: :mod:`read.data.sem_seg_draw`.

Each source also has ``required_paths(root)``: the files and folders its constructor opens first, for the
cheap start-up check of :func:`read.data.catalog.check_train_sources` (no listing, no decoding).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from read.data.base import DataError
from read.data.io import load_image, load_json
from read.data.sem_seg_draw import MODE_PROBS, CocoScene, LabelScene, Scene, SemSegSource
from read.data.sem_seg_labels import (
    IGNORE,
    ClassName,
    CocoStuffClassList,
    ade20k_remap,
    check_label_range,
    load_ade20k_classes,
    load_mapillary_classes,
    paco_category_name,
    pascal_part_category_name,
    read_label_png,
    resolve_cocostuff_classes,
)


def _files(folder: Path, pattern: str, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found")
    files = sorted(folder.glob(pattern))
    if not files:
        raise DataError(f"{folder}: no {pattern} files ({what})")
    return files


# ----------------------------------------------------------------------------------------------------------
# Label-map sources
# ----------------------------------------------------------------------------------------------------------


class LabelMapSource(SemSegSource):
    """A source whose annotation is one label PNG per image (``pairs``: (image, label) paths)."""

    def __init__(self, num_classes_per_sample: int, max_resample: int, mode_probs: Sequence[float]):
        super().__init__(num_classes_per_sample, max_resample, mode_probs)
        self.pairs: list[tuple[Path, Path]] = []

    def __len__(self) -> int:
        return len(self.pairs)

    def _remap(self, label: np.ndarray, path: Path) -> np.ndarray:
        return label

    def label(self, index: int) -> np.ndarray:
        """The label map ``[H, W]`` of image ``index`` after the dataset's remap (values: class ids and 255)."""
        _, label_path = self.pairs[self._check_index(index)]
        raw = read_label_png(label_path)
        lab = self._remap(raw, label_path)
        check_label_range(lab, len(self.classes), label_path, self.name)
        return lab

    def _scene(self, index: int) -> Scene:
        image_path, label_path = self.pairs[index]
        lab = self.label(index)
        image = load_image(image_path)
        if image.shape[:2] != lab.shape:
            raise DataError(
                f"{label_path}: label size {lab.shape} != image size {image.shape[:2]} ({image_path})"
            )
        present = [int(c) for c in np.unique(lab) if int(c) != IGNORE]
        return LabelScene(image, image_path, str(label_path), lab, present)


class ADE20K(LabelMapSource):
    """ADE20K (SceneParse150) training split, labels remapped with :func:`ade20k_remap`."""

    name = "ade20k"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        num_classes_per_sample: int = 3,
        classes_file: str | os.PathLike | None = None,
        max_resample: int = 10,
        mode_probs: Sequence[float] = MODE_PROBS,
    ):
        super().__init__(num_classes_per_sample, max_resample, mode_probs)
        base = Path(root) / "ade20k"
        self.classes = load_ade20k_classes(classes_file or base / "ade20k_classes.json")
        images = _files(base / "images" / "training", "*.jpg", "ADE20K training images")
        ann = base / "annotations" / "training"
        if not ann.is_dir():
            raise DataError(f"{ann}: ADE20K training annotations folder not found")
        self.pairs = [(p, ann / (p.stem + ".png")) for p in images]

    @staticmethod
    def required_paths(root: str | os.PathLike) -> list[Path]:
        base = Path(root) / "ade20k"
        return [base / "ade20k_classes.json", base / "images" / "training", base / "annotations" / "training"]

    def _remap(self, label: np.ndarray, path: Path) -> np.ndarray:
        if label.size and int(label.max()) > 255:
            raise DataError(f"{path}: ADE20K label values must be 0..255, max is {int(label.max())}")
        return ade20k_remap(label)


class COCOStuff(LabelMapSource):
    """COCO-Stuff (stuffthingmaps train2017).

    Classes: READ's official list shipped with the package unless ``class_list="file"``
    (:func:`~read.data.sem_seg_labels.resolve_cocostuff_classes`: a differing class file is reported).
    Every class whose name contains ``"-"`` becomes 255 in the label, so it is never a positive; the negative
    pool is still *all* class ids minus the present ones, ``"-"`` classes included (official
    ``sem_seg_dataset.py:229-240``: ``all_labels`` is ``range(len(classes))``).
    """

    name = "cocostuff"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        num_classes_per_sample: int = 3,
        classes_file: str | os.PathLike | None = None,
        class_list: CocoStuffClassList = "official",
        max_resample: int = 10,
        mode_probs: Sequence[float] = MODE_PROBS,
    ):
        super().__init__(num_classes_per_sample, max_resample, mode_probs)
        root = Path(root)
        self.classes = resolve_cocostuff_classes(root, classes_file, class_list)
        self.ignored_ids = np.array([i for i, c in enumerate(self.classes) if "-" in c], dtype=np.int64)
        labels = _files(root / "cocostuff" / "train2017", "*.png", "COCO-Stuff train2017 labels")
        self.pairs = [(root / "coco" / "train2017" / (p.stem + ".jpg"), p) for p in labels]

    @staticmethod
    def required_paths(root: str | os.PathLike) -> list[Path]:
        return [Path(root) / "cocostuff" / "train2017", Path(root) / "coco" / "train2017"]

    def _remap(self, label: np.ndarray, path: Path) -> np.ndarray:
        lab = label.copy()
        if self.ignored_ids.size:
            lab[np.isin(lab, self.ignored_ids)] = IGNORE
        return lab


class Mapillary(LabelMapSource):
    """Mapillary Vistas v2.0 training split (label value = index into ``config_v2.0.json`` labels)."""

    name = "mapillary"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        num_classes_per_sample: int = 3,
        max_resample: int = 10,
        mode_probs: Sequence[float] = MODE_PROBS,
    ):
        super().__init__(num_classes_per_sample, max_resample, mode_probs)
        base = Path(root) / "mapillary"
        self.classes = load_mapillary_classes(base / "config_v2.0.json")
        labels = _files(base / "training" / "v2.0" / "labels", "*.png", "Mapillary v2.0 training labels")
        self.pairs = [(base / "training" / "images" / (p.stem + ".jpg"), p) for p in labels]

    @staticmethod
    def required_paths(root: str | os.PathLike) -> list[Path]:
        base = Path(root) / "mapillary"
        return [base / "config_v2.0.json", base / "training" / "v2.0" / "labels", base / "training" / "images"]


# ----------------------------------------------------------------------------------------------------------
# COCO-format sources
# ----------------------------------------------------------------------------------------------------------


class CocoFormatSource(SemSegSource):
    """PACO-LVIS / PASCAL-Part: COCO-format JSON with (possibly ``obj:part``) categories; one unit per annotation."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        num_classes_per_sample: int = 3,
        max_resample: int = 10,
        mode_probs: Sequence[float] = MODE_PROBS,
    ):
        super().__init__(num_classes_per_sample, max_resample, mode_probs)
        ann_file, image_dir = self.required_paths(root)
        self.ann_file = ann_file
        self.image_dir = image_dir
        data = load_json(ann_file)
        if not isinstance(data, dict):
            raise DataError(f"{ann_file}: expected a COCO-format JSON object")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DataError(f"{ann_file}: missing or non-list key {key!r}")
        try:
            cats = sorted(data["categories"], key=lambda c: int(c["id"]))
            self.cat_ids = [int(c["id"]) for c in cats]
            self.classes = [self._category_name(str(c["name"])) for c in cats]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{ann_file}: bad 'categories' entry ({type(e).__name__}: {e})") from e
        self._cat_index = {cid: i for i, cid in enumerate(self.cat_ids)}
        anns_by_img: dict[int, list[dict]] = {}
        for n, ann in enumerate(data["annotations"]):
            try:
                img_id, cat_id = int(ann["image_id"]), int(ann["category_id"])
                ann["segmentation"]  # noqa: B018 - presence check
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"{ann_file}: annotation #{n}: missing or bad key ({e})") from e
            if cat_id not in self._cat_index:
                raise DataError(f"{ann_file}: annotation #{n} has unknown category_id {cat_id}")
            anns_by_img.setdefault(img_id, []).append(ann)
        self.images: list[dict] = []
        self._anns: list[list[dict]] = []
        for n, img in enumerate(data["images"]):
            try:
                img_id = int(img["id"])
                str(img["file_name"]), int(img["height"]), int(img["width"])
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"{ann_file}: image #{n}: missing or bad key ({e})") from e
            if anns_by_img.get(img_id):  # images without annotations are not training items (official: re-drawn)
                self.images.append(img)
                self._anns.append(anns_by_img[img_id])
        if not self.images:
            raise DataError(f"{ann_file}: no image with annotations")

    @staticmethod
    def required_paths(root: str | os.PathLike) -> list[Path]:  # pragma: no cover - overridden
        """``[annotation JSON, image folder]`` under ``root``."""
        raise NotImplementedError

    def _category_name(self, name: str) -> ClassName:  # pragma: no cover - overridden
        raise NotImplementedError

    def _parse_category(self, parse, name: str) -> ClassName:  # noqa: ANN001 - a category-name parser
        """``parse(name)``, a bad name reported with the annotation file."""
        try:
            return parse(name)
        except ValueError as e:
            raise DataError(f"{self.ann_file}: {e}") from e

    def __len__(self) -> int:
        return len(self.images)

    def annotations(self, index: int) -> list[dict]:
        """The annotations of image ``index`` in file order (= the units of its scene)."""
        return list(self._anns[self._check_index(index)])

    def _scene(self, index: int) -> Scene:
        info = self.images[index]
        path = self.image_dir / info["file_name"]
        image = load_image(path)
        h, w = int(info["height"]), int(info["width"])
        if image.shape[:2] != (h, w):
            raise DataError(
                f"{path}: image size {image.shape[:2]} != annotated size {(h, w)} in {self.ann_file}"
            )
        anns = self._anns[index]
        unit_classes = [self._cat_index[int(a["category_id"])] for a in anns]
        return CocoScene(image, path, str(self.ann_file), anns, unit_classes)


class PACOLVIS(CocoFormatSource):
    """PACO-LVIS train (``vlpart/paco/annotations/paco_lvis_v1_train.json``; images ``coco/<file_name>``)."""

    name = "paco_lvis"

    @staticmethod
    def required_paths(root: str | os.PathLike) -> list[Path]:
        root = Path(root)
        return [root / "vlpart" / "paco" / "annotations" / "paco_lvis_v1_train.json", root / "coco"]

    def _category_name(self, name: str) -> ClassName:
        return self._parse_category(paco_category_name, name)


class PascalPart(CocoFormatSource):
    """PASCAL-Part train (``vlpart/pascal_part/train.json``; images under ``VOCdevkit/VOC2010/JPEGImages``)."""

    name = "pascal_part"

    @staticmethod
    def required_paths(root: str | os.PathLike) -> list[Path]:
        base = Path(root) / "vlpart" / "pascal_part"
        return [base / "train.json", base / "VOCdevkit" / "VOC2010" / "JPEGImages"]

    def _category_name(self, name: str) -> ClassName:
        return self._parse_category(pascal_part_category_name, name)


SOURCES: dict[str, type[SemSegSource]] = {
    "ade20k": ADE20K,
    "cocostuff": COCOStuff,
    "mapillary": Mapillary,
    "paco_lvis": PACOLVIS,
    "pascal_part": PascalPart,
}
