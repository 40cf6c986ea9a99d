"""Configuration: every shipped YAML loads and validates; overrides are typed; errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from read.config import ConfigError, ReadConfig, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]
ALL_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml"))


def test_configs_exist():
    names = {p.relative_to(ROOT / "configs").as_posix() for p in ALL_CONFIGS}
    assert {"model/read_7b.yaml", "model/read_13b.yaml", "model/tiny.yaml"} <= names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_config_loads_overrides_and_roundtrips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, ReadConfig)
    cfg2 = load_config(path, ["model.lora.r=4", "loss.dice_weight=4", "output_dir=" + str(tmp_path)])
    assert cfg2.model.lora.r == 4 and isinstance(cfg2.model.lora.r, int)
    assert cfg2.loss.dice_weight == 4.0 and isinstance(cfg2.loss.dice_weight, float)
    saved = save_config(cfg2, tmp_path)
    assert saved == tmp_path / "config.yaml"
    assert load_config(tmp_path) == cfg2  # a run directory is enough to rebuild the config


def test_release_settings():
    c7 = load_config(ROOT / "configs/model/read_7b.yaml")
    assert c7.model.vlm.pretrained == "llava-hf/llava-1.5-7b-hf"
    assert c7.model.sam.checkpoint.endswith("sam_vit_h_4b8939.pth")
    assert (c7.model.lora.r, c7.model.lora.alpha, c7.model.lora.dropout) == (8, 16, 0.05)
    assert c7.model.lora.target_modules == ["q_proj", "v_proj"]
    s = c7.model.sasp
    assert (s.num_points, s.t_pos, s.t_neg, s.down_sample, s.variant) == (30, 0.8, 0.2, 2, "official")
    assert (c7.loss.ce_weight, c7.loss.bce_weight, c7.loss.dice_weight) == (1.0, 2.0, 0.5)
    c13 = load_config(ROOT / "configs/model/read_13b.yaml")
    s = c13.model.sasp
    assert (s.num_points, s.t_pos, s.t_neg, s.down_sample) == (60, 0.6, 0.2, 1)
    assert c13.model.vlm.pretrained == "llava-hf/llava-1.5-13b-hf"


def test_preset_and_explicit_override():
    cfg = load_config(ROOT / "configs/model/read_7b.yaml", ["model.sasp.num_points=10"])
    assert cfg.model.sasp.num_points == 10 and cfg.model.sasp.down_sample == 2
    cfg = load_config(ROOT / "configs/model/read_7b.yaml", ["model.sasp.preset=read_13b_eval"])
    assert (cfg.model.sasp.num_points, cfg.model.sasp.t_pos, cfg.model.sasp.down_sample) == (60, 0.6, 1)
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config(ROOT / "configs/model/read_7b.yaml", ["model.sasp.preset=nope"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.lora.r=abc", "model.lora.r: expected an integer"),
        ("model.lora.r=1.5", "model.lora.r: expected an integer"),
        ("model.vlm.nope=1", "unknown key model.vlm.nope"),
        ("nope=1", "unknown key nope"),
        ("model.sasp.enabled=maybe", "model.sasp.enabled: expected true/false"),
        ("model.vlm.dtype=fp64", "model.vlm.dtype: 'fp64' is not one of"),
        ("model.vlm.seg_query=on", "model.vlm.seg_query: True is not one of .* quote the word"),
        ("model.lora.target_modules=q_proj", "model.lora.target_modules: expected a list"),
        ("model.sasp.t_pos=0.1", "t_neg < t_pos"),
        ("model.lora=3", "model.lora: expected a mapping"),
        ("noequals", "not of the form key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(ROOT / "configs/model/tiny.yaml", [override])


def test_base_inheritance_env_and_file_errors(tmp_path, monkeypatch):
    (tmp_path / "parent.yaml").write_text("model:\n  lora:\n    r: 4\n    alpha: 8\n")
    (tmp_path / "child.yaml").write_text(
        "_base_: parent.yaml\nmodel:\n  lora:\n    alpha: 32\n  sam:\n    checkpoint: ${env:MY_SAM,default.pth}\n"
    )
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.model.lora.r, cfg.model.lora.alpha) == (4, 32)
    assert cfg.model.sam.checkpoint == "default.pth"
    monkeypatch.setenv("MY_SAM", "/weights/sam.pth")
    assert load_config(tmp_path / "child.yaml").model.sam.checkpoint == "/weights/sam.pth"

    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: malformed YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "wrongtype.yaml").write_text("model:\n  out_dim: big\n")
    with pytest.raises(ConfigError, match=r"wrongtype.yaml: model.out_dim: expected an integer"):
        load_config(tmp_path / "wrongtype.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "noenv.yaml").write_text("output_dir: ${env:READ_TEST_UNSET_VAR}\n")
    monkeypatch.delenv("READ_TEST_UNSET_VAR", raising=False)
    with pytest.raises(ConfigError, match="READ_TEST_UNSET_VAR is not set"):
        load_config(tmp_path / "noenv.yaml")


def test_data_section_validation():
    cfg = load_config(ROOT / "configs/model/tiny.yaml", ["data.datasets=[reason_seg, vqa]", "data.sample_rates=[3, 1]"])
    assert cfg.data.datasets == ["reason_seg", "vqa"] and cfg.data.sample_rates == [3.0, 1.0]
    with pytest.raises(ConfigError, match="data.datasets has 2 entries but data.sample_rates has 1"):
        load_config(ROOT / "configs/model/tiny.yaml", ["data.datasets=[reason_seg, vqa]", "data.sample_rates=[3]"])
    with pytest.raises(ConfigError, match="unknown dataset 'coco'"):
        load_config(ROOT / "configs/model/tiny.yaml", ["data.datasets=[coco]", "data.sample_rates=[1]"])


def test_exponent_floats_are_numbers():
    cfg = load_config(ROOT / "configs/model/tiny.yaml", ["train.lr=1e-4", "loss.dice_weight=4"])
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    with pytest.raises(ConfigError, match="train.lr: expected a number"):
        load_config(ROOT / "configs/model/tiny.yaml", ["train.lr=fast"])
