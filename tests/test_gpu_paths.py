"""Branches a first GPU run would take, proven on CPU: exact fp32 buffers in bf16 builds, every trainable weight in
every backward, optimiser choice, NaN-proof batched decoding, fp32 master weights, resume with another world size."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, make_tiny_batch
from dist_zero2_worker import no_seg_batch

from read.config import load_config
from read.model.builder import build_read_model


def rope_reference(model) -> torch.Tensor:
    conf = model.llava.config.text_config
    dim = conf.hidden_size // conf.num_attention_heads
    return 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def build(dtype: str, *extra: str):
    torch.manual_seed(0)
    return build_read_model(load_config(TINY, [f"model.vlm.dtype={dtype}", *extra]))


def test_bf16_build_keeps_fp32_buffers_exact(tmp_path):
    bf16, _ = build("bf16")
    fp32, _ = build("fp32")
    rotary = bf16.llava.model.language_model.rotary_emb
    assert rotary.inv_freq.dtype == torch.float32 and torch.equal(rotary.inv_freq, rope_reference(bf16))
    gauss = bf16.sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    assert torch.equal(gauss, fp32.sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix)
    for (n, p), (_, q) in zip(bf16.sam.prompt_encoder.named_parameters(), fp32.sam.prompt_encoder.named_parameters()):
        assert p.dtype == torch.float32 and torch.equal(p, q), n
    assert bf16.llava.lm_head.weight.dtype == torch.bfloat16  # parameters are cast
    # the pretrained (from_pretrained) path too
    from test_builder_pretrained import write_llava_hf_dir

    write_llava_hf_dir(tmp_path / "llava")
    pre, _ = build("bf16", f"model.vlm.pretrained={tmp_path / 'llava'}")
    inv = pre.llava.model.language_model.rotary_emb.inv_freq
    assert inv.dtype == torch.float32 and torch.equal(inv, rope_reference(pre))


@pytest.mark.process_group
def test_deepspeed_bf16_engine_keeps_them_exact_too():
    from read.train.engine import DeepSpeedEngine

    cfg = load_config(TINY, ["model.vlm.dtype=bf16", "train.engine=deepspeed"])
    torch.manual_seed(0)
    model, _ = build_read_model(cfg)
    before = {n: p.detach().clone() for n, p in model.sam.prompt_encoder.named_parameters()}
    eng = DeepSpeedEngine(model, cfg, world_size=1, root=ROOT)
    m = eng.module
    assert torch.equal(m.llava.model.language_model.rotary_emb.inv_freq, rope_reference(m))
    for n, p in m.sam.prompt_encoder.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[n]), n
    assert m.sam.mask_decoder.output_upscaling[0].weight.dtype == torch.bfloat16


def test_every_trainable_weight_takes_part_without_seg(tiny_model, tiny_cfg):
    """A micro-batch with no [SEG] (VQA, false premises) still sends a gradient to every trainable weight (ZeRO-2
    needs it on every rank; the two-process run is in tests/test_distributed.py) and adds exactly 0 to the loss."""
    model, tok = tiny_model
    model = copy.deepcopy(model).train()

    def without_grad(batch) -> list[str]:
        model.zero_grad(set_to_none=True)
        model(batch).loss.total.backward()
        return sorted(n for n, p in model.named_parameters() if p.requires_grad and p.grad is None)

    with_seg = without_grad(make_tiny_batch(model, tok, tiny_cfg, seed=0))
    batch = no_seg_batch(model, tok, tiny_cfg, seed=0)
    assert without_grad(batch) == with_seg  # the same set on every rank, whatever its micro-batch holds
    # only the parts official READ never uses: multimask_output=False reads mask token 0 and no IoU prediction
    assert with_seg and all(".iou_prediction_head." in n or ".output_hypernetworks_mlps.0." not in n
                            and ".output_hypernetworks_mlps." in n for n in with_seg), with_seg
    model.zero_grad(set_to_none=True)
    out = model(batch)
    out.loss.total.backward()
    assert out.loss.total.item() == pytest.approx((out.loss.ce + out.loss.bce + out.loss.dice).item(), abs=0)
    with torch.no_grad():
        assert model(batch).loss.total.item() == out.loss.total.item()  # no grad: no dummy query, same value


def test_sam_encoder_runs_only_on_images_with_queries(tiny_model, tiny_cfg, monkeypatch):
    model, tok = tiny_model
    batch = make_tiny_batch(model, tok, tiny_cfg, seed=0, n_images=2)
    keep = batch.row_to_image == 1  # drop image 0's rows: image 0 has no query
    from dataclasses import replace

    only_second = replace(batch, input_ids=batch.input_ids[keep], attention_mask=batch.attention_mask[keep],
                          labels=None, row_to_image=batch.row_to_image[keep], gt_masks=None)
    seen = []
    real = model.sam.encode_images
    monkeypatch.setattr(model.sam, "encode_images", lambda x: seen.append(x.shape[0]) or real(x))
    with torch.no_grad():
        out = model(only_second)
    assert seen == [1] and out.pred_masks[0].shape[0] == 0 and out.pred_masks[1].shape[0] == int(keep.sum())


@pytest.mark.parametrize(("choice", "params"), [
    ("adamw", {"torch_adam": True}),
    ("adamw_fused", {"torch_adam": True, "fused": True}),
    ("deepspeed_fused_adam", {}),
])
def test_optimizer_choice(choice, params):
    from read.train.deepspeed_config import build_deepspeed_config

    cfg = load_config(ROOT / "configs/model/read_7b.yaml", [f"train.optimizer={choice}"])
    ds = build_deepspeed_config(cfg, root=ROOT)
    extra = {k: v for k, v in ds["optimizer"]["params"].items() if k in ("torch_adam", "fused")}
    assert ds["optimizer"]["type"] == "AdamW" and extra == params
    if choice == "deepspeed_fused_adam":
        with pytest.raises(ValueError, match="needs CUDA"):
            build_deepspeed_config(cfg, cpu=True, root=ROOT)
    # the default never needs a compiler: the fused torch kernel on CUDA, the plain loop on the CPU
    default = load_config(ROOT / "configs/model/read_7b.yaml")
    assert default.train.optimizer == "auto"
    assert build_deepspeed_config(default, root=ROOT)["optimizer"]["params"]["fused"] is True
    assert "fused" not in build_deepspeed_config(default, cpu=True, root=ROOT)["optimizer"]["params"]


@pytest.mark.process_group
def test_fused_adamw_is_used_by_both_engines():
    from read.train.engine import DeepSpeedEngine, TorchEngine

    cfg = load_config(TINY, ["train.optimizer=adamw_fused"])
    torch.manual_seed(0)
    model, _ = build_read_model(cfg)
    assert TorchEngine(model, cfg).optimizer.defaults["fused"] is True
    eng = DeepSpeedEngine(model, load_config(TINY, ["train.optimizer=adamw_fused", "train.engine=deepspeed"]),
                          world_size=1, root=ROOT)
    basic = eng.engine.basic_optimizer
    assert isinstance(basic, torch.optim.AdamW) and basic.defaults["fused"] is True


def test_torch_engine_keeps_fp32_masters_in_bf16():
    """Updates below bf16's resolution at 1.0 (2^-7) accumulate in the fp32 masters and reach the weights."""
    from read.train.engine import TorchEngine

    cfg = load_config(TINY, ["train.lr=1e-4", "train.warmup_steps=0", "train.grad_accumulation_steps=1",
                             "train.grad_clip=0", "train.epochs=1", "train.steps_per_epoch=100000"])
    model = torch.nn.Linear(4, 1, bias=False).to(torch.bfloat16)
    torch.nn.init.ones_(model.weight)
    eng = TorchEngine(model, cfg)
    assert eng.masters is not None and eng.masters[0].dtype == torch.float32
    x = torch.ones(2, 4, dtype=torch.bfloat16)
    for _ in range(120):
        eng.backward(model(x).sum())
        eng.step()
    master = eng.masters[0].detach()
    assert float(master.max()) < 1.0 - 100 * 1e-4 * 0.9  # ~119 steps of lr 1e-4 (Adam steps of ~lr)
    assert torch.equal(model.weight.data, master.to(torch.bfloat16))
    assert float(model.weight.max()) < 1.0  # pure-bf16 AdamW would still be exactly 1.0
    # fp32 models train without masters, as before
    assert TorchEngine(torch.nn.Linear(2, 1), cfg).masters is None


def test_resume_with_another_world_size_is_refused(tmp_path, monkeypatch):
    import train as train_script
    from read.data.synth import ensure_synthetic_root
    from read.utils import distributed as dist

    data = tmp_path / "data"
    ensure_synthetic_root(data, seed=0)
    args = ["--config", str(ROOT / "configs" / "quickstart.yaml"), f"output_dir={tmp_path / 'run'}",
            f"data.root={data}", "data.workers=0", "train.progress=false", "train.epochs=1", "train.steps_per_epoch=2",
            "train.save_every=1", "eval.after_train=false"]
    train_script.main([*args, "train.max_steps=1"])
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    from read.train import checkpoint as ckpt
    from read.train.trainer import Trainer

    path = ckpt.latest_checkpoint(Path(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"written by 1 process\(es\) but this run has 2.*train\.init=checkpoint"):
        ckpt.load_checkpoint(path, None, None)
    assert Trainer  # the trainer resumes through load_checkpoint


def nan_on_fully_masked_rows(original):
    """An SDPA that returns NaN on query rows whose mask allows no key (what some CUDA kernels do)."""

    def sdpa(q, k, v, attn_mask=None, *args, **kwargs):
        out = original(q, k, v, attn_mask, *args, **kwargs)
        if attn_mask is not None:
            allowed = attn_mask if attn_mask.dtype == torch.bool else attn_mask > torch.finfo(attn_mask.dtype).min
            full = ~allowed.any(-1)  # [B, 1 or H, Q]
            if bool(full.any()):
                out = out.masked_fill(full[..., None], float("nan"))
        return out

    return sdpa


def test_nan_on_fully_masked_rows_leaves_greedy_outputs_unchanged(tiny_model, tiny_cfg, monkeypatch):
    import read.model.generate as gen_mod
    from read.model.generate import greedy_generate, left_pad

    model, tok = tiny_model
    model.eval()
    batch = left_pad(make_tiny_batch(model, tok, tiny_cfg, seed=1), tok.pad_id)
    assert len(set(batch.attention_mask.sum(1).tolist())) > 1  # rows of different lengths: real left padding
    kw = dict(max_new_tokens=5, eos_id=tok.eos_id, pad_id=tok.pad_id)
    ref = greedy_generate(model, batch, **kw)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        nan_on_fully_masked_rows(torch.nn.functional.scaled_dot_product_attention))
    nan = greedy_generate(model, batch, **kw)
    assert torch.equal(nan.sequences, ref.sequences)
    torch.testing.assert_close(nan.seg_hidden, ref.seg_hidden)
    # without the protection the NaN spreads to the real tokens (so the test can fail)
    from contextlib import nullcontext

    monkeypatch.setattr(gen_mod, "zero_padded_positions", lambda lm, valid: nullcontext())
    broken = greedy_generate(model, batch, **kw)
    assert not torch.equal(broken.sequences, ref.sequences)
