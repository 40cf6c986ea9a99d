"""ReasonSeg annotation reader: one labelme-style JSON -> mask, queries, false-premise QAs.

Format (LISA's release, SESAME's FP-Aug for training): ``shapes`` ``[{"label": str, "points": [[x, y], ...]}]``,
``text`` (queries, all about the same target), ``is_sentence`` (bool), optional ``false_premise_QA``
(``[[query, is_sentence, answer], ...]``).

Mask rasterisation (spec 4.2, official ``get_mask_from_json``, ``dataloaders/data_processing.py:9-60``): shapes
whose label is ``flag`` (compared case-insensitively, whole label) are skipped; every other shape is drawn with
a closed 1-pixel ``cv2.polylines`` outline plus ``cv2.fillPoly``, value 255 when the label contains ``ignore``
(case-insensitive), else 1, in decreasing order of area, so smaller shapes overwrite larger ones. The area is the
pixel count of the shape drawn alone (``:33-36``). Vertices become int32 by truncation toward zero, as
``np.array(points, dtype=np.int32)`` does.

Shapes with fewer than 3 points: OpenCV draws a 2-point shape as the line between its points and a 1-point
shape as that one pixel, both for the area and for the mask, so the official code keeps them as thin targets
(usually drawn last: their area is tiny). They are drawn the same way here, with a warning naming the file and
the shape's label (once per file and shape in a process). A shape with no point at all makes OpenCV raise in
the official code; here it is a :class:`DataError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from read.data.base import DataError
from read.data.io import load_json
from read.utils.logging import get_logger

IGNORE_VALUE = 255
TARGET_VALUE = 1
_MAX_COORD = 1 << 30  # keeps int32 conversion (and OpenCV's fixed-point maths) well inside range
_WARNED: set[tuple[str, int]] = set()  # (file, shape index) already reported as a line / pixel shape


@dataclass
class ReasonSegAnnotation:
    """One parsed ReasonSeg JSON.

    Attributes:
        mask: ``[H, W]`` uint8 with 0 (background), 1 (target) and 255 (ignore).
        texts: the queries (``text``), in file order.
        is_sentence: the JSON's ``is_sentence`` flag (one per file).
        false_premise_qa: ``[(query, is_sentence, answer), ...]`` from ``false_premise_QA``, or ``None`` when
            the key is absent or null.
        path: the JSON file.
    """

    mask: np.ndarray
    texts: list[str]
    is_sentence: bool
    false_premise_qa: list[tuple[str, bool, str]] | None
    path: str = ""


def read_json(path: Path) -> dict:
    """The JSON object of ``path``: UTF-8 first, cp1252 on a decode failure (official reader).

    Raises:
        DataError: text that is neither, malformed JSON, or a top-level value that is not an object.
    """
    # ``load_json`` lets a cp1252 decode failure escape as UnicodeDecodeError (bytes 0x81, 0x8D, 0x8F, 0x90,
    # 0x9D are undefined there): name the file.
    try:
        anno = load_json(path, fallback_encoding="cp1252")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: neither UTF-8 nor cp1252 text ({e})") from e
    if not isinstance(anno, dict):
        raise DataError(f"{path}: top-level JSON value must be an object, got {type(anno).__name__}")
    return anno


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _parse_points(path: Path, k: int, label: str, points) -> np.ndarray:
    """``points`` of ``shapes[k]`` as int32 ``[V, 2]`` (V >= 1), truncated toward zero."""
    where = f"{path}: shapes[{k}] (label {label!r})"
    if not isinstance(points, list):
        raise DataError(f"{where}: 'points' must be a list of [x, y] pairs, got {type(points).__name__}")
    if not points:
        raise DataError(f"{where}: shape has no point (the official reader crashes in OpenCV on it)")
    for j, p in enumerate(points):
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and _is_number(p[0]) and _is_number(p[1])):
            raise DataError(f"{where}: point {j} is not a numeric [x, y] pair: {p!r}")
        if not (math.isfinite(p[0]) and math.isfinite(p[1])) or max(abs(p[0]), abs(p[1])) > _MAX_COORD:
            raise DataError(f"{where}: point {j} has a non-finite or out-of-range coordinate: {p!r}")
    if len(points) < 3 and (str(path), k) not in _WARNED:  # once per file and shape (training re-reads files)
        _WARNED.add((str(path), k))
        get_logger().warning(
            "%s: shape has %d point(s), drawn as a %s like the official reader (not a filled polygon)",
            where, len(points), "line" if len(points) == 2 else "single pixel",
        )
    # Truncation toward zero, as np.array(points, dtype=np.int32) in the official reader.
    return np.asarray(points, dtype=np.float64).astype(np.int32)


def _draw(canvas: np.ndarray, poly: np.ndarray, value: int) -> None:
    """Official drawing of one shape (int32 ``[V, 2]``) on ``canvas`` ``[H, W]``: closed outline, then fill."""
    pts = [poly.reshape(-1, 1, 2)]
    cv2.polylines(canvas, pts, True, value, 1)
    cv2.fillPoly(canvas, pts, value)


def rasterise_shapes(shapes: list[tuple[str, np.ndarray]], height: int, width: int) -> np.ndarray:
    """Official mask rasterisation for already-parsed ``(label, int32 [V, 2] polygon)`` pairs -> uint8 ``[H, W]``.

    ``flag`` shapes must already be removed. Area = the number of pixels the shape covers when drawn alone
    (outline + fill) on a blank ``[H, W]`` canvas, i.e. clipped to the image and counted in whole pixels, as
    the official code measures it (``tmp_mask.sum()``), *not* the geometric (shoelace) area; a 2-point line
    counts its pixels like any other shape. Shapes are drawn in decreasing area; among equal areas the one listed
    *first* is drawn *last* (official ``np.argsort(area)[::-1]``, made stable here so ties do not depend on the
    sort algorithm).
    """
    areas = []
    for _, poly in shapes:
        alone = np.zeros((height, width), dtype=np.uint8)
        _draw(alone, poly, 1)
        areas.append(int(alone.sum()))
    order = np.argsort(np.asarray(areas, dtype=np.int64), kind="stable")[::-1]
    mask = np.zeros((height, width), dtype=np.uint8)
    for k in order:
        label, poly = shapes[int(k)]
        _draw(mask, poly, IGNORE_VALUE if "ignore" in label.lower() else TARGET_VALUE)
    return mask


def _parse_fp(path: Path, fp) -> list[tuple[str, bool, str]] | None:
    if fp is None:
        return None
    if not isinstance(fp, list):
        raise DataError(
            f"{path}: 'false_premise_QA' must be a list of [query, is_sentence, answer], got {type(fp).__name__}"
        )
    out = []
    for j, item in enumerate(fp):
        ok = (
            isinstance(item, (list, tuple))
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], bool)
            and isinstance(item[2], str)
        )
        if not ok:
            raise DataError(
                f"{path}: false_premise_QA[{j}] must be [str query, bool is_sentence, str answer], got {item!r}"
            )
        out.append((item[0], item[1], item[2]))
    return out


def read_is_sentence(json_path: Path) -> bool:
    """Only the ``is_sentence`` flag of a ReasonSeg JSON (evaluation subsets).

    Raises:
        DataError: unreadable JSON, or a missing or non-boolean ``is_sentence``.
    """
    anno = read_json(json_path)
    if "is_sentence" not in anno:
        raise DataError(f"{json_path}: missing key 'is_sentence'")
    v = anno["is_sentence"]
    if not isinstance(v, bool):
        raise DataError(f"{json_path}: 'is_sentence' must be true/false, got {v!r}")
    return v


def load_annotation(json_path, height: int, width: int) -> ReasonSegAnnotation:
    """Parse one ReasonSeg JSON and rasterise its mask at ``(height, width)`` (the image size).

    Raises:
        DataError: naming the file and the problem, for malformed JSON or text that is neither UTF-8 nor
            cp1252, missing/ill-typed ``shapes``, ``text`` or ``is_sentence``, an empty ``text`` list or an
            empty query, a shape without points or with non-numeric points, a malformed ``false_premise_QA``,
            or a mask without any target pixel (including ignore-only annotations).
    """
    path = Path(json_path)
    if int(height) <= 0 or int(width) <= 0:
        raise DataError(f"{path}: invalid image size {(height, width)}")
    anno = read_json(path)
    for key in ("shapes", "text", "is_sentence"):
        if key not in anno:
            raise DataError(f"{path}: missing key {key!r}")

    texts = anno["text"]
    if not isinstance(texts, list):
        raise DataError(f"{path}: 'text' must be a list of queries, got {type(texts).__name__}")
    if not texts:
        raise DataError(f"{path}: 'text' is an empty list (no query)")
    for j, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise DataError(f"{path}: text[{j}] must be a non-empty string, got {t!r}")

    is_sentence = anno["is_sentence"]
    if not isinstance(is_sentence, bool):
        raise DataError(f"{path}: 'is_sentence' must be true/false, got {is_sentence!r}")

    raw_shapes = anno["shapes"]
    if not isinstance(raw_shapes, list):
        raise DataError(f"{path}: 'shapes' must be a list, got {type(raw_shapes).__name__}")
    shapes: list[tuple[str, np.ndarray]] = []
    for k, s in enumerate(raw_shapes):
        if not isinstance(s, dict) or "label" not in s or "points" not in s:
            raise DataError(f"{path}: shapes[{k}] must be an object with 'label' and 'points'")
        label = s["label"]
        if not isinstance(label, str):
            raise DataError(f"{path}: shapes[{k}] label must be a string, got {label!r}")
        if label.lower() == "flag":  # deprecated, meaningless annotations (official: skipped, never drawn)
            continue
        shapes.append((label, _parse_points(path, k, label, s["points"])))

    mask = rasterise_shapes(shapes, int(height), int(width))
    if not (mask == TARGET_VALUE).any():
        what = "only ignore regions" if shapes else "no drawable shape"
        raise DataError(f"{path}: empty mask, no foreground (target) pixel ({what})")

    return ReasonSegAnnotation(
        mask=mask,
        texts=list(texts),
        is_sentence=is_sentence,
        false_premise_qa=_parse_fp(path, anno.get("false_premise_QA")),
        path=str(path),
    )
