"""Image reading: valid images decode to exactly the pixels of the plain OpenCV path; images that decode only with
libjpeg/libpng damage (truncated, garbage inserted, bad CRC) are DataErrors naming the file, also through the
dataset loaders."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from read.data.base import DataError
from read.data.io import jpeg_problem, load_image, load_label_png
from read.data.reason_seg import ReasonSegEvalDataset
from read.data.sem_seg import read_label_png


def _picture(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    return cv2.GaussianBlur(img, (5, 5), 2)


def _encode(ext: str, img: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    return buf.tobytes()


JPEG = _encode(".jpg", _picture(), [cv2.IMWRITE_JPEG_QUALITY, 90])
PNG = _encode(".png", _picture())


def _plain_opencv(data: bytes) -> np.ndarray:
    """The reader before the integrity checks: decode with OpenCV, BGR -> RGB."""
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _with_app1_thumbnail(jpeg: bytes) -> bytes:
    """An EXIF-like APP1 segment right after SOI that contains a whole small JPEG (with its own FFD9)."""
    thumb = _encode(".jpg", _picture(8, 8, seed=1))
    body = b"Exif\x00\x00" + thumb
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def _png_from_chunks(chunks: list[tuple[bytes, bytes]], bad_crc: bytes = b"") -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body in chunks:
        crc = zlib.crc32(kind + body) ^ (0xFFFFFFFF if kind == bad_crc else 0)
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
    return out


VALID = {
    "baseline.jpg": JPEG,
    "progressive.jpg": _encode(".jpg", _picture(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "restart.jpg": _encode(".jpg", _picture(), [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]),
    "grey.jpg": _encode(".jpg", _picture()[:, :, 0]),
    "thumbnail.jpg": _with_app1_thumbnail(JPEG),
    "trailer_after_eoi.jpg": JPEG + b"\x00\x01camera trailer \xff\xd8 junk",
    "rgb.png": PNG,
    "grey.png": _encode(".png", _picture()[:, :, 1]),
    "rgba.png": _encode(".png", np.dstack([_picture(), np.full((48, 64), 128, np.uint8)])),
    "image.bmp": _encode(".bmp", _picture()),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_images_load_with_the_same_pixels(tmp_path, name, capfd):
    p = tmp_path / name
    p.write_bytes(VALID[name])
    got = load_image(p)
    expected = _plain_opencv(VALID[name])
    assert got.dtype == np.uint8 and got.shape == expected.shape and got.shape[2] == 3
    np.testing.assert_array_equal(got, expected)
    assert capfd.readouterr().err == ""  # nothing captured and nothing leaked


def _garbage(n: int, seed: int = 5) -> bytes:
    return bytes(np.random.default_rng(seed).integers(0, 255, n).astype(np.uint8)).replace(b"\xff", b"\x12")


SOS = JPEG.index(b"\xff\xda")
MID = (SOS + len(JPEG)) // 2
CORRUPT = {
    "truncated_half.jpg": (JPEG[: len(JPEG) // 2], "truncated"),
    "truncated_no_eoi.jpg": (JPEG[:-2], "truncated"),
    "truncated_header.jpg": (JPEG[:30], "truncated"),
    "garbage_in_scan.jpg": (JPEG[:MID] + _garbage(40) + JPEG[MID:], "Corrupt JPEG data"),
    "garbage_before_eoi.jpg": (JPEG[:-2] + _garbage(25) + JPEG[-2:], "Corrupt JPEG data"),
    "garbage_between_segments.jpg": (JPEG[:20] + b"junk!" + JPEG[20:], "extraneous"),
    "truncated.png": (PNG[: len(PNG) * 2 // 3], "corrupt PNG"),
    "no_iend.png": (PNG[:-12], "corrupt PNG"),
    "bad_idat_crc.png": (_png_from_chunks(_png_chunks(PNG), bad_crc=b"IDAT"), "corrupt PNG"),
    "empty.jpg": (b"", "empty"),
    "not_an_image.jpg": (b"hello, world", "could not decode"),
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_damaged_images_are_errors_naming_the_file(tmp_path, name, capfd):
    data, problem = CORRUPT[name]
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(DataError) as e:
        load_image(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and problem in msg and "\n" not in msg
    assert "Corrupt JPEG data" not in capfd.readouterr().err  # libjpeg's warning is in the error, not stderr


def test_corrupt_png_data_with_valid_crc_is_an_error(tmp_path):
    # Damage inside the compressed stream, CRC recomputed: the chunk walk passes, zlib/libpng fails.
    chunks = _png_chunks(PNG)
    chunks = [(k, b[:10] + bytes(20) + b[30:] if k == b"IDAT" else b) for k, b in chunks]
    p = tmp_path / "bad_zlib.png"
    p.write_bytes(_png_from_chunks(chunks))
    with pytest.raises(DataError, match="bad_zlib.png"):
        load_image(p)


def test_jpeg_structure_walk_by_hand():
    # SOI, a COM segment "hi", SOS with a 2-byte header body, entropy data with a stuffed FF00 and RST0, EOI
    minimal = b"\xff\xd8" + b"\xff\xfe\x00\x04hi" + b"\xff\xda\x00\x04\x01\x02" + b"\x12\xff\x00\x34\xff\xd0\x56"
    assert jpeg_problem(minimal + b"\xff\xd9") is None
    assert jpeg_problem(minimal + b"\xff\xd9trailing") is None
    assert "no EOI" in jpeg_problem(minimal)
    assert "claims 64 bytes" in jpeg_problem(b"\xff\xd8\xff\xfe\x00\x40hi")
    assert "3 extraneous byte(s) at offset 8" in jpeg_problem(b"\xff\xd8\xff\xfe\x00\x04hixyz\xff\xd9")
    assert "no SOI" in jpeg_problem(b"\x89PNG")


def test_label_pngs_are_checked_too(tmp_path):
    lab = np.arange(24, dtype=np.uint8).reshape(4, 6)
    good = _encode(".png", lab)
    (tmp_path / "ok.png").write_bytes(good)
    np.testing.assert_array_equal(load_label_png(tmp_path / "ok.png"), lab)
    np.testing.assert_array_equal(read_label_png(tmp_path / "ok.png"), lab)
    for name, data in {
        "crc.png": _png_from_chunks(_png_chunks(good), bad_crc=b"IDAT"),
        "cut.png": good[:-12],
    }.items():
        (tmp_path / name).write_bytes(data)
        for reader in (load_label_png, read_label_png):
            with pytest.raises(DataError, match=name):
                reader(tmp_path / name)


def test_evaluation_loading_reports_a_damaged_jpeg(tmp_path):
    split = tmp_path / "reason_seg" / "ReasonSeg" / "val"
    split.mkdir(parents=True)
    img = _encode(".jpg", _picture(12, 12))
    mid = (img.index(b"\xff\xda") + len(img)) // 2  # inside the entropy-coded data
    for stem, data in (("a", img), ("b", img[:mid] + _garbage(10) + img[mid:])):
        (split / f"{stem}.jpg").write_bytes(data)
        anno = {"shapes": [{"label": "t", "points": [[1, 1], [5, 1], [5, 5]]}], "text": ["x"], "is_sentence": False}
        (split / f"{stem}.json").write_text(json.dumps(anno))
    ds = ReasonSegEvalDataset(tmp_path, "val")
    assert ds[0].image.shape == (12, 12, 3)
    with pytest.raises(DataError, match=str(Path(split / "b.jpg")) + ".*Corrupt JPEG data"):
        ds[1]
