"""Semantic-segmentation class lists and label maps (readers shared by the five sources of :mod:`read.data.sem_seg`).

Class lists:

* ADE20K: a JSON list of names read from the data root (``ade20k/ade20k_classes.json``), index = remapped id.
* COCO-Stuff: READ's own list ships with the package (``read/data/cocostuff_classes.json``, the data of the
  official ``dataloaders/cocostuff_classes.txt``: 182 names, index = label value). It differs from COCO-Stuff's
  own ``labels.txt`` (e.g. index 156 is ``sky`` in READ, ``sky-other`` in COCO-Stuff, which changes what the
  ``"-"`` rule ignores), so the rule is (:func:`resolve_cocostuff_classes`): the **official list is used** by
  default; a class file given explicitly or found at ``<root>/cocostuff/cocostuff_classes.txt`` is read and, when
  it differs, a warning names the file and the first differing entries and says which list is used;
  ``class_list="file"`` uses the file instead (it must then exist).
* Mapillary: ``labels[].readable`` of ``config_v2.0.json``, lower-cased.
* PACO-LVIS / PASCAL-Part: COCO categories; ``obj:part`` names become ``(obj, part)`` pairs, rendered at draw time.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

import numpy as np

from read.data.base import DataError
from read.data.io import load_json, load_label_png
from read.utils.logging import get_logger

IGNORE = 255
#: A class is either a plain name or an (object, part) pair, rendered at draw time (:func:`render_class_name`).
ClassName = str | tuple[str, str]
CocoStuffClassList = Literal["official", "file"]
COCOSTUFF_CLASSES_FILE = "cocostuff/cocostuff_classes.txt"
_OFFICIAL_COCOSTUFF = Path(__file__).with_name("cocostuff_classes.json")


def ade20k_remap(label: np.ndarray) -> np.ndarray:
    """The official ADE20K remap on a uint8 label map ``[H, W]``: 0 -> 255, then -1 (so 255 -> 254), then
    254 -> 255.

    Result: classes 0..149, ignore 255. Computed in int64 and returned as uint8 (identical to the uint8
    arithmetic for every input value 0..255).
    """
    lab = np.asarray(label).astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise ValueError(f"ADE20K labels must be 0..255, got range [{lab.min()}, {lab.max()}]")
    lab[lab == 0] = 255
    lab -= 1
    lab[lab == 254] = 255
    return lab.astype(np.uint8)


read_label_png = load_label_png
"""Label PNG -> class indices (``read.data.io.load_label_png``)."""


def check_label_range(label: np.ndarray, num_classes: int, path: str | os.PathLike, what: str) -> None:
    """Raise :class:`DataError` when ``label`` ``[H, W]`` holds a value that is neither a class id nor 255."""
    bad = (label != IGNORE) & ((label < 0) | (label >= num_classes))
    if bad.any():
        vals = sorted({int(v) for v in np.unique(label[bad])})[:5]
        raise DataError(f"{path}: {what} label values {vals} outside the {num_classes} classes (and 255)")


def load_ade20k_classes(path: str | os.PathLike) -> list[str]:
    """ADE20K class names from a JSON list (index = remapped class id; the official file has 150 names)."""
    p = Path(path)
    data = load_json(p)
    if not isinstance(data, list) or not data or not all(isinstance(x, str) for x in data):
        raise DataError(f"{p}: expected a non-empty JSON list of class-name strings")
    return list(data)


def load_cocostuff_classes(path: str | os.PathLike) -> list[str]:
    """COCO-Stuff class names from a class file: every line after the first is ``"id: name"``; the name is the
    text after the first ``": "`` and the class index is the line's position (0-based, = the label PNG value)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: COCO-Stuff class list not found")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not valid UTF-8 ({e})") from e
    names: list[str] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        if ": " not in line:
            raise DataError(f"{p}: line {n} is not 'id: name': {line!r}")
        names.append(line.split(": ", 1)[1].strip())
    if not names:
        raise DataError(f"{p}: no classes after the first line")
    return names


@functools.lru_cache(maxsize=1)
def _official_cocostuff() -> tuple[str, ...]:
    data = load_json(_OFFICIAL_COCOSTUFF)
    names = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise DataError(f"{_OFFICIAL_COCOSTUFF}: expected {{'classes': [names]}} (package data damaged)")
    return tuple(names)


def official_cocostuff_classes() -> list[str]:
    """READ's COCO-Stuff class list shipped with the package: 182 names, index = label value (module docstring)."""
    return list(_official_cocostuff())


def class_list_differences(found: list[str], reference: list[str], limit: int = 5) -> tuple[int, list[str]]:
    """(number of differing positions, the first ``limit`` of them as ``"i: 'found' vs 'reference'"``).

    A length difference counts every missing or extra position (shown as ``<none>``).
    """
    def show(names: list[str], i: int) -> str:
        return repr(names[i]) if i < len(names) else "<none>"

    diffs = [
        f"{i}: {show(found, i)} vs {show(reference, i)}"
        for i in range(max(len(found), len(reference)))
        if i >= len(found) or i >= len(reference) or found[i] != reference[i]
    ]
    return len(diffs), diffs[:limit]


def resolve_cocostuff_classes(
    root: str | os.PathLike,
    classes_file: str | os.PathLike | None = None,
    class_list: CocoStuffClassList = "official",
) -> list[str]:
    """The COCO-Stuff class names to use (module docstring for the rule).

    Args:
        root: data root; ``<root>/cocostuff/cocostuff_classes.txt`` is compared when present.
        classes_file: an explicit class file (compared, or used with ``class_list="file"``; must exist).
        class_list: ``"official"`` (the packaged list wins, a differing file is reported) or ``"file"``.

    Raises:
        DataError: an explicit ``classes_file`` that is missing, a malformed class file, or
            ``class_list="file"`` without a file.
    """
    if class_list not in ("official", "file"):
        raise ValueError(f"class_list must be 'official' or 'file', got {class_list!r}")
    official = official_cocostuff_classes()
    path = Path(classes_file) if classes_file is not None else Path(root) / COCOSTUFF_CLASSES_FILE
    if classes_file is None and not path.is_file():
        if class_list == "file":
            raise DataError(f"{path}: COCO-Stuff class list not found (class_list='file' needs it)")
        return official
    found = load_cocostuff_classes(path)
    n_diff, first = class_list_differences(found, official)
    if n_diff:
        using = (
            "using this file (class_list='file')"
            if class_list == "file"
            else "using the official list shipped with the package (class_list='file' uses this file instead)"
        )
        get_logger().warning(
            "%s: COCO-Stuff class list differs from READ's official dataloaders/cocostuff_classes.txt at %d of "
            "%d positions (first: %s; file vs official); %s",
            path, n_diff, max(len(found), len(official)), ", ".join(first), using,
        )
    return found if class_list == "file" else official


def load_mapillary_classes(path: str | os.PathLike) -> list[str]:
    """Mapillary class names: ``labels[].readable`` lower-cased (index = label value)."""
    p = Path(path)
    data = load_json(p)
    try:
        labels = data["labels"]
        names = [str(x["readable"]).lower() for x in labels]
    except (KeyError, TypeError) as e:
        raise DataError(
            f"{p}: expected {{'labels': [{{'readable': ...}}, ...]}} ({type(e).__name__}: {e})"
        ) from e
    if not names:
        raise DataError(f"{p}: empty 'labels' list")
    return names


def paco_category_name(name: str) -> ClassName:
    """PACO-LVIS category name: ``obj:part`` -> ``(obj, part)``; each piece keeps underscores and loses a
    ``_(...)`` suffix (``"car_(automobile):wheel"`` -> ``("car", "wheel")``)."""
    pieces = [x.split("_(")[0] for x in name.strip().split(":")]
    if len(pieces) == 1:
        return pieces[0]
    if len(pieces) != 2:
        raise ValueError(f"PACO category {name!r}: more than one ':'")
    return pieces[0], pieces[1]


def pascal_part_category_name(name: str) -> ClassName:
    """PASCAL-Part category name: ``obj:part`` -> ``(obj, part)`` (no other processing)."""
    pieces = name.strip().split(":")
    if len(pieces) == 1:
        return pieces[0]
    if len(pieces) != 2:
        raise ValueError(f"PASCAL-Part category {name!r}: more than one ':'")
    return pieces[0], pieces[1]


def render_class_name(name: ClassName, rng: np.random.Generator) -> str:
    """A plain name as is; ``(obj, part)`` as ``"obj part"`` or ``"the part of the obj"`` (probability 0.5)."""
    if isinstance(name, str):
        return name
    obj, part = name
    return f"{obj} {part}" if rng.random() < 0.5 else f"the {part} of the {obj}"


def dump_class_list(names: list[str]) -> str:
    """``names`` as a COCO-Stuff class file (``"0: unlabeled"`` then ``"id: name"``, ids from 1)."""
    return "\n".join(["0: unlabeled"] + [f"{k + 1}: {n}" for k, n in enumerate(names)]) + "\n"
