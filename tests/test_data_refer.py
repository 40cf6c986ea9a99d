"""REFER reading: the no-globals unpickler, splitBy rule, masks, the three ReferSeg training keys and the
per-image evaluation set, on synthetic data written in the real on-disk format."""

from __future__ import annotations

import copyreg
import json
import os
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from read.data import templates as T
from read.data.base import DataError
from read.data.refer import ReferAnnotations, default_split_by, split_matches
from read.data.refer_seg import ReferSegDataset, ReferSegEvalDataset
from read.data.safe_pickle import load_pickle
from read.data.synth.refer import synth_scenes, write_refer

SEED = 3
N_IMAGES = 12


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("refer")
    write_refer(r, seed=SEED, n_images=N_IMAGES)
    return r


def _refs(root: Path, ds: str) -> list[dict]:
    # Our own synthetic file: a plain pickle.load is fine here and independent of the reader under test.
    with open(root / "refer_seg" / ds / f"refs({default_split_by(ds)}).p", "rb") as f:
        return pickle.load(f)


def _formatted(templates: list[str], **kw) -> set[str]:
    return {t.format(**kw) for t in templates}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


# ------------------------------------------------------------------------------------------ safe pickle
class _Evil:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    p = tmp_path / "refs(unc).p"
    p.write_bytes(pickle.dumps([{"ref_id": 1, "x": _Evil(f"touch {marker}")}], protocol=protocol))
    with pytest.raises(DataError) as e:
        load_pickle(p)
    assert str(p) in str(e.value) and "system" in str(e.value)
    assert not marker.exists()


def test_other_global_routes_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.p"
    # protocol-0 INST opcode (instantiates os.system('touch ...')) and a GLOBAL to builtins.eval
    for payload in (
        f"(S'touch {marker}'\nios\nsystem\n.".encode(),
        f'cbuiltins\neval\n(S\'open("{marker}", "w")\'\ntR.'.encode(),
    ):
        p.write_bytes(payload)
        with pytest.raises(DataError, match="refused to unpickle global"):
            load_pickle(p)
        assert not marker.exists()
    # copyreg extension opcode (EXT1) also goes through find_class
    copyreg.add_extension("posix", "system", 240)
    try:
        p.write_bytes(b"\x80\x02\x82\xf0.")
        with pytest.raises(DataError, match="posix.system"):
            load_pickle(p)
    finally:
        copyreg.remove_extension("posix", "system", 240)


def test_legit_refer_pickles_load(tmp_path):
    refs = [
        {
            "ref_id": 7,
            "ann_id": 70,
            "image_id": 3,
            "split": "testA",
            "category_id": 1,
            "sent_ids": [1, 2],
            "file_name": "COCO_train2014_000000000003_70.jpg",
            "sentences": [
                {"sent": "man left", "sent_id": 1, "tokens": ["man", "left"], "raw": "Man left."},
                {"sent": "guy", "sent_id": 2, "tokens": ["guy"], "raw": "guy", "exist": False, "score": 0.5},
            ],
        }
    ]
    p = tmp_path / "refs.p"
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        p.write_bytes(pickle.dumps(refs, protocol=protocol))
        assert load_pickle(p) == refs
    # A Python-2 protocol-2 pickle: str values are SHORT_BINSTRING ('U') bytes, one of them Latin-1.
    py2 = b"\x80\x02]q\x00}q\x01(U\x04sentq\x02U\x04caf\xe9q\x03U\x06ref_idq\x04K\x07ua."
    p.write_bytes(py2)
    assert load_pickle(p) == [{"sent": "café", "ref_id": 7}]
    p.write_bytes(py2.replace(b"caf\xe9", b"cafe"))
    assert load_pickle(p) == [{"sent": "cafe", "ref_id": 7}]


def test_pickle_file_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_pickle(tmp_path / "nope.p")
    p = tmp_path / "trunc.p"
    p.write_bytes(pickle.dumps([{"a": 1}] * 10, protocol=2)[:-5])
    with pytest.raises(DataError, match=str(p).replace("(", r"\(").replace(")", r"\)")):
        load_pickle(p)


# ------------------------------------------------------------------------------------------ REFER reader
def test_split_by_table():
    assert default_split_by("refclef") == "unc"
    for ds in ("refcocog", "R-refcocog"):
        assert default_split_by(ds) == "umd_exclude_unified"
    for ds in ("fprefcoco", "fprefcoco+", "fprefcocog"):
        assert default_split_by(ds) == "berkeley_exclude_unified"
    for ds in ("refcoco", "refcoco+", "R-refcoco", "R-refcoco+"):
        assert default_split_by(ds) == "unc_exclude_unified"


def test_split_rule():
    assert split_matches("testA", "testA") and split_matches("testAB", "testB")
    assert split_matches("testA", "test") and split_matches("test", "test")
    assert not split_matches("testB", "testA") and not split_matches("train", "val")


def test_layout_and_lookups(root):
    ann = ReferAnnotations(root, "refcoco")
    assert ann.refs_path == root / "refer_seg" / "refcoco" / "refs(unc_exclude_unified).p"
    assert ann.splits == ["testA", "testB", "train", "val"]
    img = ann.image_ids("val")[0]
    p = ann.image_path(img)
    assert p.parent == root / "refer_seg/images/mscoco/images/train2014" and p.is_file()
    assert all(r["image_id"] == img for r in ann.refs_by_image(img))
    both = ann.refs_by_split("testA") + ann.refs_by_split("testB")
    assert sorted(r["ref_id"] for r in ann.refs_by_split("test")) == sorted(r["ref_id"] for r in both)
    clef = ReferAnnotations(root, "refclef")
    assert clef.refs_path.name == "refs(unc).p"
    assert clef.image_path(clef.image_ids()[0]).parent == root / "refer_seg/images/saiapr_tc-12"
    s = ann.sentences(ann.refs_by_split("train")[0])[0]
    assert {"sent", "sent_id", "tokens", "raw"} <= set(s)


def test_polygon_masks_match_independent_fillpoly(root):
    """pycocotools decodes COCO polygons in continuous coordinates, sampling pixel centres (i + 0.5); cv2.fillPoly
    treats integer vertices as pixel centres and fills every pixel an edge touches. The writer converts the drawn
    outline to COCO coordinates (+0.5, grown by half a pixel); what remains are a few pixels at sharp tips and
    along slanted edges, hence IoU > 0.95 rather than equality."""
    ann = ReferAnnotations(root, "refcoco")
    n = 0
    for sc in synth_scenes(SEED, N_IMAGES):
        h, w = sc.image.shape[:2]
        for shape, ann_id in zip(sc.shapes, sc.ann_ids, strict=True):
            ref = np.zeros((h, w), np.uint8)
            cv2.fillPoly(ref, [np.round(shape.polygon).astype(np.int32)], 1)
            m = ann.ann_to_mask(ann_id)
            assert m.shape == (h, w) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
            assert _iou(m, ref) > 0.95, (ann_id, shape.kind, _iou(m, ref))
            assert _iou(m, shape.mask) > 0.95
            n += 1
    assert n >= 2 * N_IMAGES


def _uncompressed_rle(m: np.ndarray) -> dict:
    flat = m.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(m.shape), "counts": counts}


@pytest.fixture()
def handmade(tmp_path) -> Path:
    """One 20x30 image with polygon / multi-part / RLE annotations and gRefCOCO-style list ann_ids."""
    h, w = 20, 30
    d = tmp_path / "refer_seg" / "refcoco"
    d.mkdir(parents=True)
    imgdir = tmp_path / "refer_seg/images/mscoco/images/train2014"
    imgdir.mkdir(parents=True)
    cv2.imwrite(str(imgdir / "a.jpg"), np.full((h, w, 3), 100, np.uint8))
    box = np.zeros((h, w), np.uint8)
    box[2:8, 3:12] = 1
    blob = np.zeros((h, w), np.uint8)
    blob[10:18, 15:28] = 1
    blob[12, 2] = 1
    rle = coco_mask.encode(np.asfortranarray(blob))
    anns = [
        # two overlapping parts: [4,4]-[14,14] and [10,4]-[20,14] (continuous coords)
        {
            "id": 1,
            "image_id": 1,
            "segmentation": [[4, 4, 14, 4, 14, 14, 4, 14], [10, 4, 20, 4, 20, 14, 10, 14]],
        },
        {"id": 2, "image_id": 1, "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")}},
        {"id": 3, "image_id": 1, "segmentation": _uncompressed_rle(box)},
        {"id": 4, "image_id": 1, "segmentation": [_uncompressed_rle(box), _uncompressed_rle(blob)]},
        {"id": 5, "image_id": 1, "segmentation": []},
    ]
    inst = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": h, "width": w}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}],
    }
    (d / "instances.json").write_text(json.dumps(inst))
    refs = [
        {
            "ref_id": i,
            "ann_id": a,
            "image_id": 1,
            "split": "train",
            "category_id": 1,
            "sent_ids": [i],
            "file_name": "a_1.jpg",
            "sentences": [{"sent": f"thing {i}", "sent_id": i, "tokens": [], "raw": ""}],
        }
        for i, a in enumerate([1, 2, 3, [2, 3], [-1]], start=1)
    ]
    (d / "refs(unc_exclude_unified).p").write_bytes(pickle.dumps(refs, protocol=2))
    np.save(tmp_path / "box.npy", box)
    np.save(tmp_path / "blob.npy", blob)
    return tmp_path


def test_rle_multipart_and_list_ann_ids(handmade):
    ann = ReferAnnotations(handmade, "refcoco")
    box, blob = np.load(handmade / "box.npy"), np.load(handmade / "blob.npy")
    # multi-part polygon: parts summed as uint8 (official), 2 where they overlap
    m = ann.ann_to_mask(1)
    assert m.dtype == np.uint8 and m.max() == 2
    assert (m == 2).sum() == 4 * 10 and (m > 0).sum() == 16 * 10
    assert set(np.unique(ann.target_mask(1))) == {0, 1}
    # RLE: compressed string counts, uncompressed list counts, list of RLEs (summed)
    np.testing.assert_array_equal(ann.ann_to_mask(2), blob)
    np.testing.assert_array_equal(ann.ann_to_mask(3), box)
    np.testing.assert_array_equal(ann.ann_to_mask(4), box + blob)
    np.testing.assert_array_equal(ann.ann_to_mask(5), np.zeros_like(box))
    # list ann_id: OR-combined; [-1]: no target
    np.testing.assert_array_equal(ann.target_mask([2, 3], image_id=1), (box | blob).astype(np.uint8))
    assert (
        ann.target_mask([-1], image_id=1).shape == box.shape and ann.target_mask([-1], image_id=1).sum() == 0
    )
    with pytest.raises(DataError, match="-1"):
        ann.target_mask([-1, 2], image_id=1)
    with pytest.raises(DataError, match="annotation id 99"):
        ann.ann_to_mask(99)
    # the datasets see binary masks and a zero mask for the no-target ref
    ev = ReferSegEvalDataset(handmade, "refcoco", "train")
    s = ev[0]
    assert s.masks.shape == (5, 20, 30) and set(np.unique(s.masks)) == {0, 1}
    np.testing.assert_array_equal(s.masks[3], (box | blob))
    assert s.masks[4].sum() == 0


# ------------------------------------------------------------------------------------------ training draws
def _check_draw(s, refs_by_sent: dict[int, tuple[dict, dict]], ann: ReferAnnotations, fp: bool):
    assert len(s.conversations) == len(s.exists) == len(s.meta["sent_ids"]) <= 3
    assert len(set(s.meta["sent_ids"])) == len(s.meta["sent_ids"])  # without replacement
    h, w = s.image.shape[:2]
    n_seg = 0
    k = 0
    for conv, exists, sid in zip(s.conversations, s.exists, s.meta["sent_ids"], strict=True):
        ref, sent = refs_by_sent[sid]
        assert ref["image_id"] == s.meta["image_id"] and ref["split"] == "train"
        ((q, a),) = conv
        cls = sent["sent"].lower()
        assert q in _formatted(T.SHORT_QUESTION_TEMPLATE, class_name=cls) and q.startswith("<image>\n")
        if exists:
            assert a in _formatted(T.SHORT_ANSWER_TEMPLATE, class_name=cls)
            assert a.count("[SEG]") == 1
            np.testing.assert_array_equal(
                s.masks[k], ann.target_mask(ref["ann_id"], image_id=ref["image_id"])
            )
            k += 1
        elif fp:
            assert a in _formatted(T.CORRECT_ANSWER_TEMPLATE, class_name=cls, gt_name=sent["gt_sent"].lower())
        else:
            assert a in _formatted(T.NEG_ANSWER_TEMPLATE, class_name=cls)
        n_seg += a.count("[SEG]")
    assert s.masks.shape == (n_seg, h, w) and s.masks.dtype == np.uint8
    assert n_seg == sum(s.exists)


@pytest.mark.parametrize(
    "datasets,key,fp",
    [
        (("refcoco", "refcoco+", "refcocog", "refclef"), "refer_seg", False),
        (("R-refcoco",), "neg_refer_seg", False),
        (("fprefcoco",), "correct_refer_seg", True),
    ],
)
def test_training_draws(root, datasets, key, fp):
    ds = ReferSegDataset(root, "||".join(datasets))
    assert ds.name == key and len(ds) == sum(len(a.image_ids("train")) for a in ds.anns)
    lookups = {}
    for a in ds.anns:
        lookups[a.dataset] = {s["sent_id"]: (r, s) for r in _refs(root, a.dataset) for s in r["sentences"]}
    by_name = {a.dataset: a for a in ds.anns}
    rng = np.random.default_rng(0)
    seen_ds, seen_neg = set(), 0
    for _ in range(40):
        s = ds.sample(rng)
        s.validate()
        _check_draw(s, lookups[s.meta["dataset"]], by_name[s.meta["dataset"]], fp)
        seen_ds.add(s.meta["dataset"])
        seen_neg += s.exists.count(False)
    assert seen_ds == set(datasets)
    if key == "refer_seg":
        assert seen_neg == 0
    else:
        assert seen_neg > 0
    # all randomness from rng; __getitem__ deterministic
    a, b = ds.sample(np.random.default_rng(5)), ds.sample(np.random.default_rng(5))
    assert a.conversations == b.conversations and np.array_equal(a.masks, b.masks)
    assert ds[3].conversations == ds[3].conversations


def test_all_negative_draw_has_empty_masks_at_original_size(root):
    for key in ("R-refcoco", "fprefcoco"):
        ds = ReferSegDataset(root, (key,), num_classes_per_sample=1)
        rng = np.random.default_rng(1)
        for _ in range(200):
            s = ds.sample(rng)
            if s.exists == [False]:
                break
        assert s.exists == [False]
        assert s.masks.shape == (0, *s.image.shape[:2])
        assert "[SEG]" not in s.conversations[0][0][1]


def test_fp_sentence_without_correction_is_an_error(root, tmp_path):
    r = tmp_path / "r"
    shutil.copytree(root / "refer_seg" / "fprefcoco", r / "refer_seg" / "fprefcoco")
    shutil.copytree(root / "refer_seg" / "images", r / "refer_seg" / "images")
    refs = _refs(root, "fprefcoco")
    for ref in refs:
        for s in ref["sentences"]:
            s.pop("gt_sent")
    (r / "refer_seg/fprefcoco/refs(berkeley_exclude_unified).p").write_bytes(pickle.dumps(refs))
    ds = ReferSegDataset(r, ("fprefcoco",), num_classes_per_sample=10)
    with pytest.raises(DataError, match="gt_sent"):
        ds.sample(np.random.default_rng(0))


# ------------------------------------------------------------------------------------------ evaluation
def test_eval_items_cover_all_sentences(root):
    ev = ReferSegEvalDataset(root, "refcoco", "val")
    refs = [r for r in _refs(root, "refcoco") if r["split"] == "val"]
    assert ev.image_ids == sorted({r["image_id"] for r in refs})
    total = 0
    for i in range(len(ev)):
        s = ev[i]
        mine = [r for r in refs if r["image_id"] == ev.image_ids[i]]
        expected = [x["sent"] for r in mine for x in r["sentences"]]
        assert s.meta["sentences"] == expected
        assert s.masks.shape[0] == len(expected) == len(s.conversations)
        for conv, text in zip(s.conversations, expected, strict=True):
            ((q, a),) = conv
            assert q in _formatted(T.SHORT_QUESTION_TEMPLATE, class_name=text.lower())
            assert a in _formatted(T.SHORT_ANSWER_TEMPLATE, class_name=text.lower())
        total += len(expected)
    assert total == sum(len(r["sentences"]) for r in refs)


def test_eval_templates_stable_across_order_and_subsets(root):
    a = ReferSegEvalDataset(root, "refcocog", "train")
    b = ReferSegEvalDataset(root, "refcocog", "train")
    forward = [a[i].conversations for i in range(len(a))]
    backward = [b[i].conversations for i in reversed(range(len(b)))][::-1]
    assert forward == backward
    assert b[2].conversations == forward[2]  # a single item alone
    # the documented rule: rng([template_seed, image_id, sentence index]), question then answer
    s = a[1]
    for j, conv in enumerate(s.conversations):
        rng = np.random.default_rng([42, s.meta["image_id"], j])
        cls = s.meta["sentences"][j].lower()
        assert conv[0][0] == T.choose(T.SHORT_QUESTION_TEMPLATE, rng).format(class_name=cls)
        assert conv[0][1] == T.choose(T.SHORT_ANSWER_TEMPLATE, rng).format(class_name=cls)
    other = ReferSegEvalDataset(root, "refcocog", "train", template_seed=7)
    assert [other[i].conversations for i in range(len(other))] != forward
    assert len({c[0][0] for conv in forward for c in conv}) > 3  # templates do vary


def test_eval_fp_teacher_forced_and_generate(root):
    tf = ReferSegEvalDataset(root, "fprefcoco", "val")
    gen = ReferSegEvalDataset(root, "fprefcoco", "val", mode="generate")
    assert len(tf) == len(gen)
    seen_false = 0
    for i in range(len(tf)):
        s, g = tf[i], gen[i]
        assert s.exists == g.exists and len(s.exists) == len(s.conversations)
        assert s.masks.shape[0] == len(
            s.exists
        )  # include_nonexist: a [SEG] and a zero mask for every sentence
        for k, e in enumerate(s.exists):
            if not e:
                assert s.masks[k].sum() == 0
                seen_false += 1
            else:
                assert s.masks[k].sum() > 0
        assert g.masks is None and all(c[0][1] is None for c in g.conversations)
        assert [c[0][0] for c in g.conversations] == [c[0][0] for c in s.conversations]
        np.testing.assert_array_equal(g.meta["gt_masks"], s.masks)
    assert seen_false > 0


# ------------------------------------------------------------------------------------------ errors, synth
def test_missing_files_and_splits_name_the_path(root, tmp_path):
    with pytest.raises(DataError) as e:
        ReferAnnotations(tmp_path, "refcoco+")
    assert str(tmp_path / "refer_seg" / "refcoco+" / "refs(unc_exclude_unified).p") in str(e.value)
    r = tmp_path / "r"
    shutil.copytree(root / "refer_seg" / "refcoco", r / "refer_seg" / "refcoco")
    (r / "refer_seg/refcoco/instances.json").unlink()
    with pytest.raises(DataError) as e:
        ReferAnnotations(r, "refcoco")
    assert str(r / "refer_seg/refcoco/instances.json") in str(e.value)
    with pytest.raises(DataError) as e:
        ReferSegEvalDataset(root, "refcoco", "testC")
    assert "testC" in str(e.value) and "refs(unc_exclude_unified).p" in str(e.value)
    with pytest.raises(DataError, match="split 'testA'"):
        ReferSegDataset(root, ("refcocog",), split="testA")
    # images missing on disk: named when the item is read
    shutil.copy(root / "refer_seg/refcoco/instances.json", r / "refer_seg/refcoco/instances.json")
    ev = ReferSegEvalDataset(r, "refcoco", "val")
    with pytest.raises(DataError) as e:
        ev[0]
    assert str(r / "refer_seg/images/mscoco/images/train2014") in str(e.value)
    # a malicious refs pickle in place of the real one
    (r / "refer_seg/refcoco/refs(unc_exclude_unified).p").write_bytes(pickle.dumps(_Evil("true")))
    with pytest.raises(DataError, match="system"):
        ReferAnnotations(r, "refcoco")


def test_synth_is_deterministic_and_complete(root, tmp_path):
    counts = write_refer(tmp_path, seed=SEED, n_images=N_IMAGES)
    for ds in ("refcoco", "refcoco+", "refcocog", "refclef", "fprefcoco", "R-refcoco"):
        rel = Path("refer_seg") / ds
        name = f"refs({default_split_by(ds)}).p"
        assert (tmp_path / rel / name).read_bytes() == (root / rel / name).read_bytes()
        assert (tmp_path / rel / "instances.json").read_bytes() == (
            root / rel / "instances.json"
        ).read_bytes()
        splits = set(counts[ds])
        assert splits == (
            {"train", "val", "test"} if ds == "refcocog" else {"train", "val", "testA", "testB"}
        )
        assert all(v["images"] >= 1 and v["sentences"] >= v["refs"] >= 1 for v in counts[ds].values())
        assert sum(v["images"] for v in counts[ds].values()) == N_IMAGES
    jpgs = sorted((tmp_path / "refer_seg/images").rglob("*.jpg"))
    assert len(jpgs) == 2 * N_IMAGES
    assert all(j.read_bytes() == (root / j.relative_to(tmp_path)).read_bytes() for j in jpgs)
    # sentence fields of the variants
    fp = [s for r in _refs(root, "fprefcoco") for s in r["sentences"]]
    assert all("is_false_premise" in s and "gt_sent" in s for s in fp) and any(
        s["is_false_premise"] for s in fp
    )
    rr = [s for r in _refs(root, "R-refcoco") for s in r["sentences"]]
    assert all("exist" in s for s in rr) and any(not s["exist"] for s in rr)
    plus = [s["sent"] for r in _refs(root, "refcoco+") for s in r["sentences"]]
    assert not any(w in t for t in plus for w in ("left", "right", "above", "below", "top"))
