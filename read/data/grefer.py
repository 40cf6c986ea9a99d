"""Our own reader for gRefCOCO (GRES, Liu et al. 2023), the generalized referring-expression dataset GSVA trains
and evaluates on: an expression may refer to several objects (multi-target) or to none (no-target).

On disk (the release layout, as GSVA's ``data/grefer.py`` and ``data/dataset.py`` open it), ``root`` being the
dataset root (``--dataset_dir``)::

    <root>/refer_seg/grefcoco/grefs(unc).json     # JSON list of refs (or grefs(unc).p, see below)
    <root>/refer_seg/grefcoco/instances.json     # COCO: images, annotations (polygons or RLE), categories
    <root>/refer_seg/images/mscoco/images/train2014/<file_name>   # shared with refCOCO/+/g

A ref carries ``ref_id``, ``image_id``, ``split`` (``train``/``val``/``testA``/``testB``, the UNC partition),
``ann_id`` (a list of COCO annotation ids; ``[-1]`` = no target), ``category_id`` (a list), ``sentences``
(``[{"sent", "sent_id", "raw", "tokens"}, ...]``) and possibly ``sent_ids``, ``no_target``, ``file_name``. Every
sentence of a ref shares the ref's targets.

Rules (GSVA's ``data/dataset.py:414-446`` and ReLA's ``grefcoco.py``):

* an expression's mask is the **union** of its targets' masks (0/1); ``[-1]`` gives an all-zero mask;
* polygons with fewer than 3 points (fewer than 6 coordinates, or an odd count) are skipped; an annotation with
  no valid polygon adds nothing to the union (GSVA's evaluation ``continue``s past it). GSVA's *training* code
  does not filter; we filter everywhere so training and evaluation see the same masks;
* RLE segmentations (COCO ``iscrowd`` annotations: uncompressed ``counts`` lists; compressed strings are also
  accepted) are decoded as they are. Crowd annotations count as targets, as in GSVA (ReLA skips them);
* the split is matched exactly (G_REFER's ``getRefIds``), an unknown split is an error.

``grefs(unc).json`` is read when present; otherwise ``grefs(unc).p`` is read with the project's safe unpickler
(:func:`read.data.safe_pickle.load_pickle`, which refuses any global), else the file is missing. GSVA's G_REFER
prefers the pickle; the release ships the JSON.

Every ref is checked when the file is loaded (cheap dictionary look-ups only): bad JSON, a ref without its keys,
an ``ann_id`` that is not a list of ints, ``-1`` mixed with real ids, an annotation id missing from
``instances.json`` or belonging to another image, an image id missing from ``instances.json``, a split outside
the four, a duplicate ``ref_id``: each a :class:`~read.data.base.DataError` naming the file.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from read.data.base import DataError
from read.data.coco_masks import decode_segmentation
from read.data.io import load_json
from read.data.refer import COCO_IMAGE_DIR, CocoImages
from read.data.safe_pickle import load_pickle

__all__ = [
    "GREFCOCO",
    "NO_TARGET",
    "SPLITS",
    "GRefCOCO",
    "refs_file",
    "required_paths",
]

GREFCOCO = "grefcoco"
SPLITS: tuple[str, ...] = ("train", "val", "testA", "testB")
NO_TARGET = -1
DATA_DIR = ("refer_seg", GREFCOCO)


def refs_file(root: str | os.PathLike, split_by: str = "unc") -> Path:
    """``grefs(<split_by>).json`` if it exists, else ``grefs(<split_by>).p`` if that exists, else the JSON path
    (for the message). Only stats files."""
    d = Path(root).joinpath(*DATA_DIR)
    js, pk = d / f"grefs({split_by}).json", d / f"grefs({split_by}).p"
    if js.is_file() or not pk.is_file():
        return js
    return pk


def required_paths(root: str | os.PathLike, split_by: str = "unc") -> list[Path]:
    """What :class:`GRefCOCO` opens first: the refs file (:func:`refs_file`), ``instances.json`` and the image
    folder (no reading, no listing)."""
    root = Path(root)
    return [refs_file(root, split_by), root.joinpath(*DATA_DIR) / "instances.json", root.joinpath(*COCO_IMAGE_DIR)]


def _int_list(value: Any) -> list[int] | None:
    """``value`` as a list of ints (an int alone becomes ``[int]``); ``None`` when it is not that."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            return None
        out.append(int(v))
    return out


class GRefCOCO(CocoImages):
    """gRefCOCO: refs, sentences, COCO images and annotations, expression masks (module docstring).

    Args:
        root: dataset root (the directory holding ``refer_seg/``).
        split_by: the ``grefs(<split_by>)`` variant (the release has ``unc``).

    Raises:
        DataError: missing or malformed files and records (the message names the file).
    """

    dataset = GREFCOCO

    def __init__(self, root: str | os.PathLike, split_by: str = "unc") -> None:
        self.root = Path(root)
        self.split_by = split_by
        self.data_dir = self.root.joinpath(*DATA_DIR)
        self.refs_path = refs_file(self.root, split_by)
        self.instances_path = self.data_dir / "instances.json"
        if not self.refs_path.is_file():
            raise DataError(f"{self.refs_path}: gRefCOCO refs file not found (nor grefs({split_by}).p)")
        if not self.instances_path.is_file():
            raise DataError(f"{self.instances_path}: gRefCOCO instances file not found")
        refs = load_pickle(self.refs_path) if self.refs_path.suffix == ".p" else load_json(self.refs_path)
        self._index_instances(load_json(self.instances_path))
        self._index_refs(refs)

    # ------------------------------------------------------------------ loading
    def _index_instances(self, inst: Any) -> None:
        p = self.instances_path
        if not isinstance(inst, dict) or not isinstance(inst.get("images"), list) or not isinstance(
            inst.get("annotations"), list
        ):
            raise DataError(f"{p}: not a COCO instances file (needs 'images' and 'annotations' lists)")
        try:
            self.images: dict[int, dict] = {int(im["id"]): im for im in inst["images"]}
            self.anns: dict[int, dict] = {int(a["id"]): a for a in inst["annotations"]}
            self.cats: dict[int, str] = {int(c["id"]): str(c["name"]) for c in inst.get("categories", [])}
            for a in self.anns.values():
                int(a["image_id"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{p}: malformed COCO record: {type(e).__name__}: {e}") from e

    def _index_refs(self, refs: Any) -> None:
        p = self.refs_path
        if not isinstance(refs, list):
            raise DataError(f"{p}: expected a list of ref dicts, got {type(refs).__name__}")
        self.refs: dict[int, dict] = {}
        self._img_to_refs: dict[int, list[dict]] = defaultdict(list)
        for i, ref in enumerate(refs):
            if not isinstance(ref, dict):
                raise DataError(f"{p}: ref #{i} is a {type(ref).__name__}, not a dict")
            missing = [k for k in ("ref_id", "image_id", "ann_id", "split", "sentences") if k not in ref]
            if missing:
                raise DataError(f"{p}: ref #{i} lacks {missing}")
            try:
                ref_id, image_id = int(ref["ref_id"]), int(ref["image_id"])
            except (TypeError, ValueError) as e:
                raise DataError(f"{p}: ref #{i}: ref_id/image_id must be ints ({e})") from e
            where = f"{p}: ref {ref_id}"
            if ref_id in self.refs:
                raise DataError(f"{where}: duplicate ref_id")
            if ref["split"] not in SPLITS:
                raise DataError(f"{where}: split {ref['split']!r} is not one of {list(SPLITS)}")
            sents = ref["sentences"]
            if not isinstance(sents, list) or not sents or not all(
                isinstance(s, dict) and isinstance(s.get("sent"), str) for s in sents
            ):
                raise DataError(f"{where}: needs a non-empty 'sentences' list of dicts with a 'sent' string")
            ids = _int_list(ref["ann_id"])
            if not ids:
                raise DataError(f"{where}: ann_id {ref['ann_id']!r} is not a non-empty list of ints")
            if NO_TARGET in ids and len(ids) != 1:
                raise DataError(f"{where}: ann_id {ids} mixes -1 (no target) with annotation ids")
            if image_id not in self.images:
                raise DataError(f"{self.instances_path}: image id {image_id} (of {where}) not in 'images'")
            for a in ids:
                if a == NO_TARGET:
                    continue
                if a not in self.anns:
                    raise DataError(f"{where}: annotation id {a} not found in {self.instances_path}")
                if int(self.anns[a]["image_id"]) != image_id:
                    raise DataError(
                        f"{where}: annotation {a} belongs to image {self.anns[a]['image_id']}, not {image_id} "
                        f"({self.instances_path})"
                    )
            self.refs[ref_id] = ref
            self._img_to_refs[image_id].append(ref)

    # ------------------------------------------------------------------ lookups
    @property
    def splits(self) -> list[str]:
        """The splits present in the file, in :data:`SPLITS` order."""
        present = {str(r["split"]) for r in self.refs.values()}
        return [s for s in SPLITS if s in present]

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise DataError(f"{self.refs_path}: no refs for split {split!r} (splits in the file: {self.splits})")

    def refs_by_split(self, split: str) -> list[dict]:
        """Refs of ``split`` (exact match), in file order. Raises :class:`DataError` for an absent split."""
        self._check_split(split)
        return [r for r in self.refs.values() if r["split"] == split]

    def refs_by_image(self, image_id: int, split: str | None = None) -> list[dict]:
        """Refs of one image (file order), optionally only those of ``split``."""
        refs = self._img_to_refs.get(int(image_id), [])
        return list(refs) if split is None else [r for r in refs if r["split"] == split]

    def image_ids(self, split: str | None = None) -> list[int]:
        """Sorted ids of the images with at least one ref (of ``split``)."""
        refs = self.refs.values() if split is None else self.refs_by_split(split)
        return sorted({int(r["image_id"]) for r in refs})

    @staticmethod
    def ann_ids(ref: dict) -> list[int]:
        """The ref's annotation ids as a list (``[-1]`` for no target)."""
        return _int_list(ref["ann_id"]) or []

    @classmethod
    def is_no_target(cls, ref: dict) -> bool:
        """``ann_id == [-1]``."""
        return cls.ann_ids(ref) == [NO_TARGET]

    def image_path(self, image_id: int) -> Path:
        """``refer_seg/images/mscoco/images/train2014/<file_name>`` (GSVA's ``data/dataset.py``)."""
        return self.root.joinpath(*COCO_IMAGE_DIR) / self.image_file_name(image_id)

    # ------------------------------------------------------------------ masks
    def ann_mask(self, ann_id: int) -> np.ndarray:
        """One annotation as 0/1 uint8 ``[H, W]`` (its image's size), via :func:`decode_segmentation`."""
        ann = self.anns.get(int(ann_id))
        if ann is None:
            raise DataError(f"{self.instances_path}: annotation id {ann_id} not found")
        h, w = self.image_hw(ann["image_id"])
        where = f"{self.instances_path}: annotation {ann_id}"
        if "segmentation" not in ann:
            raise DataError(f"{where}: no 'segmentation'")
        seg = ann["segmentation"]
        if isinstance(seg, list) and not seg:
            return np.zeros((h, w), dtype=np.uint8)
        return decode_segmentation(seg, h, w, where)

    def target_mask(self, ann_id: int | list[int], image_id: int | None = None) -> np.ndarray:
        """The 0/1 uint8 ``[H, W]`` union of the annotations ``ann_id``; zeros for ``[-1]`` (``image_id`` then
        gives the size). Same call as :meth:`read.data.refer.ReferAnnotations.target_mask`."""
        ids = _int_list(ann_id)
        if not ids:
            raise DataError(f"{self.refs_path}: bad ann_id {ann_id!r}")
        if NO_TARGET in ids:
            if len(ids) != 1:
                raise DataError(f"{self.refs_path}: ann_id {ids} mixes -1 (no target) with annotation ids")
            if image_id is None:
                raise DataError(f"{self.refs_path}: a no-target ann_id needs the image id for its size")
            return np.zeros(self.image_hw(image_id), dtype=np.uint8)
        out = None
        for a in ids:
            m = self.ann_mask(a)
            if image_id is not None and int(self.anns[a]["image_id"]) != int(image_id):
                raise DataError(f"{self.instances_path}: annotation {a} does not belong to image {image_id}")
            out = m if out is None else (out | m)
        return out

    def ref_mask(self, ref: dict) -> np.ndarray:
        """The expression mask of a ref (every sentence of the ref shares it)."""
        return self.target_mask(ref["ann_id"], image_id=int(ref["image_id"]))

    def __repr__(self) -> str:
        return (
            f"GRefCOCO(split_by={self.split_by!r}, refs={len(self.refs)}, images={len(self.images)}, "
            f"anns={len(self.anns)})"
        )
