"""Checks only a GPU can settle, as one prepared script: run it first on a newly lent GPU machine.

    python scripts/gpu_checks.py --out gpu_checks.json             # random-init READ-7B in bf16 on CUDA (< 8 min)
    python scripts/gpu_checks.py --tiny --out gpu_checks_tiny.json # the same checks on the tiny model (CPU, CI)

Random weights are enough: speed, memory and the numerical questions below do not depend on trained values
(``configs/model/read_7b_random.yaml``: the READ-7B architecture, vocabulary padded to llava-hf's 32064 rows, SAM
ViT-H, no downloads). Each check prints one JSON line and the whole report goes to ``--out``:

(a) ``rope``: ``inv_freq`` stays fp32 in a bf16 build (bit-equal to the formula) and the bf16 model's last-layer
    states at the positions where the answer sits (after the image tokens, ~600-740 in the real model) agree with
    the fp32 model's (mean cosine >= 0.99); the same with a bf16-rounded ``inv_freq`` (what ``model.to(bf16)`` used to
    give) is reported beside it.
(b) ``zero2_step``: DeepSpeed ZeRO-2 (bf16), three optimiser steps over micro-batch pairs (WarmupDecayLR gives the
    first two lr 0), one micro-batch of each pair without [SEG]: finite losses, trainable weights changed, frozen
    weights unchanged; time per optimiser step and peak memory.
(c) ``batched_generation``: left-padded batched greedy decoding (SDPA) equals per-row decoding: no NaN, the same
    first tokens and [SEG] decisions; the token agreement over the whole answers is reported.
(d) ``sasp_device``: SasP on the device equals SasP on the CPU (labels equal, coordinates within 1e-3 px).

Exit status 1 when a check fails (its line says why); the report is written either way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

TINY = ROOT / "configs" / "model" / "tiny.yaml"
FULL = ROOT / "configs" / "model" / "read_7b_random.yaml"


def model_config(tiny: bool, dtype: str, *extra: str):
    from read.config import load_config

    return load_config(TINY if tiny else FULL, [f"model.vlm.dtype={dtype}", "model.vlm.gradient_checkpointing=false",
                                               *extra])


def build(cfg, device: torch.device, seed: int = 0):
    from read.model.builder import build_read_model

    torch.manual_seed(seed)
    model, tok = build_read_model(cfg)
    return model.to(device), tok


def samples(n: int, seed: int, *, seg: bool = True, long_text: int = 0):
    from read.data.base import Sample
    from read.data.synthetic import draw_rectangles

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = [(60, 80), (90, 50), (70, 70), (40, 100)][i % 4]
        image, masks, names = draw_rectangles(rng, h, w, num_shapes=2)
        filler = " ".join(["the shape on the left of the image"] * long_text)
        q = f"<image>\n{filler} What is {names[0]} in this image? Please output segmentation mask."
        if seg:
            out.append(Sample(image=image, conversations=[[(q, "Sure, the segmentation result is [SEG].")]],
                              masks=np.stack(masks[:1])))
        else:
            out.append(Sample(image=image, conversations=[[(q, "No, there is none.")]],
                              masks=np.zeros((0, h, w), np.uint8)))
    return out


def collate_for(model, tok, cfg, batch_samples, *, answers: bool = True):
    from dataclasses import replace

    from read.data.collate import collate
    from read.model.llava_backbone import clip_image_size, num_image_tokens

    if not answers:
        batch_samples = [replace(s, conversations=[[(c[0][0], None)] for c in s.conversations], masks=None)
                         for s in batch_samples]
    return collate(batch_samples, tok, num_image_tokens=num_image_tokens(model.llava),
                   clip_size=clip_image_size(model.llava), sam_size=model.sam.img_size,
                   use_im_start_end=cfg.model.vlm.use_im_start_end)


# ---------------------------------------------------------------------------------------------------------- checks


def check_rope(tiny: bool, device: torch.device) -> dict:
    cfg16, cfg32 = model_config(tiny, "bf16"), model_config(tiny, "fp32")
    m16, tok = build(cfg16, device)
    m32, _ = build(cfg32, device)
    lm = m16.llava.model.language_model
    conf = lm.config
    dim = conf.hidden_size // conf.num_attention_heads
    params = getattr(conf, "rope_parameters", None)
    theta = float(params["rope_theta"]) if isinstance(params, dict) and "rope_theta" in params else 10000.0
    ref = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float().to(device) / dim)
    exact = lm.rotary_emb.inv_freq.dtype == torch.float32 and torch.equal(lm.rotary_emb.inv_freq, ref)
    batch = collate_for(m16, tok, cfg16, samples(1, 0, long_text=3 if tiny else 18)).to(device, dtype=torch.bfloat16)
    with torch.no_grad():
        h16 = m16.hidden_states(batch).float()
        h32 = m32.hidden_states(batch.to(device, dtype=torch.float32)).float()
        saved = lm.rotary_emb.inv_freq.clone()
        lm.rotary_emb.inv_freq.copy_(saved.to(torch.bfloat16).float())  # what a blanket .to(bf16) did
        h16_rounded = m16.hidden_states(batch).float()
        lm.rotary_emb.inv_freq.copy_(saved)
    n_img = int((batch.input_ids[0] == tok.image_token_id).sum())
    tail = slice(n_img, batch.input_ids.shape[1])  # the text after the image: where the answer and [SEG] sit

    def cos(a, b):
        return float(torch.nn.functional.cosine_similarity(a[0, tail], b[0, tail], dim=-1).mean())

    with torch.no_grad():  # logits at the text positions: how often the bf16 model's next token is the fp32 one's
        top16 = m16.llava.lm_head(h16[0, tail].to(torch.bfloat16)).argmax(-1)
        top32 = m32.llava.lm_head(h32[0, tail]).argmax(-1)
    report = {"tokens": int(batch.input_ids.shape[1]), "text_positions": [n_img, int(batch.input_ids.shape[1])],
              "inv_freq_fp32_exact": bool(exact), "cosine_bf16_vs_fp32": cos(h16, h32),
              "cosine_bf16_rounded_inv_freq_vs_fp32": cos(h16_rounded, h32),
              "top1_logit_agreement_bf16_vs_fp32": float((top16 == top32).float().mean())}
    report["ok"] = exact and report["cosine_bf16_vs_fp32"] >= 0.99
    return report


def check_zero2(tiny: bool, device: torch.device) -> dict:
    from read.train.engine import DeepSpeedEngine, skip_cpu_shm_build
    from read.utils.distributed import single_process_env_defaults

    extra = ["train.engine=deepspeed", "train.zero_stage=2", "train.grad_accumulation_steps=2", "train.batch_size=2",
             "train.warmup_steps=1", "train.lr=1e-4", "train.epochs=1", "train.steps_per_epoch=10"]
    cfg = model_config(tiny, "bf16", *extra, "model.vlm.gradient_checkpointing=true")
    if device.type == "cpu":
        skip_cpu_shm_build()
    single_process_env_defaults()
    model, tok = build(cfg, torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    engine = DeepSpeedEngine(model.to(device), cfg, world_size=1, root=ROOT)
    batches = [collate_for(model, tok, cfg, samples(2, 1)), collate_for(model, tok, cfg, samples(2, 2, seg=False))]
    losses, times = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        for b in batches:
            out = engine(b.to(device, dtype=torch.bfloat16))
            losses.append(float(out.loss.total.detach()))
            engine.backward(out.loss.total)
            engine.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    m = engine.module
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    changed = [n for n in trainable if not torch.equal(before[n], m.get_parameter(n).detach().cpu())]
    frozen_changed = [n for n, p in m.named_parameters()
                      if not p.requires_grad and not torch.equal(before[n], p.detach().cpu())]
    report = {"losses": losses, "step_seconds": times, "trainable_changed": len(changed),
              "trainable": len(trainable), "frozen_changed": frozen_changed[:5],
              "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)}
    report["ok"] = (all(np.isfinite(losses)) and not frozen_changed
                    and any("mask_decoder" in n for n in changed) and any("lora_B" in n for n in changed))
    return report


def check_generation(tiny: bool, device: torch.device) -> dict:
    from dataclasses import replace

    from read.model.generate import greedy_generate, left_pad

    cfg = model_config(tiny, "bf16")
    model, tok = build(cfg, device)
    model.eval()
    items = samples(4, 3)
    for i, s in enumerate(items):  # different prompt lengths: real left padding
        turns = s.conversations[0][0]
        items[i] = replace(s, conversations=[[("<image>\n" + "please " * i + turns[0][len("<image>\n"):], None)]],
                           masks=None)
    batch = left_pad(collate_for(model, tok, cfg, items, answers=False), tok.pad_id).to(device, dtype=torch.bfloat16)
    kw = dict(max_new_tokens=8, eos_id=tok.eos_id, pad_id=tok.pad_id)
    together = greedy_generate(model, batch, **kw)
    agree, first_same, seg_same, rows = 0, 0, 0, batch.input_ids.shape[0]
    total = 0
    for r in range(rows):
        keep = torch.arange(rows, device=batch.input_ids.device) == r
        one = replace(batch, input_ids=batch.input_ids[keep], attention_mask=batch.attention_mask[keep],
                      row_to_image=torch.zeros(1, dtype=torch.long, device=batch.input_ids.device),
                      pixel_values_clip=batch.pixel_values_clip[batch.row_to_image[keep]],
                      pixel_values_sam=batch.pixel_values_sam[batch.row_to_image[keep]],
                      image_hw=batch.image_hw[batch.row_to_image[keep]],
                      sam_input_hw=batch.sam_input_hw[batch.row_to_image[keep]])
        alone = greedy_generate(model, left_pad(one, tok.pad_id), **kw)
        a, b = together.new_tokens[r], alone.new_tokens[0]
        first_same += int(a[:1] == b[:1])
        seg_same += int((tok.seg_token_id in a) == (tok.seg_token_id in b))
        agree += sum(int(x == y) for x, y in zip(a, b, strict=False))
        total += max(len(a), len(b), 1)
    nan = bool(torch.isnan(together.seg_hidden).any()) if together.seg_hidden.numel() else False
    report = {"rows": rows, "first_token_equal": first_same, "seg_decision_equal": seg_same,
              "token_agreement": agree / total, "nan_in_seg_states": nan,
              "any_row_collapsed_to_id0": any(t[:3] == [0, 0, 0] for t in together.new_tokens)}
    report["ok"] = first_same == rows and seg_same == rows and not nan and not report["any_row_collapsed_to_id0"]
    return report


def check_sasp(tiny: bool, device: torch.device) -> dict:
    from read.config import SasPConfig
    from read.model.sasp import SimilarityAsPoints

    side = 8 if tiny else 24
    g = torch.Generator().manual_seed(0)
    p, c = 16, 64
    image_hidden = torch.randn(p, side * side, c, generator=g)
    seg_hidden = torch.randn(p, c, generator=g)
    hw = torch.tensor([[480, 640], [1080, 1920], [3000, 4000], [333, 500]] * (p // 4))
    sasp = SimilarityAsPoints(SasPConfig(num_points=30), clip_size=side * 14, sam_size=1024)
    cpu = sasp(image_hidden, seg_hidden, hw)
    dev = sasp(image_hidden.to(device), seg_hidden.to(device), hw.to(device))
    labels_equal = torch.equal(cpu.labels, dev.labels.cpu())
    diff = float((cpu.coords - dev.coords.cpu()).abs().max())
    return {"queries": p, "labels_equal": bool(labels_equal), "max_coord_diff_px": diff,
            "ok": bool(labels_equal) and diff <= 1e-3}


CHECKS = {"rope": check_rope, "zero2_step": check_zero2, "batched_generation": check_generation,
          "sasp_device": check_sasp}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny model (CPU when no GPU): what CI runs")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    ap.add_argument("--only", nargs="*", choices=sorted(CHECKS), default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if not args.tiny and device.type != "cuda":
        raise SystemExit("the full-size checks need a CUDA GPU; use --tiny on a CPU machine")
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "tiny": args.tiny,
              "torch": torch.__version__, "checks": {}}
    failed = []
    for name in args.only or list(CHECKS):
        t0 = time.perf_counter()
        try:
            res = CHECKS[name](args.tiny, device)
        except Exception as e:  # noqa: BLE001 - a failing check is reported, the others still run
            res = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        res["seconds"] = round(time.perf_counter() - t0, 2)
        report["checks"][name] = res
        print(json.dumps({name: {k: v for k, v in res.items() if k != "traceback"}}), flush=True)
        if not res["ok"]:
            failed.append(name)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # between checks only; the library never calls it
    report["failed"] = failed
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))
    if failed:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
