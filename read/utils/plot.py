"""A small line plot drawn with OpenCV (no plotting dependency): loss curves at the end of a run."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def plot_curves(series: dict[str, list[tuple[float, float]]], path: str | Path, *, title: str = "",
                xlabel: str = "step", size: tuple[int, int] = (900, 520), ylim: tuple[float, float] | None = None,
                hlines: dict[str, float] | None = None) -> Path:
    """Draw each named series of (x, y) points as a polyline with a legend; write a PNG and return its path.
    ``ylim``: a fixed y range (default: the data's); ``hlines``: named reference values drawn as dashed grey
    lines, labelled at their right end."""
    w, h = size
    left, right, top, bottom = 70, 170, 40, 50
    img = np.full((h, w, 3), 255, np.uint8)
    pts = [(x, y) for s in series.values() for x, y in s if math.isfinite(y)]
    if not pts:
        cv2.putText(img, "no data", (w // 2 - 40, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 1)
    else:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = ylim if ylim is not None else (min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1)

        def to_px(x: float, y: float) -> tuple[int, int]:
            px = left + (x - x0) / (x1 - x0) * (w - left - right)
            py = h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)
            return int(round(px)), int(round(py))

        cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
        for i in range(5):
            yv = y0 + (y1 - y0) * i / 4
            _, py = to_px(x0, yv)
            cv2.putText(img, f"{yv:.3g}", (5, py + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
            xv = x0 + (x1 - x0) * i / 4
            px, _ = to_px(xv, y0)
            cv2.putText(img, f"{xv:.4g}", (px - 10, h - bottom + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        for name, value in (hlines or {}).items():
            _, py = to_px(x0, value)
            for xa in range(left, w - right, 12):  # dashed
                cv2.line(img, (xa, py), (min(xa + 6, w - right), py), (150, 150, 150), 1)
            cv2.putText(img, name, (w - right + 5, py + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (110, 110, 110), 1)
        for k, (name, s) in enumerate(series.items()):
            colour = PALETTE[k % len(PALETTE)][::-1]
            poly = np.array([to_px(x, y) for x, y in s if math.isfinite(y)], np.int32)
            if len(poly) > 1:
                cv2.polylines(img, [poly], False, colour, 2, cv2.LINE_AA)
            elif len(poly) == 1:
                cv2.circle(img, tuple(int(v) for v in poly[0]), 3, colour, -1)
            ly = top + 20 + 22 * k
            cv2.line(img, (w - right + 10, ly - 4), (w - right + 35, ly - 4), colour, 2)
            cv2.putText(img, name, (w - right + 40, ly), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(img, title, (left, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
    cv2.putText(img, xlabel, (w // 2 - 20, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), img):
        raise OSError(f"{out}: could not write the plot")
    return out
