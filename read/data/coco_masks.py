"""COCO ``segmentation`` fields (polygons, compressed or uncompressed RLE) decoded to 0/1 masks, checked.

One decoder for the readers that need a per-annotation mask with validation: gRefCOCO
(:mod:`read.data.grefer`) and the COCO-format semantic-segmentation sources, PACO-LVIS and PASCAL-Part
(:mod:`read.data.sem_seg_draw`). The refCOCO reader keeps the official REFER sum of parts
(:meth:`read.data.refer.ReferAnnotations.ann_to_mask`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from read.data.base import DataError

__all__ = ["decode_segmentation", "valid_polygons"]


def valid_polygons(seg: list) -> list[list[float]]:
    """The polygons of a COCO polygon list with at least 3 points (an even number of coordinates, >= 6)."""
    return [[float(v) for v in p] for p in seg if isinstance(p, list) and len(p) % 2 == 0 and len(p) >= 6]


def decode_segmentation(seg: Any, h: int, w: int, where: str) -> np.ndarray:
    """A COCO ``segmentation`` as a 0/1 uint8 ``[h, w]`` mask (polygon parts and RLE pieces OR-ed).

    Polygon lists keep only :func:`valid_polygons` (none left: zeros). A dict is an RLE, uncompressed
    (``counts`` a list) or compressed (a string or bytes); its ``size`` must be ``[h, w]``. A list of RLE dicts is
    OR-ed. ``where`` names the file and annotation in errors.

    Raises:
        DataError: an unsupported segmentation or one pycocotools cannot decode.
    """
    try:
        if isinstance(seg, list) and all(isinstance(p, list) for p in seg):
            polys = valid_polygons(seg)
            if not polys:
                return np.zeros((h, w), dtype=np.uint8)
            m = coco_mask.decode(coco_mask.frPyObjects(polys, h, w))
        elif isinstance(seg, dict):
            m = coco_mask.decode(_rle(seg, h, w, where))
        elif isinstance(seg, list) and all(isinstance(p, dict) for p in seg):
            m = coco_mask.decode([_rle(p, h, w, where) for p in seg])
        else:
            raise DataError(f"{where}: segmentation is neither polygons nor RLE ({type(seg).__name__})")
    except DataError:
        raise
    except Exception as e:  # pycocotools raises plain Exceptions/TypeErrors on bad input
        raise DataError(f"{where}: cannot decode segmentation: {type(e).__name__}: {e}") from e
    if m.ndim == 3:
        m = m.max(axis=2)
    if m.shape != (h, w):
        raise DataError(f"{where}: decoded mask {m.shape} != image size {(h, w)}")
    return (m > 0).astype(np.uint8)


def _rle(rle: dict, h: int, w: int, where: str) -> dict:
    if "counts" not in rle or "size" not in rle:
        raise DataError(f"{where}: RLE needs 'counts' and 'size'")
    if [int(v) for v in rle["size"]] != [h, w]:
        raise DataError(f"{where}: RLE size {list(rle['size'])} != image size {[h, w]}")
    counts = rle["counts"]
    if isinstance(counts, list):
        if sum(int(c) for c in counts) != h * w:
            raise DataError(f"{where}: uncompressed RLE counts sum to {sum(counts)}, not {h}x{w}={h * w}")
        return coco_mask.frPyObjects({"size": [h, w], "counts": [int(c) for c in counts]}, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise DataError(f"{where}: RLE counts must be a list, a string or bytes, got {type(counts).__name__}")
    return {"size": [h, w], "counts": counts}
