"""The shared renderer on hand-built inputs: every element lands at the pixel computed by hand, in its own colour."""

from __future__ import annotations

import numpy as np
import pytest

from read.utils.render import COLOURS, PAD, fit_scale, heat_colours, render_figure

GREY = 100


def figure(**kw):
    """A 64 x 128 grey image drawn without title, lines or captions: the body starts at y = PAD, x = PAD, scale 4."""
    img = np.full((64, 128, 3), GREY, np.uint8)
    return img, render_figure(img, title="", lines=(), captions=(), **kw)


def at(fig: np.ndarray, x: float, y: float, panel: int = 0, panel_w: int = 512) -> np.ndarray:
    """The pixel of image coordinates (x, y) (pixel centres at +0.5) in panel ``panel`` (scale 4)."""
    px = PAD + panel * (panel_w + PAD) + int((x + 0.5) * 4)
    py = PAD + int((y + 0.5) * 4)
    return fig[py, px]


def test_scale_brings_the_long_side_between_512_and_1024():
    assert fit_scale(100, 200) == pytest.approx(512 / 200)
    assert fit_scale(2000, 1000) == pytest.approx(1024 / 2000)
    assert fit_scale(600, 800) == 1.0


def test_points_have_their_own_colour_and_shape_at_the_right_pixel():
    pts = np.array([[10, 20], [100, 40], [60, 10]], np.float32)
    _, fig = figure(points=pts, labels=np.array([1, 0, -1]))
    assert tuple(at(fig, 10, 20)) == COLOURS["positive"]  # a filled disc: its centre is green
    assert tuple(at(fig, 100, 40)) == COLOURS["negative"]  # a cross: its centre is red
    assert tuple(at(fig, 60, 10)) == (GREY,) * 3  # a hollow diamond: its centre is the image
    # the diamond's top vertex (radius max(5, 256 // 70) = 5 display pixels above the centre) is white
    cx, cy = PAD + int(60.5 * 4), PAD + int(10.5 * 4)
    assert (np.abs(fig[cy - 6:cy - 3, cx - 1:cx + 2].astype(int) - COLOURS["neutral"]).sum(-1) < 30).any()


def test_prediction_is_striped_and_ground_truth_outlined_in_yellow():
    pred = np.zeros((64, 128), bool)
    pred[10:30, 20:60] = True
    gt = np.zeros((64, 128), np.uint8)
    gt[40:60, 80:120] = 1
    gt[0, 0] = 255  # an ignore pixel is not ground truth
    _, fig = figure(pred_masks=[pred], gt_masks=[gt])
    body = fig[PAD:PAD + 256, PAD:PAD + 512]
    inside = body[4 * 12:4 * 28, 4 * 22:4 * 58].reshape(-1, 3)
    colours = {tuple(c) for c in inside}
    assert tuple(COLOURS["pred"][0]) in colours and (255, 255, 255) in colours  # stripes and thin white lines
    assert (GREY,) * 3 not in colours  # all of it is tinted
    yellow = np.all(body == COLOURS["gt"], axis=-1)
    ys, xs = np.nonzero(yellow)
    assert yellow.any()
    assert ys.min() >= 4 * 40 - 3 and ys.max() <= 4 * 60 + 2 and xs.min() >= 4 * 80 - 3 and xs.max() <= 4 * 120 + 2
    far = body[4 * 45:4 * 55, 4 * 85:4 * 115]  # inside the ground truth only its outline is drawn
    assert np.all(far == GREY)


def test_heat_map_blends_inside_the_clip_view_and_greys_outside():
    heat = np.ones((64, 128), np.float32)
    _, fig = figure(heat=heat, view_box=(0, 0, 64, 64))
    inside = at(fig, 30, 30, panel=1)
    hot = heat_colours(np.ones((1, 1), np.float32))[0, 0].astype(np.float32)
    expected = (0.65 * hot + 0.35 * GREY).astype(np.uint8)
    np.testing.assert_allclose(inside.astype(int), expected.astype(int), atol=1)
    outside = at(fig, 100, 30, panel=1)
    assert outside[0] == outside[1] == outside[2]  # grey: not seen by CLIP
    assert fig.shape[1] == PAD + 512 + PAD + 512 + PAD


def test_legend_names_what_is_drawn_and_only_that():
    pts = np.array([[10, 20]], np.float32)
    _, with_all = figure(points=pts, labels=np.array([1]), heat=np.zeros((64, 128), np.float32),
                         view_box=(0, 0, 64, 64))
    _, bare = figure()
    legend = with_all[PAD + 256:]
    assert np.all(legend[..., :] == COLOURS["positive"], axis=-1).any()  # the positive-point swatch
    ramp = heat_colours(np.linspace(0, 1, 60, dtype=np.float32)[None])[0]
    assert np.all(legend == ramp[0], axis=-1).any() and np.all(legend == ramp[-1], axis=-1).any()  # the colour bar
    assert bare.shape[0] == PAD + 256  # nothing drawn, no legend band
    assert not np.all(legend == COLOURS["negative"], axis=-1).any()  # no negative point drawn, none in the legend


def test_shape_errors_are_named():
    img = np.zeros((10, 20, 3), np.uint8)
    with pytest.raises(ValueError, match=r"mask \(10, 10\) does not match the image \(10, 20\)"):
        render_figure(img, pred_masks=[np.zeros((10, 10), bool)])
    with pytest.raises(ValueError, match="RGB uint8"):
        render_figure(np.zeros((10, 20), np.uint8))
    with pytest.raises(ValueError, match="needs a heat-map"):
        render_figure(img, panels="right")
