"""ReasonSeg: annotation rasterisation, bad-input errors, training draws, evaluation items, synthetic writer."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from read.data.base import DataError
from read.data.reason_seg import ReasonSegDataset, ReasonSegEvalDataset, load_annotation
from read.data.synth.reason_seg import write_reason_seg
from read.data.synthetic import COLOURS
from read.data.templates import LONG_ANSWER_TEMPLATE, LONG_QUESTION_TEMPLATE, SHORT_QUESTION_TEMPLATE

# ------------------------------------------------------------------------------------------------ helpers


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _write_json(path: Path, shapes, text=("the thing",), is_sentence=False, **extra) -> Path:
    anno = {
        "shapes": [{"label": lab, "points": pts} for lab, pts in shapes],
        "text": list(text),
        "is_sentence": is_sentence,
    }
    anno.update(extra)
    path.write_text(json.dumps(anno), encoding="utf-8")
    return path


def _write_image(path: Path, h: int, w: int) -> None:
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), 100, np.uint8))
    assert ok
    path.write_bytes(buf.tobytes())


def _make_split(root: Path, split: str, entries: dict[str, dict]) -> Path:
    """entries: stem -> kwargs of _write_json (shapes, text, is_sentence, extra keys); images 12x12."""
    d = root / "reason_seg" / "ReasonSeg" / split
    d.mkdir(parents=True, exist_ok=True)
    for stem, kw in entries.items():
        _write_image(d / f"{stem}.jpg", 12, 12)
        _write_json(d / f"{stem}.json", **kw)
    return d


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rs")
    counts = write_reason_seg(root, seed=0)
    return root, counts


# ------------------------------------------------------------------------------------------------ rasterisation


def test_rasterise_square_with_ignore_and_flag_by_hand(tmp_path):
    # Listed order: ignore (small), flag (big, must be skipped), target (big). Drawn: target then ignore.
    p = _write_json(
        tmp_path / "a.json",
        [
            ("ignore", _square(3, 3, 5, 5)),
            ("flag", [[0, 0], [11, 0], [11, 11]]),
            ("target", _square(1, 1, 8, 8)),
        ],
    )
    a = load_annotation(p, 12, 12)
    expected = np.zeros((12, 12), np.uint8)
    expected[1:9, 1:9] = 1  # closed square, vertices inclusive: rows/cols 1..8
    expected[3:6, 3:6] = 255  # ignore square rows/cols 3..5
    np.testing.assert_array_equal(a.mask, expected)
    assert a.mask.dtype == np.uint8 and a.texts == ["the thing"] and a.is_sentence is False
    assert a.false_premise_qa is None


def test_area_order_small_shape_listed_first_still_wins(tmp_path):
    # Small target listed first, large ignore second: the small one is drawn last and keeps value 1.
    p = _write_json(tmp_path / "a.json", [("target", _square(4, 4, 5, 5)), ("ignore", _square(1, 1, 9, 9))])
    m = load_annotation(p, 12, 12).mask
    expected = np.zeros((12, 12), np.uint8)
    expected[1:10, 1:10] = 255
    expected[4:6, 4:6] = 1
    np.testing.assert_array_equal(m, expected)


def test_area_is_the_clipped_pixel_count_not_the_geometric_area(tmp_path):
    # "ignore" is geometrically huge but covers only columns 0..2 of the 12x12 image (36 px); the target
    # covers 64 px. By pixel count (official tmp_mask.sum()) the ignore strip is smaller, so it is drawn last.
    huge = [[-100, -100], [2, -100], [2, 200], [-100, 200]]
    p = _write_json(tmp_path / "a.json", [("target", _square(1, 1, 8, 8)), ("ignore", huge)])
    m = load_annotation(p, 12, 12).mask
    expected = np.zeros((12, 12), np.uint8)
    expected[1:9, 1:9] = 1
    expected[:, 0:3] = 255
    np.testing.assert_array_equal(m, expected)


def test_equal_areas_first_listed_is_drawn_last(tmp_path):
    # Two 4x4 squares (16 px each) overlapping on rows/cols 2..3: the first listed wins the overlap.
    p = _write_json(tmp_path / "a.json", [("ignore", _square(2, 2, 5, 5)), ("target", _square(0, 0, 3, 3))])
    m = load_annotation(p, 8, 8).mask
    assert (m[2:4, 2:4] == 255).all() and m[0, 0] == 1 and m[1, 3] == 1 and m[5, 5] == 255


def test_vertex_truncation_and_label_matching(tmp_path):
    # Float vertices truncate toward zero (np.int32 cast): 1.9 -> 1, 4.9 -> 4.
    # "Ignore_Region" contains "ignore" (case-insensitive); "FLAG" is skipped; "flagpole" is an ordinary target.
    p = _write_json(
        tmp_path / "a.json",
        [
            ("target", _square(1.9, 1.9, 4.9, 4.9)),
            ("Ignore_Region", _square(8, 8, 9, 9)),
            ("FLAG", _square(0, 0, 11, 11)),
            ("flagpole", _square(8, 0, 9, 1)),
        ],
    )
    m = load_annotation(p, 12, 12).mask
    expected = np.zeros((12, 12), np.uint8)
    expected[1:5, 1:5] = 1
    expected[8:10, 8:10] = 255
    expected[0:2, 8:10] = 1
    np.testing.assert_array_equal(m, expected)


def test_cp1252_fallback(tmp_path):
    p = tmp_path / "latin.json"
    text = json.dumps(
        {
            "shapes": [{"label": "t", "points": _square(1, 1, 3, 3)}],
            "text": ["the café table"],
            "is_sentence": False,
        },
        ensure_ascii=False,
    )
    p.write_bytes(text.encode("cp1252"))
    with pytest.raises(UnicodeDecodeError):
        p.read_bytes().decode("utf-8")
    a = load_annotation(p, 6, 6)
    assert a.texts == ["the café table"]


def test_false_premise_qa_is_parsed(tmp_path):
    fp = [
        ["the blue cat", False, "There is no blue cat, but a red one."],
        ["Who flies?", True, "Nobody flies here."],
    ]
    p = _write_json(tmp_path / "a.json", [("t", _square(1, 1, 3, 3))], false_premise_QA=fp)
    assert load_annotation(p, 6, 6).false_premise_qa == [tuple(x) for x in fp]


def test_two_point_shape_is_a_line_and_one_point_a_pixel(tmp_path, caplog):
    # Official get_mask_from_json: cv2.polylines (thickness 1) + cv2.fillPoly on the int32 points, so a
    # 2-point shape is the segment between its points and a 1-point shape is one pixel.
    import logging

    p = _write_json(
        tmp_path / "line.json",
        [("target", _square(0, 0, 9, 9)), ("ignore_wire", [[2, 5], [7, 5]]), ("dot", [[9.7, 0.2]])],
    )
    with caplog.at_level(logging.WARNING, logger="read"):
        m = load_annotation(p, 12, 12).mask
    expected = np.zeros((12, 12), np.uint8)
    expected[0:10, 0:10] = 1  # the square (100 px) is the largest: drawn first
    expected[5, 2:8] = 255  # the 6-px horizontal segment x = 2..7 on row 5, an ignore label
    expected[0, 9] = 1  # the dot (1 px, truncated to (9, 0)) drawn last
    np.testing.assert_array_equal(m, expected)
    msgs = [r.getMessage() for r in caplog.records]
    assert any(str(p) in x and "'ignore_wire'" in x and "2 point(s)" in x and "line" in x for x in msgs)
    assert any(str(p) in x and "'dot'" in x and "1 point(s)" in x for x in msgs)


def test_two_point_shapes_are_sorted_by_their_pixel_count(tmp_path):
    # Area of a shape = pixels it covers drawn alone, lines included. A 9-px vertical target line inside a
    # 4-px ignore square: the line (9 px) is larger, so it is drawn first and the square overwrites it.
    p = _write_json(tmp_path / "a.json", [("target", [[4, 1], [4, 9]]), ("ignore", _square(3, 4, 4, 5))])
    m = load_annotation(p, 12, 12).mask
    expected = np.zeros((12, 12), np.uint8)
    expected[1:10, 4] = 1
    expected[4:6, 3:5] = 255
    np.testing.assert_array_equal(m, expected)
    # a diagonal 2-point target (Bresenham line from (1, 1) to (4, 4)): 4 pixels on the diagonal
    p = _write_json(tmp_path / "b.json", [("t", [[1, 1], [4, 4]])])
    np.testing.assert_array_equal(load_annotation(p, 6, 6).mask, np.diag([0, 1, 1, 1, 1, 0]).astype(np.uint8))


# ------------------------------------------------------------------------------------------------ bad input

_OK_SHAPES = [{"label": "target", "points": _square(1, 1, 4, 4)}]


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"shapes": [', "malformed JSON"),
        ("[1, 2]", "object"),
        (json.dumps({"text": ["x"], "is_sentence": False}), "'shapes'"),
        (json.dumps({"shapes": _OK_SHAPES, "is_sentence": False}), "'text'"),
        (json.dumps({"shapes": _OK_SHAPES, "text": ["x"]}), "'is_sentence'"),
        (json.dumps({"shapes": _OK_SHAPES, "text": [], "is_sentence": False}), "empty list"),
        (json.dumps({"shapes": _OK_SHAPES, "text": "the dog", "is_sentence": False}), "list of queries"),
        (json.dumps({"shapes": _OK_SHAPES, "text": [""], "is_sentence": False}), "non-empty string"),
        (json.dumps({"shapes": _OK_SHAPES, "text": ["x"], "is_sentence": "yes"}), "true/false"),
        (
            json.dumps({"shapes": [{"label": "t", "points": []}], "text": ["x"], "is_sentence": False}),
            "shapes[0] (label 't'): shape has no point",
        ),
        (
            json.dumps(
                {
                    "shapes": [{"label": "t", "points": [[1, 1], ["a", 4], [4, 1]]}],
                    "text": ["x"],
                    "is_sentence": False,
                }
            ),
            "point 1 is not a numeric",
        ),
        (
            json.dumps(
                {
                    "shapes": [{"label": "t", "points": [[1, 1], [4, None], [4, 1]]}],
                    "text": ["x"],
                    "is_sentence": False,
                }
            ),
            "point 1 is not a numeric",
        ),
        (
            json.dumps(
                {
                    "shapes": [{"label": "t", "points": [[1, 1], [4], [4, 1]]}],
                    "text": ["x"],
                    "is_sentence": False,
                }
            ),
            "point 1 is not a numeric",
        ),
        (
            json.dumps({"shapes": [{"points": _square(1, 1, 4, 4)}], "text": ["x"], "is_sentence": False}),
            "'label' and 'points'",
        ),
        (json.dumps({"shapes": [], "text": ["x"], "is_sentence": False}), "empty mask"),
        (
            json.dumps(
                {
                    "shapes": [{"label": "ignore", "points": _square(1, 1, 4, 4)}],
                    "text": ["x"],
                    "is_sentence": False,
                }
            ),
            "empty mask",
        ),
        (
            json.dumps(
                {
                    "shapes": [{"label": "flag", "points": _square(1, 1, 4, 4)}],
                    "text": ["x"],
                    "is_sentence": False,
                }
            ),
            "empty mask",
        ),
        (
            json.dumps(
                {
                    "shapes": [{"label": "t", "points": _square(20, 20, 30, 30)}],
                    "text": ["x"],
                    "is_sentence": False,
                }
            ),
            "empty mask",
        ),
        (
            json.dumps(
                {
                    "shapes": _OK_SHAPES,
                    "text": ["x"],
                    "is_sentence": False,
                    "false_premise_QA": [["q", "no", "a"]],
                }
            ),
            "false_premise_QA[0]",
        ),
    ],
)
def test_bad_input_raises_data_error_naming_file(tmp_path, content, problem):
    p = tmp_path / "bad_annotation.json"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_annotation(p, 8, 8)
    assert "bad_annotation.json" in str(e.value) and problem in str(e.value)


def test_neither_utf8_nor_cp1252_raises_data_error(tmp_path):
    p = tmp_path / "undecodable.json"
    p.write_bytes(b'{"text": ["\x81\xff"]}')  # 0x81 is undefined in cp1252
    with pytest.raises(DataError, match="undecodable.json"):
        load_annotation(p, 8, 8)


def test_missing_split_and_missing_json(tmp_path):
    with pytest.raises(DataError, match="train"):
        ReasonSegDataset(tmp_path, "train")
    d = _make_split(tmp_path, "train", {"a": {"shapes": [("t", _square(1, 1, 4, 4))]}})
    _write_image(d / "orphan.jpg", 12, 12)
    with pytest.raises(DataError, match="orphan.json"):
        ReasonSegDataset(tmp_path, "train")
    with pytest.raises(DataError, match="orphan.json"):
        ReasonSegEvalDataset(tmp_path, "train")


# ------------------------------------------------------------------------------------------------ training draws


def _allowed_true_questions(texts, is_sentence):
    if is_sentence:
        return {t.format(sent=q) for t in LONG_QUESTION_TEMPLATE for q in texts}
    return {t.format(class_name=q.lower()) for t in SHORT_QUESTION_TEMPLATE for q in texts}


def _check_draw(s, k_max):
    s.validate()
    a = load_annotation(s.meta["json_path"], *s.image.shape[:2])
    n_rows = len(s.conversations)
    assert all(len(conv) == 1 for conv in s.conversations)
    n_seg = sum(ans.count("[SEG]") for conv in s.conversations for _, ans in conv)
    assert n_seg == s.masks.shape[0]
    if s.meta["mode"] == "true_premise":
        assert n_rows == min(len(a.texts), k_max)
        allowed = _allowed_true_questions(a.texts, a.is_sentence)
        for conv in s.conversations:
            q, ans = conv[0]
            assert q in allowed and ans in LONG_ANSWER_TEMPLATE
        assert s.masks.shape == (n_rows, *a.mask.shape)
        assert all((m == a.mask).all() for m in s.masks)
        assert s.exists == [True] * n_rows
    else:
        assert s.meta["mode"] == "false_premise_correction"
        assert n_rows == min(len(a.texts), k_max)
        fp = a.false_premise_qa
        answers = {x[2] for x in fp}
        for conv in s.conversations:
            q, ans = conv[0]
            assert ans in answers and "[SEG]" not in ans
            qa = [x for x in fp if x[2] == ans]
            ok = set()
            for query, is_sent, _ in qa:
                if is_sent:
                    ok |= {t.format(sent=query) for t in LONG_QUESTION_TEMPLATE}
                else:  # fp[0] as-is, no lower-casing
                    ok |= {t.format(class_name=query) for t in SHORT_QUESTION_TEMPLATE}
            assert q in ok
        assert s.masks.shape == (0, *s.image.shape[:2])
        assert s.exists == [False] * n_rows
    # no query repeated within a draw (sampling without replacement)
    qs = [conv[0][0] for conv in s.conversations]
    assert len(set(qs)) == len(qs) or len(set(a.texts)) < len(a.texts)


def test_train_draws_follow_the_templates_and_masks(synth_root):
    root, _ = synth_root
    ds = ReasonSegDataset(root, "train", num_classes_per_sample=2)
    rng = np.random.default_rng(1)
    modes = set()
    for _ in range(300):
        s = ds.sample(rng)
        _check_draw(s, 2)
        modes.add(s.meta["mode"])
    assert modes == {"true_premise", "false_premise_correction"}


def test_fp_mode_proportion(synth_root):
    root, _ = synth_root
    ds = ReasonSegDataset(root, "train")
    rng = np.random.default_rng(123)
    n = 4000
    fp = sum(ds.sample(rng).meta["mode"] == "false_premise_correction" for _ in range(n))
    # binomial sd = sqrt(.15 * .85 / 4000) = 0.0056; 0.03 is > 5 sd
    assert abs(fp / n - 0.15) < 0.03


def test_draws_are_deterministic_in_the_rng(synth_root):
    root, _ = synth_root
    ds = ReasonSegDataset(root, "train")
    for seed in range(5):
        a, b = ds.sample(np.random.default_rng(seed)), ds.sample(np.random.default_rng(seed))
        assert a.name == b.name and a.conversations == b.conversations and a.meta == b.meta
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.image, b.image)
    names = {ds.sample(np.random.default_rng(s)).name for s in range(40)}
    assert len(names) > 5  # the image really is random


def test_getitem_is_deterministic_first_queries_and_templates(synth_root):
    root, _ = synth_root
    ds = ReasonSegDataset(root, "train", num_classes_per_sample=3)
    assert len(ds) == 24
    for i in (0, 1, 5):
        s = ds[i]
        s.validate()
        a = load_annotation(s.meta["json_path"], *s.image.shape[:2])
        k = min(3, len(a.texts))
        if a.is_sentence:
            want = [LONG_QUESTION_TEMPLATE[0].format(sent=t) for t in a.texts[:k]]
        else:
            want = [SHORT_QUESTION_TEMPLATE[0].format(class_name=t.lower()) for t in a.texts[:k]]
        assert [c[0][0] for c in s.conversations] == want
        assert all(c[0][1] == LONG_ANSWER_TEMPLATE[0] for c in s.conversations)
        assert s.name.endswith(f"synth_train_{i:05d}.jpg")
        np.testing.assert_array_equal(s.masks, np.stack([a.mask] * k))


def test_fp_mode_falls_back_when_qas_missing_or_too_short(tmp_path):
    sq = [("t", _square(1, 1, 6, 6))]
    _make_split(
        tmp_path,
        "train",
        {
            "a_none": {"shapes": sq, "text": ["the a", "the b"]},
            "b_short": {
                "shapes": sq,
                "text": ["the a", "the b", "the c"],
                "false_premise_QA": [["the Z", False, "No Z."]],
            },
        },
    )
    ds = ReasonSegDataset(tmp_path, "train", num_classes_per_sample=3, fp_mode_prob=1.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = ds.sample(rng)
        assert s.meta["mode"] == "true_premise" and s.meta["fp_fallback"] is True
        _check_draw(s, 3)
    # one query per draw: the single QA is enough for b_short, which then gives the FP row
    ds1 = ReasonSegDataset(tmp_path, "train", num_classes_per_sample=1, fp_mode_prob=1.0)
    seen = {}
    for _ in range(40):
        s = ds1.sample(rng)
        seen[Path(s.name).stem] = s
    fp_draw = seen["b_short"]
    assert fp_draw.meta["mode"] == "false_premise_correction"
    assert fp_draw.conversations[0][0][1] == "No Z."
    assert "the Z" in fp_draw.conversations[0][0][0]  # fp[0] as-is (not lower-cased)
    assert fp_draw.masks.shape == (0, 12, 12) and fp_draw.exists == [False]
    assert seen["a_none"].meta["fp_fallback"] is True


# ------------------------------------------------------------------------------------------------ evaluation


def test_eval_items_exact_prompts_order_and_subsets(tmp_path):
    sq = [("target", _square(1, 1, 6, 6)), ("ignore", _square(2, 2, 3, 3))]
    _make_split(
        tmp_path,
        "test",
        {
            "c_long": {"shapes": sq, "text": ["Which Object holds water?", "another"], "is_sentence": True},
            "a_short": {"shapes": sq, "text": ["The Red Cup", "the blue cup"], "is_sentence": False},
            "b_short": {"shapes": sq, "text": ["a Lamp"], "is_sentence": False},
        },
    )
    ev = ReasonSegEvalDataset(tmp_path, "test")
    assert [Path(s.name).stem for s in (ev[0], ev[1], ev[2])] == ["a_short", "b_short", "c_long"]
    s0, s2 = ev[0], ev[2]
    assert s0.conversations == [
        [
            (
                "<image>\nWhat is the red cup in this image? Please output segmentation mask.",
                "Sure, the segmentation result is [SEG].",
            )
        ]
    ]
    assert s2.conversations == [
        [
            (
                "<image>\nWhich Object holds water? Please output segmentation mask.",
                "Sure, the segmentation result is [SEG].",
            )
        ]
    ]
    for s in (s0, s2):
        s.validate()
        assert s.masks.shape == (1, 12, 12) and s.exists == [True]
        assert set(np.unique(s.masks)) == {0, 1, 255}  # raw values, ignore kept
        assert s.meta["split"] == "test" and s.meta["json_path"].endswith(".json")
    assert s0.meta["is_sentence"] is False and s2.meta["is_sentence"] is True
    short = ReasonSegEvalDataset(tmp_path, "test", subset="short")
    long = ReasonSegEvalDataset(tmp_path, "test", subset="long")
    assert [Path(short[i].name).stem for i in range(len(short))] == ["a_short", "b_short"]
    assert [Path(long[i].name).stem for i in range(len(long))] == ["c_long"]
    gen = ReasonSegEvalDataset(tmp_path, "test", generate_prompts=True)
    g = gen[0]
    assert g.conversations == [
        [("<image>\nWhat is the red cup in this image? Please output segmentation mask.", None)]
    ]
    assert g.masks is None and g.meta["gt_masks"].shape == (1, 12, 12)
    g.validate()
    with pytest.raises(ValueError):
        ReasonSegEvalDataset(tmp_path, "test", subset="medium")


# ------------------------------------------------------------------------------------------------ writer


def _independent_mask(anno: dict, h: int, w: int) -> np.ndarray:
    """Re-rasterise a writer JSON with plain cv2 (the writer's ignore polygon is always inside the target)."""
    m = np.zeros((h, w), np.uint8)
    shapes = [s for s in anno["shapes"] if s["label"] != "flag"]
    for label in ("target", "ignore"):
        for s in shapes:
            if s["label"] == label:
                pts = [np.array(s["points"], dtype=np.float64).astype(np.int32)]
                v = 255 if label == "ignore" else 1
                cv2.fillPoly(m, pts, v)
                cv2.polylines(m, pts, True, v, 1)
    return m


def test_writer_counts_and_readback(synth_root):
    root, counts = synth_root
    assert counts == {"train": 24, "val": 8, "test": 8}
    base = root / "reason_seg" / "ReasonSeg"
    n_ignore = n_flag = 0
    for split, n in counts.items():
        jpgs = sorted((base / split).glob("*.jpg"))
        assert len(jpgs) == n and len(list((base / split).glob("*.json"))) == n
        ev = ReasonSegEvalDataset(root, split)
        assert len(ev) == n
        for i in range(n):
            s = ev[i]
            anno = json.loads(Path(s.meta["json_path"]).read_text(encoding="utf-8"))
            assert ("false_premise_QA" in anno) == (split == "train")
            labels = [x["label"] for x in anno["shapes"]]
            n_ignore += "ignore" in labels
            n_flag += "flag" in labels
            h, w = s.image.shape[:2]
            assert 64 <= h <= 160 and 64 <= w <= 160
            np.testing.assert_array_equal(s.masks[0], _independent_mask(anno, h, w))
            # the target pixels in the JPEG have the target's colour
            fg = s.image[s.masks[0] == 1].astype(np.float64)
            assert fg.shape[0] > 0
            colour = np.array(COLOURS[anno["synthetic"]["colour"]], dtype=np.float64)
            assert np.abs(np.median(fg, axis=0) - colour).max() < 25
            if split == "train":
                fp = anno["false_premise_QA"]
                assert len(fp) == len(anno["text"]) and all(x[1] == anno["is_sentence"] for x in fp)
    assert n_ignore > 0 and n_flag > 0
    for split in ("val", "test"):
        assert len(ReasonSegEvalDataset(root, split, subset="short")) == 4
        assert len(ReasonSegEvalDataset(root, split, subset="long")) == 4


def test_writer_is_deterministic_and_refuses_stale_files(tmp_path):
    a = write_reason_seg(tmp_path / "a", seed=3, splits={"train": 3, "val": 2})
    b = write_reason_seg(tmp_path / "b", seed=3, splits={"val": 2, "train": 3})
    assert b == a
    c = write_reason_seg(tmp_path / "c", seed=4, splits={"train": 3})
    assert a == {"train": 3, "val": 2} and c == {"train": 3}
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    assert files_a == files_b and len(files_a) == 10
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert any(
        (tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes()
        for rel in files_a
        if rel.parts[2] == "train"
    )
    write_reason_seg(tmp_path / "a", seed=3, splits={"train": 3})  # rewriting the same files is fine
    (tmp_path / "a" / "reason_seg" / "ReasonSeg" / "train" / "other.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="other.jpg"):
        write_reason_seg(tmp_path / "a", seed=3, splits={"train": 3})
