"""Semantic-segmentation sources (ADE20K, COCO-Stuff, Mapillary, PACO-LVIS, PASCAL-Part) and LLaVA-Instruct VQA,
read from synthetic trees written in the real layouts."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from read.data.base import DataError
from read.data.sem_seg import (
    ADE20K,
    MODES,
    PACOLVIS,
    COCOStuff,
    Mapillary,
    PascalPart,
    SemSegDataset,
    ade20k_remap,
    load_cocostuff_classes,
    official_cocostuff_classes,
    paco_category_name,
    pascal_part_category_name,
    read_label_png,
    render_class_name,
)
from read.data.synth.sem_seg import (
    COCOSTUFF_CLASSES,
    scene,
    shape_class,
    write_ade20k,
    write_cocostuff,
    write_paco_lvis,
    write_sem_seg,
)
from read.data.synth.vqa import vqa_scene, write_llava_instruct
from read.data.synthetic import KINDS
from read.data.templates import (
    CORRECT_ANSWER_TEMPLATE,
    NEG_ANSWER_TEMPLATE,
    SHORT_ANSWER_TEMPLATE,
    SHORT_QUESTION_TEMPLATE,
)
from read.data.vqa import VQADataset, preprocess_multimodal

SEED = 3
N_IMAGES = 6
OFFICIAL = official_cocostuff_classes()


def _cocostuff_id(shape) -> int:
    """Official class index the synthetic writer uses for a shape (by name, looked up in the official list)."""
    return OFFICIAL.index(COCOSTUFF_CLASSES[shape_class(shape)])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("semseg_root")
    counts = write_sem_seg(r, seed=SEED, num_images=N_IMAGES)
    assert set(counts) == {"ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary"}
    assert all(c["images"] == N_IMAGES for c in counts.values())
    assert write_llava_instruct(r, seed=SEED, num_items=4)["items"] == 4
    return r


@pytest.fixture(scope="module")
def draws(root):
    """Many training draws of the full mixture (shared by the statistical and format tests)."""
    ds = SemSegDataset(root, num_classes_per_sample=3)
    rng = np.random.default_rng(123)
    return ds, [ds.sample(rng) for _ in range(3000)]


def _seg_count(sample) -> int:
    return sum((a or "").count("[SEG]") for conv in sample.conversations for _, a in conv)


# ---------------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------------


def test_ade20k_remap_by_hand():
    raw = np.array([[0, 1, 150], [2, 149, 255]], dtype=np.uint8)
    # 0 -> 255 -> (-1) 254 -> 255; k -> k-1; 255 -> 254 -> 255
    assert ade20k_remap(raw).tolist() == [[255, 0, 149], [1, 148, 255]]
    assert ade20k_remap(raw).dtype == np.uint8


def test_category_names():
    assert paco_category_name("car_(automobile):wheel") == ("car", "wheel")
    assert paco_category_name("trash_can:lid") == ("trash_can", "lid")
    assert paco_category_name("dog_(animal)") == "dog"
    assert paco_category_name(" mug ") == "mug"
    assert pascal_part_category_name("aeroplane:left_wing") == ("aeroplane", "left_wing")
    rng = np.random.default_rng(0)
    names = Counter(render_class_name(("bottle", "cap"), rng) for _ in range(2000))
    assert set(names) == {"bottle cap", "the cap of the bottle"}
    assert abs(names["bottle cap"] / 2000 - 0.5) < 5 * math.sqrt(0.25 / 2000)
    assert render_class_name("wall", rng) == "wall"


def test_cocostuff_class_file(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("0: unlabeled\n1: person\n2: wall-brick\n\n3: traffic light\n", encoding="utf-8")
    assert load_cocostuff_classes(p) == ["person", "wall-brick", "traffic light"]
    p.write_text("0: unlabeled\n1 person\n", encoding="utf-8")
    with pytest.raises(DataError, match="c.txt"):
        load_cocostuff_classes(p)


# ---------------------------------------------------------------------------------------------------------
# Loaders read back what was written
# ---------------------------------------------------------------------------------------------------------


def _expected_label(name: str, index: int) -> tuple[np.ndarray, list]:
    """Label map computed from the drawn shapes (never from the files)."""
    image, shapes = scene(SEED, name, index)
    h, w = image.shape[:2]
    if name == "ade20k":
        lab = np.full((h, w), 255, np.int64)
        for s in shapes:
            lab[s.mask == 1] = shape_class(s)
    elif name == "cocostuff":  # triangles stand for "-" classes (wall-brick, ...): ignored
        lab = np.full((h, w), 255, np.int64)
        for s in shapes:
            lab[s.mask == 1] = 255 if s.kind == "triangle" else _cocostuff_id(s)
    else:  # mapillary: background is the last class, "unlabeled"
        lab = np.full((h, w), 18, np.int64)
        for s in shapes:
            lab[s.mask == 1] = shape_class(s)
    return lab, shapes


@pytest.mark.parametrize("cls", [ADE20K, COCOStuff, Mapillary])
def test_label_map_sources_read_back(root, cls):
    ds = cls(root)
    assert len(ds) == N_IMAGES
    for i in range(N_IMAGES):
        lab, shapes = _expected_label(ds.name, i)
        np.testing.assert_array_equal(ds.label(i), lab)
        present = sorted(int(v) for v in np.unique(lab) if v != 255)
        s = ds[i]
        s.validate()
        assert s.meta["class_ids"] == present and s.exists == [True] * len(present)
        assert s.masks.shape == (len(present),) + lab.shape and s.masks.dtype == np.uint8
        for c, m in zip(present, s.masks, strict=True):
            expected = (lab == c).astype(np.uint8)
            expected[lab == 255] = 255
            np.testing.assert_array_equal(m, expected)
        # one row per class, asking for the lower-cased class name
        for (q, _), name in zip((conv[0] for conv in s.conversations), s.meta["classes"], strict=True):
            assert name == name.lower() and name in q


def test_mapillary_palette_labels_and_names(root):
    ds = Mapillary(root)
    path = next((root / "mapillary" / "training" / "v2.0" / "labels").glob("*.png"))
    from PIL import Image

    with Image.open(path) as im:
        assert im.mode == "P"  # real v2.0 labels are palette PNGs: values must be indices, not colours
    lab = read_label_png(path)
    assert lab.max() < len(ds.classes)
    assert ds.classes[0] == "red rectangle" and ds.classes[-1] == "unlabeled"


def _poly_masks(shapes, h, w):
    """Independent rasterisation of the written polygons (OpenCV, not pycocotools)."""
    out = []
    for s in shapes:
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(s.polygon).astype(np.int32)], 1)
        out.append(m)
    return out


@pytest.mark.parametrize("cls", [PACOLVIS, PascalPart])
def test_coco_format_sources_read_back(root, cls):
    """One row per annotation (file order), each with that instance's own mask (official annToMask(ann))."""
    from pycocotools.coco import COCO

    ds = cls(root)
    coco = COCO(str(ds.ann_file))
    assert len(ds) == N_IMAGES
    k3 = np.ones((3, 3), np.uint8)
    several = 0
    for i in range(N_IMAGES):
        image, shapes = scene(SEED, ds.name, i)
        h, w = image.shape[:2]
        polys = _poly_masks(shapes, h, w)
        s = ds[i]
        s.validate()
        img_id = ds.images[i]["id"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        # the writer emits, per shape in drawing order, an object annotation then a part annotation
        assert len(anns) == 2 * len(shapes) == len(s.conversations) == s.masks.shape[0]
        assert s.meta["ann_ids"] == [a["id"] for a in anns]
        expected_ids = [c for sh in shapes for c in (KINDS.index(sh.kind), len(KINDS) + shape_class(sh))]
        assert s.meta["class_ids"] == expected_ids
        for j, (ann, m) in enumerate(zip(anns, s.masks, strict=True)):
            np.testing.assert_array_equal(m, coco.annToMask(ann))  # the COCO API's own mask of this instance
            own = polys[j // 2]
            # pycocotools and OpenCV differ only on boundary pixels: agree up to a thin boundary band
            assert not (m & (1 - cv2.dilate(own, k3))).any(), (ds.name, i, j)
            inner = cv2.erode(own, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
            assert not (inner & (1 - m)).any(), (ds.name, i, j)
        by_kind = Counter(sh.kind for sh in shapes)
        for kind, n in by_kind.items():
            if n < 2:
                continue
            several += 1
            rows = [j for j in range(0, len(anns), 2) if shapes[j // 2].kind == kind]
            union = np.zeros((h, w), np.uint8)
            for j in rows:
                union |= s.masks[j]
            for j in rows:  # each row is one instance: strictly smaller than the category's union
                assert s.masks[j].sum() < union.sum(), (ds.name, i, kind)
                assert ds.classes[s.meta["class_ids"][j]] == kind
        if cls is PACOLVIS:
            assert ("circle", "red_side") in ds.classes  # underscores kept
    assert several >= 1  # image 0 holds only rectangles (at least two instances of one category)


# ---------------------------------------------------------------------------------------------------------
# The training draw
# ---------------------------------------------------------------------------------------------------------


def test_mode_and_dataset_proportions(draws):
    _, samples = draws
    n = len(samples)
    modes = Counter(s.meta["mode"] for s in samples)
    for mode, p in zip(MODES, (0.85, 0.07, 0.08), strict=True):
        assert abs(modes[mode] / n - p) < 5 * math.sqrt(p * (1 - p) / n), modes
    per_ds = Counter(s.meta["dataset"] for s in samples)
    assert set(per_ds) == {"ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary"}
    for c in per_ds.values():
        assert abs(c / n - 0.2) < 5 * math.sqrt(0.16 / n), per_ds


def test_draw_structure(draws):
    ds, samples = draws
    for s in samples:
        s.validate()
        h, w = s.image.shape[:2]
        n_rows = len(s.conversations)
        assert 1 <= n_rows <= 3 and all(len(c) == 1 for c in s.conversations)
        assert _seg_count(s) == s.masks.shape[0]
        present = set(s.meta["present_ids"])
        if s.meta["mode"] == "True_Premise":
            assert s.exists == [True] * n_rows and s.masks.shape == (n_rows, h, w)
            _, shapes = scene(SEED, s.meta["dataset"], s.meta["index"])
            # units: present classes (label maps) or annotations, 2 per shape (COCO-format)
            coco_format = s.meta["dataset"] in ("paco_lvis", "pascal_part")
            n_units = 2 * len(shapes) if coco_format else len(present)
            assert n_rows == min(3, n_units) and set(s.meta["class_ids"]) <= present
            assert set(np.unique(s.masks).tolist()) <= {0, 1, 255}
            assert all(a.count("[SEG]") == 1 for conv in s.conversations for _, a in conv)
        else:
            assert s.masks.shape == (0, h, w) and s.masks.dtype == np.uint8
            assert s.exists == [False] * n_rows and _seg_count(s) == 0
            neg = s.meta["negative_ids"]
            assert len(neg) == n_rows == len(set(neg)) and not set(neg) & present
            if s.meta["mode"] == "False_Premise_Correction":
                assert set(s.meta["class_ids"]) <= present and len(s.meta["class_ids"]) == n_rows


def test_negatives_absent_from_the_drawn_image(draws):
    """Negatives checked against the shapes actually drawn (not the loader's own present list)."""
    _, samples = draws
    checked, dash_negatives = 0, 0
    for s in samples:
        if s.meta["mode"] == "True_Premise" or s.meta["dataset"] not in ("ade20k", "cocostuff"):
            continue
        _, shapes = scene(SEED, s.meta["dataset"], s.meta["index"])
        if s.meta["dataset"] == "ade20k":
            drawn = {shape_class(sh) for sh in shapes}
        else:  # COCO-Stuff: "-" classes (triangles) are ignored in the label, so they are not "present"
            drawn = {_cocostuff_id(sh) for sh in shapes if sh.kind != "triangle"}
            dash_negatives += sum("-" in OFFICIAL[c] for c in s.meta["negative_ids"])
        assert not drawn & set(s.meta["negative_ids"])
        checked += 1
    assert checked > 50
    # official: the negative pool is all class ids minus the present labels, "-" classes included
    assert dash_negatives > 0


def test_exact_template_strings(draws):
    _, samples = draws
    seen = Counter()
    for s in samples:
        mode = s.meta["mode"]
        names = s.meta["negatives"] if mode != "True_Premise" else s.meta["classes"]
        for k, ((q, a),) in enumerate(s.conversations):
            name = names[k]
            assert name == name.lower()
            assert q in {t.format(class_name=name) for t in SHORT_QUESTION_TEMPLATE}
            if mode == "True_Premise":
                assert a in {t.format(class_name=name) for t in SHORT_ANSWER_TEMPLATE}
            elif mode == "False_Premise_Denial":
                assert a in {t.format(class_name=name) for t in NEG_ANSWER_TEMPLATE}
            else:
                gt = s.meta["classes"][k]
                assert a in {t.format(class_name=name, gt_name=gt) for t in CORRECT_ANSWER_TEMPLATE}
            seen[mode] += 1
        if s.meta["dataset"] == "cocostuff":  # positives never "-" classes (they are 255 in the label)
            assert all("-" not in n for n in s.meta["classes"])
        if s.meta["dataset"] == "mapillary":
            assert all(n == n.lower() for n in s.meta["classes"])
    assert all(seen[m] > 0 for m in MODES)


def test_obj_part_naming_in_draws(draws):
    ds, samples = draws
    forms = Counter()
    for s in samples:
        if s.meta["dataset"] not in ("paco_lvis", "pascal_part"):
            continue
        src = next(x for x in ds.sources if x.name == s.meta["dataset"])
        ids = s.meta["class_ids"] if s.meta["mode"] == "True_Premise" else s.meta["negative_ids"]
        names = s.meta["classes"] if s.meta["mode"] == "True_Premise" else s.meta["negatives"]
        for c, name in zip(ids, names, strict=True):
            cls_name = src.classes[c]
            if isinstance(cls_name, str):
                assert name == cls_name.lower()
                continue
            obj, part = cls_name
            assert name in {f"{obj} {part}".lower(), f"the {part} of the {obj}".lower()}
            forms["short" if name == f"{obj} {part}".lower() else "long"] += 1
    total = sum(forms.values())
    assert total > 200 and abs(forms["short"] / total - 0.5) < 5 * math.sqrt(0.25 / total)


def test_sample_is_a_function_of_the_rng(root):
    ds = SemSegDataset(root)
    a = [ds.sample(np.random.default_rng([7, i])) for i in range(10)]
    b = [ds.sample(np.random.default_rng([7, i])) for i in range(10)]
    for x, y in zip(a, b, strict=True):
        assert x.conversations == y.conversations and x.name == y.name
        np.testing.assert_array_equal(x.masks, y.masks)
    assert len({x.name for x in a}) > 1
    assert len(ds) == 5 * N_IMAGES
    assert ds[N_IMAGES].meta["dataset"] == "cocostuff"


def test_unlabelled_images_are_resampled(tmp_path):
    write_ade20k(tmp_path, seed=1, num_images=2)
    ann = tmp_path / "ade20k" / "annotations" / "training"
    first = sorted(ann.glob("*.png"))[0]
    h, w = read_label_png(first).shape
    cv2.imwrite(str(first), np.zeros((h, w), np.uint8))  # all "unlabelled"
    ds = ADE20K(tmp_path)
    rng = np.random.default_rng(0)
    assert {ds.sample(rng).meta["index"] for _ in range(50)} == {1}
    with pytest.raises(DataError, match=first.name):
        ds[0]
    for p in ann.glob("*.png"):
        cv2.imwrite(str(p), np.zeros(read_label_png(p).shape, np.uint8))
    with pytest.raises(DataError, match=r"ADE_train_\d+\.png"):
        ADE20K(tmp_path, max_resample=5).sample(rng)


# ---------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------


def test_missing_files_are_named(tmp_path):
    write_ade20k(tmp_path, num_images=1)
    write_cocostuff(tmp_path, num_images=1)
    (tmp_path / "ade20k" / "ade20k_classes.json").unlink()
    with pytest.raises(DataError, match="ade20k_classes.json"):
        ADE20K(tmp_path)
    (tmp_path / "cocostuff" / "cocostuff_classes.txt").unlink()
    assert COCOStuff(tmp_path).classes == OFFICIAL  # the packaged official list needs no file
    with pytest.raises(DataError, match="cocostuff_classes.txt"):
        COCOStuff(tmp_path, class_list="file")
    with pytest.raises(DataError, match="config_v2.0.json"):
        Mapillary(tmp_path)
    with pytest.raises(DataError, match="paco_lvis_v1_train.json"):
        PACOLVIS(tmp_path)
    with pytest.raises(DataError, match="train.json"):
        PascalPart(tmp_path)
    with pytest.raises(DataError, match="config_v2.0.json"):
        SemSegDataset(tmp_path, ("mapillary",))
    with pytest.raises(ValueError, match="unknown"):
        SemSegDataset(tmp_path, ("ade20k", "cityscapes"))


def test_missing_split_and_label(tmp_path):
    write_ade20k(tmp_path, num_images=2)
    label = sorted((tmp_path / "ade20k" / "annotations" / "training").glob("*.png"))[1]
    label.unlink()
    ds = ADE20K(tmp_path)
    with pytest.raises(DataError, match=label.name):
        ds[1]
    images = tmp_path / "ade20k" / "images" / "training"
    for p in images.glob("*.jpg"):
        p.unlink()
    with pytest.raises(DataError, match="training"):
        ADE20K(tmp_path)


def test_malformed_json_corrupt_image_and_bad_labels(tmp_path):
    write_paco_lvis(tmp_path, num_images=2)
    write_ade20k(tmp_path, num_images=2)
    ann = tmp_path / "vlpart" / "paco" / "annotations" / "paco_lvis_v1_train.json"
    good = ann.read_text(encoding="utf-8")
    ann.write_text(good[:-10], encoding="utf-8")
    with pytest.raises(DataError, match="paco_lvis_v1_train.json.*malformed JSON"):
        PACOLVIS(tmp_path)
    data = json.loads(good)
    del data["annotations"][0]["segmentation"]
    ann.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match=r"paco_lvis_v1_train.json: annotation #0"):
        PACOLVIS(tmp_path)
    ann.write_text(good, encoding="utf-8")
    ds = PACOLVIS(tmp_path)
    img = tmp_path / "coco" / ds.images[0]["file_name"]
    img.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=img.name):
        ds[0]
    # ADE label with a value outside 0..150
    lab = sorted((tmp_path / "ade20k" / "annotations" / "training").glob("*.png"))[0]
    arr = read_label_png(lab)
    arr[0, 0] = 200
    cv2.imwrite(str(lab), arr)
    with pytest.raises(DataError, match=lab.name + ".*outside"):
        ADE20K(tmp_path)[0]
    lab.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=lab.name):
        ADE20K(tmp_path)[0]


# ---------------------------------------------------------------------------------------------------------
# VQA
# ---------------------------------------------------------------------------------------------------------


def test_preprocess_multimodal():
    assert preprocess_multimodal("What is this?\n<image>") == "<image>\nWhat is this?"
    assert preprocess_multimodal("<image>\nWhat?") == "<image>\nWhat?"
    assert preprocess_multimodal("no image here ") == "no image here "


def test_vqa_reads_back_the_file(root):
    ds = VQADataset(root)
    items = json.loads((root / "llava_dataset" / "llava_instruct_150k.json").read_text(encoding="utf-8"))
    assert len(ds) == len(items) == 4
    for i, item in enumerate(items):
        s = ds[i]
        s.validate()
        assert len(s.conversations) == 1 and s.exists == [False]
        h, w = vqa_scene(SEED, i)[0].shape[:2]
        assert s.image.shape == (h, w, 3) and s.masks.shape == (0, h, w)
        rounds = s.conversations[0]
        turns = item["conversations"]
        assert len(rounds) == len(turns) // 2
        q0 = rounds[0][0]
        assert q0.startswith("<image>\n") and q0.count("<image>") == 1
        assert q0 == "<image>\n" + turns[0]["value"].replace("<image>", "").strip()
        for k, (q, a) in enumerate(rounds[1:], start=1):
            assert (q, a) == (turns[2 * k]["value"], turns[2 * k + 1]["value"])
        assert rounds[0][1] == turns[1]["value"]
    # the writer puts <image> at the end of some first turns (as in the real file)
    assert "\n<image>" in items[1]["conversations"][0]["value"]
    a = ds.sample(np.random.default_rng(5))
    b = ds.sample(np.random.default_rng(5))
    assert a.conversations == b.conversations


def _vqa_root(tmp_path, root, items) -> Path:
    d = tmp_path / "llava_dataset"
    d.mkdir(parents=True, exist_ok=True)
    (d / "llava_instruct_150k.json").write_text(json.dumps(items), encoding="utf-8")
    (tmp_path / "coco").mkdir(exist_ok=True)
    link = tmp_path / "coco" / "train2017"
    if not link.exists():
        link.symlink_to(root / "coco" / "train2017")
    return tmp_path


def test_vqa_leading_gpt_turn_dropped(tmp_path, root):
    img = sorted((root / "coco" / "train2017").glob("0000003*.jpg"))[0].name
    turns = [
        {"from": "gpt", "value": "Hello."},
        {"from": "human", "value": "Describe it. <image>"},
        {"from": "gpt", "value": "Shapes."},
        {"from": "human", "value": "How many?"},
        {"from": "gpt", "value": "Two."},
    ]
    ds = VQADataset(_vqa_root(tmp_path, root, [{"id": "x1", "image": img, "conversations": turns}]))
    assert ds[0].conversations == [[("<image>\nDescribe it.", "Shapes."), ("How many?", "Two.")]]


_OK = [{"from": "human", "value": "<image>\nA?"}, {"from": "gpt", "value": "B."}]


@pytest.mark.parametrize(
    "item, match",
    [
        (
            {
                "id": "bad7",
                "image": "IMG",
                "conversations": [_OK[0], {"from": "human", "value": "B?"}, _OK[1]],
            },
            r"llava_instruct_150k.json: item 0 \(id bad7\).*alternate",
        ),
        ({"id": "bad8", "image": "IMG"}, r"llava_instruct_150k.json: item 0 \(id bad8\).*'conversations'"),
        (
            {"id": "bad9", "image": "IMG", "conversations": _OK[:1]},
            r"llava_instruct_150k.json.*no gpt answer",
        ),
        (
            {"id": "b10", "image": "IMG", "conversations": [{"from": "human"}]},
            r"llava_instruct_150k.json.*turn 0",
        ),
        (
            {"id": "b11", "image": "IMG", "conversations": [{"from": "human", "value": "A?"}, _OK[1]]},
            r"llava_instruct_150k.json.*exactly one <image>",
        ),
        ({"id": "b12", "image": "missing.jpg", "conversations": _OK}, r"coco/train2017/missing.jpg"),
    ],
)
def test_vqa_bad_items(tmp_path, root, item, match):
    img = sorted((root / "coco" / "train2017").glob("0000003*.jpg"))[0].name
    item = json.loads(json.dumps(item).replace("IMG", img))
    ds = VQADataset(_vqa_root(tmp_path, root, [item]))
    with pytest.raises(DataError, match=match):
        ds[0]


def test_vqa_malformed_json_and_corrupt_image(tmp_path, root):
    d = tmp_path / "llava_dataset"
    d.mkdir()
    (d / "llava_instruct_150k.json").write_text('[{"id": 1,', encoding="utf-8")
    with pytest.raises(DataError, match="llava_instruct_150k.json.*malformed JSON"):
        VQADataset(tmp_path)
    (d / "llava_instruct_150k.json").unlink()
    with pytest.raises(DataError, match="llava_instruct_150k.json.*not found"):
        VQADataset(tmp_path)
    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    (tmp_path / "coco" / "train2017" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    item = {
        "id": "c",
        "image": "broken.jpg",
        "conversations": [{"from": "human", "value": "<image>\nA?"}, {"from": "gpt", "value": "B."}],
    }
    (d / "llava_instruct_150k.json").write_text(json.dumps([item]), encoding="utf-8")
    with pytest.raises(DataError, match="broken.jpg"):
        VQADataset(tmp_path)[0]
