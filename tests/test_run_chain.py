"""The joints between steps: release -> fine-tune -> evaluate -> merge -> evaluate, with exact base checks, evaluation
folders that can never report stale numbers, and resumption that never unpickles code.

Everything runs on a tiny official-layout release written by the test (``release_helpers``: hand-made key names,
official vocabulary order, a full ``config.json``) and on generated data in the real formats.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, TINY
from release_helpers import (
    FULL_RELEASE_CONFIG,
    RELEASED_ROWS,
    official_release_dict,
    write_release,
    write_tokenizer_files,
)

from read.config import load_config

QUICK = ROOT / "configs" / "quickstart.yaml"


def records(folder: Path) -> list[tuple]:
    """Per query: (item, intersection, union, gt area, predicted area), from every records file of ``folder``."""
    rows = []
    for f in sorted(folder.glob("records.rank*.jsonl")):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            for k, q in enumerate(rec["queries"]):
                rows.append((rec["index"], k, q["intersection"], q["union"], q["gt_area"], q["pred_area"]))
    return sorted(rows)


def run_args(root: Path, data: Path, *extra: str) -> list[str]:
    """Three optimiser steps with a one-step warm-up: the first two steps of DeepSpeed's WarmupDecayLR have lr 0
    (iterations -1 and 0), so three steps is the shortest run that changes the weights."""
    return ["--config", str(QUICK), f"output_dir={root / 'run'}", f"data.root={data}", "data.workers=0",
            "train.progress=false", "train.epochs=1", "train.steps_per_epoch=3", "train.save_every=3",
            "train.warmup_steps=1", "eval.overlays=0", *extra]


def evaluate(*args: str) -> dict:
    import evaluate as evaluate_script

    return evaluate_script.main([*args, "train.progress=false"])


def load_merge_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    import merge_lora

    return merge_lora


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from read.data.synth import ensure_synthetic_root

    root = tmp_path_factory.mktemp("chain_data")
    ensure_synthetic_root(root, seed=0)
    return root


@pytest.fixture(scope="module")
def chain(tmp_path_factory, data):
    """A tiny official release, and a run fine-tuned from it for two steps (train.init: released) whose in-memory
    model was evaluated at the end of training (eval.after_train) into ``inmem/``."""
    import train as train_script
    from read.model.builder import build_read_model

    root = tmp_path_factory.mktemp("chain")
    release = root / "release"
    write_tokenizer_files(release)
    torch.manual_seed(1)
    source, tok = build_read_model(load_config(TINY, [f"model.vlm.tokenizer={release}", "model.lora.enabled=false"]))
    assert (tok.seg_token_id, tok.image_token_id) == (600, 603)  # official order, <image> appended
    sd = official_release_dict(source)
    write_release(release, sd, shards=2, config=FULL_RELEASE_CONFIG)
    summary = train_script.main(run_args(
        root, data, f"model.vlm.tokenizer={release}", "train.init=released", f"train.init_checkpoint={release}",
        "eval.after_train=true", f"eval.output_dir={root / 'inmem'}", "--no_auto_resume"))
    assert summary["global_step"] == 3
    return SimpleNamespace(root=root, data=data, release=release, run=root / "run", release_sd=sd)


# ------------------------------------------------------------------------------------------------ release chain


def test_run_from_release_evaluates_like_the_in_memory_model(chain):
    inmem = json.loads((chain.root / "inmem" / "results.json").read_text())
    res = evaluate("--run", str(chain.run), f"eval.output_dir={chain.root / 'rebuilt'}")
    assert records(chain.root / "rebuilt") == records(chain.root / "inmem")
    assert len(records(chain.root / "inmem")) == 8
    assert res["metrics"] == inmem["metrics"]
    assert res["eval_key"] == inmem["eval_key"]  # the same digest: bit-identical weights and settings
    # training changed the weights (LoRA B started at 0), and the checkpoint records the release as its base
    from safetensors.torch import load_file

    trained = load_file(str(chain.run / "checkpoints" / "step_00000003" / "trainable.safetensors"))
    assert any(float(v.abs().max()) > 0 for k, v in trained.items() if "lora_B" in k)
    base = json.loads((chain.run / "checkpoints" / "step_00000003" / "base.json").read_text())
    assert base["sources"]["release"] == str(chain.release)


def test_merged_model_evaluates_like_the_in_memory_model(chain):
    merge = load_merge_script()
    out = merge.main(["--run", str(chain.run), "--out", str(chain.root / "merged"), "--official"])
    evaluate("--config", str(out / "config.yaml"), f"eval.output_dir={chain.root / 'merged_eval'}",
             f"data.root={chain.data}")
    assert records(chain.root / "merged_eval") == records(chain.root / "inmem")
    # the official-layout export of a model started from a release is itself a loadable release
    official = chain.root / "exported_release"
    write_tokenizer_files(official)
    from safetensors.torch import load_file

    exported = load_file(str(out / "official" / "model.safetensors"))
    assert exported["model.embed_tokens.weight"].shape[0] == RELEASED_ROWS
    torch.save(exported, official / "pytorch_model.bin")
    (official / "config.json").write_text(json.dumps(FULL_RELEASE_CONFIG))
    evaluate("--config", str(TINY), f"model.vlm.tokenizer={official}", f"eval.weights={official}",
             "model.lora.enabled=false", f"eval.output_dir={chain.root / 'exported_eval'}", f"data.root={chain.data}",
             f"output_dir={chain.root / 'x'}")
    assert records(chain.root / "exported_eval") == records(chain.root / "inmem")


def changed_release(chain, name: str, *, config: dict | None = None, tensor: str | None = None) -> Path:
    folder = chain.root / name
    write_tokenizer_files(folder)
    sd = {k: v.clone() for k, v in chain.release_sd.items()}
    if tensor is not None:
        sd[tensor] += 1e-3
    write_release(folder, sd, shards=2, config={**FULL_RELEASE_CONFIG, **(config or {})})
    return folder


def test_a_base_with_a_changed_config_field_is_refused_naming_it(chain):
    other = changed_release(chain, "eps_release", config={"rms_norm_eps": 1e-5})
    with pytest.raises(ValueError, match=r"config.json.*rms_norm_eps=1e-05 \(model built: 1e-06\)"):
        evaluate("--run", str(chain.run), f"train.init_checkpoint={other}", f"model.vlm.tokenizer={other}",
                 f"eval.output_dir={chain.root / 'never'}")


def test_a_base_with_a_changed_tensor_is_refused_naming_it(chain):
    from read.model.fingerprint import BaseMismatchError

    other = changed_release(chain, "tensor_release", tensor="model.layers.1.mlp.up_proj.weight")
    with pytest.raises(BaseMismatchError, match=r"1 base tensors differ, first llava\.model\.language_model\."
                                                 r"layers\.1\.mlp\.up_proj\.weight"):
        evaluate("--run", str(chain.run), f"train.init_checkpoint={other}", f"model.vlm.tokenizer={other}",
                 f"eval.output_dir={chain.root / 'never'}")
    assert not (chain.root / "never").exists()


def test_merge_refuses_a_changed_base_too(chain, tmp_path):
    from read.model.fingerprint import BaseMismatchError

    other = changed_release(chain, "tensor_release_2", tensor="model.visual_model.image_encoder.neck.0.weight")
    run = tmp_path / "run"
    shutil.copytree(chain.run, run)
    cfg_text = (run / "config.yaml").read_text().replace(str(chain.release), str(other))
    (run / "config.yaml").write_text(cfg_text)
    with pytest.raises(BaseMismatchError, match=r"sam\.image_encoder\.neck\.0\.weight"):
        load_merge_script().main(["--run", str(run), "--out", str(tmp_path / "merged")])
    assert not (tmp_path / "merged").exists()


def test_a_run_from_a_checkpoint_inherits_the_release_base(chain, tmp_path):
    """train.init=checkpoint from a run that started from a release: the new run's base is still the release, and
    the new run stays loadable after the first run is deleted (its checkpoints record their base)."""
    import train as train_script

    first = tmp_path / "first"
    shutil.copytree(chain.run, first)
    second = tmp_path / "second"
    train_script.main(["--config", str(QUICK), f"output_dir={second}", f"data.root={chain.data}", "data.workers=0",
                       "train.progress=false", "train.epochs=1", "train.steps_per_epoch=1", "train.save_every=1",
                       "eval.after_train=false", f"model.vlm.tokenizer={chain.release}", "train.init=checkpoint",
                       f"train.init_checkpoint={first}"])
    base = json.loads((second / "checkpoints" / "step_00000001" / "base.json").read_text())
    original = json.loads((first / "checkpoints" / "step_00000003" / "base.json").read_text())
    assert base["sources"]["release"] == str(chain.release) and base["digest"] == original["digest"]
    shutil.rmtree(first)
    res = evaluate("--run", str(second), f"eval.output_dir={tmp_path / 'eval'}", "eval.limit=2")
    assert res["num_samples"] == 2


# ------------------------------------------------------------------------------------------------ stale results


@pytest.fixture()
def quick_run(tmp_path, data):
    import train as train_script

    train_script.main(run_args(tmp_path, data, "eval.after_train=false"))
    return tmp_path / "run"


def test_changed_settings_never_report_stale_numbers(quick_run, tmp_path, data):
    import train as train_script
    from read.eval.identity import EvalMismatchError

    first = evaluate("--run", str(quick_run))
    first_dir = Path(first["output_dir"])
    assert first_dir.parent == quick_run / "eval" / "reason_seg_val_teacher_forced"
    first_results = (first_dir / "results.json").read_text()
    # another SasP setting: a new folder, the same numbers as a fresh evaluation of that setting
    changed = evaluate("--run", str(quick_run), "model.sasp.num_points=3")
    fresh = evaluate("--run", str(quick_run), "model.sasp.num_points=3", f"eval.output_dir={tmp_path / 'fresh'}")
    assert Path(changed["output_dir"]) != first_dir and changed["sasp"]["num_points"] == 3
    assert changed["metrics"] == fresh["metrics"]
    assert records(Path(changed["output_dir"])) == records(tmp_path / "fresh")
    assert records(Path(changed["output_dir"])) != records(first_dir)  # the setting does change the masks
    assert (first_dir / "results.json").read_text() == first_results  # untouched
    # the first setting again: its folder, complete, same numbers
    again = evaluate("--run", str(quick_run))
    assert again["output_dir"] == first["output_dir"] and again["metrics"] == first["metrics"]
    # an explicit folder holding another evaluation is refused, naming the difference; --overwrite redoes it
    with pytest.raises(EvalMismatchError, match=r"model\.sasp\.num_points: 3 -> 5"):
        evaluate("--run", str(quick_run), "model.sasp.num_points=5", f"eval.output_dir={tmp_path / 'fresh'}")
    over = evaluate("--run", str(quick_run), "model.sasp.num_points=5", f"eval.output_dir={tmp_path / 'fresh'}",
                    "--overwrite")
    five = evaluate("--run", str(quick_run), "model.sasp.num_points=5", f"eval.output_dir={tmp_path / 'five'}")
    assert over["metrics"] == five["metrics"] and records(tmp_path / "fresh") == records(tmp_path / "five")
    # retrained run (other weights, same folder and command): a new evaluation, equal to a fresh one
    train_script.main(run_args(tmp_path, data, "--no_auto_resume", "train.lr=3e-3", "eval.after_train=false"))
    retrained = evaluate("--run", str(quick_run))
    fresh2 = evaluate("--run", str(quick_run), f"eval.output_dir={tmp_path / 'fresh2'}")
    assert retrained["output_dir"] != first["output_dir"] and retrained["eval_key"] != first["eval_key"]
    assert retrained["metrics"] == fresh2["metrics"]
    assert records(Path(retrained["output_dir"])) == records(tmp_path / "fresh2")


def test_preset_override_on_a_saved_run_wins(quick_run, tmp_path):
    saved = load_config(quick_run)
    assert (saved.model.sasp.num_points, saved.model.sasp.t_pos) == (10, 0.8)  # explicit values in config.yaml
    cfg = load_config(quick_run, ["model.sasp.preset=read_13b_eval"])
    s = cfg.model.sasp
    assert (s.preset, s.num_points, s.t_pos, s.t_neg, s.down_sample) == ("read_13b_eval", 60, 0.6, 0.2, 1)
    cfg = load_config(quick_run, ["model.sasp.num_points=7", "model.sasp.preset=read_13b_eval"])
    assert (cfg.model.sasp.num_points, cfg.model.sasp.t_pos) == (7, 0.6)  # explicit override beats the preset
    res = evaluate("--run", str(quick_run), "model.sasp.preset=read_13b_eval", "eval.limit=2",
                   f"eval.output_dir={tmp_path / 'p'}")
    assert (res["sasp"]["num_points"], res["sasp"]["t_pos"], res["sasp"]["down_sample"]) == (60, 0.6, 1)


# ------------------------------------------------------------------------------------------------ no unpickling


class _Evil:
    """Unpickling this runs ``touch <marker>`` (through the ``posix.system`` global)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path) -> None:
    if path.suffix in (".pt", ".pth", ".bin"):
        torch.save({"state": _Evil(marker)}, path)  # a real torch zip file whose data.pkl names os.system
    else:
        path.write_bytes(pickle.dumps(_Evil(marker)))


@pytest.mark.process_group
@pytest.mark.parametrize("engine", ["torch", "deepspeed"])
def test_planted_pickles_never_execute_on_resume(engine, tmp_path, data):
    import train as train_script

    args = run_args(tmp_path, data, f"train.engine={engine}", "eval.after_train=false")
    train_script.main(args)
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000003"
    side = sorted(p.relative_to(ckpt) for p in ckpt.rglob("*") if p.is_file() and p.name != "COMPLETE"
                  and p.suffix != ".py" and p.name != "latest")
    assert Path("trainable.safetensors") in side and Path("base.json") in side and Path("rng/rank0.json") in side
    assert any(p.suffix == ".pt" for p in side)  # the engine's own files
    longer = [*args, "train.epochs=2"]
    marker = tmp_path / "executed"
    for rel in side:
        run = tmp_path / f"planted_{str(rel).replace('/', '_')}"
        shutil.copytree(tmp_path / "run", run)
        plant(run / "checkpoints" / "step_00000003" / rel, marker)
        with pytest.raises(Exception) as info:  # refused (the message names the file), never executed
            train_script.main([*longer, f"output_dir={run}"])
        assert not marker.exists(), f"{rel}: unpickling executed code"
        assert not isinstance(info.value, AssertionError)
        assert rel.name in str(info.value), info.value  # a clear error naming the file
    # a pickle in a file nothing reads (the RNG format of earlier versions) changes nothing
    run = tmp_path / "planted_unused"
    shutil.copytree(tmp_path / "run", run)
    plant(run / "checkpoints" / "step_00000003" / "rng" / "rank0.pt", marker)
    assert train_script.main([*longer, f"output_dir={run}"])["global_step"] == 6
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------ best on val


def test_keep_best_keeps_the_best_validation_checkpoint(tmp_path, data):
    import train as train_script

    summary = train_script.main(run_args(
        tmp_path, data, "train.steps_per_epoch=4", "train.save_every=4", "train.keep_last=1", "train.eval_every=1",
        "train.eval_limit=4", "train.keep_best=ciou", "eval.after_train=false", "train.lr=2e-3"))
    assert summary["global_step"] == 4
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    curve = [r for r in rows if "val_ciou" in r]
    assert [r["step"] for r in curve] == [1, 2, 3, 4]
    best_row = max(curve, key=lambda r: r["val_ciou"])  # first maximum: later ties do not replace it
    best = json.loads((tmp_path / "run" / "checkpoints" / "best" / "best.json").read_text())
    assert best["metric"] == "ciou" and best["step"] == best_row["step"] and best["value"] == best_row["val_ciou"]
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["best", "step_00000004"]  # keep_last=1 never deletes the best copy
    assert not (tmp_path / "run" / "checkpoints" / "best" / "engine").exists()  # weights only
    # the kept weights are that step's: evaluating them gives the logged value
    res = evaluate("--run", str(tmp_path / "run"), f"eval.weights={tmp_path / 'run' / 'checkpoints' / 'best'}",
                   "eval.limit=4", f"eval.output_dir={tmp_path / 'best_eval'}")
    assert res["metrics"]["overall"]["ciou"] == pytest.approx(best["value"], abs=1e-12)
