"""Procedural images of coloured shapes with known masks (tests and the quickstart; no downloads).

This is the seed of the synthetic datasets; the on-disk generators (ReasonSeg JSON, REFER pickles) build on it.
"""

from __future__ import annotations

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
}


def draw_rectangles(
    rng: np.random.Generator, height: int, width: int, num_shapes: int = 2
) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """An RGB uint8 ``[H, W, 3]`` image with ``num_shapes`` non-overlapping-coloured rectangles.

    Returns:
        ``(image, masks, names)``: one uint8 ``[H, W]`` 0/1 mask and one name ("the red rectangle") per shape.
        Later shapes are drawn over earlier ones; masks are visible regions.
    """
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    image += rng.integers(0, 20, size=(height, width, 1), dtype=np.uint8)
    colours = rng.choice(list(COLOURS), size=num_shapes, replace=False)
    label = np.zeros((height, width), dtype=np.int64) - 1
    for i, c in enumerate(colours):
        h = int(rng.integers(height // 5, height // 2))
        w = int(rng.integers(width // 5, width // 2))
        y = int(rng.integers(0, height - h))
        x = int(rng.integers(0, width - w))
        image[y : y + h, x : x + w] = COLOURS[c]
        label[y : y + h, x : x + w] = i
    masks = [(label == i).astype(np.uint8) for i in range(num_shapes)]
    return image, masks, [f"the {c} rectangle" for c in colours]
