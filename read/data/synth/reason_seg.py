"""A small ReasonSeg tree in the real on-disk format, drawn from coloured shapes with known answers.

``write_reason_seg(root)`` writes ``<root>/reason_seg/ReasonSeg/<split>/<stem>.jpg`` (JPEG quality 95) and a
labelme-style ``<stem>.json`` per image, read by :mod:`read.data.reason_seg` exactly like LISA's release:

* ``shapes``: the target polygon (label ``target``); sometimes an ``ignore`` polygon inside the target (the
  reader marks it 255) and a ``flag`` polygon overlapping it (the reader must skip it);
* ``text``: 1-3 queries about the target, either names ("the red circle", ``is_sentence`` false) or sentences
  ("Which shape has three corners in this picture?", ``is_sentence`` true); one flag per file, as in the data;
* ``false_premise_QA`` on train files only (SESAME's FP-Aug format): ``[query, is_sentence, answer]`` per
  query, asking for a colour that is not in the image, with a correcting answer and no ``[SEG]``.

The target is the last-drawn (topmost) shape, so its polygon is exactly its visible region. Vertices are
stored as integer-valued floats (labelme writes floats), so the reader's int32 truncation gives the pixels
that were painted. JPEG is lossy, but masks come from the polygons, not from pixel colours. The extra key
``synthetic`` (target colour/kind) is ignored by the readers and only helps tests.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np

from read.data.synthetic import COLOURS, CORNERS, Shape, draw_shapes

_CORNER_WORDS = {0: "no corners at all", 3: "three corners", 4: "four corners"}


def _sentence_queries(target: Shape, shapes: list[Shape], rng: np.random.Generator) -> list[str]:
    qs = [
        f"Which shape in this picture is painted {target.colour}?",
        f"If you were asked for the {target.colour} object here, which region would you point to?",
    ]
    if sum(s.kind == target.kind for s in shapes) == 1:
        qs.append(f"Which shape has {_CORNER_WORDS[CORNERS[target.kind]]} in this picture?")
    rng.shuffle(qs)
    return qs[: int(rng.integers(1, len(qs) + 1))]


def _name_queries(target: Shape, rng: np.random.Generator) -> list[str]:
    qs = [target.name, f"{target.colour} {target.kind}", f"the {target.colour} shape"]
    rng.shuffle(qs)
    return qs[: int(rng.integers(1, len(qs) + 1))]


def _false_premise(target: Shape, shapes: list[Shape], is_sentence: bool, n: int, rng: np.random.Generator):
    """``n`` distinct QAs about absent colours (at least 2 absent colours x 2 nouns >= 3 queries)."""
    present = {s.colour for s in shapes}
    pairs = [(c, noun) for c in COLOURS if c not in present for noun in (target.kind, "shape")]
    order = rng.permutation(len(pairs))
    out = []
    for j in order[:n]:
        colour, noun = pairs[int(j)]
        if is_sentence:
            q = f"Which {noun} in this picture is painted {colour}?"
        else:
            q = f"the {colour} {noun}"
        a = f"There is no {colour} {noun} in this picture, but there is {target.name}."
        out.append([q, is_sentence, a])
    return out


def _inner_rect(shape: Shape) -> list[list[float]]:
    """A rectangle of a quarter of the bbox sides around the centre: inside every kind, smaller than it."""
    x, y, w, h = shape.bbox
    cx, cy = x + (w - 1) / 2, y + (h - 1) / 2
    hw, hh = max(1.0, w / 8), max(1.0, h / 8)
    x0, x1, y0, y1 = round(cx - hw), round(cx + hw), round(cy - hh), round(cy + hh)
    return [[float(x0), float(y0)], [float(x1), float(y0)], [float(x1), float(y1)], [float(x0), float(y1)]]


def _flag_poly(shape: Shape, height: int, width: int) -> list[list[float]]:
    """A triangle from the image corner over the target's centre (would change the mask if drawn)."""
    cx, cy = shape.centre
    return [
        [0.0, 0.0],
        [float(min(width - 1, round(cx + 2))), 0.0],
        [float(round(cx)), float(min(height - 1, round(cy + 2)))],
    ]


def _one(rng: np.random.Generator, hw_range, is_sentence: bool, with_fp: bool):
    (h0, h1), (w0, w1) = hw_range
    h, w = int(rng.integers(h0, h1 + 1)), int(rng.integers(w0, w1 + 1))
    image, shapes = draw_shapes(rng, h, w, int(rng.integers(2, 5)))
    target = shapes[-1]
    poly = np.round(target.polygon).astype(np.float64)
    json_shapes = [{"label": "target", "points": poly.tolist(), "shape_type": "polygon"}]
    if rng.random() < 0.4:
        json_shapes.append({"label": "ignore", "points": _inner_rect(target), "shape_type": "polygon"})
    if rng.random() < 0.3:
        json_shapes.insert(0, {"label": "flag", "points": _flag_poly(target, h, w), "shape_type": "polygon"})
    texts = _sentence_queries(target, shapes, rng) if is_sentence else _name_queries(target, rng)
    anno = {
        "shapes": json_shapes,
        "text": texts,
        "is_sentence": is_sentence,
        "imageHeight": h,
        "imageWidth": w,
        "synthetic": {"colour": target.colour, "kind": target.kind},
    }
    if with_fp:
        anno["false_premise_QA"] = _false_premise(target, shapes, is_sentence, len(texts), rng)
    return image, anno


def write_reason_seg(
    root,
    *,
    seed: int = 0,
    splits: dict[str, int] | None = None,
    image_hw_range: tuple[tuple[int, int], tuple[int, int]] = ((64, 160), (64, 160)),
) -> dict[str, int]:
    """Write a synthetic ReasonSeg tree under ``root``; return the number of images per split.

    Args:
        seed: every file depends only on (seed, split name, index), so growing one split leaves the others and
            the earlier files of that split unchanged.
        splits: images per split (default ``{"train": 24, "val": 8, "test": 8}``); ``false_premise_QA`` is
            written for ``train`` only. ``is_sentence`` alternates (even index: names, odd: sentences), so both
            test subsets are non-empty from 2 images on.
        image_hw_range: inclusive ``((h_min, h_max), (w_min, w_max))``.

    Raises:
        FileExistsError: a split directory already holds files this call would not write (stale data would
            silently change the split).
    """
    splits = {"train": 24, "val": 8, "test": 8} if splits is None else dict(splits)
    (h0, h1), (w0, w1) = image_hw_range
    if not (16 <= h0 <= h1 and 16 <= w0 <= w1):
        raise ValueError(
            f"image_hw_range must be ((h_min, h_max), (w_min, w_max)) with sides >= 16, got {image_hw_range}"
        )
    counts: dict[str, int] = {}
    for split, n in splits.items():
        if n < 0 or "_" in split or "/" in split:
            raise ValueError(f"bad split {split!r} with {n} images")
        d = Path(root) / "reason_seg" / "ReasonSeg" / split
        d.mkdir(parents=True, exist_ok=True)
        stems = [f"synth_{split}_{i:05d}" for i in range(n)]
        expected = {f"{s}{ext}" for s in stems for ext in (".jpg", ".json")}
        stale = sorted(p.name for p in d.iterdir() if p.name not in expected)
        if stale:
            raise FileExistsError(
                f"{d}: already contains other files ({', '.join(stale[:5])}...); use an empty root"
            )
        split_key = zlib.crc32(split.encode("utf-8"))
        for i, stem in enumerate(stems):
            rng = np.random.default_rng([seed, split_key, i])
            image, anno = _one(rng, image_hw_range, is_sentence=bool(i % 2), with_fp=split == "train")
            ok, buf = cv2.imencode(
                ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
            if not ok:
                raise RuntimeError(f"could not encode {d / stem}.jpg")
            (d / f"{stem}.jpg").write_bytes(buf.tobytes())
            (d / f"{stem}.json").write_text(json.dumps(anno, indent=1), encoding="utf-8")
        counts[split] = n
    return counts
