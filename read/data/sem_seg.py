"""Semantic- and part-segmentation training data: ADE20K, COCO-Stuff, Mapillary, PACO-LVIS, PASCAL-Part.

On-disk layouts (spec 4.1, ``root`` = the data root, the official ``--dataset_dir``)::

    ade20k/images/training/*.jpg            image
    ade20k/annotations/training/<stem>.png  label, 0 = unlabelled, 1..150 = classes
    ade20k/ade20k_classes.json              JSON list of the class names, index = class id (see below)
    cocostuff/train2017/<stem>.png          label, 0..181 = classes, 255 = unlabelled
    coco/train2017/<stem>.jpg               its image
    cocostuff/cocostuff_classes.txt         "0: unlabeled" then one "id: name" line per class (see below)
    mapillary/config_v2.0.json              labels[].readable (lower-cased), index = label value
    mapillary/training/v2.0/labels/*.png    label (palette PNG, value = class index)
    mapillary/training/images/<stem>.jpg    its image
    vlpart/paco/annotations/paco_lvis_v1_train.json   COCO-format; images coco/<file_name>
    vlpart/pascal_part/train.json                     COCO-format; images
                                                      vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages/<file_name>

Class lists: the official code reads ``dataloaders/ade20k_classes.json`` and ``dataloaders/cocostuff_classes.txt``
relative to the working directory (spec 10.23). This package does not ship them (we do not reproduce files we
cannot write exactly); they are read from the data root at the paths above, and a missing file raises
:class:`DataError` naming it. ``classes_file=`` overrides the path.

Training draw (:meth:`SemSegDataset.sample`, spec 4.2 "SemSeg"): mode True_Premise 0.85 /
False_Premise_Denial 0.07 / False_Premise_Correction 0.08, a uniformly chosen sub-dataset, a random image
(re-drawn, a bounded number of times, while it has no valid class), up to ``num_classes_per_sample`` present
classes and the same number of absent classes as negatives, one conversation row per class with a random
``SHORT_QUESTION_TEMPLATE`` question and a ``SHORT_ANSWER`` / ``NEG_ANSWER`` / ``CORRECT_ANSWER`` answer.
Masks: ``label == class_id`` as uint8 with 255 copied from the label's ignore pixels (label maps), or the union
of the class's instance masks (COCO-format). False-premise rows have no ``[SEG]``: masks ``[0, H, W]`` and
``exists`` all False. All randomness comes from the caller's generator.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from read.data.base import DataError, Sample
from read.data.io import load_image, load_json
from read.data.templates import (
    CORRECT_ANSWER_TEMPLATE,
    NEG_ANSWER_TEMPLATE,
    SHORT_ANSWER_TEMPLATE,
    SHORT_QUESTION_TEMPLATE,
    choose,
)

__all__ = [
    "MODES",
    "MODE_PROBS",
    "SEM_SEG_DATASETS",
    "IGNORE",
    "ade20k_remap",
    "read_label_png",
    "load_ade20k_classes",
    "load_cocostuff_classes",
    "load_mapillary_classes",
    "paco_category_name",
    "pascal_part_category_name",
    "render_class_name",
    "ADE20K",
    "COCOStuff",
    "Mapillary",
    "PACOLVIS",
    "PascalPart",
    "SemSegDataset",
]

IGNORE = 255
MODES: tuple[str, str, str] = ("True_Premise", "False_Premise_Denial", "False_Premise_Correction")
MODE_PROBS: tuple[float, float, float] = (0.85, 0.07, 0.08)
SEM_SEG_DATASETS: tuple[str, ...] = ("ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary")

# A class is either a plain name or an (object, part) pair, rendered at draw time (render_class_name).
ClassName = str | tuple[str, str]


# ----------------------------------------------------------------------------------------------------------
# Small pure helpers
# ----------------------------------------------------------------------------------------------------------


def ade20k_remap(label: np.ndarray) -> np.ndarray:
    """The official ADE20K remap on a uint8 label map: 0 -> 255, then -1 (so 255 -> 254), then 254 -> 255.

    Result: classes 0..149, ignore 255. Computed in int64 and returned as uint8 (identical to the uint8
    arithmetic for every input value 0..255).
    """
    lab = np.asarray(label).astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise ValueError(f"ADE20K labels must be 0..255, got range [{lab.min()}, {lab.max()}]")
    lab[lab == 0] = 255
    lab -= 1
    lab[lab == 254] = 255
    return lab.astype(np.uint8)


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as class indices ``[H, W]``, as the official ``np.array(Image.open(path))``.

    Palette PNGs (Mapillary) give their palette indices, not colours; grey PNGs give their values.

    Raises:
        DataError: missing or corrupt file, or a colour (multi-channel) image.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: label file not found")
    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{p}: corrupt label image ({e})") from e
    if arr.ndim != 2:
        raise DataError(
            f"{p}: a label map must be a single-channel or palette PNG, got mode {mode} {arr.shape}"
        )
    if mode == "1":
        arr = arr.astype(np.uint8)
    return arr


def _check_range(label: np.ndarray, num_classes: int, path: Path, what: str) -> None:
    bad = (label != IGNORE) & ((label < 0) | (label >= num_classes))
    if bad.any():
        vals = sorted({int(v) for v in np.unique(label[bad])})[:5]
        raise DataError(f"{path}: {what} label values {vals} outside the {num_classes} classes (and 255)")


def load_ade20k_classes(path: str | os.PathLike) -> list[str]:
    """ADE20K class names from a JSON list (index = remapped class id; the official file has 150 names)."""
    p = Path(path)
    data = load_json(p)
    if not isinstance(data, list) or not data or not all(isinstance(x, str) for x in data):
        raise DataError(f"{p}: expected a non-empty JSON list of class-name strings")
    return list(data)


def load_cocostuff_classes(path: str | os.PathLike) -> list[str]:
    """COCO-Stuff class names: every line after the first is ``"id: name"``; the name is the text after the
    first ``": "`` and the class index is the line's position (0-based, = the label PNG value)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: COCO-Stuff class list not found")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not valid UTF-8 ({e})") from e
    names: list[str] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        if ": " not in line:
            raise DataError(f"{p}: line {n} is not 'id: name': {line!r}")
        names.append(line.split(": ", 1)[1].strip())
    if not names:
        raise DataError(f"{p}: no classes after the first line")
    return names


def load_mapillary_classes(path: str | os.PathLike) -> list[str]:
    """Mapillary class names: ``labels[].readable`` lower-cased (index = label value)."""
    p = Path(path)
    data = load_json(p)
    try:
        labels = data["labels"]
        names = [str(x["readable"]).lower() for x in labels]
    except (KeyError, TypeError) as e:
        raise DataError(
            f"{p}: expected {{'labels': [{{'readable': ...}}, ...]}} ({type(e).__name__}: {e})"
        ) from e
    if not names:
        raise DataError(f"{p}: empty 'labels' list")
    return names


def paco_category_name(name: str) -> ClassName:
    """PACO-LVIS category name: ``obj:part`` -> ``(obj, part)``; each piece keeps underscores and loses a
    ``_(...)`` suffix (``"car_(automobile):wheel"`` -> ``("car", "wheel")``)."""
    pieces = [x.split("_(")[0] for x in name.strip().split(":")]
    if len(pieces) == 1:
        return pieces[0]
    if len(pieces) != 2:
        raise ValueError(f"PACO category {name!r}: more than one ':'")
    return pieces[0], pieces[1]


def pascal_part_category_name(name: str) -> ClassName:
    """PASCAL-Part category name: ``obj:part`` -> ``(obj, part)`` (no other processing)."""
    pieces = name.strip().split(":")
    if len(pieces) == 1:
        return pieces[0]
    if len(pieces) != 2:
        raise ValueError(f"PASCAL-Part category {name!r}: more than one ':'")
    return pieces[0], pieces[1]


def render_class_name(name: ClassName, rng: np.random.Generator) -> str:
    """A plain name as is; ``(obj, part)`` as ``"obj part"`` or ``"the part of the obj"`` (probability 0.5)."""
    if isinstance(name, str):
        return name
    obj, part = name
    return f"{obj} {part}" if rng.random() < 0.5 else f"the {part} of the {obj}"


def _choose_mode(rng: np.random.Generator, probs: Sequence[float]) -> str:
    u = rng.random()
    acc = 0.0
    for mode, p in zip(MODES, probs, strict=True):
        acc += p
        if u < acc:
            return mode
    return MODES[-1]


def _files(folder: Path, pattern: str, what: str) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found")
    files = sorted(folder.glob(pattern))
    if not files:
        raise DataError(f"{folder}: no {pattern} files ({what})")
    return files


# ----------------------------------------------------------------------------------------------------------
# Sub-datasets
# ----------------------------------------------------------------------------------------------------------


class _Scene:
    """One loaded image: its present classes and a mask maker."""

    def __init__(self, image: np.ndarray, path: Path, present: list[int], source: str):
        self.image = image
        self.path = path
        self.present = present
        self.source = source  # label or annotation file, for messages and meta

    def mask(self, class_id: int) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError


class _LabelScene(_Scene):
    def __init__(self, image, path, label, present, source):
        super().__init__(image, path, present, source)
        self.label = label

    def mask(self, class_id: int) -> np.ndarray:
        m = (self.label == class_id).astype(np.uint8)
        m[self.label == IGNORE] = IGNORE
        return m


class _CocoScene(_Scene):
    def __init__(self, image, path, anns_by_cat, present, source):
        super().__init__(image, path, present, source)
        self.anns_by_cat = anns_by_cat

    def mask(self, class_id: int) -> np.ndarray:
        h, w = self.image.shape[:2]
        out = np.zeros((h, w), dtype=np.uint8)
        for ann in self.anns_by_cat[class_id]:
            out |= _ann_to_mask(ann, h, w, self.source)
        return out


def _ann_to_mask(ann: dict, h: int, w: int, source: str) -> np.ndarray:
    """A COCO annotation's ``segmentation`` (polygons, RLE or uncompressed RLE) as uint8 ``[h, w]``."""
    seg = ann.get("segmentation")
    try:
        if isinstance(seg, list):
            polys = [list(map(float, p)) for p in seg if len(p) >= 6]
            if not polys:
                return np.zeros((h, w), dtype=np.uint8)
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, h, w)
        elif isinstance(seg, dict) and "counts" in seg:
            rle = dict(seg)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        else:
            raise TypeError(f"unsupported segmentation {type(seg).__name__}")
        m = mask_utils.decode(rle)
    except (TypeError, ValueError, KeyError) as e:
        raise DataError(f"{source}: annotation {ann.get('id')}: bad segmentation ({e})") from e
    if m.ndim == 3:
        m = m.max(axis=2)
    if m.shape != (h, w):
        raise DataError(f"{source}: annotation {ann.get('id')}: mask {m.shape} != image size {(h, w)}")
    return (m > 0).astype(np.uint8)


class _SemSegSource:
    """Shared draw logic of the five sources. Subclasses provide the class list and ``_scene(i)``."""

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

    def _scene(self, index: int) -> _Scene:  # pragma: no cover - overridden
        raise NotImplementedError

    def _valid_ids(self) -> np.ndarray:
        """Class ids that can be asked about (negatives are drawn from these minus the present ones)."""
        return np.arange(len(self.classes))

    # -- public -------------------------------------------------------------------------------------------
    def class_name(self, class_id: int) -> ClassName:
        return self.classes[class_id]

    def present_classes(self, index: int) -> list[int]:
        """Ids of the valid classes present in image ``index``."""
        return list(self._scene(self._check_index(index)).present)

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} images")
        return index % n

    def __getitem__(self, index: int) -> Sample:
        """Image ``index`` with one true-premise row per present class (ascending id); templates and
        ``obj:part`` renderings drawn from ``np.random.default_rng(index)``.

        Raises:
            DataError: unreadable files, or no valid class in the image (naming the file).
        """
        index = self._check_index(index)
        scene = self._scene(index)
        if not scene.present:
            raise DataError(f"{scene.source}: no valid class in the label (image {scene.path})")
        rng = np.random.default_rng(index)
        return self._build(scene, "True_Premise", list(scene.present), [], rng, index)

    def sample(self, rng: np.random.Generator) -> Sample:
        """One training draw from this source alone (mode, image, classes, templates from ``rng``)."""
        mode = _choose_mode(rng, self.mode_probs)
        return self.draw(rng, mode)

    def draw(self, rng: np.random.Generator, mode: str) -> Sample:
        """A training draw with a given mode (the image is re-drawn while it has no valid class)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (expected one of {MODES})")
        tried: list[str] = []
        for _ in range(self.max_resample):
            index = int(rng.integers(len(self)))
            scene = self._scene(index)
            if scene.present:
                break
            tried.append(str(scene.source))
        else:
            raise DataError(
                f"{tried[-1]}: no valid class in the label; {self.max_resample} draws from {self.name} gave "
                f"only unlabelled images (last ones: {tried[-3:]})"
            )
        present = np.asarray(scene.present, dtype=np.int64)
        k = min(self.num_classes_per_sample, len(present))
        pos = [int(c) for c in rng.choice(present, size=k, replace=False)]
        absent = np.setdiff1d(self._valid_ids(), present)
        n_neg = min(k, len(absent))
        neg = [int(c) for c in rng.choice(absent, size=n_neg, replace=False)] if n_neg else []
        if not neg:
            mode = "True_Premise"  # nothing absent to ask about
        return self._build(scene, mode, pos, neg, rng, index)

    def _build(
        self, scene: _Scene, mode: str, pos: list[int], neg: list[int], rng: np.random.Generator, index: int
    ) -> Sample:
        h, w = scene.image.shape[:2]
        convs: list[list[tuple[str, str | None]]] = []
        pos_names: list[str] = []
        neg_names: list[str] = []
        if mode == "True_Premise":
            masks = []
            for c in pos:
                name = render_class_name(self.classes[c], rng).lower()
                q = choose(SHORT_QUESTION_TEMPLATE, rng).format(class_name=name)
                a = choose(SHORT_ANSWER_TEMPLATE, rng).format(class_name=name)
                convs.append([(q, a)])
                pos_names.append(name)
                masks.append(scene.mask(c))
            mask_arr = np.stack(masks) if masks else np.zeros((0, h, w), dtype=np.uint8)
            exists = [True] * len(convs)
        else:
            pairs = list(zip(neg, pos, strict=False))
            for c_neg, c_pos in pairs:
                neg_name = render_class_name(self.classes[c_neg], rng).lower()
                q = choose(SHORT_QUESTION_TEMPLATE, rng).format(class_name=neg_name)
                if mode == "False_Premise_Denial":
                    a = choose(NEG_ANSWER_TEMPLATE, rng).format(class_name=neg_name)
                else:
                    pos_name = render_class_name(self.classes[c_pos], rng).lower()
                    a = choose(CORRECT_ANSWER_TEMPLATE, rng).format(class_name=neg_name, gt_name=pos_name)
                    pos_names.append(pos_name)
                convs.append([(q, a)])
                neg_names.append(neg_name)
            mask_arr = np.zeros((0, h, w), dtype=np.uint8)
            exists = [False] * len(convs)
            pos = pos[: len(pairs)] if mode == "False_Premise_Correction" else []
            neg = neg[: len(pairs)]
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
                "class_ids": pos,
                "negative_ids": neg,
                "classes": pos_names,
                "negatives": neg_names,
            },
        )


class _LabelMapSource(_SemSegSource):
    """A source whose annotation is one label PNG per image."""

    def __init__(self, num_classes_per_sample, max_resample, mode_probs):
        super().__init__(num_classes_per_sample, max_resample, mode_probs)
        self.pairs: list[tuple[Path, Path]] = []  # (image, label)

    def __len__(self) -> int:
        return len(self.pairs)

    def _remap(self, label: np.ndarray, path: Path) -> np.ndarray:
        return label

    def label(self, index: int) -> np.ndarray:
        """The label map of image ``index`` after the dataset's remap (values: class ids and 255)."""
        _, label_path = self.pairs[self._check_index(index)]
        raw = read_label_png(label_path)
        lab = self._remap(raw, label_path)
        _check_range(lab, len(self.classes), label_path, self.name)
        return lab

    def _scene(self, index: int) -> _Scene:
        image_path, label_path = self.pairs[index]
        lab = self.label(index)
        image = load_image(image_path)
        if image.shape[:2] != lab.shape:
            raise DataError(
                f"{label_path}: label size {lab.shape} != image size {image.shape[:2]} ({image_path})"
            )
        valid = set(int(c) for c in self._valid_ids())
        present = [int(c) for c in np.unique(lab) if int(c) != IGNORE and int(c) in valid]
        return _LabelScene(image, image_path, lab, present, str(label_path))


class ADE20K(_LabelMapSource):
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

    def _remap(self, label: np.ndarray, path: Path) -> np.ndarray:
        if label.size and int(label.max()) > 255:
            raise DataError(f"{path}: ADE20K label values must be 0..255, max is {int(label.max())}")
        return ade20k_remap(label)


class COCOStuff(_LabelMapSource):
    """COCO-Stuff (stuffthingmaps train2017); every class whose name contains ``"-"`` becomes 255."""

    name = "cocostuff"

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
        root = Path(root)
        self.classes = load_cocostuff_classes(classes_file or root / "cocostuff" / "cocostuff_classes.txt")
        self.ignored_ids = np.array([i for i, c in enumerate(self.classes) if "-" in c], dtype=np.int64)
        labels = _files(root / "cocostuff" / "train2017", "*.png", "COCO-Stuff train2017 labels")
        self.pairs = [(root / "coco" / "train2017" / (p.stem + ".jpg"), p) for p in labels]

    def _valid_ids(self) -> np.ndarray:
        return np.setdiff1d(np.arange(len(self.classes)), self.ignored_ids)

    def _remap(self, label: np.ndarray, path: Path) -> np.ndarray:
        lab = label.copy()
        if self.ignored_ids.size:
            lab[np.isin(lab, self.ignored_ids)] = IGNORE
        return lab


class Mapillary(_LabelMapSource):
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


class _CocoFormatSource(_SemSegSource):
    """PACO-LVIS / PASCAL-Part: COCO-format JSON with (possibly ``obj:part``) categories."""

    def __init__(self, ann_file: Path, image_dir: Path, num_classes_per_sample, max_resample, mode_probs):
        super().__init__(num_classes_per_sample, max_resample, mode_probs)
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
            if anns_by_img.get(img_id):  # images without annotations are not training items
                self.images.append(img)
                self._anns.append(anns_by_img[img_id])
        if not self.images:
            raise DataError(f"{ann_file}: no image with annotations")

    def _category_name(self, name: str) -> ClassName:  # pragma: no cover - overridden
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.images)

    def _scene(self, index: int) -> _Scene:
        info = self.images[index]
        path = self.image_dir / info["file_name"]
        image = load_image(path)
        h, w = int(info["height"]), int(info["width"])
        if image.shape[:2] != (h, w):
            raise DataError(
                f"{path}: image size {image.shape[:2]} != annotated size {(h, w)} in {self.ann_file}"
            )
        by_cat: dict[int, list[dict]] = {}
        for ann in self._anns[index]:
            by_cat.setdefault(self._cat_index[int(ann["category_id"])], []).append(ann)
        return _CocoScene(image, path, by_cat, sorted(by_cat), str(self.ann_file))


class PACOLVIS(_CocoFormatSource):
    """PACO-LVIS train (``vlpart/paco/annotations/paco_lvis_v1_train.json``; images ``coco/<file_name>``)."""

    name = "paco_lvis"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        num_classes_per_sample: int = 3,
        max_resample: int = 10,
        mode_probs: Sequence[float] = MODE_PROBS,
    ):
        root = Path(root)
        super().__init__(
            root / "vlpart" / "paco" / "annotations" / "paco_lvis_v1_train.json",
            root / "coco",
            num_classes_per_sample,
            max_resample,
            mode_probs,
        )

    def _category_name(self, name: str) -> ClassName:
        try:
            return paco_category_name(name)
        except ValueError as e:
            raise DataError(f"{self.ann_file}: {e}") from e


class PascalPart(_CocoFormatSource):
    """PASCAL-Part train (``vlpart/pascal_part/train.json``; images under ``VOCdevkit/VOC2010/JPEGImages``)."""

    name = "pascal_part"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        num_classes_per_sample: int = 3,
        max_resample: int = 10,
        mode_probs: Sequence[float] = MODE_PROBS,
    ):
        base = Path(root) / "vlpart" / "pascal_part"
        super().__init__(
            base / "train.json",
            base / "VOCdevkit" / "VOC2010" / "JPEGImages",
            num_classes_per_sample,
            max_resample,
            mode_probs,
        )

    def _category_name(self, name: str) -> ClassName:
        try:
            return pascal_part_category_name(name)
        except ValueError as e:
            raise DataError(f"{self.ann_file}: {e}") from e


_SOURCES = {
    "ade20k": ADE20K,
    "cocostuff": COCOStuff,
    "mapillary": Mapillary,
    "paco_lvis": PACOLVIS,
    "pascal_part": PascalPart,
}


# ----------------------------------------------------------------------------------------------------------
# The mixture of the five (the official ``SemSegDataset``)
# ----------------------------------------------------------------------------------------------------------


class SemSegDataset:
    """The official semantic-segmentation training dataset (spec 4.2 "SemSeg").

    Args:
        root: data root (official ``--dataset_dir``).
        datasets: sub-datasets, from ``ade20k``, ``cocostuff``, ``pascal_part``, ``paco_lvis``, ``mapillary``
            (official ``--sem_seg_data``).
        num_classes_per_sample: classes (conversation rows) per image, official script value 3.
        max_resample: draws of an image without a valid class before :class:`DataError`.
        mode_probs: (True_Premise, False_Premise_Denial, False_Premise_Correction), official 0.85/0.07/0.08.

    ``__len__``/``__getitem__`` index the sub-datasets' images one after another (deterministic items);
    ``sample(rng)`` is the official draw: mode, then a uniformly chosen sub-dataset, then its image draw.
    """

    name = "sem_seg"

    def __init__(
        self,
        root: str | os.PathLike,
        datasets: Sequence[str] = SEM_SEG_DATASETS,
        *,
        num_classes_per_sample: int = 3,
        max_resample: int = 10,
        mode_probs: Sequence[float] = MODE_PROBS,
    ):
        if isinstance(datasets, str):
            datasets = [d for d in datasets.split("||") if d]
        if not datasets:
            raise ValueError("SemSegDataset needs at least one sub-dataset")
        unknown = [d for d in datasets if d not in _SOURCES]
        if unknown:
            raise ValueError(
                f"unknown semantic-segmentation datasets {unknown} (expected from {sorted(_SOURCES)})"
            )
        self.root = Path(root)
        self.mode_probs = tuple(float(p) for p in mode_probs)
        self.sources: list[_SemSegSource] = [
            _SOURCES[d](
                self.root,
                num_classes_per_sample=num_classes_per_sample,
                max_resample=max_resample,
                mode_probs=mode_probs,
            )
            for d in datasets
        ]
        self.num_classes_per_sample = int(num_classes_per_sample)
        self._offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[_SemSegSource, int]:
        """(sub-dataset, its local index) of global item ``index``."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sem_seg: index {index} out of range for {n} items")
        index %= n
        k = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return self.sources[k], index - int(self._offsets[k])

    def __getitem__(self, index: int) -> Sample:
        source, local = self.locate(index)
        return source[local]

    def sample(self, rng: np.random.Generator) -> Sample:
        mode = _choose_mode(rng, self.mode_probs)
        source = self.sources[int(rng.integers(len(self.sources)))]
        return source.draw(rng, mode)
