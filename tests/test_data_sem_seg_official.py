"""Semantic-segmentation behaviours matched to the official sem_seg_dataset.py, on hand-built files whose
expected values are written out by hand: PACO/PASCAL instance sampling, the COCO-Stuff negative pool, and the
packaged COCO-Stuff class list."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from read.data.base import DataError
from read.data.sem_seg import PACOLVIS, COCOStuff, PascalPart, SemSegDataset, official_cocostuff_classes
from read.data.sem_seg_draw import select_indices

H, W = 4, 6


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major runs, starting with a run of zeros), written out plainly."""
    flat = [int(v) for v in mask.T.reshape(-1)]
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _jpg(path: Path, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), 90, np.uint8))
    assert ok
    path.write_bytes(buf.tobytes())


# Hand-drawn instances on a 4x6 image.
DOG_A = np.array([[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], np.uint8)
DOG_B = np.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], np.uint8)
HEAD = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0]], np.uint8)
TAIL = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]], np.uint8)
INSTANCES = {11: DOG_A, 12: DOG_B, 13: HEAD, 14: TAIL}


def _paco_root(tmp_path: Path, with_tail: bool = False) -> Path:
    cats = [
        {"id": 1, "name": "dog_(animal)"},
        {"id": 2, "name": "dog_(animal):head"},
        {"id": 3, "name": "cat"},
        {"id": 4, "name": "cat:ear"},
        {"id": 5, "name": "dog_(animal):tail"},
    ]
    anns = [
        {"id": 11, "image_id": 7, "category_id": 1, "segmentation": _rle(DOG_A)},
        {"id": 12, "image_id": 7, "category_id": 1, "segmentation": _rle(DOG_B)},
        {"id": 13, "image_id": 7, "category_id": 2, "segmentation": _rle(HEAD)},
    ]
    if with_tail:
        anns.append({"id": 14, "image_id": 7, "category_id": 5, "segmentation": _rle(TAIL)})
    images = [{"id": 7, "file_name": "train2017/000000000007.jpg", "height": H, "width": W}]
    ann = tmp_path / "vlpart" / "paco" / "annotations" / "paco_lvis_v1_train.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}), encoding="utf-8")
    _jpg(tmp_path / "coco" / "train2017" / "000000000007.jpg")
    return tmp_path


# ------------------------------------------------------------------------------------------ select_samples


def test_select_indices_is_the_official_select_samples():
    rng = np.random.default_rng(0)
    assert select_indices(2, 3, rng) == [0, 1]  # fewer than asked: all of them, in order
    assert select_indices(0, 3, rng) == []
    seen = Counter()
    for _ in range(400):
        got = select_indices(5, 3, rng)
        assert len(got) == 3 == len(set(got)) and set(got) <= set(range(5))
        seen.update(got)
    assert set(seen) == set(range(5))


# ------------------------------------------------------------------------------------------ PACO instances


def test_paco_rows_are_instances_not_category_unions(tmp_path):
    ds = PACOLVIS(_paco_root(tmp_path))
    # category ids sorted: 1 dog, 2 dog:head, 3 cat, 4 cat:ear, 5 dog:tail -> class indices 0..4
    assert ds.classes == ["dog", ("dog", "head"), "cat", ("cat", "ear"), ("dog", "tail")]
    item = ds[0]  # deterministic item: every annotation in file order
    assert item.meta["ann_ids"] == [11, 12, 13] and item.meta["class_ids"] == [0, 0, 1]
    np.testing.assert_array_equal(item.masks, np.stack([DOG_A, DOG_B, HEAD]))
    assert item.meta["classes"][:2] == ["dog", "dog"]
    assert item.meta["classes"][2] in ("dog head", "the head of the dog")
    assert ds.negative_ids(0) == [2, 3, 4]  # every category absent from the image

    rng = np.random.default_rng(1)
    orders = set()
    for _ in range(60):
        s = ds.draw(rng, "True_Premise")
        s.validate()
        ids = s.meta["ann_ids"]
        assert sorted(ids) == [11, 12, 13]  # 3 annotations, 3 per sample: all of them (random order)
        orders.add(tuple(ids))
        for ann_id, m, name in zip(ids, s.masks, s.meta["classes"], strict=True):
            np.testing.assert_array_equal(m, INSTANCES[ann_id])  # one instance, never DOG_A | DOG_B
            assert name == "dog" if ann_id in (11, 12) else name in ("dog head", "the head of the dog")
    assert len(orders) > 1


def test_paco_samples_annotations_when_there_are_more_than_asked(tmp_path):
    ds = PACOLVIS(_paco_root(tmp_path, with_tail=True))
    rng = np.random.default_rng(2)
    seen = Counter()
    for _ in range(200):
        s = ds.draw(rng, "True_Premise")
        ids = s.meta["ann_ids"]
        assert len(ids) == 3 == len(set(ids)) and set(ids) <= {11, 12, 13, 14}
        for ann_id, m in zip(ids, s.masks, strict=True):
            np.testing.assert_array_equal(m, INSTANCES[ann_id])
        seen.update(ids)
    assert set(seen) == {11, 12, 13, 14}
    # each of 4 annotations is in a random 3-subset with probability 3/4
    for c in seen.values():
        assert abs(c / 200 - 0.75) < 5 * np.sqrt(0.75 * 0.25 / 200)


def test_paco_false_premise_rows(tmp_path):
    ds = PACOLVIS(_paco_root(tmp_path))
    rng = np.random.default_rng(3)
    for _ in range(40):
        s = ds.draw(rng, "False_Premise_Correction")
        assert s.masks.shape == (0, H, W) and s.exists == [False] * len(s.conversations)
        assert set(s.meta["negative_ids"]) <= {2, 3, 4} and len(s.conversations) == 3
        assert sorted(s.meta["ann_ids"]) == [11, 12, 13]  # gt_name of row i is annotation i's category


def test_pascal_part_instances(tmp_path):
    base = tmp_path / "vlpart" / "pascal_part"
    cats = [{"id": 1, "name": "dog:head"}, {"id": 2, "name": "dog:leg"}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 2, "segmentation": _rle(DOG_A)},
        {"id": 2, "image_id": 1, "category_id": 2, "segmentation": _rle(DOG_B)},
    ]
    base.mkdir(parents=True)
    images = [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}]
    (base / "train.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    _jpg(base / "VOCdevkit" / "VOC2010" / "JPEGImages" / "a.jpg")
    ds = PascalPart(tmp_path)
    s = ds.draw(np.random.default_rng(0), "True_Premise")
    got = {a: m for a, m in zip(s.meta["ann_ids"], s.masks, strict=True)}
    np.testing.assert_array_equal(got[1], DOG_A)
    np.testing.assert_array_equal(got[2], DOG_B)
    assert ds.negative_ids(0) == [0]  # dog:head is absent


# ------------------------------------------------------------------------------------------ COCO-Stuff


def _write_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", label.astype(np.uint8))
    assert ok
    path.write_bytes(buf.tobytes())


def _cocostuff_root(tmp_path: Path, label: np.ndarray, class_lines: list[str] | None = None) -> Path:
    _write_label(tmp_path / "cocostuff" / "train2017" / "000000000001.png", label)
    _jpg(tmp_path / "coco" / "train2017" / "000000000001.jpg", *label.shape)
    if class_lines is not None:
        (tmp_path / "cocostuff" / "cocostuff_classes.txt").write_text("\n".join(class_lines) + "\n")
    return tmp_path


LABEL = np.array([[0, 0, 1, 1, 255, 255], [0, 0, 1, 1, 255, 255], [0, 0, 0, 1, 1, 255], [0, 0, 0, 0, 0, 0]])


def test_cocostuff_negative_pool_keeps_ignored_classes(tmp_path):
    lines = ["0: unlabeled", "1: person", "2: wall-brick", "3: sky", "4: tree-other"]
    ds = COCOStuff(_cocostuff_root(tmp_path, LABEL, lines), class_list="file")
    assert ds.classes == ["person", "wall-brick", "sky", "tree-other"]
    expected_label = np.where(LABEL == 1, 255, LABEL)  # wall-brick has a "-": ignore
    np.testing.assert_array_equal(ds.label(0), expected_label)
    assert ds.present_classes(0) == [0]
    # official: all class ids minus the present (non-ignore) labels -> wall-brick (present but ignored) and
    # tree-other stay in the pool
    assert ds.negative_ids(0) == [1, 2, 3]
    rng = np.random.default_rng(0)
    seen = Counter()
    for _ in range(150):
        s = ds.draw(rng, "False_Premise_Denial")
        assert len(s.meta["negative_ids"]) == 1 and s.meta["negatives"][0] in ("wall-brick", "sky", "tree-other")
        seen.update(s.meta["negative_ids"])
        t = ds.draw(rng, "True_Premise")  # positives never include an ignored class
        assert t.meta["class_ids"] == [0]
        expected = (expected_label == 0).astype(np.uint8)
        expected[expected_label == 255] = 255
        np.testing.assert_array_equal(t.masks[0], expected)
    assert set(seen) == {1, 2, 3}


def test_cocostuff_official_pool_with_the_packaged_list(tmp_path):
    label = np.where(LABEL == 1, 95, LABEL)  # 95 = building-other in the official list (a "-" class)
    ds = COCOStuff(_cocostuff_root(tmp_path, label))
    assert ds.classes[95] == "building-other" and ds.present_classes(0) == [0]
    assert ds.negative_ids(0) == list(range(1, 182))  # 95 included although its pixels are in the image


# ------------------------------------------------------------------------------------------ class list


def test_packaged_official_cocostuff_list():
    names = official_cocostuff_classes()
    assert len(names) == 182 and names[0] == "person" and names[181] == "wood"
    assert names[11] == "street sign" and names[156] == "sky" and names[91] == "banner"
    assert sum("-" in n for n in names) == 28 and "sky-other" not in names
    names.append("x")  # callers get a copy
    assert len(official_cocostuff_classes()) == 182


def _class_file(names: list[str]) -> list[str]:
    return ["0: unlabeled"] + [f"{k + 1}: {n}" for k, n in enumerate(names)]


def test_identical_class_file_is_silent(tmp_path, caplog):
    root = _cocostuff_root(tmp_path, LABEL, _class_file(official_cocostuff_classes()))
    with caplog.at_level(logging.WARNING, logger="read"):
        ds = COCOStuff(root)
    assert ds.classes == official_cocostuff_classes() and not caplog.records


def test_differing_class_file_is_reported_and_official_list_used(tmp_path, caplog):
    labels_txt = official_cocostuff_classes()
    labels_txt[156] = "sky-other"  # what COCO-Stuff's own labels.txt says
    labels_txt[181] = "wood-other"
    label = np.where(LABEL == 1, 156, LABEL)
    root = _cocostuff_root(tmp_path, label, _class_file(labels_txt))
    path = root / "cocostuff" / "cocostuff_classes.txt"
    with caplog.at_level(logging.WARNING, logger="read"):
        ds = COCOStuff(root)
    assert ds.classes[156] == "sky" and ds.present_classes(0) == [0, 156]  # "sky" is a valid class
    (rec,) = caplog.records
    msg = rec.getMessage()
    assert str(path) in msg and "156: 'sky-other' vs 'sky'" in msg and "181: 'wood-other' vs 'wood'" in msg
    assert "at 2 of 182 positions" in msg and "using the official list" in msg

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="read"):
        ds = COCOStuff(root, class_list="file")
    assert ds.classes[156] == "sky-other" and ds.present_classes(0) == [0]  # now ignored ("-")
    assert "using this file" in caplog.records[0].getMessage()
    sem = SemSegDataset(root, ("cocostuff",), cocostuff_class_list="file")
    assert sem.sources[0].classes[156] == "sky-other"


def test_short_class_file_and_bad_options(tmp_path, caplog):
    root = _cocostuff_root(tmp_path, LABEL)
    short = tmp_path / "short.txt"
    short.write_text("\n".join(_class_file(["person", "bicycle"])) + "\n")
    with caplog.at_level(logging.WARNING, logger="read"):
        COCOStuff(root, classes_file=short)
    msg = caplog.records[0].getMessage()
    assert str(short) in msg and "2: <none> vs 'car'" in msg and "at 180 of 182 positions" in msg
    with pytest.raises(DataError, match="nope.txt"):
        COCOStuff(root, classes_file=tmp_path / "nope.txt")
    with pytest.raises(DataError, match=r"cocostuff_classes.txt.*class_list='file'"):
        COCOStuff(root, class_list="file")
    with pytest.raises(ValueError, match="class_list"):
        COCOStuff(root, class_list="labels")
