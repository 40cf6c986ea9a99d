"""Fail-early data checks of read.data.catalog: every missing source path is named with the config key that asked
for it, in one DataError, without building datasets or reading files."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from read.config import ReadConfig
from read.data.base import DataError
from read.data.catalog import check_eval_split, check_train_sources
from read.data.synth import MARKER, write_all


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog_data")
    write_all(root, seed=2, refer_images=4, sem_seg_images=2, vqa_items=2)
    return root


@pytest.fixture
def root(generated, tmp_path):
    r = tmp_path / "root"
    shutil.copytree(generated, r)
    return r


def _no_reading(monkeypatch):
    """Make every file/folder read fail: the checks may only stat paths."""

    def boom(*args, **kwargs):
        raise AssertionError("the start-up check read a file or listed a folder")

    for mod, name in (("read.data.io", "load_image"), ("read.data.io", "load_json"),
                      ("read.data.safe_pickle", "load_pickle")):
        monkeypatch.setattr(f"{mod}.{name}", boom)
    monkeypatch.setattr(pathlib.Path, "glob", boom)
    monkeypatch.setattr(pathlib.Path, "iterdir", boom)
    monkeypatch.setattr(pathlib.Path, "read_bytes", boom)


def test_complete_root_passes_without_reading_anything(root, monkeypatch):
    cfg = ReadConfig()
    _no_reading(monkeypatch)
    check_train_sources(cfg, root)
    check_eval_split(cfg, root)  # reason_seg / val
    cfg.eval.dataset, cfg.eval.split = "refcocog", "test"
    check_eval_split(cfg, root)


def test_all_missing_paths_named_with_their_config_keys(root):
    cfg = ReadConfig()
    (root / "ade20k" / "ade20k_classes.json").unlink()
    shutil.rmtree(root / "refer_seg" / "refcoco+")
    shutil.rmtree(root / "mapillary" / "training" / "v2.0" / "labels")
    (root / "llava_dataset" / "llava_instruct_150k.json").unlink()
    shutil.rmtree(root / "refer_seg" / "images" / "saiapr_tc-12")
    with pytest.raises(DataError) as e:
        check_train_sources(cfg, root)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{root}: missing training data: ")
    assert f"data.sem_seg_data: ade20k needs {root}/ade20k/ade20k_classes.json;" in msg
    refs = root / "refer_seg" / "refcoco+"
    assert f"data.refer_seg_data: refcoco+ needs {refs}/refs(unc_exclude_unified).p, {refs}/instances.json" in msg
    assert f"data.sem_seg_data: mapillary needs {root}/mapillary/training/v2.0/labels" in msg
    assert f"data.datasets: vqa needs {root}/llava_dataset/llava_instruct_150k.json" in msg
    assert f"data.refer_seg_data: refclef needs {root}/refer_seg/images/saiapr_tc-12" in msg
    for ok in ("data.refer_seg_data: refcoco needs", "cocostuff", "paco_lvis", "reason_seg", "R-refcoco"):
        assert ok not in msg


def test_only_the_configured_sources_are_checked(root):
    shutil.rmtree(root / "vlpart")
    shutil.rmtree(root / "reason_seg" / "ReasonSeg" / "val")
    cfg = ReadConfig()
    cfg.data.datasets = ["reason_seg", "correct_refer_seg"]
    cfg.data.correct_refer_seg_data = ["fprefcoco"]
    check_train_sources(cfg, root)  # vlpart is only needed by sem_seg
    cfg.data.reason_seg_split = "train_val"
    with pytest.raises(DataError, match=r"data.reason_seg_split: train_val needs \S+/ReasonSeg/val$"):
        check_train_sources(cfg, root)
    cfg.data.datasets = ["sem_seg"]
    cfg.data.sem_seg_data = ["pascal_part", "paco_lvis"]
    with pytest.raises(DataError) as e:
        check_train_sources(cfg, root)
    assert "data.sem_seg_data: pascal_part needs" in str(e.value) and "data.sem_seg_data: paco_lvis needs" in str(e.value)


def test_eval_split_check(root):
    cfg = ReadConfig()
    shutil.rmtree(root / "reason_seg" / "ReasonSeg" / "test")
    cfg.eval.split = "test"
    with pytest.raises(DataError, match=r"eval.dataset: reason_seg, eval.split: test needs \S+/ReasonSeg/test"):
        check_eval_split(cfg, root)
    (root / "refer_seg" / "fprefcoco+" / "instances.json").unlink()
    cfg.eval.dataset, cfg.eval.split = "fprefcoco+", "val"
    with pytest.raises(DataError, match=r"eval.dataset: fprefcoco\+ needs \S+/fprefcoco\+/instances.json$"):
        check_eval_split(cfg, root)


def test_bad_config_names_and_synthetic_roots(root, tmp_path):
    cfg = ReadConfig()
    cfg.data.datasets = ["sem_seg", "imagenet"]
    with pytest.raises(ValueError, match="imagenet"):
        check_train_sources(cfg, root)
    cfg.data.datasets = ["sem_seg"]
    cfg.data.sem_seg_data = ["cityscapes"]
    with pytest.raises(ValueError, match="cityscapes"):
        check_train_sources(cfg, root)
    # a synthetic root still to be written is not checked; once written (marker present) it is
    cfg = ReadConfig()
    cfg.data.generate_synthetic = True
    empty = tmp_path / "empty"
    check_train_sources(cfg, empty)
    check_eval_split(cfg, empty)
    empty.mkdir()
    (empty / MARKER).write_text("{}")
    with pytest.raises(DataError, match="missing training data"):
        check_train_sources(cfg, empty)
    cfg.data.root = str(root)  # root=None -> data.root
    check_train_sources(cfg)


def test_grefcoco_checks_only_stat_paths(root, monkeypatch):
    cfg = ReadConfig()
    cfg.data.style = "gsva"
    cfg.data.refer_seg_data = ["refcoco", "grefcoco"]
    cfg.eval.dataset, cfg.eval.split = "grefcoco", "testB"
    _no_reading(monkeypatch)
    check_train_sources(cfg, root)
    check_eval_split(cfg, root)
    (root / "refer_seg" / "grefcoco" / "instances.json").unlink()
    with pytest.raises(DataError, match=r"data.refer_seg_data: grefcoco needs \S+/grefcoco/instances.json$"):
        check_train_sources(cfg, root)
    with pytest.raises(DataError, match=r"eval.dataset: grefcoco, eval.split: testB needs \S+/grefcoco/instances"):
        check_eval_split(cfg, root)
