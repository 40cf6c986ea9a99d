"""File reading with errors that name the file and the problem (never a silent wrong result)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from read.data.base import DataError


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as RGB uint8 ``[H, W, 3]``.

    Raises:
        DataError: missing file, unreadable/corrupt image, or an empty image.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    buf = np.fromfile(str(p), dtype=np.uint8)
    if buf.size == 0:
        raise DataError(f"{p}: image file is empty")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise DataError(f"{p}: corrupt or unsupported image (OpenCV could not decode it)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label map ``[H, W]`` with its stored values (palette indices stay indices, as
    ``np.array(PIL.Image.open(path))`` gives them; OpenCV would expand a palette PNG to colours)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: label file not found")
    try:
        with Image.open(p) as im:
            lab = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"{p}: corrupt label image ({e})") from e
    if lab.ndim != 2:
        raise DataError(f"{p}: expected a single-channel label map, got shape {lab.shape}")
    return lab


def load_json(path: str | os.PathLike, *, fallback_encoding: str | None = None) -> Any:
    """Parse a JSON file; ``fallback_encoding`` (e.g. cp1252, as the official ReasonSeg reader) is tried when
    UTF-8 decoding fails.

    Raises:
        DataError: missing file or malformed JSON (with the parser's position).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if fallback_encoding is None:
            raise DataError(f"{p}: not valid UTF-8 ({e})") from e
        text = raw.decode(fallback_encoding, errors="strict")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
