"""A small synthetic gRefCOCO in the release format (tests, quickstart; no downloads).

``write_grefcoco(root)`` writes::

    <root>/refer_seg/grefcoco/grefs(unc).json    # JSON list of refs (ann_id lists, [-1] = no target)
    <root>/refer_seg/grefcoco/instances.json    # COCO: images, annotations (polygons and uncompressed RLE)
    <root>/refer_seg/images/mscoco/images/train2014/COCO_train2014_<id:012d>.jpg   # ids 400001 + 7 i

The images share the train2014 folder of the synthetic refCOCO family (:mod:`read.data.synth.refer`) with ids of
their own, after theirs in sorted order. Shapes do not overlap (as there), so each shape's polygon covers its
drawn pixels. Per image, refs in this order:

* one single-target ref per shape (``"the red circle"``, ``"red circle"``);
* with two shapes or more, a multi-target ref on the first two (``"the red circle and the blue triangle"``), and
  with three or more one on all of them (``"all the shapes"``); a kind drawn twice adds ``"both triangles"``;
* one no-target ref (``ann_id: [-1]``, ``category_id: [-1]``, ``no_target: true``) naming a colour absent from
  the image.

Image 1 (a train image) has only no-target refs, so a GSVA-style draw of it gives only ``[REJ]`` slots and is
re-drawn. Every fourth annotation is an uncompressed RLE (``iscrowd: 1``, as COCO's crowd annotations); one
annotation per image with a polygon also carries a two-point polygon part, which readers must skip. Some
sentences end with ``"."`` (stripped by GSVA's prompts). Splits follow the image position (the last images are
``val``, ``testA``, ``testB``, the rest ``train``). Everything is a function of ``seed``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from read.data.grefer import DATA_DIR, SPLITS
from read.data.refer import COCO_IMAGE_DIR
from read.data.synth.refer import (
    CATEGORIES,
    SynthScene,
    _draw_disjoint,
    _split_of,
    _write_images,
    coco_polygon,
)
from read.data.synthetic import COLOURS, Shape

__all__ = ["ALL_NO_TARGET_IMAGE", "uncompressed_rle", "write_grefcoco"]

_CAT_ID = {c["name"]: c["id"] for c in CATEGORIES}
ALL_NO_TARGET_IMAGE = 1  # index of the image whose refs are all no-target


def uncompressed_rle(mask: np.ndarray) -> dict:
    """A 0/1 ``[h, w]`` mask as COCO's uncompressed RLE: column-major run lengths, starting with a 0-run."""
    h, w = mask.shape
    flat = (np.asarray(mask).flatten(order="F") > 0).astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).astype(int).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return {"size": [int(h), int(w)], "counts": runs}


def _scenes(seed: int, n_images: int) -> list[SynthScene]:
    rng = np.random.default_rng([seed, 7])
    scenes, ann_id = [], 700_001
    for i in range(n_images):
        h, w = int(rng.integers(120, 201)), int(rng.integers(160, 261))
        image, shapes = _draw_disjoint(rng, h, w, int(rng.integers(2, 5)))
        image_id = 400_001 + 7 * i
        ids = list(range(ann_id, ann_id + len(shapes)))
        ann_id += len(shapes)
        scenes.append(SynthScene(image_id, f"COCO_train2014_{image_id:012d}.jpg", image, shapes, ids))
    return scenes


def _segmentation(shape: Shape, k: int, first_polygon: bool) -> tuple[object, int]:
    """(segmentation, iscrowd) of the ``k``-th annotation overall."""
    if k % 4 == 3:
        return uncompressed_rle(shape.mask), 1
    poly = [coco_polygon(shape.polygon)]
    if first_polygon:  # a 2-point part: skipped by every gRefCOCO reader (< 3 points)
        x, y = poly[0][0], poly[0][1]
        poly.append([x, y, x + 1.0, y])
    return poly, 0


def _instances(scenes: list[SynthScene]) -> dict:
    images, anns, k = [], [], 0
    for sc in scenes:
        h, w = sc.image.shape[:2]
        images.append({"id": sc.image_id, "file_name": sc.file_name, "height": h, "width": w})
        degenerate_done = False
        for shape, ann_id in zip(sc.shapes, sc.ann_ids, strict=True):
            seg, crowd = _segmentation(shape, k, first_polygon=not degenerate_done and k % 4 != 3)
            degenerate_done = degenerate_done or (crowd == 0)
            x, y, bw, bh = shape.bbox
            anns.append({"id": ann_id, "image_id": sc.image_id, "category_id": _CAT_ID[shape.kind],
                         "segmentation": seg, "area": float(shape.area),
                         "bbox": [float(x), float(y), float(bw), float(bh)], "iscrowd": crowd})
            k += 1
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def _ref_texts(sc: SynthScene, rng: np.random.Generator, index: int) -> list[tuple[list[int], list[str]]]:
    """``(ann ids, sentences)`` of the refs of one image (module docstring)."""
    shapes, ids = sc.shapes, sc.ann_ids
    absent = [c for c in COLOURS if c not in {s.colour for s in shapes}]
    out: list[tuple[list[int], list[str]]] = []
    if index != ALL_NO_TARGET_IMAGE:
        for s, a in zip(shapes, ids, strict=True):
            out.append(([a], [f"the {s.colour} {s.kind}", f"{s.colour} {s.kind}"]))
        if len(shapes) >= 2:
            a, b = shapes[0], shapes[1]
            out.append((ids[:2], [f"the {a.colour} {a.kind} and the {b.colour} {b.kind}",
                                  f"{a.colour} and {b.colour} shapes."]))
        if len(shapes) >= 3:
            out.append((list(ids), ["all the shapes", "every shape."]))
        kinds = [s.kind for s in shapes]
        for kind in sorted(set(kinds)):
            if kinds.count(kind) == 2:
                out.append(([a for s, a in zip(shapes, ids, strict=True) if s.kind == kind], [f"both {kind}s"]))
    n_neg = 2 if index == ALL_NO_TARGET_IMAGE else 1
    for c in [absent[int(i)] for i in rng.choice(len(absent), size=min(n_neg, len(absent)), replace=False)]:
        kind = shapes[int(rng.integers(len(shapes)))].kind
        out.append(([-1], [f"the {c} {kind}"]))
    return out


def _refs(scenes: list[SynthScene], seed: int) -> list[dict]:
    rng = np.random.default_rng([seed, 8])
    refs, ref_id, sent_id = [], 1, 1
    cat_of = {a: _CAT_ID[s.kind] for sc in scenes for s, a in zip(sc.shapes, sc.ann_ids, strict=True)}
    for i, sc in enumerate(scenes):
        split = _split_of(i, len(scenes), SPLITS)
        for ann_ids, texts in _ref_texts(sc, rng, i):
            sents = []
            for t in texts:
                sents.append({"sent": t, "sent_id": sent_id, "raw": t[:1].upper() + t[1:],
                              "tokens": t.rstrip(".").split()})
                sent_id += 1
            no_target = ann_ids == [-1]
            refs.append({
                "ref_id": ref_id, "image_id": sc.image_id, "split": split, "ann_id": ann_ids,
                "category_id": [-1] if no_target else sorted({cat_of[a] for a in ann_ids}),
                "no_target": no_target, "sent_ids": [s["sent_id"] for s in sents], "sentences": sents,
                "file_name": f"{Path(sc.file_name).stem}_{ann_ids[0] if not no_target else 0}.jpg",
            })
            ref_id += 1
    return refs


def write_grefcoco(root: str | os.PathLike, *, seed: int = 0, n_images: int = 16) -> dict:
    """Write the synthetic gRefCOCO under ``root`` (module docstring).

    Returns:
        ``{split: {"images", "refs", "expressions", "no_target", "multi_target"}}`` (expression counts are
        sentences; ``no_target`` / ``multi_target`` count sentences whose ref has ``[-1]`` / several ids).
    """
    if n_images < 5:
        raise ValueError(f"n_images must be >= 5 (train images, one of them all no-target, and 3 eval splits), "
                         f"got {n_images}")
    root = Path(root)
    scenes = _scenes(seed, n_images)
    _write_images(root, COCO_IMAGE_DIR, scenes)
    refs = _refs(scenes, seed)
    d = root.joinpath(*DATA_DIR)
    d.mkdir(parents=True, exist_ok=True)
    (d / "grefs(unc).json").write_text(json.dumps(refs), encoding="utf-8")
    (d / "instances.json").write_text(json.dumps(_instances(scenes)), encoding="utf-8")
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        rs = [r for r in refs if r["split"] == split]
        counts[split] = {
            "images": len({r["image_id"] for r in rs}),
            "refs": len(rs),
            "expressions": sum(len(r["sentences"]) for r in rs),
            "no_target": sum(len(r["sentences"]) for r in rs if r["ann_id"] == [-1]),
            "multi_target": sum(len(r["sentences"]) for r in rs if len(r["ann_id"]) > 1),
        }
    return counts
