"""scripts/check_data.py on a generated root: counts match what was written; bad and missing data are named."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import check_data  # noqa: E402

from read.data.synth import write_all  # noqa: E402


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    counts = write_all(root, seed=1)
    return root, counts


def test_counts_match_generation(generated, tmp_path, capsys):
    root, counts = generated
    report = tmp_path / "r.json"
    assert check_data.main(["--root", str(root), "--json", str(report)]) == 0
    got = {r["name"]: r for r in json.loads(report.read_text())}
    for split, n in counts["reason_seg"].items():
        assert got[f"reason_seg/{split}"]["count"] == n == got[f"reason_seg/{split}"]["checked"]
    for name, splits in counts["refer"].items():
        assert got[f"refer_seg/{name}"]["count"] == sum(s["images"] for s in splits.values())
    for name, c in counts["sem_seg"].items():
        n = c["images"] if isinstance(c, dict) and "images" in c else c
        assert got[f"sem_seg/{name}"]["count"] == n
    assert got["vqa/llava_instruct_150k"]["count"] == counts["vqa"]["items"]
    g = got["refer_seg/grefcoco"]
    assert g["count"] == g["checked"] == sum(c["images"] for c in counts["grefcoco"].values())
    for split, c in counts["grefcoco"].items():
        assert (f"{split}: {c['images']} images, {c['expressions']} expressions ({c['no_target']} no-target, "
                f"{c['multi_target']} multi-target)") in g["detail"]
    assert all(r["status"] == "ok" for r in got.values())
    assert "0 missing, 0 with bad items" in capsys.readouterr().out


def test_bad_and_missing_are_reported(generated, tmp_path, capsys):
    src, _ = generated
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    victim = sorted((root / "reason_seg" / "ReasonSeg" / "val").glob("*.jpg"))[0]
    victim.write_bytes(b"\xff\xd8 not really a jpeg")
    shutil.rmtree(root / "mapillary")
    assert check_data.main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"BAD  {victim}" in out and "corrupt" in out
    assert "sem_seg/mapillary" in out and "missing" in out


def _garbage_in_scan(path) -> None:
    data = path.read_bytes()
    mid = (data.index(b"\xff\xda") + len(data)) // 2
    path.write_bytes(data[:mid] + bytes(range(1, 41)) + data[mid:])


def test_every_bad_file_is_reported_and_counting_goes_on(generated, tmp_path, capsys):
    src, counts = generated
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    rs = root / "reason_seg" / "ReasonSeg"
    val = sorted((rs / "val").glob("*.jpg"))
    truncated, garbled = val[0], val[1]
    truncated.write_bytes(truncated.read_bytes()[:-300])  # truncated JPEG
    _garbage_in_scan(garbled)  # decodes, but libjpeg reports corrupt data
    bad_json = sorted((rs / "test").glob("*.json"))[0]
    bad_json.write_text('{"shapes": [', encoding="utf-8")  # malformed JSON
    no_points = sorted((rs / "train").glob("*.json"))[0]
    anno = json.loads(no_points.read_text(encoding="utf-8"))
    anno["shapes"][0]["points"] = []
    no_points.write_text(json.dumps(anno), encoding="utf-8")
    ade_label = sorted((root / "ade20k" / "annotations" / "training").glob("*.png"))[0]
    ade_label.write_bytes(ade_label.read_bytes()[:-12])  # PNG without IEND
    paco = json.loads((root / "vlpart/paco/annotations/paco_lvis_v1_train.json").read_text())
    missing_img = root / "coco" / paco["images"][1]["file_name"]
    missing_img.unlink()
    refer_img = sorted((root / "refer_seg/images/mscoco/images/train2014").glob("*.jpg"))[0]
    _garbage_in_scan(refer_img)
    bad_files = [truncated, garbled, bad_json, no_points, ade_label, missing_img, refer_img]

    report = tmp_path / "r.json"
    assert check_data.main(["--root", str(root), "--json", str(report)]) == 1
    out = capsys.readouterr().out
    bad_lines = [line for line in out.splitlines() if line.startswith("    BAD  ")]
    for f in bad_files:
        assert any(line.startswith(f"    BAD  {f}: ") for line in bad_lines), (f, out)
    assert any(str(garbled) in line and "Corrupt JPEG data" in line for line in bad_lines)
    assert any(str(truncated) in line and "corrupt JPEG" in line for line in bad_lines)
    got = {r["name"]: r for r in json.loads(report.read_text())}
    # every item was still tried: the bad ones are counted apart, the rest checked
    n_val = counts["reason_seg"]["val"]
    assert got["reason_seg/val"]["count"] == n_val and got["reason_seg/val"]["checked"] == n_val - 2
    assert got["reason_seg/test"]["checked"] == counts["reason_seg"]["test"] - 1
    assert got["sem_seg/ade20k"]["checked"] == got["sem_seg/ade20k"]["count"] - 1
    assert got["sem_seg/paco_lvis"]["checked"] == got["sem_seg/paco_lvis"]["count"] - 1
    for name in ("reason_seg/val", "reason_seg/test", "reason_seg/train", "sem_seg/ade20k", "sem_seg/paco_lvis"):
        assert got[name]["status"] == "bad", name
        assert all("\n" not in p for p in got[name]["problems"])
    # the damaged train2014 image is used by every COCO-based REFER set: reported under each of them
    refer_bad = [n for n, r in got.items() if n.startswith("refer_seg/") and r["status"] == "bad"]
    assert "refer_seg/refcoco" in refer_bad and "refer_seg/refclef" not in refer_bad
    assert got["vqa/llava_instruct_150k"]["status"] == "ok" and got["sem_seg/mapillary"]["status"] == "ok"


def test_grefcoco_counts_and_bad_items(generated, tmp_path, capsys):
    src, _ = generated
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    d = root / "refer_seg" / "grefcoco"
    refs = json.loads((d / "grefs(unc).json").read_text())
    inst = json.loads((d / "instances.json").read_text())
    # counted by hand from the files: sentences per split, and those of [-1] refs
    for split in ("train", "val", "testA", "testB"):
        rs = [r for r in refs if r["split"] == split]
        assert check_data.grefcoco_counts(_grefcoco(root))[split] == {
            "images": len({r["image_id"] for r in rs}), "refs": len(rs),
            "expressions": sum(len(r["sentences"]) for r in rs),
            "no_target": sum(len(r["sentences"]) for r in rs if r["ann_id"] == [-1]),
            "multi_target": sum(len(r["sentences"]) for r in rs if len(r["ann_id"]) > 1)}
    val_ref = next(r for r in refs if r["split"] == "val" and r["ann_id"] != [-1])
    img = next(i for i in inst["images"] if i["id"] == val_ref["image_id"])
    missing = root / "refer_seg/images/mscoco/images/train2014" / img["file_name"]
    missing.unlink()
    train_ref = next(r for r in refs if r["split"] == "train" and r["ann_id"] != [-1])
    bad_ann = next(a for a in inst["annotations"] if a["id"] == train_ref["ann_id"][0])
    bad_ann["segmentation"] = {"size": [3, 3], "counts": [9]}  # wrong size for its image
    (d / "instances.json").write_text(json.dumps(inst))
    report = tmp_path / "r.json"
    assert check_data.main(["--root", str(root), "--json", str(report)]) == 1
    got = {r["name"]: r for r in json.loads(report.read_text())}["refer_seg/grefcoco"]
    assert got["status"] == "bad" and got["checked"] == got["count"] - 2
    assert any(p.startswith(f"{missing}: ") for p in got["problems"])
    assert any(p.startswith(f"{d / 'instances.json'}: annotation {bad_ann['id']}: RLE size") for p in got["problems"])
    assert "BAD  " in capsys.readouterr().out


def _grefcoco(root):
    from read.data.grefer import GRefCOCO

    return GRefCOCO(root)
