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
