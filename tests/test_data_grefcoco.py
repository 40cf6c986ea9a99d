"""gRefCOCO: the reader (union masks, no-target, the < 3-point polygon rule, RLE, errors naming the file), the
evaluation items (GSVA's exact question/answer strings), the synthetic writer and the fail-early checks.

Expected values are written by hand here: rectangles given as integer COCO polygons ``[x0, y0, x1, y0, x1, y1,
x0, y1]`` cover exactly ``mask[y0:y1, x0:x1]`` (pycocotools samples pixel centres), and RLE counts are computed by
a loop of this file.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from read.config import ReadConfig
from read.data.base import DataError
from read.data.catalog import build_eval_dataset, check_eval_split, check_train_sources
from read.data.grefer import GRefCOCO, refs_file, required_paths
from read.data.gsva_eval import GRefCOCOEvalDataset
from read.data.synth.grefcoco import write_grefcoco

IMG_DIR = ("refer_seg", "images", "mscoco", "images", "train2014")


def rect(x0: int, y0: int, x1: int, y1: int) -> list[int]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def box(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def rle_counts(m: np.ndarray) -> list[int]:
    """Column-major run lengths starting with a run of zeros (COCO's uncompressed RLE), by a plain loop."""
    counts, cur, run = [], 0, 0
    for v in m.flatten(order="F"):
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return counts


# Image 11 (10x12, train), image 12 (8x8, val), image 13 (6x6, testA), image 14 (6x6, train, no-target only).
H11, W11 = 10, 12
M101 = box(H11, W11, 1, 1, 5, 4)  # polygon + a 2-point part that must be skipped
M102 = np.zeros((H11, W11), np.uint8)
M102[6:9, 7:11] = 1
M102[0, 11] = 1  # uncompressed RLE (crowd)
M201 = box(8, 8, 0, 0, 4, 4)
M202 = box(8, 8, 4, 4, 8, 8)


def sent(text: str, sid: int) -> dict:
    return {"sent": text, "sent_id": sid, "raw": text, "tokens": text.split()}


def hand_refs() -> list[dict]:
    return [
        {"ref_id": 1, "image_id": 11, "split": "train", "ann_id": [101], "category_id": [1],
         "sentences": [sent("the left box", 1), sent("left box.", 2)]},
        {"ref_id": 2, "image_id": 11, "split": "train", "ann_id": [101, 102], "category_id": [1, 2],
         "sentences": [sent("both boxes", 3)]},
        {"ref_id": 3, "image_id": 11, "split": "train", "ann_id": [-1], "category_id": [-1],
         "sentences": [sent("the cat", 4)]},
        {"ref_id": 4, "image_id": 11, "split": "train", "ann_id": [104], "category_id": [1],
         "sentences": [sent("a dot", 5)]},
        {"ref_id": 5, "image_id": 12, "split": "val", "ann_id": [201, 202], "category_id": [1],
         "sentences": [sent("two squares.", 6)]},
        {"ref_id": 6, "image_id": 12, "split": "val", "ann_id": [-1], "category_id": [-1],
         "sentences": [sent("the dog", 7), sent("a dog", 8)]},
        {"ref_id": 7, "image_id": 12, "split": "val", "ann_id": [202], "category_id": [1],
         "sentences": [sent(" Bottom Right Square ", 9)]},
        {"ref_id": 8, "image_id": 13, "split": "testA", "ann_id": [301], "category_id": [1],
         "sentences": [sent("the square", 10)]},
        {"ref_id": 9, "image_id": 14, "split": "train", "ann_id": [-1], "category_id": [-1],
         "sentences": [sent("the bird", 11), sent("a bird", 12)]},
    ]


def hand_instances() -> dict:
    return {
        "images": [
            {"id": 11, "file_name": "COCO_train2014_000000000011.jpg", "height": H11, "width": W11},
            {"id": 12, "file_name": "COCO_train2014_000000000012.jpg", "height": 8, "width": 8},
            {"id": 13, "file_name": "COCO_train2014_000000000013.jpg", "height": 6, "width": 6},
            {"id": 14, "file_name": "COCO_train2014_000000000014.jpg", "height": 6, "width": 6},
        ],
        "annotations": [
            {"id": 101, "image_id": 11, "category_id": 1, "iscrowd": 0,
             "segmentation": [rect(1, 1, 5, 4), [8, 8, 9, 8]]},
            {"id": 102, "image_id": 11, "category_id": 2, "iscrowd": 1,
             "segmentation": {"size": [H11, W11], "counts": rle_counts(M102)}},
            # only a 2-point and a 2.5-point "polygon": nothing valid, no pixels
            {"id": 104, "image_id": 11, "category_id": 1, "iscrowd": 0,
             "segmentation": [[6, 6, 9, 9], [1, 1, 3, 1, 3]]},
            {"id": 201, "image_id": 12, "category_id": 1, "iscrowd": 0, "segmentation": [rect(0, 0, 4, 4)]},
            {"id": 202, "image_id": 12, "category_id": 1, "iscrowd": 0, "segmentation": [rect(4, 4, 8, 8)]},
            {"id": 301, "image_id": 13, "category_id": 1, "iscrowd": 0, "segmentation": [rect(1, 1, 3, 3)]},
        ],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "blob"}],
    }


def make_hand_root(root: Path, refs: list[dict] | None = None, instances: dict | None = None) -> Path:
    """A hand-made gRefCOCO root (module constants); returns ``root``."""
    d = root / "refer_seg" / "grefcoco"
    d.mkdir(parents=True, exist_ok=True)
    (d / "grefs(unc).json").write_text(json.dumps(hand_refs() if refs is None else refs))
    inst = hand_instances() if instances is None else instances
    (d / "instances.json").write_text(json.dumps(inst))
    imgs = root.joinpath(*IMG_DIR)
    imgs.mkdir(parents=True, exist_ok=True)
    for im in inst["images"]:
        cv2.imwrite(str(imgs / im["file_name"]), np.full((im["height"], im["width"], 3), 90, np.uint8))
    return root


@pytest.fixture()
def hand(tmp_path) -> Path:
    return make_hand_root(tmp_path / "hand")


# ------------------------------------------------------------------------------------------ reader
def test_union_masks_no_target_and_polygon_rule(hand):
    g = GRefCOCO(hand)
    assert g.refs_path == hand / "refer_seg/grefcoco/grefs(unc).json"
    assert g.splits == ["train", "val", "testA"]
    assert g.image_ids("train") == [11, 14] and g.image_ids("val") == [12] and g.image_ids() == [11, 12, 13, 14]
    refs = {r["ref_id"]: r for r in g.refs_by_split("train")}
    assert sorted(refs) == [1, 2, 3, 4, 9]
    np.testing.assert_array_equal(g.ann_mask(101), M101)  # the 2-point part adds nothing
    np.testing.assert_array_equal(g.ann_mask(102), M102)  # uncompressed RLE
    np.testing.assert_array_equal(g.ann_mask(104), np.zeros((H11, W11), np.uint8))  # no valid polygon
    np.testing.assert_array_equal(g.ref_mask(refs[1]), M101)
    union = g.ref_mask(refs[2])
    assert union.dtype == np.uint8 and set(np.unique(union)) == {0, 1}
    np.testing.assert_array_equal(union, M101 | M102)  # exactly its two targets
    assert int(union.sum()) == 12 + 13
    nt = g.ref_mask(refs[3])
    assert nt.shape == (H11, W11) and not nt.any() and g.is_no_target(refs[3]) and not g.is_no_target(refs[2])
    val = g.refs_by_split("val")
    np.testing.assert_array_equal(g.ref_mask(val[0]), M201 | M202)
    assert g.image_path(12) == hand.joinpath(*IMG_DIR) / "COCO_train2014_000000000012.jpg"
    assert g.image_hw(11) == (H11, W11)


def test_bad_files_and_records_name_the_file(tmp_path):
    d = tmp_path / "r" / "refer_seg" / "grefcoco"
    refs_p = d / "grefs(unc).json"

    def expect(refs, instances, *needles):
        root = tmp_path / "r"
        shutil.rmtree(root, ignore_errors=True)
        make_hand_root(root, refs, instances)
        with pytest.raises(DataError) as e:
            GRefCOCO(root)
        for n in needles:
            assert n in str(e.value), str(e.value)

    bad = hand_refs()
    bad[1]["ann_id"] = [101, 999]
    expect(bad, None, str(refs_p), "annotation id 999")
    bad = hand_refs()
    bad[0]["ann_id"] = [201]  # annotation of image 12 on a ref of image 11
    expect(bad, None, str(refs_p), "belongs to image 12")
    bad = hand_refs()
    bad[2]["ann_id"] = [-1, 101]
    expect(bad, None, str(refs_p), "mixes -1")
    bad = hand_refs()
    bad[3]["split"] = "test"
    expect(bad, None, str(refs_p), "split 'test'")
    bad = hand_refs()
    bad[0]["ann_id"] = "101"
    expect(bad, None, str(refs_p), "not a non-empty list of ints")
    bad = hand_refs()
    bad[4]["ref_id"] = 1
    expect(bad, None, str(refs_p), "duplicate ref_id")
    bad = hand_refs()
    bad[0]["image_id"] = 77
    expect(bad, None, "instances.json", "image id 77")
    expect({"not": "a list"}, None, str(refs_p), "expected a list")

    make_hand_root(tmp_path / "j")
    (tmp_path / "j/refer_seg/grefcoco/grefs(unc).json").write_text('[{"ref_id": 1,')
    with pytest.raises(DataError, match=r"grefs\(unc\)\.json: malformed JSON"):
        GRefCOCO(tmp_path / "j")
    g = GRefCOCO(make_hand_root(tmp_path / "k"))
    with pytest.raises(DataError, match=r"grefs\(unc\)\.json: no refs for split 'testB'"):
        g.refs_by_split("testB")
    with pytest.raises(DataError, match="no refs for split 'testB'"):
        GRefCOCOEvalDataset(tmp_path / "k", "testB")
    (tmp_path / "k/refer_seg/grefcoco/instances.json").unlink()
    with pytest.raises(DataError, match="instances.json: gRefCOCO instances file not found"):
        GRefCOCO(tmp_path / "k")
    inst = hand_instances()
    inst["annotations"][0]["segmentation"] = {"size": [H11, W11], "counts": [5, 5]}  # sums to 10, not 120
    g = GRefCOCO(make_hand_root(tmp_path / "m", None, inst))
    with pytest.raises(DataError, match=r"instances.json: annotation 101: uncompressed RLE counts"):
        g.ref_mask(g.refs[1])


def test_pickle_refs_only_through_the_safe_unpickler(tmp_path, hand):
    js = hand / "refer_seg/grefcoco/grefs(unc).json"
    pk = js.with_suffix(".p")
    assert refs_file(hand) == js and required_paths(hand)[0] == js
    pk.write_bytes(pickle.dumps(hand_refs(), protocol=2))
    js.unlink()
    assert refs_file(hand) == pk and required_paths(hand)[0] == pk
    g = GRefCOCO(hand)
    assert g.refs_path == pk and sorted(g.refs) == list(range(1, 10))
    np.testing.assert_array_equal(g.ref_mask(g.refs[2]), M101 | M102)
    pk.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(DataError, match="refused to unpickle global"):
        GRefCOCO(hand)
    pk.unlink()
    with pytest.raises(DataError, match=r"grefs\(unc\)\.json: gRefCOCO refs file not found"):
        GRefCOCO(hand)


# ------------------------------------------------------------------------------------------ evaluation items
def test_eval_item_exact_strings_and_ground_truth(hand):
    ds = GRefCOCOEvalDataset(hand, "val")
    assert len(ds) == 1
    s = ds[0]
    # GSVA's string: a space after "\n", none between the last expression and "in", none after "Sure,".
    assert s.conversations == [[(
        "<image>\n What are two squares, the dog, a dog, bottom right squarein this image? "
        "Please output segmentation masks.",
        "Sure,two squares:[SEG], the dog:[REJ], a dog:[REJ], bottom right square:[SEG].",
    )]]
    assert s.masks is None and s.exists == [True, False, False, True]
    assert s.meta["slots"] == ["seg", "rej", "rej", "seg"]
    assert s.meta["expressions"] == ["two squares", "the dog", "a dog", "bottom right square"]
    assert s.meta["sent_ids"] == [6, 7, 8, 9] and s.meta["ref_ids"] == [5, 6, 6, 7]
    gt = s.meta["gt_masks"]
    assert gt.dtype == np.uint8 and gt.shape == (4, 8, 8)
    np.testing.assert_array_equal(gt[0], M201 | M202)
    assert not gt[1].any() and not gt[2].any()
    np.testing.assert_array_equal(gt[3], M202)
    assert s.image.shape == (8, 8, 3)

    gen = GRefCOCOEvalDataset(hand, "val", mode="generate")[0]
    assert gen.conversations[0][0] == (s.conversations[0][0][0], None) and gen.masks is None
    np.testing.assert_array_equal(gen.meta["gt_masks"], gt)

    tr = GRefCOCOEvalDataset(hand, "train")
    assert len(tr) == 2
    a = tr[0]
    assert a.conversations[0][0][1] == (
        "Sure,the left box:[SEG], left box:[SEG], both boxes:[SEG], the cat:[REJ], a dot:[REJ].")
    assert a.conversations[0][0][0] == ("<image>\n What are the left box, left box, both boxes, the cat, a dotin "
                                        "this image? Please output segmentation masks.")
    assert tr[1].conversations[0][0][1] == "Sure,the bird:[REJ], a bird:[REJ]."
    with pytest.raises(ValueError, match="mode"):
        GRefCOCOEvalDataset(hand, "val", mode="sampled")


def test_build_eval_dataset_covers_all_datasets(hand, tmp_path):
    cfg = ReadConfig()
    cfg.eval.dataset, cfg.eval.split = "grefcoco", "val"
    ds = build_eval_dataset(cfg, hand)
    assert isinstance(ds, GRefCOCOEvalDataset) and ds.mode == "teacher_forced" and len(ds) == 1
    cfg.eval.protocol = "generate"
    assert build_eval_dataset(cfg, hand).mode == "generate"
    cfg.data.root = str(hand)
    assert build_eval_dataset(cfg).split == "val"


# ------------------------------------------------------------------------------------------ fail-early checks
def test_check_eval_split_and_train_sources(hand):
    cfg = ReadConfig()
    cfg.eval.dataset, cfg.eval.split = "grefcoco", "testA"
    check_eval_split(cfg, hand)
    img = hand.joinpath(*IMG_DIR)
    shutil.rmtree(img)
    with pytest.raises(DataError, match=r"eval.dataset: grefcoco, eval.split: testA needs \S+/train2014$"):
        check_eval_split(cfg, hand)
    (hand / "refer_seg/grefcoco/grefs(unc).json").unlink()
    with pytest.raises(DataError) as e:
        check_eval_split(cfg, hand)
    assert f"{hand}/refer_seg/grefcoco/grefs(unc).json" in str(e.value)

    cfg = ReadConfig()
    cfg.data.datasets, cfg.data.sample_rates = ["refer_seg"], [1.0]
    cfg.data.refer_seg_data = ["grefcoco"]
    with pytest.raises(ValueError, match="data.style: gsva"):
        check_train_sources(cfg, hand)
    cfg.data.style = "gsva"
    with pytest.raises(DataError) as e:
        check_train_sources(cfg, hand)
    msg = str(e.value)
    assert f"data.refer_seg_data: grefcoco needs {hand}/refer_seg/grefcoco/grefs(unc).json" in msg
    assert msg.endswith("/train2014")
    img.mkdir(parents=True)
    (hand / "refer_seg/grefcoco/grefs(unc).p").write_bytes(pickle.dumps(hand_refs()))
    check_train_sources(cfg, hand)  # the pickle is accepted in place of the JSON


# ------------------------------------------------------------------------------------------ synthetic writer
def test_synthetic_grefcoco_is_in_the_release_format(tmp_path):
    root = tmp_path / "s"
    counts = write_grefcoco(root, seed=5, n_images=8)
    d = root / "refer_seg" / "grefcoco"
    refs = json.loads((d / "grefs(unc).json").read_text())
    inst = json.loads((d / "instances.json").read_text())
    assert {r["split"] for r in refs} == {"train", "val", "testA", "testB"}
    for split, c in counts.items():
        rs = [r for r in refs if r["split"] == split]
        assert c["refs"] == len(rs) and c["images"] == len({r["image_id"] for r in rs})
        assert c["no_target"] == sum(len(r["sentences"]) for r in rs if r["ann_id"] == [-1])
        assert c["multi_target"] == sum(len(r["sentences"]) for r in rs if len(r["ann_id"]) > 1)
    assert all(isinstance(r["ann_id"], list) for r in refs)
    assert any(r["ann_id"] == [-1] for r in refs) and any(len(r["ann_id"]) >= 3 for r in refs)
    segs = [a["segmentation"] for a in inst["annotations"]]
    rles = [s for s in segs if isinstance(s, dict)]
    assert rles and all(isinstance(s["counts"], list) for s in rles)
    assert any(isinstance(s, list) and any(len(p) == 4 for p in s) for s in segs)  # 2-point parts to skip
    imgs = root.joinpath(*IMG_DIR)
    for im in inst["images"]:
        data = (imgs / im["file_name"]).read_bytes()
        assert data[:2] == b"\xff\xd8" and cv2.imread(str(imgs / im["file_name"])).shape[:2] == (
            im["height"], im["width"])
    # the crowd RLEs decode to exactly what the counts say (checked by our own loop)
    g = GRefCOCO(root)
    for a in inst["annotations"]:
        if isinstance(a["segmentation"], dict):
            m = g.ann_mask(a["id"])
            assert rle_counts(m) == a["segmentation"]["counts"]
    # an image whose refs are all no-target exists in train (GSVA re-draws it)
    by_img: dict[int, list] = {}
    for r in refs:
        by_img.setdefault(r["image_id"], []).append(r)
    assert any(all(r["ann_id"] == [-1] for r in rs) and rs[0]["split"] == "train" for rs in by_img.values())
    # deterministic
    write_grefcoco(tmp_path / "t", seed=5, n_images=8)
    assert (tmp_path / "t/refer_seg/grefcoco/grefs(unc).json").read_bytes() == (d / "grefs(unc).json").read_bytes()
