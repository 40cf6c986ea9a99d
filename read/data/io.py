"""File reading with errors that name the file and the problem (never a silent wrong result).

Images are decoded by OpenCV exactly as before (``cv2.imdecode(..., IMREAD_COLOR)`` then BGR -> RGB, the official
``cv2.imread`` path), so every valid image gives the same pixels. What changed is that an image that decodes
*with damage* is now an error. libjpeg and libpng report damage as warnings on ``stderr`` and OpenCV still
returns an image (``Corrupt JPEG data: 31 extraneous bytes before marker 0xd9``), so :func:`load_image` checks:

* JPEG: the marker structure (:func:`jpeg_problem`: SOI first, every segment complete, no stray bytes between
  segments, an EOI marker after the last scan), then the decode itself with ``stderr`` (file descriptor 2)
  captured, and any libjpeg corruption warning (:data:`JPEG_CORRUPTION_WARNINGS`) is an error (libjpeg prints
  only the first warning of an image, so damage after a benign first warning goes unreported).
  Bytes *after* the EOI marker are accepted: libjpeg stops at EOI, the pixels are complete and no warning is
  given (cameras and editors append such trailers).
* PNG: the chunk structure and every chunk CRC up to ``IEND`` (PIL ``verify``), then the decode (libpng errors
  make OpenCV return ``None``).
* Other formats: the decode must succeed.

Capturing ``stderr`` is process-wide for the few milliseconds of one JPEG decode: calls are serialised by a lock
and whatever else was written to ``stderr`` meanwhile is written back afterwards.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from read.data.base import DataError

JPEG_MAGIC = b"\xff\xd8"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: libjpeg warnings (jerror.h) that mean the compressed data is damaged; other warnings (unknown JFIF revision,
#: unknown Adobe transform) are benign and only written back to stderr.
JPEG_CORRUPTION_WARNINGS: tuple[str, ...] = (
    "Corrupt JPEG data",
    "Premature end of JPEG file",
    "Inconsistent progression sequence",
    "Invalid SOS parameters for sequential JPEG",
)
_WARNING_RE = re.compile("|".join(re.escape(w) for w in JPEG_CORRUPTION_WARNINGS))
_STDERR_LOCK = threading.Lock()
# Markers without a length field: TEM, RST0-7, SOI, EOI.
_STANDALONE = {0x01, *range(0xD0, 0xD8), 0xD8, 0xD9}
_MARKER_RE = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # the last FF of a fill run, then a marker byte


def jpeg_problem(data: bytes) -> str | None:
    """The first structural problem of a JPEG byte string, or ``None`` when the structure is sound.

    Walks the marker segments from SOI: each length-prefixed segment must fit in the file and be followed
    directly by a marker (``0xFF``, fill bytes allowed); after an SOS, the entropy-coded data runs to the next
    marker that is not a stuffed ``FF 00`` or a restart marker. The walk ends at EOI; bytes after it are ignored.
    """
    n = len(data)
    if not data.startswith(JPEG_MAGIC):
        return "not a JPEG (no SOI marker)"
    pos = 2
    while True:
        if pos >= n:
            return "truncated (no EOI marker: the file ends before the image data does)"
        if data[pos] != 0xFF:
            nxt = data.find(b"\xff", pos)
            extra = (n if nxt < 0 else nxt) - pos
            return f"{extra} extraneous byte(s) at offset {pos} where a marker was expected"
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            return "truncated (ends inside a marker)"
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            return None
        if marker in _STANDALONE:
            continue
        if pos + 2 > n:
            return f"truncated (marker 0x{marker:02x} at offset {pos - 2} has no length)"
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > n:
            return f"truncated or corrupt (segment 0x{marker:02x} at offset {pos - 2} claims {length} bytes)"
        pos += length
        if marker == 0xDA:  # entropy-coded data follows the SOS header
            pos = _end_of_entropy_data(data, pos)


def _end_of_entropy_data(data: bytes, pos: int) -> int:
    """Offset of the ``FF`` that introduces the first real marker at or after ``pos`` (an ``FF`` followed by a
    byte that is not a stuffing ``00``, a restart marker ``D0``-``D7`` or another ``FF`` fill byte), or
    ``len(data)`` when there is none."""
    m = _MARKER_RE.search(data, pos)
    return len(data) if m is None else m.start()


def _new_lock() -> None:
    global _STDERR_LOCK
    _STDERR_LOCK = threading.Lock()  # a child forked while another thread held the lock must not inherit it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


def _decode_capturing_stderr(buf: np.ndarray) -> tuple[np.ndarray | None, str]:
    """``cv2.imdecode(buf, IMREAD_COLOR)`` with file descriptor 2 captured; returns (image or None, text).

    Without a usable fd 2 or temporary file the decode runs uncaptured (the structural JPEG check still ran).
    """
    with _STDERR_LOCK:
        try:
            tmp = tempfile.TemporaryFile()
        except OSError:
            return cv2.imdecode(buf, cv2.IMREAD_COLOR), ""
        with tmp:
            try:
                sys.stderr.flush()
                saved = os.dup(2)
            except (OSError, ValueError):
                return cv2.imdecode(buf, cv2.IMREAD_COLOR), ""
            try:
                os.dup2(tmp.fileno(), 2)
                img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
    return img, text


def _png_problem(data: bytes) -> str | None:
    """PIL's chunk walk with CRC checks up to IEND (``Image.verify``); ``None`` when sound."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as e:  # PIL raises SyntaxError, OSError, struct.error, ... for damaged chunks
        return f"{type(e).__name__}: {e}"
    return None


def check_png_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Raise :class:`DataError` naming ``path`` when the PNG's chunk structure or a chunk CRC is damaged."""
    problem = _png_problem(data)
    if problem is not None:
        raise DataError(f"{path}: corrupt PNG ({problem})")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as RGB uint8 ``[H, W, 3]`` (OpenCV decode, as the official ``cv2.imread``).

    Raises:
        DataError: missing or empty file, an undecodable image, or an image that decodes only with damage
            (truncated or corrupt JPEG/PNG data; see the module docstring).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    data = p.read_bytes()
    if not data:
        raise DataError(f"{p}: image file is empty")
    buf = np.frombuffer(data, dtype=np.uint8)
    if data.startswith(JPEG_MAGIC):
        problem = jpeg_problem(data)
        if problem is not None:
            raise DataError(f"{p}: corrupt JPEG: {problem}")
        img, text = _decode_capturing_stderr(buf)
        found = [line for line in text.splitlines() if _WARNING_RE.search(line)]
        if found:
            raise DataError(f"{p}: corrupt JPEG (libjpeg: {'; '.join(line.strip() for line in found)})")
        if text:
            sys.stderr.write(text)  # not ours to judge (another thread, a benign libjpeg warning)
    else:
        if data.startswith(PNG_MAGIC):
            check_png_bytes(data, p)
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise DataError(f"{p}: corrupt or unsupported image (OpenCV could not decode it)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label map as class indices ``[H, W]``, as the official ``np.array(Image.open(path))``: palette PNGs
    (Mapillary) give their palette indices, not colours (OpenCV would expand them); grey PNGs give their values.

    Raises:
        DataError: missing file, damaged PNG (structure, CRC, truncated data), or a multi-channel image.
    """
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: label file not found")
    data = p.read_bytes()
    if data.startswith(PNG_MAGIC):
        check_png_bytes(data, p)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise DataError(f"{p}: corrupt label image ({e})") from e
    if arr.ndim != 2:
        raise DataError(f"{p}: a label map must be a single-channel or palette PNG, got mode {mode} {arr.shape}")
    if mode == "1":
        arr = arr.astype(np.uint8)
    return arr


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
