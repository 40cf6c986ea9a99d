"""Procedural images of coloured shapes with known masks (tests and the quickstart; no downloads).

``draw_shapes`` is the primitive every synthetic on-disk writer (``read.data.synth``) builds on: it returns the
image and, per shape, its kind, colour, visible mask, bounding box and polygon, so writers can emit ReasonSeg
polygons, COCO/REFER annotations or label maps whose answers are known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "orange": (240, 140, 30),
}
KINDS: tuple[str, ...] = ("rectangle", "circle", "triangle")
CORNERS: dict[str, int] = {"rectangle": 4, "circle": 0, "triangle": 3}


@dataclass
class Shape:
    """One drawn shape. ``mask`` is the *visible* region (later shapes occlude earlier ones)."""

    kind: str
    colour: str
    polygon: np.ndarray  # [V, 2] float (x, y), the outline as drawn (circles: 32-gon)
    mask: np.ndarray  # [H, W] uint8 0/1
    bbox: tuple[int, int, int, int]  # x, y, w, h of the full (unoccluded) shape

    @property
    def name(self) -> str:
        return f"the {self.colour} {self.kind}"

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return x + w / 2, y + h / 2


def _outline(kind: str, x: int, y: int, w: int, h: int) -> np.ndarray:
    if kind == "rectangle":
        return np.array([[x, y], [x + w - 1, y], [x + w - 1, y + h - 1], [x, y + h - 1]], dtype=np.float64)
    if kind == "triangle":
        return np.array([[x + (w - 1) / 2, y], [x + w - 1, y + h - 1], [x, y + h - 1]], dtype=np.float64)
    if kind == "circle":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        cx, cy, r = x + (w - 1) / 2, y + (h - 1) / 2, (min(w, h) - 1) / 2
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    raise ValueError(f"unknown shape kind {kind!r}")


def draw_shapes(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_shapes: int = 2,
    *,
    kinds: tuple[str, ...] = KINDS,
    min_visible: float = 0.5,
    max_tries: int = 50,
) -> tuple[np.ndarray, list[Shape]]:
    """Draw ``num_shapes`` shapes with distinct colours on a noisy grey background.

    Each shape keeps at least ``min_visible`` of its own area visible (placements that would hide more are
    re-drawn), so every shape has a usable mask.

    Returns:
        ``(image [H, W, 3] uint8 RGB, shapes)`` in drawing order.
    """
    if num_shapes > len(COLOURS):
        raise ValueError(f"at most {len(COLOURS)} shapes (one per colour)")
    for _ in range(max_tries):
        image = np.full((height, width, 3), 128, dtype=np.uint8)
        image += rng.integers(0, 24, size=(height, width, 1), dtype=np.uint8)
        colours = [str(c) for c in rng.choice(list(COLOURS), size=num_shapes, replace=False)]
        label = np.full((height, width), -1, dtype=np.int64)
        full_areas, outlines, boxes, chosen = [], [], [], []
        for i, colour in enumerate(colours):
            kind = str(kinds[int(rng.integers(len(kinds)))])
            w = int(rng.integers(max(4, width // 6), max(5, width // 2)))
            h = int(rng.integers(max(4, height // 6), max(5, height // 2)))
            if kind == "circle":
                w = h = min(w, h)
            x = int(rng.integers(0, width - w + 1))
            y = int(rng.integers(0, height - h + 1))
            poly = _outline(kind, x, y, w, h)
            own = np.zeros((height, width), dtype=np.uint8)
            cv2.fillPoly(own, [np.round(poly).astype(np.int32)], 1)
            image[own == 1] = COLOURS[colour]
            label[own == 1] = i
            full_areas.append(int(own.sum()))
            outlines.append(poly)
            boxes.append((x, y, w, h))
            chosen.append(kind)
        masks = [(label == i).astype(np.uint8) for i in range(num_shapes)]
        if all(m.sum() >= min_visible * max(a, 1) for m, a in zip(masks, full_areas, strict=True)):
            shapes = [
                Shape(kind=k, colour=c, polygon=p, mask=m, bbox=b)
                for k, c, p, m, b in zip(chosen, colours, outlines, masks, boxes, strict=True)
            ]
            return image, shapes
    raise RuntimeError(f"could not place {num_shapes} shapes on a {height}x{width} image in {max_tries} tries")


def draw_rectangles(
    rng: np.random.Generator, height: int, width: int, num_shapes: int = 2
) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """Rectangles only: ``(image, masks, names)`` with names like "the red rectangle"."""
    image, shapes = draw_shapes(rng, height, width, num_shapes, kinds=("rectangle",))
    return image, [s.mask for s in shapes], [s.name for s in shapes]
