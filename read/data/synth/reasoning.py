"""A procedural reasoning-segmentation benchmark in the ReasonSeg format (``reason_seg/ReasonSeg/<split>/``).

Each image holds 2-4 non-overlapping shapes (rectangle, circle, triangle; distinct colours; random sizes). Each
JSON asks for one target with one query:

* **explicit** (``is_sentence`` false): "the red triangle" (the colour is unique, so the answer is unambiguous);
* **implicit** (``is_sentence`` true), one reasoning step over attributes or relations, only when unambiguous:
  - corners: "Which shape has three corners?" (exactly one triangle) / four corners / "Which shape is round?";
  - size: "Which is the largest shape?" / smallest (area ratio to the runner-up at least 1.4);
  - relation: "Which shape is left of the blue circle?" (exactly one shape lies left of the reference, by at
    least a margin; also right / above / below).

Half of each split is explicit, half implicit; splits use disjoint generators. The JSON also keeps every shape's
polygon and the query kind under ``synthetic`` (readers ignore it) for the text-blind baselines.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from read.data.synthetic import COLOURS, KINDS, Shape

CORNER_WORDS = {"triangle": "Which shape has three corners?", "rectangle": "Which shape has four corners?",
                "circle": "Which shape is round?"}
RELATIONS = {"left": ("left of", 0, -1), "right": ("right of", 0, 1), "above": ("above", 1, -1),
             "below": ("below", 1, 1)}
SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}


def _outline(kind: str, x: int, y: int, w: int, h: int) -> np.ndarray:
    if kind == "rectangle":
        return np.array([[x, y], [x + w - 1, y], [x + w - 1, y + h - 1], [x, y + h - 1]], np.float64)
    if kind == "triangle":
        return np.array([[x + (w - 1) / 2, y], [x + w - 1, y + h - 1], [x, y + h - 1]], np.float64)
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    r = (min(w, h) - 1) / 2
    return np.stack([x + (w - 1) / 2 + r * np.cos(t), y + (h - 1) / 2 + r * np.sin(t)], axis=1)


def draw_scene(rng: np.random.Generator, size: int, n: int) -> tuple[np.ndarray, list[Shape]]:
    """``n`` non-overlapping shapes (bounding boxes 2 px apart) with distinct colours on a noisy background."""
    for _ in range(200):
        image = np.full((size, size, 3), 128, np.uint8) + rng.integers(0, 24, (size, size, 1), dtype=np.uint8)
        colours = [str(c) for c in rng.choice(list(COLOURS), size=n, replace=False)]
        boxes: list[tuple[int, int, int, int]] = []
        shapes: list[Shape] = []
        ok = True
        for colour in colours:
            kind = str(KINDS[int(rng.integers(len(KINDS)))])
            for _ in range(50):
                w = int(rng.integers(size // 7, size // 3))
                h = w if kind == "circle" else int(rng.integers(size // 7, size // 3))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                if all(x + w + 2 <= bx or bx + bw + 2 <= x or y + h + 2 <= by or by + bh + 2 <= y
                       for bx, by, bw, bh in boxes):
                    break
            else:
                ok = False
                break
            poly = _outline(kind, x, y, w, h)
            mask = np.zeros((size, size), np.uint8)
            cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
            image[mask == 1] = COLOURS[colour]
            boxes.append((x, y, w, h))
            shapes.append(Shape(kind=kind, colour=colour, polygon=poly, mask=mask, bbox=(x, y, w, h)))
        if ok:
            return image, shapes
    raise RuntimeError("could not place the shapes")


def implicit_queries(shapes: list[Shape]) -> list[tuple[int, str, str]]:
    """Every unambiguous one-step query: ``(target index, query, kind)``."""
    out: list[tuple[int, str, str]] = []
    for kind, text in CORNER_WORDS.items():
        idx = [i for i, s in enumerate(shapes) if s.kind == kind]
        if len(idx) == 1:
            out.append((idx[0], text, "corners"))
    areas = [s.area for s in shapes]
    order = np.argsort(areas)
    if areas[order[-1]] >= 1.4 * areas[order[-2]]:
        out.append((int(order[-1]), "Which is the largest shape?", "size"))
    if areas[order[1]] >= 1.4 * areas[order[0]]:
        out.append((int(order[0]), "Which is the smallest shape?", "size"))
    for r, ref in enumerate(shapes):
        for words, axis, sign in RELATIONS.values():
            margin = 4
            diffs = [sign * (s.centre[axis] - ref.centre[axis]) for i, s in enumerate(shapes) if i != r]
            cands = [i for i, s in enumerate(shapes) if i != r
                     and sign * (s.centre[axis] - ref.centre[axis]) > margin]
            if len(cands) == 1 and all(abs(d) > margin for d in diffs):  # no shape level with the reference
                out.append((cands[0], f"Which shape is {words} the {ref.colour} {ref.kind}?", "relation"))
    return out


def make_item(rng: np.random.Generator, size: int, explicit: bool) -> tuple[np.ndarray, list[Shape], int, str, str]:
    """One image and query; retries until an implicit query exists when one is asked for."""
    while True:
        image, shapes = draw_scene(rng, size, int(rng.integers(2, 5)))
        if explicit:
            t = int(rng.integers(len(shapes)))
            return image, shapes, t, f"the {shapes[t].colour} {shapes[t].kind}", "explicit"
        options = implicit_queries(shapes)
        if options:  # a kind first (corners / size / relation equally likely), then one of its queries
            kinds = sorted({k for _, _, k in options})
            chosen = kinds[int(rng.integers(len(kinds)))]
            pool = [o for o in options if o[2] == chosen]
            t, query, kind = pool[int(rng.integers(len(pool)))]
            return image, shapes, t, query, kind


def write_reasoning_benchmark(root: str | Path, *, seed: int = 0, splits: dict[str, int] | None = None,
                              size: int = 128) -> dict[str, dict[str, int]]:
    """Write the benchmark under ``<root>/reason_seg/ReasonSeg/{train,val,test}``; returns counts per query kind."""
    splits = splits or {"train": 3000, "val": 200, "test": 200}
    counts: dict[str, dict[str, int]] = {}
    for split, n in splits.items():
        rng = np.random.default_rng([seed, SPLIT_SEEDS.get(split, 9)])
        d = Path(root) / "reason_seg" / "ReasonSeg" / split
        d.mkdir(parents=True, exist_ok=True)
        c: dict[str, int] = {}
        for i in range(n):
            explicit = i % 2 == 0
            image, shapes, t, query, kind = make_item(rng, size, explicit)
            stem = f"{split}_{i:05d}"
            cv2.imwrite(str(d / f"{stem}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            record = {
                "shapes": [{"label": "target", "points": shapes[t].polygon.round(2).tolist()}],
                "text": [query],
                "is_sentence": not explicit,
                "synthetic": {"kind": kind, "target": t,
                              "shapes": [{"kind": s.kind, "colour": s.colour,
                                          "points": s.polygon.round(2).tolist()} for s in shapes]},
            }
            (d / f"{stem}.json").write_text(json.dumps(record))
            c[kind] = c.get(kind, 0) + 1
        counts[split] = c
    return counts


def _shape_mask(points: list, hw: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(hw, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(points)).astype(np.int32)], 1)
    return mask


def text_blind_predictions(root: str | Path, split: str = "val", *, seed: int = 0) -> tuple[dict[str, list], list]:
    """Predictions that ignore the query (empty mask, whole image, union of all shapes, one random shape, always
    the largest shape) and the ground truths, per image as ``[1, H, W]`` tensors; scored by
    :func:`read.eval.baselines.text_blind_baselines`."""
    import torch

    from read.data.reason_seg import list_split, load_annotation

    rng = np.random.default_rng(seed)
    preds: dict[str, list] = {k: [] for k in ("empty", "whole_image", "union_of_shapes", "random_shape",
                                             "largest_shape")}
    gts = []
    for img_path, json_path in list_split(root, split):
        record = json.loads(Path(json_path).read_text())
        h, w = cv2.imread(str(img_path)).shape[:2]
        gt = load_annotation(json_path, h, w).mask
        masks = [_shape_mask(s["points"], (h, w)) for s in record["synthetic"]["shapes"]]
        areas = [int(m.sum()) for m in masks]
        gts.append(torch.from_numpy(gt[None].astype(np.int64)))
        choice = {
            "empty": np.zeros((h, w), np.uint8),
            "whole_image": np.ones((h, w), np.uint8),
            "union_of_shapes": np.clip(sum(masks), 0, 1).astype(np.uint8),
            "random_shape": masks[int(rng.integers(len(masks)))],
            "largest_shape": masks[int(np.argmax(areas))],
        }
        for k, m in choice.items():
            preds[k].append(torch.from_numpy(m[None]))
    return preds, gts
