"""The curve plots: values land where the axis says (data range or a fixed range), reference lines are dashed."""

from __future__ import annotations

import cv2

from read.utils.plot import plot_curves

# default frame: 900 x 520 px, plot area from y = 40 (top) to y = 520 - 50 = 470 (bottom), x from 70 to 730
SERIES = {"run": [(0.0, 0.2), (0.5, 0.25), (1.0, 0.3)]}


def inked(img, x: int, y: int) -> bool:
    return bool((img[y - 2:y + 3, x - 2:x + 3] != 255).any())


def test_without_a_fixed_range_the_data_spans_the_axis(tmp_path):
    img = cv2.imread(str(plot_curves(SERIES, tmp_path / "c.png")))
    # 0.25 is half way between the lowest (bottom edge) and highest (top edge) value: y (470 + 40) / 2 = 255, x 400
    assert inked(img, 400, 255) and not inked(img, 400, 362)


def test_a_fixed_range_and_reference_lines(tmp_path):
    img = cv2.imread(str(plot_curves(SERIES, tmp_path / "c.png", ylim=(0.0, 1.0), hlines={"baseline": 0.5})))
    assert inked(img, 400, 470 - round(0.25 * 430)) and not inked(img, 400, 300)  # 0.25 of the way up: y 362
    row = 470 - round(0.5 * 430)  # the reference at 0.5: y 255, grey dashes (6 px drawn of every 12)
    grey = (img[row, 70:730] == 150).all(axis=1)
    assert 0.4 < grey.mean() < 0.7
    assert not (img[row + 3, 100:700] == 150).all(axis=1).any()
