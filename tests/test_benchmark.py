"""scripts/benchmark.py: its FLOP count agrees with PyTorch's operator counter, its official-style baseline decodes
the same tokens as our generation, and the --tiny run (CI) produces every figure; the 24 GB preset's DeepSpeed
settings load."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import ROOT, make_tiny_batch


def load_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    import benchmark

    return benchmark


def test_flop_count_agrees_with_torch_operator_counter():
    """Forward and backward of a tiny READ training micro-batch: the per-layer formulas of read.utils.flops against
    torch.utils.flop_counter (eager attention, so every attention product is a counted matmul; no checkpointing)."""
    from torch.utils.flop_counter import FlopCounterMode

    from read.config import load_config
    from read.model.builder import build_read_model
    from read.utils.flops import count_flops

    cfg = load_config(ROOT / "configs" / "model" / "tiny.yaml", ["model.vlm.attn_implementation=eager"])
    torch.manual_seed(0)
    model, tok = build_read_model(cfg)
    model.train()
    batch = make_tiny_batch(model, tok, cfg, n_images=2)
    with count_flops(model) as ours:
        loss = model(batch).loss.total
    del loss
    with FlopCounterMode(display=False) as fwd:
        loss = model(batch).loss.total
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    assert ours.total_forward == pytest.approx(fwd.get_total_flops(), rel=0.01)
    assert ours.total_backward == pytest.approx(bwd.get_total_flops(), rel=0.01)
    # frozen towers that no gradient crosses cost no backward
    assert ours.backward["llava.model.vision_tower"] == 0 and ours.backward["sam.image_encoder"] == 0
    assert ours.forward["sam.image_encoder"] > 0


def test_official_style_baseline_decodes_what_we_generate(tiny_model, tiny_cfg):
    """The no-cache, one-row loop of the benchmark is a faithful baseline: the same tokens as greedy_generate."""
    from dataclasses import replace

    from read.model.generate import greedy_generate

    bench = load_script()
    model, tok = tiny_model
    was_training = model.training
    model.eval()
    try:
        batch = make_tiny_batch(model, tok, tiny_cfg, n_images=1)
        # the first conversation row as the prompt (any prefix decodes alike in both loops)
        prompt = replace(batch, input_ids=batch.input_ids[:1], attention_mask=batch.attention_mask[:1],
                         row_to_image=batch.row_to_image[:1], labels=None, gt_masks=None)
        ours = greedy_generate(model, prompt, max_new_tokens=6, eos_id=tok.eos_id, pad_id=tok.pad_id).new_tokens[0]
        base = bench.generate_no_cache(model, prompt, max_new_tokens=6, eos_id=tok.eos_id)
    finally:
        model.train(was_training)
    assert len(ours) >= 1 and base[: len(ours)] == ours


@pytest.mark.process_group
def test_benchmark_tiny_produces_every_figure(tmp_path):
    report = load_script().main(["--tiny", "--out", str(tmp_path / "b.json"), "--batch-sizes", "1,4", "--samples", "8",
                                 "--max-new-tokens", "4"])
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["train"]["engine"] in ("deepspeed-zero2", "torch") and saved["train"]["engine_note"]
    assert saved["train"]["images_per_s"] > 0 and saved["train"]["flops_per_step"] > 0
    assert saved["train"]["mfu"] is None and saved["train"]["peak_memory_gib"] is None  # CPU: not claimed
    assert set(saved["eval"]) == {"teacher_forced_bs1", "teacher_forced_bs4", "generate_bs1", "generate_bs4"}
    assert saved["sam"]["ms_per_image"] > 0 and saved["nocache"]["samples_per_s"] > 0
    assert report["generate_speedup"] == pytest.approx(
        max(saved["eval"]["generate_bs1"], saved["eval"]["generate_bs4"]) / saved["nocache"]["samples_per_s"])
    assert saved["device"].startswith("cpu")


def test_24gb_preset_offloads_the_optimizer_and_keeps_the_effective_batch():
    from read.config import load_config
    from read.train.deepspeed_config import build_deepspeed_config

    preset = load_config(ROOT / "configs" / "train" / "read_7b_24gb.yaml")
    recipe = load_config(ROOT / "configs" / "train" / "read_7b_reasonseg.yaml")
    ds = build_deepspeed_config(preset, world_size=1, root=ROOT)
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["train_batch_size"] == recipe.train.batch_size * recipe.train.grad_accumulation_steps == 20
    assert preset.model.vlm.gradient_checkpointing and preset.model.vlm.dtype == "bf16"
