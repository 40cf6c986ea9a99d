"""Synthetic REFER datasets on disk, in the real format (refCOCO family, refCLEF, FP-/R-RefCOCO).

``write_refer(root)`` writes, for each requested dataset::

    <root>/refer_seg/<dataset>/refs(<splitBy>).p      # plain pickle (protocol 2) of the REFER ref list
    <root>/refer_seg/<dataset>/instances.json        # COCO: images, polygon annotations, categories
    <root>/refer_seg/images/mscoco/images/train2014/COCO_train2014_<id:012d>.jpg   # COCO-based datasets
    <root>/refer_seg/images/saiapr_tc-12/<id>.jpg                                   # refclef

Images are coloured shapes from :func:`read.data.synthetic.draw_shapes`, re-drawn until the shapes do not
overlap, so each shape's visible pixels are its whole outline. Like the real data, the COCO-based datasets share
one set of images (and one ``instances.json`` content); refclef has its own images. Referring expressions name
the shapes ("the red circle", "the shape to the left of the blue triangle", ...) and are unique in their image:

* refcoco / refclef / R-refcoco / fprefcoco: short phrases, location words allowed;
* refcoco+ / R-refcoco+ / fprefcoco+: appearance only, no location words (as refCOCO+);
* refcocog / R-refcocog / fprefcocog: longer sentences (as refCOCOg).

FP-RefCOCO datasets give every sentence ``is_false_premise`` and ``gt_sent`` (the sentence itself for a true
premise) and add one false premise per ref: the ref's colour replaced by a colour absent from the image, with
``gt_sent`` = a true expression of the ref. R-RefCOCO datasets give every sentence ``exist`` and add one
non-existent expression per ref (a colour absent from the image).

Polygons: the drawn outline uses pixel-centre coordinates (``cv2.fillPoly`` covers every pixel an edge touches),
whereas COCO polygons are continuous coordinates that pycocotools samples at pixel centres ``(i + 0.5,
j + 0.5)``. The written polygon is therefore the outline moved by +0.5 and grown outward by half a pixel (exact
miter offset of the convex outline), so the decoded mask matches the drawn pixels up to a few pixels at sharp
tips and along slanted edges.

Everything is a function of ``seed`` (and the dataset name): the same call writes the same files.
"""

from __future__ import annotations

import json
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from read.data.refer import CLEF_IMAGE_DIR, COCO_IMAGE_DIR, default_split_by
from read.data.synthetic import COLOURS, KINDS, Shape, draw_shapes

SUPPORTED = (
    "refcoco",
    "refcoco+",
    "refcocog",
    "refclef",
    "fprefcoco",
    "fprefcoco+",
    "fprefcocog",
    "R-refcoco",
    "R-refcoco+",
    "R-refcocog",
)
CATEGORIES = [{"id": i + 1, "name": k, "supercategory": "shape"} for i, k in enumerate(KINDS)]
_CAT_ID = {c["name"]: c["id"] for c in CATEGORIES}


@dataclass
class SynthScene:
    """One synthetic image with its shapes and COCO ids."""

    image_id: int
    file_name: str
    image: np.ndarray
    shapes: list[Shape]
    ann_ids: list[int]


def _style(dataset: str) -> str:
    base = dataset.removeprefix("R-").removeprefix("fp")
    if base == "refcoco+":
        return "plus"
    if base == "refcocog":
        return "g"
    return "loc"


def _splits(dataset: str) -> tuple[str, ...]:
    return ("train", "val", "test") if _style(dataset) == "g" else ("train", "val", "testA", "testB")


def _split_of(i: int, n: int, splits: tuple[str, ...]) -> str:
    """Images 0..n-1 -> the last ``k`` images of each non-train split, the rest train (k >= 1)."""
    others = splits[1:]
    k = max(1, n // (len(splits) + 2))
    tail = n - i - 1  # position counted from the end
    j = tail // k
    return others[len(others) - 1 - j] if j < len(others) else "train"


def _draw_disjoint(rng: np.random.Generator, h: int, w: int, n: int) -> tuple[np.ndarray, list[Shape]]:
    while True:
        for _ in range(200):
            image, shapes = draw_shapes(rng, h, w, n)
            full = [
                cv2.fillPoly(np.zeros((h, w), np.uint8), [np.round(s.polygon).astype(np.int32)], 1)
                for s in shapes
            ]
            if all(int(s.mask.sum()) == int(f.sum()) for s, f in zip(shapes, full, strict=True)):
                return image, shapes
        if n == 1:
            raise RuntimeError(f"cannot draw a shape on a {h}x{w} image")
        n -= 1


def synth_scenes(seed: int, n_images: int, *, clef: bool = False) -> list[SynthScene]:
    """The images and shapes ``write_refer`` writes (COCO group or refclef group), deterministic from ``seed``."""
    rng = np.random.default_rng([seed, 1 if clef else 0])
    scenes: list[SynthScene] = []
    ann_id = 900_001 if clef else 500_001
    for i in range(n_images):
        h = int(rng.integers(120, 201))
        w = int(rng.integers(160, 261))
        n = int(rng.integers(2, 4))
        image, shapes = _draw_disjoint(rng, h, w, n)
        image_id = (20_001 if clef else 100_001) + 7 * i
        file_name = f"{image_id}.jpg" if clef else f"COCO_train2014_{image_id:012d}.jpg"
        ids = list(range(ann_id, ann_id + len(shapes)))
        ann_id += len(shapes)
        scenes.append(SynthScene(image_id, file_name, image, shapes, ids))
    return scenes


def coco_polygon(poly: np.ndarray, grow: float = 0.5) -> list[float]:
    """Pixel-centre outline -> COCO continuous polygon covering the same pixels (module docstring)."""
    p = np.asarray(poly, dtype=np.float64) + 0.5
    centre = p.mean(axis=0)
    out = []
    n = len(p)
    for i in range(n):
        a, b, c = p[i - 1], p[i], p[(i + 1) % n]

        def normal(e: np.ndarray, mid: np.ndarray) -> np.ndarray:
            v = np.array([e[1], -e[0]]) / max(float(np.linalg.norm(e)), 1e-9)
            return v if float(np.dot(v, mid - centre)) > 0 else -v

        n1, n2 = normal(b - a, (a + b) / 2), normal(c - b, (b + c) / 2)
        out.append(b + grow * (n1 + n2) / max(1.0 + float(n1 @ n2), 1e-3))
    return [round(float(v), 2) for v in np.asarray(out).reshape(-1)]


# ---------------------------------------------------------------------------- expressions
def _rel(s: Shape, r: Shape) -> str:
    dx, dy = s.centre[0] - r.centre[0], s.centre[1] - r.centre[1]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _expressions(i: int, shapes: list[Shape], style: str) -> list[str]:
    s = shapes[i]
    c, k = s.colour, s.kind
    out = [f"the {c} {k}", f"{c} {k}", f"the {k} that is {c}", f"the {c} one"]
    if sum(t.kind == k for t in shapes) == 1:
        out.append(f"the {k}")
    if style == "plus":
        return out
    relational = []
    for j, r in enumerate(shapes):
        if j == i:
            continue
        rel = _rel(s, r)
        if sum(_rel(t, r) == rel for m, t in enumerate(shapes) if m not in (i, j)) == 0:
            relational.append((rel, r))
    if style == "g":
        out = [f"a {c} coloured {k} on a grey background", f"the {c} {k} in the picture"]
        out += [f"a {c} {k} that is {rel} a {r.colour} {r.kind}" for rel, r in relational]
        return out
    out += [f"the shape {rel} the {r.colour} {r.kind}" for rel, r in relational]
    xs = [t.centre[0] for t in shapes]
    ys = [t.centre[1] for t in shapes]
    if xs.count(min(xs)) == 1 and s.centre[0] == min(xs):
        out.append(f"the leftmost {k}")
    if xs.count(max(xs)) == 1 and s.centre[0] == max(xs):
        out.append("the rightmost shape")
    if ys.count(min(ys)) == 1 and s.centre[1] == min(ys):
        out.append(f"the {k} at the top")
    return out


def _sentence(text: str, sent_id: int, **extra) -> dict:
    return {
        "sent": text,
        "sent_id": sent_id,
        "tokens": text.split(),
        "raw": text[:1].upper() + text[1:],
        **extra,
    }


def _absent_colour(rng: np.random.Generator, shapes: list[Shape]) -> str:
    free = [c for c in COLOURS if c not in {s.colour for s in shapes}]
    return free[int(rng.integers(len(free)))]


def _refs_for(dataset: str, scenes: list[SynthScene], seed: int) -> list[dict]:
    rng = np.random.default_rng([seed, zlib.crc32(dataset.encode())])
    style = _style(dataset)
    splits = _splits(dataset)
    fp, neg = dataset.startswith("fp"), dataset.startswith("R-")
    refs: list[dict] = []
    ref_id = 1
    sent_id = 1
    for i, sc in enumerate(scenes):
        split = _split_of(i, len(scenes), splits)
        for j, (shape, ann_id) in enumerate(zip(sc.shapes, sc.ann_ids, strict=True)):
            cands = _expressions(j, sc.shapes, style)
            k = min(len(cands), 2 if style != "g" else 3)
            texts = [cands[int(t)] for t in rng.choice(len(cands), size=k, replace=False)]
            sents = []
            for t in texts:
                extra = {"is_false_premise": False, "gt_sent": t} if fp else ({"exist": True} if neg else {})
                sents.append(_sentence(t, sent_id, **extra))
                sent_id += 1
            if fp:
                wrong = f"the {_absent_colour(rng, sc.shapes)} {shape.kind}"
                sents.append(_sentence(wrong, sent_id, is_false_premise=True, gt_sent=texts[0]))
                sent_id += 1
            if neg:
                kind = KINDS[int(rng.integers(len(KINDS)))]
                sents.append(_sentence(f"the {_absent_colour(rng, sc.shapes)} {kind}", sent_id, exist=False))
                sent_id += 1
            refs.append(
                {
                    "ref_id": ref_id,
                    "ann_id": ann_id,
                    "image_id": sc.image_id,
                    "split": split,
                    "sentences": sents,
                    "sent_ids": [s["sent_id"] for s in sents],
                    "category_id": _CAT_ID[shape.kind],
                    "file_name": f"{Path(sc.file_name).stem}_{ann_id}.jpg",
                }
            )
            ref_id += 1
    return refs


def _instances(scenes: list[SynthScene]) -> dict:
    images, anns = [], []
    for sc in scenes:
        h, w = sc.image.shape[:2]
        images.append({"id": sc.image_id, "file_name": sc.file_name, "height": h, "width": w})
        for shape, ann_id in zip(sc.shapes, sc.ann_ids, strict=True):
            x, y, bw, bh = shape.bbox
            anns.append(
                {
                    "id": ann_id,
                    "image_id": sc.image_id,
                    "category_id": _CAT_ID[shape.kind],
                    "segmentation": [coco_polygon(shape.polygon)],
                    "area": float(shape.area),
                    "bbox": [float(x), float(y), float(bw), float(bh)],
                    "iscrowd": 0,
                }
            )
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def _write_images(root: Path, sub: tuple[str, ...], scenes: list[SynthScene]) -> None:
    d = root.joinpath(*sub)
    d.mkdir(parents=True, exist_ok=True)
    for sc in scenes:
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(sc.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        if not ok:
            raise RuntimeError(f"could not encode {sc.file_name}")
        (d / sc.file_name).write_bytes(buf.tobytes())


def write_refer(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    datasets: tuple[str, ...] = ("refcoco", "refcoco+", "refcocog", "refclef", "fprefcoco", "R-refcoco"),
    n_images: int = 12,
) -> dict:
    """Write synthetic REFER datasets under ``root`` (module docstring).

    Returns:
        ``{dataset: {split: {"images": n, "refs": n, "sentences": n}}}``.
    """
    unknown = [d for d in datasets if d not in SUPPORTED]
    if unknown:
        raise ValueError(f"unsupported synthetic REFER datasets {unknown}; choose from {SUPPORTED}")
    if n_images < 4:
        raise ValueError(f"n_images must be >= 4 (one image per split at least), got {n_images}")
    root = Path(root)
    groups: dict[bool, list[SynthScene]] = {}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for ds in datasets:
        clef = ds == "refclef"
        if clef not in groups:
            groups[clef] = synth_scenes(seed, n_images, clef=clef)
            _write_images(root, CLEF_IMAGE_DIR if clef else COCO_IMAGE_DIR, groups[clef])
        scenes = groups[clef]
        refs = _refs_for(ds, scenes, seed)
        d = root / "refer_seg" / ds
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"refs({default_split_by(ds)}).p", "wb") as f:
            pickle.dump(refs, f, protocol=2)
        (d / "instances.json").write_text(json.dumps(_instances(scenes)), encoding="utf-8")
        per: dict[str, dict[str, int]] = {}
        for split in _splits(ds):
            rs = [r for r in refs if r["split"] == split]
            per[split] = {
                "images": len({r["image_id"] for r in rs}),
                "refs": len(rs),
                "sentences": sum(len(r["sentences"]) for r in rs),
            }
        counts[ds] = per
    return counts
