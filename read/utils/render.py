"""Pictures people can read: the image with its masks and SasP points, and the similarity heat-map, in one PNG.

One renderer serves the demo (``scripts/demo.py``, the web demo, :meth:`read.infer.Prediction.render`) and the
evaluation overlays of every protocol. Pure drawing on numpy arrays (OpenCV for shapes, Pillow for text); nothing
here knows about models.

Layout (RGB, top to bottom)::

    title band   the query (wrapped), then extra lines (the answer, the IoU, ...)
    panels       left: image + predictions (filled, each [SEG] its own colour, outlined in white) + ground truth
                 (yellow outline on black) + SasP points; right: the similarity heat-map over the image
    legend band  a swatch per element drawn, the heat-map colour bar, and what the dashed box means

Colours and shapes never share a meaning: predictions are striped blue/magenta/orange fills with a white edge (the
stripes keep them apart from an object of the same colour; never red or green, so no point colour is reused), ground truth is a yellow outline, positive points are
green discs, negative points red crosses, neutral points white diamonds. Panels are scaled so that their long side
is between 512 and 1024 pixels (small images nearest-neighbour up, large ones down).

The heat-map frame: the similarity map lives on the CLIP view, the centre square that CLIP's shortest-side resize +
centre crop keeps (``view_box``). It is drawn over the whole image as the official dense map does (READ's
``origin_sm``: the crop's map padded with zeros to the image's aspect, then resized), the part outside the CLIP view
is greyed out, and the view's edge is a dashed white box (docs/DEMO.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

__all__ = ["COLOURS", "Panel", "fit_scale", "heat_colours", "render_figure", "render_panels", "write_png"]

# RGB
COLOURS = {
    "pred": [(30, 120, 255), (220, 0, 220), (255, 140, 0), (0, 200, 200)],
    "gt": (255, 215, 0),
    "positive": (0, 210, 60),
    "negative": (235, 20, 20),
    "neutral": (250, 250, 250),
    "ink": (20, 20, 20),
    "paper": (255, 255, 255),
}
MIN_SIDE, MAX_SIDE = 512, 1024
TITLE_SIZE, TEXT_SIZE = 20, 16
PAD = 10


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def fit_scale(h: int, w: int, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> float:
    """Scale factor that brings the long side of an ``h x w`` image into ``[min_side, max_side]`` (1 if it is)."""
    long = max(h, w)
    if long < min_side:
        return min_side / long
    if long > max_side:
        return max_side / long
    return 1.0


def _resize(a: np.ndarray, size_wh: tuple[int, int], nearest: bool) -> np.ndarray:
    if (a.shape[1], a.shape[0]) == size_wh:
        return a
    return cv2.resize(a, size_wh, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def _outline(canvas: np.ndarray, mask: np.ndarray, colour, width: int, rim=None) -> None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if rim is not None:
        cv2.drawContours(canvas, contours, -1, rim, width + 2, cv2.LINE_AA)
    cv2.drawContours(canvas, contours, -1, colour, width, cv2.LINE_AA)


def _hatch_fill(canvas: np.ndarray, mask: np.ndarray, colour, period: int = 9, width: int = 3) -> None:
    """Tint ``mask`` with ``colour`` (45 % image) and draw diagonal stripes over it (solid colour, thin white lines
    between), so a prediction stays distinguishable from an object of its own colour or white. ``canvas``: float32 RGB, changed in place."""
    h, w = mask.shape
    yy, xx = np.mgrid[:h, :w]
    phase = (xx + yy) % period
    c = np.asarray(colour, np.float32)
    canvas[mask] = 0.45 * canvas[mask] + 0.55 * c
    canvas[mask & (phase < width)] = c
    canvas[mask & (phase == width + (period - width) // 2)] = 255.0  # a thin white line between the stripes


def _marker(canvas: np.ndarray, x: float, y: float, kind: str, r: int) -> None:
    """Draw one point marker centred at (x, y) pixels: disc (positive), cross (negative), diamond (neutral)."""
    c = (int(round(x)), int(round(y)))
    ink = COLOURS["ink"]
    if kind == "positive":
        cv2.circle(canvas, c, r + 2, ink, -1, cv2.LINE_AA)
        cv2.circle(canvas, c, r, COLOURS["positive"], -1, cv2.LINE_AA)
    elif kind == "negative":
        for dx, dy in ((1, 1), (1, -1)):
            p0, p1 = (c[0] - dx * r, c[1] - dy * r), (c[0] + dx * r, c[1] + dy * r)
            cv2.line(canvas, p0, p1, ink, max(2, r // 2) + 3, cv2.LINE_AA)
            cv2.line(canvas, p0, p1, COLOURS["negative"], max(2, r // 2), cv2.LINE_AA)
    else:
        pts = np.array([(c[0], c[1] - r), (c[0] + r, c[1]), (c[0], c[1] + r), (c[0] - r, c[1])], np.int32)
        cv2.polylines(canvas, [pts], True, ink, 4, cv2.LINE_AA)
        cv2.polylines(canvas, [pts], True, COLOURS["neutral"], 2, cv2.LINE_AA)


def _dashed_rect(canvas: np.ndarray, box: Sequence[float], colour, dash: int = 10) -> None:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x1, y1 = min(x1, canvas.shape[1] - 1), min(y1, canvas.shape[0] - 1)
    x0, y0 = max(x0, 0), max(y0, 0)
    for a, b, fixed, horizontal in ((x0, x1, y0, True), (x0, x1, y1, True), (y0, y1, x0, False), (y0, y1, x1, False)):
        for s in range(a, b, 2 * dash):
            e = min(s + dash, b)
            p0, p1 = ((s, fixed), (e, fixed)) if horizontal else ((fixed, s), (fixed, e))
            cv2.line(canvas, p0, p1, COLOURS["ink"], 4)
            cv2.line(canvas, p0, p1, COLOURS["paper"], 2)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """``[H, W]`` values in [0, 1] -> RGB uint8 with OpenCV's TURBO colour map (blue low, red high)."""
    v = (np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(v, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)


@dataclass
class Panel:
    """One panel of a figure: a background (the image, or a heat-map over a grey copy of it) and what is drawn on it.

    Attributes:
        caption: the line above the panel.
        pred_masks: bool ``[H, W]`` predictions (filled, striped); gt_masks: ``[H, W]`` ground truths (1 = object),
            outlined.
        points, labels: ``[K, 2]`` (x, y) in image pixels and ``[K]`` labels (1 / 0 / -1), or ``None``.
        heat: ``[H, W]`` in [0, 1] drawn as the background (``None``: the image itself).
        view_box: ``(x0, y0, x1, y1)`` in image pixels of the part the heat-map covers (outside: greyed), or ``None``.
    """

    caption: str = ""
    pred_masks: Sequence[np.ndarray] = ()
    gt_masks: Sequence[np.ndarray] = ()
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    heat: np.ndarray | None = None
    view_box: Sequence[float] | None = None


def _background(img: np.ndarray, size: tuple[int, int], s: float, heat, view_box) -> np.ndarray:  # noqa: ANN001
    base = _resize(img, size, nearest=s > 1)
    if heat is None:
        return base.astype(np.float32)
    h, w = img.shape[:2]
    grey = cv2.cvtColor(cv2.cvtColor(base, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB).astype(np.float32)
    colours = heat_colours(_resize(np.asarray(heat, np.float32), size, nearest=False))
    panel = 0.65 * colours + 0.35 * grey
    if view_box is not None:
        x0, y0, x1, y1 = (v * f for v, f in zip(view_box, (size[0] / w, size[1] / h, size[0] / w, size[1] / h),
                                                strict=True))
        outside = np.ones(size[::-1], bool)
        outside[max(0, int(round(y0))):int(round(y1)), max(0, int(round(x0))):int(round(x1))] = False
        panel[outside] = 0.3 * grey[outside] + 0.7 * 128.0
    return panel


def _panel(img: np.ndarray, s: float, p: Panel) -> np.ndarray:
    h, w = img.shape[:2]
    size = (max(1, round(w * s)), max(1, round(h * s)))
    canvas = _background(img, size, s, p.heat, p.view_box)
    preds = [_resize(np.asarray(m, np.uint8), size, nearest=True).astype(bool) for m in p.pred_masks]
    for k, m in enumerate(preds):
        _hatch_fill(canvas, m, COLOURS["pred"][k % len(COLOURS["pred"])])
    canvas = canvas.clip(0, 255).astype(np.uint8)
    if p.heat is not None and p.view_box is not None:
        _dashed_rect(canvas, [v * size[i % 2] / (w, h)[i % 2] for i, v in enumerate(p.view_box)], COLOURS["paper"])
    for k, m in enumerate(preds):
        _outline(canvas, m, COLOURS["pred"][k % len(COLOURS["pred"])], 1, rim=COLOURS["paper"])
    for g in p.gt_masks:
        _outline(canvas, _resize((np.asarray(g) == 1).astype(np.uint8), size, nearest=True), COLOURS["gt"], 2,
                 rim=COLOURS["ink"])
    if p.points is not None:
        r = max(5, round(min(size) / 70))
        for (x, y), lab in zip(np.asarray(p.points, np.float64).reshape(-1, 2), np.asarray(p.labels).reshape(-1),
                               strict=True):
            kind = {1: "positive", 0: "negative"}.get(int(lab), "neutral")
            _marker(canvas, (x + 0.5) * size[0] / w, (y + 0.5) * size[1] / h, kind, r)
    return canvas


def _wrap(text: str, font, width: int) -> list[str]:
    lines: list[str] = []
    for para in str(text).splitlines() or [""]:
        words, cur = para.split(" "), ""
        for word in words:
            trial = f"{cur} {word}" if cur else word
            if font.getlength(trial) <= width or not cur:
                cur = trial
            else:
                lines.append(cur)
                cur = word
        lines.append(cur)
    return lines


def _legend_items(has_pred: int, has_gt: bool, has_points: set[str], has_heat: bool, has_box: bool) -> list[tuple]:
    items: list[tuple] = []
    for k in range(has_pred):
        items.append(("fill", COLOURS["pred"][k % len(COLOURS["pred"])], "prediction" + (f" {k + 1}" if has_pred > 1
                                                                                       else "")))
    if has_gt:
        items.append(("outline", COLOURS["gt"], "ground truth"))
    for kind in ("positive", "negative", "neutral"):
        if kind in has_points:
            items.append((kind, None, f"{kind} point"))
    if has_heat:
        items.append(("bar", None, "similarity low -> high"))
    if has_box:
        items.append(("dash", None, "CLIP view (grey: not seen)"))
    return items


def _draw_legend(width: int, items: list[tuple]) -> np.ndarray:
    font = _font(TEXT_SIZE)
    rows: list[list[tuple]] = [[]]
    x = PAD
    for item in items:
        sw = 60 if item[0] == "bar" else 22
        need = sw + 8 + int(font.getlength(item[2])) + 24
        if x + need > width and rows[-1]:
            rows.append([])
            x = PAD
        rows[-1].append((x, sw, item))
        x += need
    row_h = 30
    band = np.full((row_h * len(rows) + PAD, width, 3), 255, np.uint8)
    texts = []
    for r, row in enumerate(rows):
        cy = PAD // 2 + r * row_h + row_h // 2
        for x, sw, (kind, colour, label) in row:
            if kind == "fill":
                patch = band[cy - 9:cy + 10, x:x + sw + 1].astype(np.float32)
                _hatch_fill(patch, np.ones(patch.shape[:2], bool), colour)
                band[cy - 9:cy + 10, x:x + sw + 1] = patch.astype(np.uint8)
                cv2.rectangle(band, (x, cy - 9), (x + sw, cy + 9), COLOURS["ink"], 1)
            elif kind == "outline":
                cv2.rectangle(band, (x, cy - 9), (x + sw, cy + 9), COLOURS["ink"], 4)
                cv2.rectangle(band, (x, cy - 9), (x + sw, cy + 9), colour, 2)
            elif kind in ("positive", "negative", "neutral"):
                _marker(band, x + sw / 2, cy, kind, 7)
            elif kind == "bar":
                ramp = heat_colours(np.tile(np.linspace(0, 1, sw, dtype=np.float32), (18, 1)))
                band[cy - 9:cy + 9, x:x + sw] = ramp
            elif kind == "dash":
                band[cy - 12:cy + 12, x:x + sw] = 128
                _dashed_rect(band, (x + 2, cy - 9, x + sw - 2, cy + 9), COLOURS["paper"], dash=4)
            texts.append((x + sw + 8, cy, label))
    return _put_text(band, texts, font)


def _put_text(canvas: np.ndarray, texts: list[tuple[int, int, str]], font) -> np.ndarray:
    """Draw each ``(x, y_centre, text)`` in ink."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    for x, cy, text in texts:
        draw.text((x, cy), text, fill=COLOURS["ink"], font=font, anchor="lm")
    return np.asarray(pil).copy()


def _title_band(width: int, title: str, lines: Sequence[str]) -> np.ndarray:
    tf, lf = _font(TITLE_SIZE), _font(TEXT_SIZE)
    wrapped = [(ln, tf) for ln in _wrap(title, tf, width - 2 * PAD)] if title else []
    for extra in lines:
        wrapped += [(ln, lf) for ln in _wrap(extra, lf, width - 2 * PAD)]
    heights = [TITLE_SIZE + 8 if f is tf else TEXT_SIZE + 6 for _, f in wrapped]
    band = np.full((sum(heights) + 2 * PAD if wrapped else PAD, width, 3), 255, np.uint8)
    from PIL import Image, ImageDraw

    pil = Image.fromarray(band)
    draw = ImageDraw.Draw(pil)
    y = PAD
    for (text, font), hgt in zip(wrapped, heights, strict=True):
        draw.text((PAD, y), text, fill=COLOURS["ink"], font=font)
        y += hgt
    return np.asarray(pil).copy()


def render_panels(image: np.ndarray, panels: Sequence[Panel], *, title: str = "", lines: Sequence[str] = (),
                  captions: bool = True, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> np.ndarray:
    """Title band, the panels side by side (each scaled so its long side is in ``[min_side, max_side]``), a legend
    of everything drawn. ``image``: RGB uint8 ``[H, W, 3]``; every mask and heat-map must be ``[H, W]``.

    Raises:
        ValueError: a wrong image or a mask / heat-map of another size (named).
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"render: expected an RGB uint8 image [H, W, 3], got {img.dtype} {img.shape}")
    if not panels:
        raise ValueError("render: no panel to draw")
    h, w = img.shape[:2]
    for p in panels:
        for m in (*p.pred_masks, *p.gt_masks):
            if np.asarray(m).shape != (h, w):
                raise ValueError(f"render: mask {np.asarray(m).shape} does not match the image {(h, w)}")
        if p.heat is not None and np.asarray(p.heat).shape != (h, w):
            raise ValueError(f"render: heat-map {np.asarray(p.heat).shape} does not match the image {(h, w)}")
    s = fit_scale(h, w, min_side, max_side)
    drawn = [_panel(img, s, p) for p in panels]
    gap = np.full((drawn[0].shape[0], PAD, 3), 255, np.uint8)
    row = [gap]
    for d in drawn:
        row += [d, gap]
    body = np.concatenate(row, axis=1)
    width = body.shape[1]
    if captions and any(p.caption for p in panels):
        band = np.full((TEXT_SIZE + 10, width, 3), 255, np.uint8)
        texts, x = [], PAD
        for d, p in zip(drawn, panels, strict=True):
            texts.append((x, band.shape[0] // 2, p.caption))
            x += d.shape[1] + PAD
        body = np.concatenate([_put_text(band, texts, _font(TEXT_SIZE)), body], axis=0)
    n_pred = max((len(p.pred_masks) for p in panels), default=0)
    kinds = {{1: "positive", 0: "negative"}.get(int(v), "neutral") for p in panels if p.points is not None
             for v in np.asarray(p.labels).reshape(-1)}
    heat = any(p.heat is not None for p in panels)
    box = any(p.heat is not None and p.view_box is not None for p in panels)
    items = _legend_items(n_pred, any(len(p.gt_masks) for p in panels), kinds, heat, box)
    parts = [_title_band(width, title, lines), body]
    if items:
        parts.append(_draw_legend(width, items))
    return np.concatenate(parts, axis=0)


def render_figure(
    image: np.ndarray,
    *,
    pred_masks: Sequence[np.ndarray] = (),
    gt_masks: Sequence[np.ndarray] = (),
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    heat: np.ndarray | None = None,
    view_box: Sequence[float] | None = None,
    title: str = "",
    lines: Sequence[str] = (),
    captions: Sequence[str] | None = None,
    panels: str = "both",
    min_side: int = MIN_SIDE,
    max_side: int = MAX_SIDE,
) -> np.ndarray:
    """The demo / overlay figure: the image with predictions, ground truth and points (left) and the heat-map
    (right), see the module docstring.

    Args:
        image: RGB uint8 ``[H, W, 3]``.
        pred_masks: bool ``[H, W]`` predictions (one per [SEG]), filled.
        gt_masks: ``[H, W]`` ground truths (value 1 = object; 0 and the ignore value 255 are not), outlined.
        points, labels: ``[K, 2]`` (x, y) SasP points in image pixels and their ``[K]`` labels (1 positive, 0
            negative, -1 neutral); ``None`` draws no points (and no point legend).
        heat: ``[H, W]`` similarity in [0, 1] over the image; ``None``: no right panel.
        view_box: ``(x0, y0, x1, y1)`` of the CLIP view in image pixels (outside is greyed on the heat panel).
        title: the query (wrapped); lines: further text lines under it.
        captions: one line above each panel (left, right); ``None``: say what they show, ``()``: none.
        panels: ``both``, ``left`` (no heat-map) or ``right`` (the heat-map alone, which then must be given).

    Returns:
        RGB uint8 ``[H', W', 3]``; each panel's long side is in ``[min_side, max_side]``.
    """
    if panels not in ("both", "left", "right"):
        raise ValueError(f"render_figure: panels must be 'both', 'left' or 'right', got {panels!r}")
    if panels == "right" and heat is None:
        raise ValueError("render_figure: panels='right' needs a heat-map")
    if captions is None:
        captions = ("prediction" + (" and SasP points" if points is not None else "")
                    + (" (outline: ground truth)" if len(gt_masks) else ""),
                    "[SEG] similarity to the image tokens")
    captions = list(captions) + ["", ""]
    left = Panel(captions[0], pred_masks, gt_masks, points, labels)
    right = Panel(captions[1], heat=heat, view_box=view_box) if heat is not None else None
    chosen = {"both": [left] + ([right] if right else []), "left": [left], "right": [right]}[panels]
    return render_panels(image, chosen, title=title, lines=lines, min_side=min_side, max_side=max_side)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array as a PNG (creating the folder); returns the path.

    Raises:
        OSError: the file could not be written (named).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
        raise OSError(f"{out}: could not write the PNG")
    return out
