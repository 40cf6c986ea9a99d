"""Small ADE20K, COCO-Stuff, Mapillary, PACO-LVIS and PASCAL-Part trees in their real on-disk layouts.

Every image is ``draw_shapes`` output (:func:`scene`), so the answer to every class question is known. A shape's
class is built from its colour and kind:

* ADE20K: ``ade20k_classes.json`` lists ``"<colour> <kind>"`` for every colour and kind; the annotation PNG
  (grey, uint8) stores ``1 + class index`` on the shape's visible pixels and 0 (unlabelled) elsewhere.
* COCO-Stuff: READ's official class list (the packaged ``read/data/cocostuff_classes.json``, also written to
  ``cocostuff/cocostuff_classes.txt`` as ``"0: unlabeled"`` then ``"<id>: <name>"``, so the reader finds no
  difference to report). Each (colour, kind) stands for one official class (:data:`COCOSTUFF_CLASSES`):
  rectangles and circles for plain names, triangles for ``"-"`` names (``wall-brick``...), which the reader
  turns into 255. The label PNG stores the official 0-based class index, 255 elsewhere.
* Mapillary: ``config_v2.0.json`` with Title-Case ``readable`` names (``"Red Circle"``) and a final
  ``"Unlabeled"`` class used for the background; labels are *palette* PNGs (value = class index), as the real
  v2.0 labels.
* PACO-LVIS / PASCAL-Part: COCO-format JSON; per shape one annotation of an object category and one of an
  ``obj:part`` category, both with the shape's full outline as a polygon. PACO names look like
  ``"circle_(shape)"`` and ``"circle_(shape):red_side"`` (reader: ``circle`` / ``("circle", "red_side")``);
  PASCAL names like ``"circle:red side"``.

Image ``i`` of dataset ``d`` is ``scene(seed, d, i)``; files depend only on (seed, dataset, index). Image 0 of
PACO-LVIS and PASCAL-Part holds only rectangles (at least two), so one category has several instances there.
COCO-Stuff, PACO and LLaVA images share ``coco/train2017`` with disjoint ids (100000+, 200000+; LLaVA 300000+).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from read.data.sem_seg_labels import dump_class_list, official_cocostuff_classes
from read.data.synthetic import COLOURS, KINDS, Shape, draw_shapes

__all__ = [
    "ADE_CLASSES",
    "COCOSTUFF_CLASSES",
    "cocostuff_class_id",
    "MAPILLARY_READABLE",
    "PACO_CATEGORIES",
    "PASCAL_CATEGORIES",
    "scene",
    "shape_class",
    "write_ade20k",
    "write_cocostuff",
    "write_mapillary",
    "write_paco_lvis",
    "write_pascal_part",
    "write_sem_seg",
]

ADE_CLASSES: list[str] = [f"{c} {k}" for c in COLOURS for k in KINDS]
# Official COCO-Stuff class standing for each (colour, kind), in shape_class order (colour-major).
_COCOSTUFF_BY_KIND = {
    "rectangle": ("banner", "book", "cardboard", "paper", "mat", "towel"),
    "circle": ("sports ball", "frisbee", "clock", "plate", "donut", "orange"),
    "triangle": ("wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile"),
}
COCOSTUFF_CLASSES: list[str] = [_COCOSTUFF_BY_KIND[k][ci] for ci in range(len(COLOURS)) for k in KINDS]
MAPILLARY_READABLE: list[str] = [f"{c.title()} {k.title()}" for c in COLOURS for k in KINDS] + ["Unlabeled"]
PACO_CATEGORIES: list[str] = [f"{k}_(shape)" for k in KINDS] + [
    f"{k}_(shape):{c}_side" for c in COLOURS for k in KINDS
]
PASCAL_CATEGORIES: list[str] = [f"{k}" for k in KINDS] + [f"{k}:{c} side" for c in COLOURS for k in KINDS]

COCO_ID_OFFSET = {"cocostuff": 100000, "paco_lvis": 200000}


def shape_class(shape: Shape) -> int:
    """Index of a shape's (colour, kind) in the 18-entry class lists above."""
    return list(COLOURS).index(shape.colour) * len(KINDS) + KINDS.index(shape.kind)


def cocostuff_class_id(shape: Shape) -> int:
    """The official COCO-Stuff class index (= label value) standing for ``shape``."""
    return official_cocostuff_classes().index(COCOSTUFF_CLASSES[shape_class(shape)])


def scene(
    seed: int,
    dataset: str,
    index: int,
    hw_range: tuple[tuple[int, int], tuple[int, int]] = ((40, 64), (48, 80)),
) -> tuple[np.ndarray, list[Shape]]:
    """Image ``index`` of ``dataset``: ``draw_shapes`` with 2-4 shapes from ``default_rng([seed, crc32(dataset), index])``
    (rectangles only for image 0 of PACO-LVIS / PASCAL-Part)."""
    (h0, h1), (w0, w1) = hw_range
    for attempt in range(50):
        key = [seed, zlib.crc32(dataset.encode("utf-8")), index] + ([attempt] if attempt else [])
        rng = np.random.default_rng(key)
        h, w = int(rng.integers(h0, h1 + 1)), int(rng.integers(w0, w1 + 1))
        same_kind = dataset in ("paco_lvis", "pascal_part") and index == 0  # several instances of one category
        kinds = ("rectangle",) if same_kind else KINDS
        image, shapes = draw_shapes(rng, h, w, int(rng.integers(2, 5)), kinds=kinds)
        # COCO-Stuff's "-" classes (triangles here) become 255: keep at least one usable class per image
        if dataset != "cocostuff" or any(s.kind != "triangle" for s in shapes):
            return image, shapes
    raise RuntimeError(f"no usable COCO-Stuff scene for seed {seed}, index {index}")


def _write_jpg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def _write_grey_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", label.astype(np.uint8))
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def _write_palette_png(path: Path, label: np.ndarray, colours: list[list[int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = label.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(label.astype(np.uint8)).tobytes())
    flat = [v for rgb in colours for v in rgb]
    im.putpalette(flat + [0] * (768 - len(flat)))
    im.save(path, format="PNG")


def _label_map(shapes: list[Shape], shape_hw: tuple[int, int], background: int, value) -> np.ndarray:
    lab = np.full(shape_hw, background, dtype=np.uint8)
    for s in shapes:
        lab[s.mask == 1] = value(s)
    return lab


def write_ade20k(root, *, seed: int = 0, num_images: int = 6) -> dict[str, int]:
    """ADE20K: ``ade20k/images/training/ADE_train_XXXXXXXX.jpg``, ``ade20k/annotations/training/*.png``,
    ``ade20k/ade20k_classes.json``."""
    base = Path(root) / "ade20k"
    base.mkdir(parents=True, exist_ok=True)
    (base / "ade20k_classes.json").write_text(json.dumps(ADE_CLASSES), encoding="utf-8")
    for i in range(num_images):
        image, shapes = scene(seed, "ade20k", i)
        stem = f"ADE_train_{i + 1:08d}"
        _write_jpg(base / "images" / "training" / f"{stem}.jpg", image)
        lab = _label_map(shapes, image.shape[:2], 0, lambda s: 1 + shape_class(s))
        _write_grey_png(base / "annotations" / "training" / f"{stem}.png", lab)
    return {"images": num_images, "classes": len(ADE_CLASSES)}


def write_cocostuff(root, *, seed: int = 0, num_images: int = 6) -> dict[str, int]:
    """COCO-Stuff: ``cocostuff/train2017/<id>.png``, ``coco/train2017/<id>.jpg``, ``cocostuff/cocostuff_classes.txt``."""
    root = Path(root)
    (root / "cocostuff").mkdir(parents=True, exist_ok=True)
    official = official_cocostuff_classes()
    (root / "cocostuff" / "cocostuff_classes.txt").write_text(dump_class_list(official), encoding="utf-8")
    for i in range(num_images):
        image, shapes = scene(seed, "cocostuff", i)
        stem = f"{COCO_ID_OFFSET['cocostuff'] + i:012d}"
        _write_jpg(root / "coco" / "train2017" / f"{stem}.jpg", image)
        lab = _label_map(shapes, image.shape[:2], 255, cocostuff_class_id)
        _write_grey_png(root / "cocostuff" / "train2017" / f"{stem}.png", lab)
    return {"images": num_images, "classes": len(official)}


def write_mapillary(root, *, seed: int = 0, num_images: int = 6) -> dict[str, int]:
    """Mapillary v2.0: ``mapillary/config_v2.0.json``, ``mapillary/training/v2.0/labels/<key>.png`` (palette),
    ``mapillary/training/images/<key>.jpg``."""
    base = Path(root) / "mapillary"
    base.mkdir(parents=True, exist_ok=True)
    colours = [list(COLOURS[c]) for c in COLOURS for _ in KINDS] + [[0, 0, 0]]
    labels = [
        {
            "name": "void--unlabeled" if r == "Unlabeled" else "object--" + r.lower().replace(" ", "-"),
            "readable": r,
            "color": col,
            "instances": r != "Unlabeled",
            "evaluate": r != "Unlabeled",
        }
        for r, col in zip(MAPILLARY_READABLE, colours, strict=True)
    ]
    (base / "config_v2.0.json").write_text(
        json.dumps({"labels": labels, "version": "2.0", "mapping": "public"}, indent=1), encoding="utf-8"
    )
    unlabeled = len(MAPILLARY_READABLE) - 1
    for i in range(num_images):
        image, shapes = scene(seed, "mapillary", i)
        key = f"synthKey{i:05d}"
        _write_jpg(base / "training" / "images" / f"{key}.jpg", image)
        lab = _label_map(shapes, image.shape[:2], unlabeled, shape_class)
        _write_palette_png(base / "training" / "v2.0" / "labels" / f"{key}.png", lab, colours)
    return {"images": num_images, "classes": len(MAPILLARY_READABLE)}


def _polygon(shape: Shape) -> list[float]:
    return [round(float(v), 2) for v in shape.polygon.reshape(-1)]


def _coco_json(names: list[str], images: list[dict], shapes_per_image: list[list[Shape]], part_index) -> dict:
    cats = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(names)]
    anns = []
    for img, shapes in zip(images, shapes_per_image, strict=True):
        for s in shapes:
            x, y, w, h = s.bbox
            for cat in (1 + KINDS.index(s.kind), 1 + len(KINDS) + part_index(s)):
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": img["id"],
                        "category_id": cat,
                        "segmentation": [_polygon(s)],
                        "bbox": [float(x), float(y), float(w), float(h)],
                        "area": float(s.area),
                        "iscrowd": 0,
                    }
                )
    return {"info": {"description": "synthetic"}, "images": images, "annotations": anns, "categories": cats}


def write_paco_lvis(root, *, seed: int = 0, num_images: int = 6) -> dict[str, int]:
    """PACO-LVIS: ``vlpart/paco/annotations/paco_lvis_v1_train.json``, images ``coco/train2017/<id>.jpg``
    (``file_name`` = ``"train2017/<id>.jpg"``, relative to ``coco/``)."""
    root = Path(root)
    images, all_shapes = [], []
    for i in range(num_images):
        image, shapes = scene(seed, "paco_lvis", i)
        img_id = COCO_ID_OFFSET["paco_lvis"] + i
        _write_jpg(root / "coco" / "train2017" / f"{img_id:012d}.jpg", image)
        h, w = image.shape[:2]
        images.append({"id": img_id, "file_name": f"train2017/{img_id:012d}.jpg", "height": h, "width": w})
        all_shapes.append(shapes)
    data = _coco_json(PACO_CATEGORIES, images, all_shapes, shape_class)
    out = root / "vlpart" / "paco" / "annotations" / "paco_lvis_v1_train.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data), encoding="utf-8")
    return {"images": num_images, "annotations": len(data["annotations"]), "categories": len(PACO_CATEGORIES)}


def write_pascal_part(root, *, seed: int = 0, num_images: int = 6) -> dict[str, int]:
    """PASCAL-Part: ``vlpart/pascal_part/train.json``, images
    ``vlpart/pascal_part/VOCdevkit/VOC2010/JPEGImages/<file_name>``."""
    base = Path(root) / "vlpart" / "pascal_part"
    images, all_shapes = [], []
    for i in range(num_images):
        image, shapes = scene(seed, "pascal_part", i)
        name = f"2008_{i:06d}.jpg"
        _write_jpg(base / "VOCdevkit" / "VOC2010" / "JPEGImages" / name, image)
        h, w = image.shape[:2]
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        all_shapes.append(shapes)
    data = _coco_json(PASCAL_CATEGORIES, images, all_shapes, shape_class)
    base.mkdir(parents=True, exist_ok=True)
    (base / "train.json").write_text(json.dumps(data), encoding="utf-8")
    return {
        "images": num_images,
        "annotations": len(data["annotations"]),
        "categories": len(PASCAL_CATEGORIES),
    }


_WRITERS = {
    "ade20k": write_ade20k,
    "cocostuff": write_cocostuff,
    "mapillary": write_mapillary,
    "paco_lvis": write_paco_lvis,
    "pascal_part": write_pascal_part,
}


def write_sem_seg(
    root,
    *,
    seed: int = 0,
    num_images: int = 6,
    datasets: tuple[str, ...] = ("ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary"),
) -> dict[str, dict[str, int]]:
    """All five semantic-segmentation sources under ``root``; returns each writer's counts."""
    unknown = [d for d in datasets if d not in _WRITERS]
    if unknown:
        raise ValueError(f"unknown datasets {unknown} (expected from {sorted(_WRITERS)})")
    return {d: _WRITERS[d](root, seed=seed, num_images=num_images) for d in datasets}
