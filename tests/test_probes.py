"""The benchmark diagnostics: AUROC / ranks / pixel maps against slow definitions, and both probes end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from read.data.synth.reasoning import write_reasoning_benchmark
from read.utils import stats

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


points_probe = load_script("probe_sasp_points")


def slow_auroc(scores, positive) -> float:
    """Pairwise definition: P(score(pos) > score(neg)) + 0.5 P(equal)."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    total = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return total / (len(pos) * len(neg))


def test_average_ranks_by_hand():
    got = stats.average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0]))
    # sorted: 1 (rank 1), 2 (rank 2), 3,3,3 (ranks 3,4,5 -> 4 each)
    assert got.tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    positive = rng.random(60) < 0.3
    assert stats.auroc(scores, positive) == pytest.approx(slow_auroc(scores, positive), abs=1e-12)


def test_auroc_extremes_and_degenerate():
    s = np.array([0.1, 0.2, 0.8, 0.9])
    assert stats.auroc(s, np.array([False, False, True, True])) == 1.0
    assert stats.auroc(s, np.array([True, True, False, False])) == 0.0
    assert stats.auroc(np.ones(4), np.array([True, False, True, False])) == 0.5
    assert np.isnan(stats.auroc(s, np.zeros(4, bool)))


def test_pixel_similarity_cells():
    sim = np.arange(4.0)  # 2 x 2 grid: [[0, 1], [2, 3]]
    pix = points_probe.pixel_similarity(sim, (4, 6))
    expected = np.array([[0, 0, 0, 1, 1, 1]] * 2 + [[2, 2, 2, 3, 3, 3]] * 2, float)
    assert np.array_equal(pix, expected)
    with pytest.raises(ValueError, match="square grid"):
        points_probe.pixel_similarity(np.arange(5.0), (4, 4))


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_bench")
    write_reasoning_benchmark(root, splits={"train": 12, "val": 8})
    return root


@pytest.mark.parametrize("mode", ["click", "target", "bow"])
def test_sam_oracle_probe_runs(small_bench, capsys, mode):
    probe = load_script("probe_sam_oracle")
    probe.main(["--mode", mode, "--steps", "2", "--eval-every", "2", "--val-items", "8", f"data.root={small_bench}"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["step"] for r in rows] == [2]
    assert rows[0]["mode"] == mode and 0.0 <= rows[0]["val_giou"] <= 1.0


def test_sasp_points_probe_untrained_and_trained(small_bench, tmp_path, capsys):
    from read.config import load_config, save_config

    cfg = load_config(ROOT / "configs" / "experiments" / "synthetic_ablation.yaml",
                      [f"data.root={small_bench}", f"output_dir={tmp_path}"])
    save_config(cfg, tmp_path)
    points_probe.main(["--run", str(tmp_path), "--untrained", "--items", "8"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["queries"] == 8 and 0.0 <= row["auroc"] <= 1.0 and 0.0 < row["chance"] < 1.0
    with pytest.raises(SystemExit, match="no checkpoint"):
        points_probe.main(["--run", str(tmp_path), "--items", "8"])
