"""A small LLaVA-Instruct-150k file in the real format, about generated shape images.

``write_llava_instruct(root)`` writes ``<root>/llava_dataset/llava_instruct_150k.json`` and the images
``<root>/coco/train2017/<id>.jpg`` (ids 300000+, disjoint from the other synthetic COCO images). Items have 1-3
(human, gpt) rounds; ``<image>`` sits at the start (``"<image>\\n..."``) or at the end (``"...\\n<image>"``) of
the first human turn, both forms occurring in the real file. Answers are true for the drawn image.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np

from read.data.synthetic import Shape, draw_shapes

__all__ = ["write_llava_instruct", "vqa_scene"]

_OFFSET = 300000


def vqa_scene(seed: int, index: int) -> tuple[np.ndarray, list[Shape], np.random.Generator]:
    """Image ``index``: ``draw_shapes`` from ``default_rng([seed, crc32("llava"), index])`` (the generator
    then continues with the conversation draws)."""
    rng = np.random.default_rng([seed, zlib.crc32(b"llava"), index])
    h, w = int(rng.integers(40, 65)), int(rng.integers(48, 81))
    image, shapes = draw_shapes(rng, h, w, int(rng.integers(2, 4)))
    return image, shapes, rng


def _qa(shapes: list[Shape]) -> list[tuple[str, str]]:
    names = [s.name for s in shapes]
    largest = max(shapes, key=lambda s: s.area)
    leftmost = min(shapes, key=lambda s: s.centre[0])
    listing = ", ".join(names[:-1]) + f" and {names[-1]}"
    return [
        ("How many shapes can you see in this picture?", f"There are {len(shapes)} shapes: {listing}."),
        ("Which shape covers the largest area?", f"The largest visible shape is {largest.name}."),
        (
            "What colour is the shape furthest to the left?",
            f"It is {leftmost.colour}; it is {leftmost.name}.",
        ),
    ]


def write_llava_instruct(root, *, seed: int = 0, num_items: int = 4) -> dict[str, int]:
    """Write the instruction JSON and its images; return ``{"items": n, "images": n, "rounds": total}``."""
    root = Path(root)
    img_dir = root / "coco" / "train2017"
    img_dir.mkdir(parents=True, exist_ok=True)
    items, total_rounds = [], 0
    for i in range(num_items):
        image, shapes, rng = vqa_scene(seed, i)
        img_id = f"{_OFFSET + i:012d}"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError(f"could not encode image {img_id}")
        (img_dir / f"{img_id}.jpg").write_bytes(buf.tobytes())
        qa = _qa(shapes)
        order = rng.permutation(len(qa))[: 1 + i % len(qa)]
        turns = []
        for r, k in enumerate(order):
            q, a = qa[int(k)]
            if r == 0:
                q = f"<image>\n{q}" if i % 2 == 0 else f"{q}\n<image>"
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        total_rounds += len(order)
        items.append({"id": img_id, "image": f"{img_id}.jpg", "conversations": turns})
    out = root / "llava_dataset" / "llava_instruct_150k.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(items, indent=1), encoding="utf-8")
    return {"items": num_items, "images": num_items, "rounds": total_rounds}
