"""Our own reader for the REFER annotation format (refCOCO, refCOCO+, refCOCOg, refCLEF, FP-/R-RefCOCO).

On disk (spec §4.1), with ``root`` the dataset root (``--dataset_dir``)::

    <root>/refer_seg/<dataset>/refs(<splitBy>).p   # pickle: list of ref dicts (loaded without globals)
    <root>/refer_seg/<dataset>/instances.json     # COCO format: images, annotations, categories
    <root>/refer_seg/images/mscoco/images/train2014/<file_name>   # every COCO-based dataset, every split
    <root>/refer_seg/images/saiapr_tc-12/<file_name>              # refclef

A ref dict carries ``ref_id``, ``ann_id`` (an int, or a list of ints for gRefCOCO-style multi/no-target refs,
where ``-1`` means "no target"), ``image_id``, ``split``, ``category_id``, ``sent_ids``, ``file_name`` and
``sentences``: ``[{"sent", "sent_id", "tokens", "raw", ...}]``. FP-RefCOCO sentences add ``is_false_premise``
and ``gt_sent`` (the corrected expression), R-RefCOCO sentences add ``exist``.

Split selection follows the REFER API's rule: ``"train"``/``"val"``/``"testAB"``... match exactly, ``"test"``
matches every split containing ``"test"`` (so refCOCO's testA + testB), ``"testA"``/``"testB"``/``"testC"``
match every ``test*`` split containing that letter.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from read.data.base import DataError
from read.data.io import load_json
from read.data.safe_pickle import load_pickle

#: Datasets of the official mixture (refer_seg, neg_refer_seg, correct_refer_seg keys).
REFER_DATASETS: tuple[str, ...] = (
    "refclef",
    "refcoco",
    "refcoco+",
    "refcocog",
    "R-refcoco",
    "R-refcoco+",
    "R-refcocog",
    "fprefcoco",
    "fprefcoco+",
    "fprefcocog",
)

COCO_IMAGE_DIR = ("refer_seg", "images", "mscoco", "images", "train2014")
CLEF_IMAGE_DIR = ("refer_seg", "images", "saiapr_tc-12")


def default_split_by(dataset: str) -> str:
    """The splitBy the official loader uses for ``dataset`` (spec §4.1 splitBy table).

    ``refclef`` -> ``unc``; ``refcocog``, ``R-refcocog`` -> ``umd_exclude_unified``; ``fprefcoco``,
    ``fprefcoco+``, ``fprefcocog`` -> ``berkeley_exclude_unified``; everything else (``refcoco``, ``refcoco+``,
    ``R-refcoco``, ``R-refcoco+``) -> ``unc_exclude_unified``.
    """
    if dataset == "refclef":
        return "unc"
    if dataset in ("refcocog", "R-refcocog"):
        return "umd_exclude_unified"
    if dataset in ("fprefcoco", "fprefcoco+", "fprefcocog"):
        return "berkeley_exclude_unified"
    return "unc_exclude_unified"


def is_false_premise_dataset(dataset: str) -> bool:
    """FP-RefCOCO(+/g): non-existent targets are answered with the corrected expression."""
    return dataset.lower().startswith("fprefcoco")


def sentence_exists(sent: dict) -> bool:
    """``not is_false_premise`` (FP-RefCOCO), else ``exist`` (R-RefCOCO), else True (spec §4.2 ReferSeg)."""
    if "is_false_premise" in sent:
        return not bool(sent["is_false_premise"])
    if "exist" in sent:
        return bool(sent["exist"])
    return True


def split_matches(ref_split: str, split: str) -> bool:
    """The REFER API's split rule (module docstring)."""
    if split in ("testA", "testB", "testC"):
        return ref_split.startswith("test") and split[-1] in ref_split[4:]
    if split == "test":
        return "test" in ref_split
    return ref_split == split


def required_paths(root: str | os.PathLike, dataset: str, split_by: str | None = None) -> list[Path]:
    """The files and image folder :class:`ReferAnnotations` of ``dataset`` opens first: ``refs(<splitBy>).p``,
    ``instances.json`` and the image folder (no reading, no listing)."""
    root = Path(root)
    sb = split_by if split_by is not None else default_split_by(dataset)
    images = root.joinpath(*(CLEF_IMAGE_DIR if dataset == "refclef" else COCO_IMAGE_DIR))
    return [root / "refer_seg" / dataset / f"refs({sb}).p", root / "refer_seg" / dataset / "instances.json", images]


def _ann_ids(ann_id: Any) -> list[int]:
    return [int(a) for a in ann_id] if isinstance(ann_id, (list, tuple)) else [int(ann_id)]


class CocoImages:
    """Image lookups shared by the REFER-family readers: ``self.images`` (id -> COCO image dict) read from
    ``self.instances_path``; errors name that file."""

    images: dict[int, dict]
    instances_path: Path

    def image_info(self, image_id: int) -> dict:
        try:
            return self.images[int(image_id)]
        except KeyError:
            raise DataError(f"{self.instances_path}: image id {image_id} not in 'images'") from None

    def image_file_name(self, image_id: int) -> str:
        try:
            return str(self.image_info(image_id)["file_name"])
        except KeyError:
            raise DataError(f"{self.instances_path}: image {image_id} lacks 'file_name'") from None

    def image_hw(self, image_id: int) -> tuple[int, int]:
        info = self.image_info(image_id)
        try:
            return int(info["height"]), int(info["width"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{self.instances_path}: image {image_id} lacks a valid height/width") from e


class ReferAnnotations(CocoImages):
    """One REFER dataset: refs, sentences, COCO images and annotations, masks.

    Args:
        root: dataset root (the directory holding ``refer_seg/``).
        dataset: ``refcoco``, ``refcoco+``, ``refcocog``, ``refclef``, ``fprefcoco``..., ``R-refcoco``...
        split_by: the ``refs(<split_by>).p`` variant; ``None`` -> :func:`default_split_by`.

    Raises:
        DataError: missing/corrupt files or malformed records (the message names the file).
    """

    def __init__(self, root: str | os.PathLike, dataset: str, split_by: str | None = None) -> None:
        self.root = Path(root)
        self.dataset = dataset
        self.split_by = split_by if split_by is not None else default_split_by(dataset)
        self.data_dir = self.root / "refer_seg" / dataset
        self.refs_path = self.data_dir / f"refs({self.split_by}).p"
        self.instances_path = self.data_dir / "instances.json"
        if not self.refs_path.is_file():
            raise DataError(
                f"{self.refs_path}: REFER refs file not found (dataset {dataset!r}, splitBy {self.split_by!r})"
            )
        if not self.instances_path.is_file():
            raise DataError(f"{self.instances_path}: REFER instances file not found (dataset {dataset!r})")
        refs = load_pickle(self.refs_path)
        inst = load_json(self.instances_path)
        self._index_refs(refs)
        self._index_instances(inst)

    # ------------------------------------------------------------------ loading
    def _index_refs(self, refs: Any) -> None:
        p = self.refs_path
        if not isinstance(refs, list):
            raise DataError(f"{p}: expected a list of ref dicts, got {type(refs).__name__}")
        self.refs: dict[int, dict] = {}
        self.sents: dict[int, dict] = {}
        self._img_to_refs: dict[int, list[dict]] = defaultdict(list)
        for i, ref in enumerate(refs):
            if not isinstance(ref, dict):
                raise DataError(f"{p}: ref #{i} is a {type(ref).__name__}, not a dict")
            missing = [k for k in ("ref_id", "ann_id", "image_id", "split", "sentences") if k not in ref]
            if missing:
                raise DataError(f"{p}: ref #{i} lacks {missing}")
            if not isinstance(ref["sentences"], list) or not all(
                isinstance(s, dict) and isinstance(s.get("sent"), str) for s in ref["sentences"]
            ):
                raise DataError(
                    f"{p}: ref {ref['ref_id']} has malformed sentences (need dicts with a 'sent' string)"
                )
            self.refs[int(ref["ref_id"])] = ref
            self._img_to_refs[int(ref["image_id"])].append(ref)
            for s in ref["sentences"]:
                if "sent_id" in s:
                    self.sents[int(s["sent_id"])] = s

    def _index_instances(self, inst: Any) -> None:
        p = self.instances_path
        if not isinstance(inst, dict) or not all(k in inst for k in ("images", "annotations")):
            raise DataError(f"{p}: not a COCO instances file (needs 'images' and 'annotations')")
        try:
            self.images: dict[int, dict] = {int(im["id"]): im for im in inst["images"]}
            self.anns: dict[int, dict] = {int(a["id"]): a for a in inst["annotations"]}
            self.cats: dict[int, str] = {int(c["id"]): str(c["name"]) for c in inst.get("categories", [])}
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{p}: malformed COCO record: {type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------ lookups
    @property
    def splits(self) -> list[str]:
        """The distinct ``split`` values of the refs."""
        return sorted({str(r["split"]) for r in self.refs.values()})

    def refs_by_split(self, split: str) -> list[dict]:
        """Refs of ``split`` (REFER rule), in file order. Raises :class:`DataError` when none match."""
        out = [r for r in self.refs.values() if split_matches(str(r["split"]), split)]
        if not out:
            raise DataError(
                f"{self.refs_path}: no refs for split {split!r} (splits in the file: {self.splits})"
            )
        return out

    def refs_by_image(self, image_id: int, split: str | None = None) -> list[dict]:
        """Refs of one image (file order), optionally restricted to ``split``."""
        refs = self._img_to_refs.get(int(image_id), [])
        return refs if split is None else [r for r in refs if split_matches(str(r["split"]), split)]

    def image_ids(self, split: str | None = None) -> list[int]:
        """Sorted ids of the images that have at least one ref (of ``split``)."""
        refs = self.refs.values() if split is None else self.refs_by_split(split)
        return sorted({int(r["image_id"]) for r in refs})

    @staticmethod
    def sentences(ref: dict) -> list[dict]:
        """The sentence dicts of a ref."""
        return list(ref["sentences"])

    def image_path(self, image_id: int) -> Path:
        """``refer_seg/images/mscoco/images/train2014/<file_name>``; refclef: ``refer_seg/images/saiapr_tc-12/``."""
        sub = CLEF_IMAGE_DIR if self.dataset == "refclef" else COCO_IMAGE_DIR
        return self.root.joinpath(*sub) / self.image_file_name(image_id)

    # ------------------------------------------------------------------ masks
    def ann_to_mask(self, ann_id: int) -> np.ndarray:
        """Decode one annotation as the official code does: ``[H, W]`` uint8, **summed over parts**.

        Polygons (``segmentation = [[x0, y0, x1, y1, ...], ...]``) go through ``frPyObjects`` -> ``decode`` and
        the per-part masks are summed (so pixels covered by two overlapping parts are 2). A list of RLE dicts is
        summed the same way; a single RLE dict (compressed string or uncompressed list counts) is decoded as is.
        An empty segmentation gives zeros.
        """
        ann = self.anns.get(int(ann_id))
        if ann is None:
            raise DataError(f"{self.instances_path}: annotation id {ann_id} not found")
        h, w = self.image_hw(ann["image_id"])
        seg = ann.get("segmentation")
        try:
            if isinstance(seg, list):
                if len(seg) == 0:
                    return np.zeros((h, w), dtype=np.uint8)
                if all(isinstance(s, list) for s in seg):
                    rles = coco_mask.frPyObjects([[float(v) for v in s] for s in seg], h, w)
                elif all(isinstance(s, dict) for s in seg):
                    rles = [self._rle(s, h, w, ann_id) for s in seg]
                else:
                    raise DataError(f"{self.instances_path}: annotation {ann_id} mixes polygons and RLE")
                m = coco_mask.decode(rles)
                return np.sum(m, axis=2).astype(np.uint8)
            if isinstance(seg, dict):
                m = coco_mask.decode(self._rle(seg, h, w, ann_id))
                return m.astype(np.uint8)
        except DataError:
            raise
        except Exception as e:  # pycocotools raises plain Exceptions/TypeErrors on bad input
            raise DataError(
                f"{self.instances_path}: annotation {ann_id}: cannot decode segmentation: {e}"
            ) from e
        raise DataError(f"{self.instances_path}: annotation {ann_id} has no polygon/RLE segmentation")

    def _rle(self, rle: dict, h: int, w: int, ann_id: int) -> dict:
        if "counts" not in rle or "size" not in rle:
            raise DataError(f"{self.instances_path}: annotation {ann_id}: RLE needs 'counts' and 'size'")
        if [int(v) for v in rle["size"]] != [h, w]:
            raise DataError(
                f"{self.instances_path}: annotation {ann_id}: RLE size {rle['size']} != image size {[h, w]}"
            )
        counts = rle["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            return coco_mask.frPyObjects(rle, h, w)
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        return {"size": [h, w], "counts": counts}

    def target_mask(self, ann_id: int | list[int], image_id: int | None = None) -> np.ndarray:
        """Binary ``[H, W]`` uint8 {0, 1} target of a ref's ``ann_id``.

        An int is :meth:`ann_to_mask` > 0. A list is OR-combined, unless it contains ``-1`` (gRefCOCO-style
        no-target), which gives zeros (``-1`` must then be the only id, as the official code asserts).
        ``image_id`` is needed for the size of a no-target mask.
        """
        ids = _ann_ids(ann_id)
        if -1 in ids:
            if len(ids) != 1:
                raise DataError(f"{self.refs_path}: ann_id {ann_id} mixes -1 (no target) with real ids")
            if image_id is None:
                raise DataError(f"{self.refs_path}: no-target ann_id -1 needs the image id for its size")
            return np.zeros(self.image_hw(image_id), dtype=np.uint8)
        out = None
        for a in ids:
            m = self.ann_to_mask(a) > 0
            if image_id is not None and int(self.anns[a]["image_id"]) != int(image_id):
                raise DataError(f"{self.instances_path}: annotation {a} does not belong to image {image_id}")
            out = m if out is None else (out | m)
        if out is None:
            raise DataError(f"{self.refs_path}: empty ann_id list {ann_id}")
        return out.astype(np.uint8)

    def __repr__(self) -> str:
        return (
            f"ReferAnnotations({self.dataset!r}, split_by={self.split_by!r}, refs={len(self.refs)}, "
            f"images={len(self.images)}, anns={len(self.anns)})"
        )
