"""GSVA-style training data: the packaged GSVA templates (entry by entry against strings copied here by hand from
GSVA's model/llava/constants.py), the referring draw ([SEG]/[REJ] slots, masks only for [SEG] in answer order,
all-[REJ] images re-drawn), the semantic and ReasonSeg draws, and the catalog's ``data.style: gsva``.

Answers are checked against strings built here from the hand-written templates, with the expressions recovered
from the question text (they contain no comma), never from the dataset's own metadata.
"""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest
from test_data_grefcoco import M101, M102, hand_refs, make_hand_root

from read.config import ReadConfig
from read.data import templates as T
from read.data.base import DataError
from read.data.catalog import build_component, check_train_sources
from read.data.gsva import GSVAReferSegDataset, GSVASemSegDataset
from read.data.gsva_reason import GSVAReasonSegDataset
from read.data.mixture import MixtureDataset
from read.data.reason_seg_anno import load_annotation
from read.data.refer import default_split_by
from read.data.vqa import VQADataset

# ---------------------------------------------------------------- GSVA constants.py, copied by hand
Q4 = [
    "<image>\nCan you segment {class_name} in this image?",
    "<image>\nPlease segment {class_name} in this image.",
    "<image>\nWhat are {class_name} in this image? Please respond with segmentation masks.",
    "<image>\nWhat are {class_name} in this image? Please output segmentation masks.",
]
START = ["The segmentation results are", "Sure, they are", "Sure,", "Sure,", "Sure,"]
TPL = ["{class_name} [SEG]", "{class_name}:[SEG]", "the mask of {class_name} is [SEG]",
       "the segmentation of {class_name} is [SEG]", "the referred {class_name} is [SEG]"]
END = [".", ".", ".", ".", "."]
ANSWERS = ["It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].", "Sure, the segmentation result is [SEG].", "[SEG]."]
LISA_SHORT = [
    "<image>\nCan you segment the {class_name} in this image?",
    "<image>\nPlease segment the {class_name} in this image.",
    "<image>\nWhat is {class_name} in this image? Please respond with segmentation mask.",
    "<image>\nWhat is {class_name} in this image? Please output segmentation mask.",
]
LISA_LONG = ["<image>\n{sent} Please respond with segmentation mask.", "<image>\n{sent} Please output segmentation mask."]
EXPLAIN = ["Please output segmentation mask and explain why.", "Please output segmentation mask and explain the reason.",
           "Please output segmentation mask and give some explaination."]


def test_gsva_templates_entry_by_entry():
    assert T.GSVA_SHORT_QUESTION_LIST_MODE4 == Q4
    assert T.GSVA_ANSWER_LIST_MODE4_START == START
    assert T.GSVA_ANSWER_LIST_MODE4_TEMPLATE == TPL
    assert T.GSVA_ANSWER_LIST_MODE4_END == END
    assert T.GSVA_ANSWER_LIST == ANSWERS
    assert T.GSVA_SHORT_QUESTION_LIST == LISA_SHORT
    assert T.GSVA_LONG_QUESTION_LIST == LISA_LONG
    assert T.GSVA_EXPLANATORY_QUESTION_LIST == EXPLAIN
    assert T.GREFCOCO_EVAL_QUESTION_PREFIX == "<image>\n What are "
    assert T.GREFCOCO_EVAL_QUESTION_SUFFIX == "in this image? Please output segmentation masks."
    assert (T.GREFCOCO_EVAL_ANSWER_PREFIX, T.GREFCOCO_EVAL_ANSWER_SUFFIX) == ("Sure,", ".")


def expressions_of(question: str) -> list[str]:
    """The expressions a MODE4 question lists (any of the four forms)."""
    for q in Q4:
        pre, post = q.split("{class_name}")
        if question.startswith(pre) and question.endswith(post):
            return question[len(pre): len(question) - len(post)].split(", ")
    raise AssertionError(f"not a MODE4 question: {question!r}")


def expected_answers(texts: list[str], present: list[bool], sep: str = ", ") -> set[str]:
    out = set()
    for c in range(5):
        slots = [TPL[c].format(class_name=t) if p else TPL[c].format(class_name=t).replace("[SEG]", "[REJ]")
                 for t, p in zip(texts, present, strict=True)]
        out.add(START[c] + " " + sep.join(slots) + END[c])
    return out


# ---------------------------------------------------------------- referring draw (hand-made gRefCOCO)
@pytest.fixture()
def hand(tmp_path):
    return make_hand_root(tmp_path / "hand")


def test_all_sentences_slots_and_masks_in_order(hand):
    ds = GSVAReferSegDataset(hand, ("grefcoco",), num_classes_per_sample=10)
    texts = ["the left box", "left box", "both boxes", "the cat", "a dot"]  # "left box." loses its '.'
    present = [True, True, True, False, False]
    literal = {  # two of the five answers written out in full
        "The segmentation results are the left box [SEG], left box [SEG], both boxes [SEG], the cat [REJ], "
        "a dot [REJ].",
        "Sure, the mask of the left box is [SEG], the mask of left box is [SEG], the mask of both boxes is [SEG], "
        "the mask of the cat is [REJ], the mask of a dot is [REJ].",
    }
    answers_seen, questions_seen, redrawn = set(), set(), 0
    for seed in range(120):
        s = ds.sample(np.random.default_rng(seed))
        (q, a), = s.conversations[0]
        assert len(s.conversations) == 1
        assert expressions_of(q) == texts  # only image 11 comes back: image 14 (all no-target) is re-drawn
        assert a in expected_answers(texts, present)
        answers_seen.add(a)
        questions_seen.add(q)
        assert s.exists == present and s.meta["slots"] == ["seg", "seg", "seg", "rej", "rej"]
        assert s.masks.dtype == np.uint8 and s.masks.shape == (3, 10, 12)
        for m, want in zip(s.masks, [M101, M101, M101 | M102], strict=True):
            np.testing.assert_array_equal(m, want)
        redrawn += s.meta["redraws"] > 0
        s.validate()
    assert len(answers_seen) == 5 and len(questions_seen) == 4 and literal <= answers_seen
    assert redrawn > 0
    # the deterministic item of image 14 is all [REJ], with no mask
    item = ds[1]
    assert item.masks.shape == (0, 6, 6) and item.exists == [False, False] and item.meta["all_rej"]
    assert item.conversations[0][0][1].count("[REJ]") == 2 and "[SEG]" not in item.conversations[0][0][1]


def test_sampled_subsets_keep_masks_aligned_with_seg_slots(hand):
    ds = GSVAReferSegDataset(hand, "grefcoco", num_classes_per_sample=2)
    want = {"the left box": M101, "left box": M101, "both boxes": M101 | M102, "the cat": None, "a dot": None}
    subsets = set()
    for seed in range(150):
        s = ds.sample(np.random.default_rng([seed, 1]))
        (q, a), = s.conversations[0]
        texts = expressions_of(q)
        assert len(texts) == 2 and len(set(texts)) == 2
        present = [want[t] is not None for t in texts]
        assert any(present)  # an all-[REJ] pair ("the cat", "a dot") is never returned
        assert a in expected_answers(texts, present)
        seg = [want[t] for t in texts if want[t] is not None]
        assert s.masks.shape[0] == a.count("[SEG]") == len(seg)
        for m, w in zip(s.masks, seg, strict=True):
            np.testing.assert_array_equal(m, w)
        subsets.add(frozenset(texts))
    assert frozenset({"the cat", "a dot"}) not in subsets and len(subsets) == 9


def test_only_no_target_images_raise_after_max_redraw(tmp_path):
    refs = [r for r in hand_refs() if r["image_id"] in (12, 14)]  # train: only image 14 (no targets)
    root = make_hand_root(tmp_path / "nt", refs)
    ds = GSVAReferSegDataset(root, ("grefcoco",), max_redraw=4)
    with pytest.raises(DataError, match=r"grefs\(unc\)\.json image 14: 4 draws in a row gave only \[REJ\]"):
        ds.sample(np.random.default_rng(0))


def test_refcoco_family_and_r_refcoco_in_gsva_style(tmp_path):
    from read.data.synth.refer import write_refer

    root = tmp_path / "r"
    write_refer(root, seed=4, datasets=("refcoco", "R-refcoco"), n_images=6)
    with open(root / "refer_seg/R-refcoco" / f"refs({default_split_by('R-refcoco')}).p", "rb") as f:
        exist = {(r["image_id"], s["sent"].strip().strip(".")): bool(s["exist"])
                 for r in pickle.load(f) for s in r["sentences"]}
    plain = GSVAReferSegDataset(root, ("refcoco",), num_classes_per_sample=3)
    neg = GSVAReferSegDataset(root, ("R-refcoco",), num_classes_per_sample=3, name="neg_refer_seg")
    n_rej = 0
    for seed in range(30):
        s = plain.sample(np.random.default_rng(seed))
        (q, a), = s.conversations[0]
        texts = expressions_of(q)  # the synthetic refCOCO sentences are lower case already
        assert a in expected_answers(texts, [True] * len(texts)) and s.masks.shape[0] == len(texts)
        s = neg.sample(np.random.default_rng(seed))
        (q, a), = s.conversations[0]
        texts = expressions_of(q)
        image_id = int(s.name.rsplit("_", 1)[1][:-4])  # .../COCO_train2014_<id:012d>.jpg
        present = [exist[(image_id, t)] for t in texts]
        assert a in expected_answers(texts, present) and s.masks.shape[0] == sum(present)
        assert all(m.any() for m in s.masks)
        n_rej += present.count(False)
    assert n_rej > 0


# ---------------------------------------------------------------- semantic segmentation
@pytest.fixture(scope="module")
def sem_root(tmp_path_factory):
    from read.data.synth.sem_seg import write_sem_seg

    root = tmp_path_factory.mktemp("gsva_sem")
    write_sem_seg(root, seed=3, num_images=3)
    return root


def test_sem_seg_packs_classes_joined_without_space(sem_root):
    ds = GSVASemSegDataset(sem_root, ("ade20k",), num_classes_per_sample=2)
    classes = json.loads((sem_root / "ade20k/ade20k_classes.json").read_text())
    for seed in range(20):
        s = ds.sample(np.random.default_rng(seed))
        (q, a), = s.conversations[0]
        names = expressions_of(q)
        assert a in expected_answers(names, [True] * len(names), sep=",")
        assert ", " not in a.split(" ", 3)[-1].replace("Sure, ", "")  # slots joined by "," alone
        stem = s.meta["image_path"].rsplit("/", 1)[1][:-4]
        raw = cv2.imread(str(sem_root / "ade20k/annotations/training" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert s.masks.shape[0] == len(names) and s.exists == [True] * len(names)
        for m, name in zip(s.masks, names, strict=True):
            want = (raw == classes.index(name) + 1).astype(np.uint8)
            want[raw == 0] = 255  # ADE20K's unlabelled pixels stay ignore
            np.testing.assert_array_equal(m, want)
    two = [s for s in (ds.sample(np.random.default_rng(k)) for k in range(20)) if s.masks.shape[0] == 2]
    assert two, "no draw packed two classes"
    (q, a), = two[0].conversations[0]
    n1, n2 = expressions_of(q)
    assert a in {f"The segmentation results are {n1} [SEG],{n2} [SEG].", f"Sure, they are {n1}:[SEG],{n2}:[SEG].",
                 f"Sure, the mask of {n1} is [SEG],the mask of {n2} is [SEG].",
                 f"Sure, the segmentation of {n1} is [SEG],the segmentation of {n2} is [SEG].",
                 f"Sure, the referred {n1} is [SEG],the referred {n2} is [SEG]."}


def test_sem_seg_all_sources_validate(sem_root):
    ds = GSVASemSegDataset(sem_root, num_classes_per_sample=3)
    seen = set()
    for seed in range(40):
        s = ds.sample(np.random.default_rng(seed))
        (q, a), = s.conversations[0]
        names = expressions_of(q)
        assert s.masks.shape[0] == len(names) == a.count("[SEG]") and "[REJ]" not in a
        seen.add(s.meta["dataset"])
    assert seen == {"ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary"}
    assert ds[0].masks.shape[0] >= 1


# ---------------------------------------------------------------- ReasonSeg (LISA's draw)
@pytest.fixture()
def rs_root(tmp_path):
    from read.data.synth.reason_seg import write_reason_seg

    root = tmp_path / "rs"
    write_reason_seg(root, seed=2, splits={"train": 4})
    return root


def _texts(json_path: str) -> tuple[list[str], bool]:
    d = json.loads(open(json_path, encoding="utf-8").read())
    return d["text"], bool(d["is_sentence"])


def test_reason_seg_plain_and_explanatory_answers(rs_root):
    plain = GSVAReasonSegDataset(rs_root, num_classes_per_sample=2)
    assert plain.explanations == {}
    for seed in range(20):
        s = plain.sample(np.random.default_rng(seed))
        texts, is_sentence = _texts(s.meta["json_path"])
        assert len(s.conversations) == min(2, len(texts))
        h, w = s.image.shape[:2]
        gt = load_annotation(s.meta["json_path"], h, w).mask
        for (q, a), in s.conversations:
            forms = ([t.format(sent=x) for t in LISA_LONG for x in texts] if is_sentence
                     else [t.format(class_name=x.lower()) for t in LISA_SHORT for x in texts])
            assert q in forms and a in ANSWERS
        assert s.masks.shape[0] == len(s.conversations) and all((m == gt).all() for m in s.masks)

    images = sorted((rs_root / "reason_seg/ReasonSeg/train").glob("*.jpg"))
    expl = rs_root / "reason_seg/ReasonSeg/explanatory/train.json"
    expl.parent.mkdir(parents=True)
    expl.write_text(json.dumps([{"image": p.name, "query": "q", "outputs": "Because it is red."} for p in images]))
    always = GSVAReasonSegDataset(rs_root, num_classes_per_sample=2, explanatory=1.0)
    s = always.sample(np.random.default_rng(0))
    texts, _ = _texts(s.meta["json_path"])
    assert len(s.conversations) == min(2, len(texts))
    for (q, a), in s.conversations:
        assert a == "Because it is red." and q.startswith("<image>\n") and q[len("<image>\n"):] in texts
    assert s.masks.shape == (0, *s.image.shape[:2])
    never_text = GSVAReasonSegDataset(rs_root, num_classes_per_sample=2, explanatory=0.0)
    kinds = set()
    for seed in range(30):
        s = never_text.sample(np.random.default_rng(seed))
        texts, _ = _texts(s.meta["json_path"])
        for (q, a), in s.conversations:
            if a.endswith(" Because it is red."):
                assert a[: -len(" Because it is red.")] in ANSWERS
                assert q in {"<image>\n" + t + " " + e for t in texts for e in EXPLAIN}
                kinds.add(1)
            else:
                assert a in ANSWERS
                kinds.add(0)
        assert s.masks.shape[0] == len(s.conversations)
    assert kinds == {0, 1}
    off = GSVAReasonSegDataset(rs_root, explanatory=-1)
    assert off.explanations == {} and all(a in ANSWERS for (_, a), in off.sample(np.random.default_rng(1)).conversations)


# ---------------------------------------------------------------- catalog
def test_catalog_builds_gsva_components_and_mixture(tmp_path):
    from read.data.synth import write_all

    root = tmp_path / "all"
    write_all(root, seed=6, refer_images=4, sem_seg_images=2, vqa_items=2, grefcoco_images=6)
    cfg = ReadConfig()
    cfg.data.root = str(root)
    cfg.data.style = "gsva"
    cfg.data.refer_seg_data = ["refcoco", "grefcoco"]
    check_train_sources(cfg, root)
    parts = {k: build_component(k, cfg.data) for k in cfg.data.datasets}
    assert isinstance(parts["refer_seg"], GSVAReferSegDataset) and parts["refer_seg"].datasets == ("refcoco", "grefcoco")
    assert isinstance(parts["neg_refer_seg"], GSVAReferSegDataset) and parts["neg_refer_seg"].name == "neg_refer_seg"
    assert isinstance(parts["sem_seg"], GSVASemSegDataset)
    assert isinstance(parts["reason_seg"], GSVAReasonSegDataset) and isinstance(parts["vqa"], VQADataset)
    mix = MixtureDataset(list(parts.values()), cfg.data.sample_rates, 24, seed=1)
    for i in range(len(mix)):
        s = mix[i]
        s.validate()
        for (_, a), in [c[:1] for c in s.conversations]:
            assert a is not None
        if s.meta["dataset"] != "vqa" and "slots" in s.meta:
            assert s.masks.shape[0] == s.meta["slots"].count("seg")
    cfg.data.style = "read"
    with pytest.raises(ValueError, match="grefcoco is read only with data.style: gsva"):
        build_component("refer_seg", cfg.data)

