"""scripts/gpu_checks.py: the prepared GPU script runs end to end in its --tiny mode (CPU here; the device when one is
visible), so the one GPU run of a session does not fail on a bug a CPU could have shown."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import ROOT


def load_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_checks

    return gpu_checks


@pytest.mark.process_group
def test_gpu_checks_tiny(tmp_path):
    report = load_script().main(["--tiny", "--out", str(tmp_path / "report.json")])
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["failed"] == [] and set(saved["checks"]) == {"rope", "zero2_step", "batched_generation",
                                                              "sasp_device"}
    checks = report["checks"]
    assert checks["rope"]["inv_freq_fp32_exact"] is True
    assert checks["zero2_step"]["frozen_changed"] == [] and checks["zero2_step"]["trainable_changed"] > 0
    assert checks["batched_generation"]["first_token_equal"] == checks["batched_generation"]["rows"]
    assert checks["sasp_device"]["labels_equal"] is True


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_checks_full_size(tmp_path):
    report = load_script().main(["--out", str(tmp_path / "report.json")])
    assert report["failed"] == []


def test_random_full_size_config_is_the_read_7b_architecture():
    """configs/model/read_7b_random.yaml builds (on the meta device) exactly the parameter shapes of READ-7B that
    scripts/model_size.py builds from the llava-hf sizes, apart from the tokenizer-dependent ids."""
    import torch

    from read.config import load_config
    from read.model.builder import build_read_model

    sys.path.insert(0, str(ROOT / "scripts"))
    import model_size

    cfg = load_config(ROOT / "configs" / "model" / "read_7b_random.yaml")
    with torch.device("meta"):
        ours, _ = build_read_model(cfg)
    ref = model_size.build_meta(load_config(ROOT / "configs" / "model" / "read_7b.yaml"))
    shapes = {n: tuple(p.shape) for n, p in ours.named_parameters()}
    assert shapes == {n: tuple(p.shape) for n, p in ref.named_parameters()}
    assert sum(p.numel() for p in ours.parameters()) == 7_726_542_128
