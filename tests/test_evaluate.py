"""Evaluation end to end on generated data: protocols, resume, sharding, results.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from dist_helpers import free_port

from read.config import load_config

QUICK = ROOT / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny run trained for a few steps on generated data (shared by the tests of this file)."""
    import train as train_script

    base = tmp_path_factory.mktemp("eval_run")
    data = base / "data"
    args = ["--config", str(QUICK), f"output_dir={base / 'run'}", f"data.root={data}", "data.workers=0",
            "train.progress=false", "train.epochs=1", "train.steps_per_epoch=4", "train.save_every=4",
            "eval.after_train=false", "--no_auto_resume"]  # a flag after the overrides (intermixed parsing)
    train_script.main(args)
    return base / "run", data


def evaluate(run: Path, out: Path, *extra: str) -> dict:
    import evaluate as evaluate_script

    # an override before --run: options and overrides may be intermixed
    return evaluate_script.main([f"eval.output_dir={out}", "--run", str(run), "train.progress=false", *extra])


def recompute(records_dir: Path) -> tuple[float, float, int]:
    """gIoU/cIoU from the per-sample records, written plainly (official rules, spec 5.2)."""
    ious, inter, union, n = 0.0, 0, 0, 0
    for f in sorted(records_dir.glob("records.rank*.jsonl")):
        for line in f.read_text().splitlines():
            for q in json.loads(line)["queries"]:
                i, u = q["intersection"], q["union"]
                ious += 1.0 if u == 0 else i / (u + 1e-5)
                inter, union, n = inter + i, union + u, n + 1
    return ious / (n + 1e-5), inter / (union + 1e-10), n


def test_teacher_forced_reason_seg_end_to_end(trained_run, tmp_path):
    run, _ = trained_run
    res = evaluate(run, tmp_path / "tf", "eval.overlays=2")
    assert res["protocol"] == "teacher_forced" and res["dataset"] == "reason_seg" and res["num_samples"] == 8
    giou, ciou, n = recompute(tmp_path / "tf")
    assert n == 8
    assert res["metrics"]["overall"]["giou"] == pytest.approx(giou, abs=1e-12)
    assert res["metrics"]["overall"]["ciou"] == pytest.approx(ciou, abs=1e-12)
    assert {"short", "long"} <= set(res["metrics"])
    assert Path(res["checkpoint"]["path"]).name == "step_00000004" and len(res["eval_key"]) == 64
    key = json.loads((tmp_path / "tf" / "eval_key.json").read_text())
    assert key["digest"] == res["eval_key"] and key["identity"]["model"]["sasp"]["num_points"] == 10
    assert res["sasp"]["num_points"] == 10 and res["templates"].startswith("LISA fixed")
    assert len(list((tmp_path / "tf").glob("overlay_*.png"))) == 2
    saved = json.loads((tmp_path / "tf" / "results.json").read_text())
    assert saved == json.loads(json.dumps(res))


def test_resumed_evaluation_equals_uninterrupted(trained_run, tmp_path):
    run, _ = trained_run
    full = evaluate(run, tmp_path / "full")
    out = tmp_path / "cut"
    evaluate(run, out)
    rec = out / "records.rank0.jsonl"
    lines = rec.read_text().splitlines()
    rec.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])  # crash mid-line after 3 items
    (out / "results.json").unlink()
    resumed = evaluate(run, out)
    assert resumed.pop("output_dir") == str(out) and full.pop("output_dir") == str(tmp_path / "full")
    assert resumed == full
    assert len(rec.read_text().splitlines()) == 8  # the cut line was dropped and its item redone


def test_sharded_evaluation_merges_to_the_single_process_result(trained_run, tmp_path, monkeypatch):
    """Two ranks, each evaluating every second item into its own records file, merge to the same results."""
    from read.eval import evaluator as ev
    from read.model.rebuild import rebuild

    run, data = trained_run
    single = evaluate(run, tmp_path / "single")
    cfg = load_config(run, [f"eval.output_dir={tmp_path / 'sharded'}", "train.progress=false"])
    built = rebuild(cfg, run)
    model, tok, weights = built.model, built.tokenizer, built.weights
    dataset = ev.build_eval_dataset(cfg, data)
    results = []
    for rank in (1, 0):  # rank 0 last: it merges
        monkeypatch.setattr(ev.dist, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(ev.dist, "get_world_size", lambda: 2)
        monkeypatch.setattr(ev.dist, "is_main", lambda r=rank: r == 0)
        results.append(ev.Evaluator(cfg, model.eval(), tok, dataset, output_dir=tmp_path / "sharded",
                                    device=torch.device("cpu"), weights=weights).run())
    assert (tmp_path / "sharded" / "records.rank0.jsonl").is_file()
    assert (tmp_path / "sharded" / "records.rank1.jsonl").is_file()
    assert results[1]["metrics"] == single["metrics"]


def test_teacher_forced_refcoco(trained_run, tmp_path):
    run, _ = trained_run
    res = evaluate(run, tmp_path / "refcoco", "eval.dataset=refcoco", "eval.split=val")
    assert res["dataset"] == "refcoco" and res["num_queries"] > res["num_samples"] >= 1
    assert "seeded short templates" in res["templates"]
    # REC precision@0.5 (GSVA 4.3) from the boxes of the masks, recomputed plainly: half-open pixel boxes
    hits = total = 0
    for line in (tmp_path / "refcoco" / "records.rank0.jsonl").read_text().splitlines():
        for q in json.loads(line)["queries"]:
            if q["gt_box"] is None:
                continue
            total += 1
            p, g = q["pred_box"], q["gt_box"]
            if p is None:
                continue
            iw = max(0, min(p[2], g[2]) - max(p[0], g[0]))
            ih = max(0, min(p[3], g[3]) - max(p[1], g[1]))
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
            hits += inter / union > 0.5
    assert total > 0 and res["metrics"]["rec_precision_at_0.5"] == pytest.approx(hits / total, abs=1e-12)


def test_generate_protocol_and_fp_refcoco(trained_run, tmp_path):
    run, _ = trained_run
    res = evaluate(run, tmp_path / "gen", "eval.protocol=generate", "eval.max_new_tokens=8")
    assert res["decoding"]["kv_cache"] is True and res["num_samples"] == 8
    assert 0.0 <= res["metrics"]["seg_emitted"] <= 1.0
    for line in (tmp_path / "gen" / "records.rank0.jsonl").read_text().splitlines():
        for q in json.loads(line)["queries"]:
            assert isinstance(q["text"], str) and q["pred_exists"] == (q["has_seg"] and q["pred_area"] > 0)
    fp = evaluate(run, tmp_path / "fp", "eval.protocol=fp_refcoco", "eval.dataset=fprefcoco", "eval.max_new_tokens=8")
    see = fp["metrics"]["see_segment"]
    queries = [q for line in (tmp_path / "fp" / "records.rank0.jsonl").read_text().splitlines()
               for q in json.loads(line)["queries"]]
    assert see["num_queries"] == len(queries) and any(not q["gt_exists"] for q in queries)
    expected_see = sum(q["gt_exists"] == q["pred_exists"] for q in queries) / len(queries)
    assert see["see"] == pytest.approx(expected_see)


def test_merge_lora_cli_gives_the_same_evaluation(trained_run, tmp_path):
    """scripts/merge_lora.py: the merged model (no LoRA, strict reload from its own config) evaluates like the run."""
    import sys

    from safetensors.torch import load_file

    sys.path.insert(0, str(ROOT / "scripts"))
    import merge_lora

    import evaluate as evaluate_script

    run, data = trained_run
    out = merge_lora.main(["--run", str(run), "--out", str(tmp_path / "merged")])
    sd = load_file(str(out / "model.safetensors"))
    assert not any("lora_" in k or "base_layer" in k for k in sd)
    with pytest.raises(ValueError, match="official order"):  # llava-hf token order has no official layout
        merge_lora.main(["--run", str(run), "--out", str(tmp_path / "merged2"), "--official"])
    assert not (tmp_path / "merged2").exists()
    unmerged = evaluate(run, tmp_path / "unmerged")
    merged = evaluate_script.main(["--config", str(out / "config.yaml"), f"eval.weights={out}",
                                   f"eval.output_dir={tmp_path / 'merged_eval'}", f"data.root={data}",
                                   "train.progress=false"])
    for part in ("overall", "short", "long"):
        assert merged["metrics"][part]["giou"] == pytest.approx(unmerged["metrics"][part]["giou"], abs=2e-3)
        assert merged["metrics"][part]["ciou"] == pytest.approx(unmerged["metrics"][part]["ciou"], abs=2e-3)


def test_torchrun_two_processes_merge_to_the_single_process_result(trained_run, tmp_path):
    import os
    import subprocess
    import sys

    run, data = trained_run
    single = evaluate(run, tmp_path / "single")
    port = free_port()
    env = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(ROOT / "evaluate.py"), "--run_dir", str(run), f"eval.output_dir={tmp_path / 'dist'}",
         "train.progress=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert (tmp_path / "dist" / "records.rank1.jsonl").is_file()
    merged = json.loads((tmp_path / "dist" / "results.json").read_text())
    assert merged["metrics"] == single["metrics"] and merged["num_samples"] == single["num_samples"]
