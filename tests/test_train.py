"""Training: schedule, DeepSpeed JSON, both engines, non-finite handling, resume after SIGKILL, launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from read.config import load_config
from read.model.fingerprint import base_record
from read.train.deepspeed_config import build_deepspeed_config
from read.train.schedule import WarmupDecaySchedule, warmup_decay_lr

QUICK = ROOT / "configs" / "quickstart.yaml"


def quick_overrides(tmp_path: Path, data_root: Path, **extra) -> list[str]:
    base = {
        "output_dir": str(tmp_path / "run"),
        "data.root": str(data_root),
        "data.workers": 0,
        "train.progress": "false",
        "train.epochs": 1,
        "train.steps_per_epoch": 6,
        "train.save_every": 3,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from read.data.synth import ensure_synthetic_root

    root = tmp_path_factory.mktemp("synthetic_data")
    ensure_synthetic_root(root, seed=0)
    return root


# ---------------------------------------------------------------------------------------------------------------
def test_schedule_matches_hand_values_and_deepspeed():
    kw = dict(max_lr=3e-4, total_steps=1000, warmup_steps=100)
    # optimiser step k uses DeepSpeed iteration k-1: step 0 -> lr 0, step 1 -> it 0 -> 0, step 51 -> it 50 -> half
    assert warmup_decay_lr(0, **kw) == 0.0
    assert warmup_decay_lr(1, **kw) == 0.0
    assert warmup_decay_lr(51, **kw) == pytest.approx(1.5e-4)
    assert warmup_decay_lr(101, **kw) == pytest.approx(3e-4)  # it = 100: decay starts at its maximum
    assert warmup_decay_lr(551, **kw) == pytest.approx(3e-4 * 450 / 900)
    assert warmup_decay_lr(1001, **kw) == 0.0
    assert warmup_decay_lr(5000, **kw) == 0.0
    # the same values as DeepSpeed's own WarmupDecayLR object, step by step
    from deepspeed.runtime.lr_schedules import WarmupDecayLR

    p = torch.nn.Parameter(torch.zeros(1))
    opt_ds = torch.optim.SGD([p], lr=1.0)
    ds = WarmupDecayLR(opt_ds, total_num_steps=1000, warmup_min_lr=0.0, warmup_max_lr=3e-4,
                       warmup_num_steps=100, warmup_type="linear")
    opt_ours = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ours = WarmupDecaySchedule(opt_ours, **kw)
    for _ in range(1100):
        assert opt_ours.param_groups[0]["lr"] == pytest.approx(opt_ds.param_groups[0]["lr"], abs=1e-12)
        ds.step()
        ours.step()


def test_deepspeed_json_is_generated_from_the_yaml():
    cfg = load_config(ROOT / "configs/model/read_7b.yaml",
                      ["train.batch_size=3", "train.grad_accumulation_steps=7", "train.lr=1e-4",
                       "train.epochs=4", "train.steps_per_epoch=250", "train.warmup_steps=50"])
    ds = build_deepspeed_config(cfg, world_size=8, root=ROOT)
    assert ds["train_micro_batch_size_per_gpu"] == 3
    assert ds["gradient_accumulation_steps"] == 7
    assert ds["train_batch_size"] == 3 * 7 * 8
    assert ds["optimizer"] == {"type": "AdamW", "params": {"lr": 1e-4, "betas": [0.9, 0.95], "eps": 1e-8,
                                                            "weight_decay": 0.0, "torch_adam": True,
                                                            "fused": True}}  # auto on a GPU run: fused
    assert ds["scheduler"] == {"type": "WarmupDecayLR", "params": {
        "total_num_steps": 1000, "warmup_min_lr": 0.0, "warmup_max_lr": 1e-4, "warmup_num_steps": 50,
        "warmup_type": "linear"}}
    assert ds["gradient_clipping"] == 1.0
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}
    assert ds["zero_optimization"]["stage"] == 2 and ds["zero_optimization"]["overlap_comm"] is True
    # buckets well below the 289 M trainable parameters of READ-7B, so gradient reduction overlaps the backward
    assert ds["zero_optimization"]["reduce_bucket_size"] == ds["zero_optimization"]["allgather_bucket_size"] == 5e7
    assert build_deepspeed_config(cfg, cpu=True, root=ROOT)["optimizer"]["params"]["torch_adam"] is True


def test_knobs_file_may_not_set_owned_keys(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"train_micro_batch_size_per_gpu": 4}))
    cfg = load_config(ROOT / "configs/model/tiny.yaml", [f"train.deepspeed_config={bad}"])
    with pytest.raises(ValueError, match="come from the YAML"):
        build_deepspeed_config(cfg)


# ---------------------------------------------------------------------------------------------------------------
def _trainable_snapshot(model):
    return {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.process_group
@pytest.mark.parametrize("engine", ["torch", "deepspeed"])
def test_engines_take_optimizer_steps(engine, tmp_path, data_root):
    from read.data.catalog import build_train_mixture
    from read.model.builder import build_read_model
    from read.model.llava_backbone import clip_image_size, num_image_tokens
    from read.train.engine import build_engine
    from read.train.trainer import TrainCollator, Trainer

    cfg = load_config(QUICK, quick_overrides(tmp_path, data_root, **{
        "train.engine": engine, "train.grad_accumulation_steps": 2, "train.steps_per_epoch": 3,
        "train.warmup_steps": 1, "train.zero_stage": 2}))
    torch.manual_seed(0)
    model, tok = build_read_model(cfg)
    before = _trainable_snapshot(model)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    eng = build_engine(model, cfg, world_size=1, root=ROOT)
    if engine == "deepspeed":
        assert type(eng.engine.optimizer).__name__ == "DeepSpeedZeroOptimizer"
    collator = TrainCollator(tok, num_image_tokens=num_image_tokens(model.llava), clip_size=clip_image_size(model.llava),
                             sam_size=model.sam.img_size, use_im_start_end=True, conv_template="llava_v1",
                             max_length=512)
    summary = Trainer(cfg, eng, build_train_mixture(cfg), collator, output_dir=tmp_path / "run",
                      device=torch.device("cpu"), base=base_record(model)).fit()
    assert summary["global_step"] == 3 and eng.global_steps == 3
    assert all(torch.isfinite(torch.tensor(summary[k])) for k in ("total", "ce", "bce", "dice"))
    after = _trainable_snapshot(eng.module)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert any("lora_B" in n for n in changed) and any(n.startswith("sam.mask_decoder") for n in changed)
    frozen_after = {n: p for n, p in eng.module.named_parameters() if not p.requires_grad}
    assert frozen_after.keys() == frozen_before.keys() and any("vision_tower" in n for n in frozen_after)
    assert all(torch.equal(frozen_before[n], frozen_after[n]) for n in frozen_before)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (tmp_path / "run" / "loss_curves.png").is_file()
    assert (tmp_path / "run" / "checkpoints" / "step_00000003" / "trainable.safetensors").is_file()


def test_nonfinite_losses_are_skipped_then_stop(tmp_path, data_root):
    from read.data.catalog import build_train_mixture
    from read.model.builder import build_read_model
    from read.model.llava_backbone import clip_image_size, num_image_tokens
    from read.train.engine import build_engine
    from read.train.trainer import NonFiniteLossError, TrainCollator, Trainer

    cfg = load_config(QUICK, quick_overrides(tmp_path, data_root, **{"train.max_nonfinite": 3,
                                                                     "train.steps_per_epoch": 8}))
    model, tok = build_read_model(cfg)
    calls = {"n": 0}
    real_forward = model.forward

    def flaky(batch, **kw):
        out = real_forward(batch, **kw)
        calls["n"] += 1
        if calls["n"] in (2, 5, 6, 7, 8):  # one isolated NaN, then a run of them
            out.loss.total = out.loss.total * float("nan")
        return out

    model.forward = flaky
    collator = TrainCollator(tok, num_image_tokens=num_image_tokens(model.llava), clip_size=clip_image_size(model.llava),
                             sam_size=model.sam.img_size, use_im_start_end=True, conv_template="llava_v1",
                             max_length=512)
    trainer = Trainer(cfg, build_engine(model, cfg), build_train_mixture(cfg), collator,
                      output_dir=tmp_path / "run", device=torch.device("cpu"), base=base_record(model))
    with pytest.raises(NonFiniteLossError, match="3 consecutive micro-batches"):
        trainer.fit()
    assert trainer.state.nonfinite_total == 4 and trainer.state.global_step == 6
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
def _env():
    env = dict(os.environ)
    env.update(DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    return env


def test_sigkill_then_resume_gives_the_uninterrupted_result(tmp_path, data_root):
    from safetensors.torch import load_file

    import train as train_script

    common = {"train.steps_per_epoch": 6, "train.epochs": 2, "train.save_every": 2, "train.keep_last": 2,
              "data.workers": 1}
    ref_args = ["--config", str(QUICK), *quick_overrides(tmp_path / "ref", data_root, **common)]
    killed_args = ["--config", str(QUICK), *quick_overrides(tmp_path / "killed", data_root, **common)]
    run_dir = tmp_path / "killed" / "run"

    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *killed_args], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while not (run_dir / "checkpoints" / "step_00000004" / "COMPLETE").exists():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline, "no checkpoint appeared in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    steps_done = len([json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()])
    assert 4 <= steps_done < 12, "the kill must land in the middle of the run"

    resumed = train_script.main(killed_args)  # the same command again
    reference = train_script.main(ref_args)  # an uninterrupted run with the same seed
    assert resumed["global_step"] == reference["global_step"] == 12
    a = load_file(str(run_dir / "checkpoints" / "step_00000012" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "ref" / "run" / "checkpoints" / "step_00000012" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(r)["step"] for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # rows written after the last checkpoint were replaced, not duplicated


def test_deepspeed_launcher_single_cpu_process(tmp_path, data_root):
    launcher = Path(sys.executable).parent / "deepspeed"
    args = quick_overrides(tmp_path, data_root, **{"train.engine": "deepspeed", "train.steps_per_epoch": 2,
                                                    "train.save_every": 2})
    env = _env()
    env["MASTER_PORT"] = "29631"
    res = subprocess.run([str(launcher), "--num_gpus", "1", "--master_port", "29631", str(ROOT / "train.py"),
                          "--config", str(QUICK), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "final: global_step 2" in res.stdout
    assert (tmp_path / "run" / "checkpoints" / "step_00000002" / "engine").is_dir()


def test_init_from_checkpoint_accepts_a_run_directory(tmp_path, data_root):
    """Stage-2 style initialisation: train.init=checkpoint with a run directory resolves its latest checkpoint."""
    from safetensors.torch import load_file

    import train as train_script

    first = ["--config", str(QUICK), *quick_overrides(tmp_path / "a", data_root, **{"train.steps_per_epoch": 2,
                                                                                      "train.save_every": 1})]
    train_script.main(first)
    from read.model.builder import build_read_model
    from read.model.fingerprint import BaseMismatchError
    from read.model.run_weights import load_trainable
    from read.utils.device import seed_everything

    cfg = load_config(tmp_path / "a" / "run")  # the run's resolved config
    model, _ = build_read_model(cfg)  # unseeded: different random base weights
    with pytest.raises(BaseMismatchError, match="frozen base is not the one"):
        load_trainable(model, tmp_path / "a" / "run")
    seed_everything(cfg.train.seed)  # as train.py does before building
    model, _ = build_read_model(cfg)
    load_trainable(model, tmp_path / "a" / "run")
    saved = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "step_00000002" / "trainable.safetensors"))
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), saved[n]), n
    with pytest.raises(FileNotFoundError, match="neither a checkpoint nor a run directory"):
        load_trainable(model, tmp_path)


def test_no_auto_resume_starts_fresh(tmp_path, data_root):
    import train as train_script

    args = ["--config", str(QUICK), *quick_overrides(tmp_path, data_root, **{"train.steps_per_epoch": 2,
                                                                           "train.save_every": 2})]
    assert train_script.main(args)["global_step"] == 2
    assert train_script.main(args)["global_step"] == 2  # resumed: nothing left to do
    assert train_script.main(["--no_auto_resume", *args])["global_step"] == 2  # trained again from step 0
    steps = [json.loads(r)["step"] for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
