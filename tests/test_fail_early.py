"""User mistakes fail early, in one line naming the key, file or value: before any model is built, without a
traceback unless --debug, and without trying a local path as a hub id."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, TINY

from read.config import ConfigError, load_config

QUICK = ROOT / "configs" / "quickstart.yaml"


def test_duplicate_yaml_keys_are_refused(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("train:\n  lr: 1.0e-4\n  epochs: 2\n  lr: 3.0e-4\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: malformed YAML: duplicate key 'lr' \(first at line 2\)"):
        load_config(cfg)
    nested = tmp_path / "nested.yaml"
    nested.write_text("model:\n  sasp:\n    num_points: 3\nmodel:\n  name: x\n")
    with pytest.raises(ConfigError, match="duplicate key 'model'"):
        load_config(nested)


def test_empty_override_values_are_refused():
    with pytest.raises(ConfigError, match=r"override 'train\.lr=': empty value"):
        load_config(TINY, ["train.lr="])
    with pytest.raises(ConfigError, match="empty value"):
        load_config(TINY, ["eval.weights=  "])
    assert load_config(TINY, ["eval.weights=null"]).eval.weights is None
    assert load_config(TINY, ["model.name=''"]).model.name == ""


def test_user_errors_print_one_line_and_debug_shows_the_traceback(capsys):
    from read.cli import main_with_errors

    def main(argv):
        load_config(TINY, ["train.no_such_key=1"])

    with pytest.raises(SystemExit) as info:
        main_with_errors(main, [])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "unknown key train.no_such_key" in err[0]
    with pytest.raises(ConfigError):
        main_with_errors(main, ["--debug"])

    def buggy(argv):
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        main_with_errors(buggy, [])


def test_missing_weights_name_the_environment_variable_without_trying_the_hub(monkeypatch, tmp_path):
    import huggingface_hub

    import evaluate as evaluate_script

    def no_hub(*a, **k):
        raise AssertionError("a local path was tried as a hub id")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    monkeypatch.delenv("READ_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        evaluate_script.main(["--config", str(ROOT / "configs" / "eval" / "reasonseg_val_7b.yaml")])
    msg = str(info.value)
    assert "eval.weights: ./checkpoints/READ-LLaVA-v1.5-7B-for-ReasonSeg-valset does not exist" in msg
    assert "READ_WEIGHTS is not set" in msg and "model.vlm.tokenizer" in msg
    monkeypatch.setenv("READ_WEIGHTS", str(tmp_path / "moved"))
    with pytest.raises(FileNotFoundError, match=r"READ_WEIGHTS='.*moved'"):
        evaluate_script.main(["--config", str(ROOT / "configs" / "eval" / "reasonseg_val_7b.yaml")])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from read.data.synth import ensure_synthetic_root

    root = tmp_path_factory.mktemp("fail_data")
    ensure_synthetic_root(root, seed=0)
    return root


def _no_model(monkeypatch):
    import read.model.rebuild as rb

    def refuse(*a, **k):
        raise AssertionError("the model was built before the data was checked")

    monkeypatch.setattr(rb, "build_for_training", refuse)
    monkeypatch.setattr(rb, "rebuild", refuse)


def test_training_stops_on_a_missing_source_before_building_the_model(monkeypatch, tmp_path, data):
    import train as train_script
    from read.data.base import DataError

    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    shutil.rmtree(broken / "ade20k")
    shutil.rmtree(broken / "reason_seg" / "ReasonSeg" / "val")
    _no_model(monkeypatch)
    with pytest.raises(DataError) as info:
        train_script.main(["--config", str(QUICK), f"output_dir={tmp_path / 'run'}", f"data.root={broken}",
                           "data.generate_synthetic=false"])
    msg = str(info.value)
    assert "data.sem_seg_data: ade20k" in msg and str(broken / "ade20k") in msg and "\n" not in msg
    # the validation split is checked as well when the run evaluates
    shutil.copytree(data / "ade20k", broken / "ade20k")
    with pytest.raises(DataError, match=r"ReasonSeg.*val"):
        train_script.main(["--config", str(QUICK), f"output_dir={tmp_path / 'run'}", f"data.root={broken}",
                           "data.generate_synthetic=false", "eval.after_train=true"])


def test_evaluation_stops_on_a_missing_split_before_building_the_model(monkeypatch, tmp_path, data):
    import evaluate as evaluate_script
    from read.data.base import DataError

    _no_model(monkeypatch)
    with pytest.raises(DataError, match=r"ReasonSeg.*nosuch"):
        evaluate_script.main(["--config", str(QUICK), f"data.root={data}", "data.generate_synthetic=false",
                              "eval.split=nosuch", f"output_dir={tmp_path}"])


def test_the_command_line_reports_one_line(tmp_path):
    env = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1")
    env.pop("READ_WEIGHTS", None)
    res = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--config",
                          str(ROOT / "configs" / "eval" / "reasonseg_val_7b.yaml")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: eval.weights: ") and "READ_WEIGHTS" in lines[0]
    assert "Traceback" not in res.stderr
