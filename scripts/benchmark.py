"""Speed and memory of READ: one training step, evaluation throughput, the SAM encoder, and the official-style
batch-1 no-cache generation side by side. Random weights: speed and memory do not depend on trained values.

    python scripts/benchmark.py --out bench.json                       # READ-7B (random init) in bf16 on CUDA
    python scripts/benchmark.py --tiny --out bench_tiny.json           # the tiny model on the CPU (CI)
    python scripts/benchmark.py --train-config configs/train/read_7b_24gb.yaml --only train   # the 24 GB preset
    python scripts/benchmark.py --model-config configs/model/read_qwen25vl_3b_sam2_random.yaml --out bench_qwen.json

(a) ``train``: one optimiser step of the 7B recipe (or of ``--train-config``'s ``train`` section and checkpointing
    setting, with one micro-batch per step): micro-batch 2 images x 3 conversation rows each (every row with
    a [SEG]), gradient checkpointing, LoRA, the DeepSpeed ZeRO-2 engine (bf16) where it starts, else the plain engine
    (the output says which and why); images/s, peak allocated GPU memory, and model FLOPs utilisation from the FLOP
    count of ``read.utils.flops`` (forward + the backward autograd does; no recomputation) over the device's peak.
(b) ``eval``: samples/s of the ``teacher_forced`` and ``generate`` protocols (the evaluator's own ``predict_batch``)
    for batch sizes 1, 8, 32 on ReasonSeg-like samples (one query per image); batches are collated before timing, as
    the evaluation's DataLoader workers do it in parallel. Random weights never emit EOS, so every generated answer
    is ``--max-new-tokens`` long (a fixed, worst-case decode length).
(c) ``sam``: the frozen SAM image encoder, ms per image at its batch size.
(d) ``nocache``: generation the way the official evaluation does it: one sample at a time, no KV cache (the whole
    sequence, CLIP included, re-run for every new token), then the [SEG] masks; its samples/s and the ratio of the
    best ``generate`` throughput of (b) to it.

Prints a table and writes JSON (device, versions, command, every figure). Nothing here is a GPU figure unless the
device line says CUDA.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

TINY = ROOT / "configs" / "model" / "tiny.yaml"
FULL = ROOT / "configs" / "model" / "read_7b_random.yaml"
# dense bf16 tensor-core peak per GPU (vendor data sheets, SXM parts), TFLOP/s
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, f"no peak for {device.type}: MFU not computed"
    name = torch.cuda.get_device_name(device)
    for key, tf in PEAK_TFLOPS.items():
        if key in name:
            return tf * 1e12, f"{name}: {tf} TFLOP/s dense bf16"
    return None, f"{name}: peak unknown, MFU not computed"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_samples(n: int, seed: int, *, rows: int = 1, answers: bool = True):
    """ReasonSeg-like samples: a 640 x 480 (full) or small (tiny) image, ``rows`` questions each with a [SEG] answer."""
    from read.data.base import Sample
    from read.data.synthetic import draw_rectangles

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = (480, 640) if SIZE == "full" else (60, 80)
        image, masks, names = draw_rectangles(rng, h, w, num_shapes=max(2, rows))
        convs = []
        for r in range(rows):
            q = (f"<image>\nIf you were asked to point at the {names[r]} in this picture, which region would you "
                 "choose? Please output segmentation mask.")
            convs.append([(q, "Sure, the segmentation result is [SEG]." if answers else None)])
        out.append(Sample(image=image, conversations=convs, masks=np.stack(masks[:rows]) if answers else None,
                          meta={"gt_masks": np.stack(masks[:rows])}))
    return out


SIZE = "full"


def model_config(args, *extra: str, recipe: bool = False):
    """The benchmarked config: the tiny model (``--tiny``, fp32) or READ-7B with random weights (bf16); with
    ``recipe`` and ``--train-config``, that recipe's ``train`` section and gradient-checkpointing setting on it."""
    from dataclasses import replace

    from read.config import load_config

    dtype = "fp32" if args.tiny else "bf16"
    base = args.model_config or (TINY if args.tiny else FULL)
    cfg = load_config(base, [f"model.vlm.dtype={dtype}", *extra, *args.overrides])
    if recipe and args.train_config:
        r = load_config(args.train_config)
        vlm = replace(cfg.model.vlm, gradient_checkpointing=r.model.vlm.gradient_checkpointing)
        cfg = replace(cfg, train=replace(r.train, grad_accumulation_steps=1, warmup_steps=1),
                      model=replace(cfg.model, vlm=vlm))
    return cfg


def build(cfg, device: torch.device):
    from read.model.builder import build_read_model

    torch.manual_seed(0)
    model, tok = build_read_model(cfg, device=device)
    return model, tok


# ------------------------------------------------------------------------------------------------------- (a) train
def bench_train(args, device: torch.device) -> dict:
    from read.train.engine import DeepSpeedEngine, TorchEngine, skip_cpu_shm_build
    from read.train.trainer import TrainCollator
    from read.utils.distributed import single_process_env_defaults
    from read.utils.flops import count_flops

    extra = ["train.batch_size=2", "train.grad_accumulation_steps=1", "model.vlm.gradient_checkpointing=true",
             "train.warmup_steps=1", "train.epochs=1", "train.steps_per_epoch=100", "train.lr=1e-4"]
    cfg = model_config(args, *extra, recipe=True)
    images = cfg.train.batch_size
    if not cfg.model.lora.enabled:
        raise ValueError("the training benchmark measures the LoRA recipe: model.lora.enabled must be true")
    model, tok = build(cfg, device)
    engine_name, why = f"deepspeed-zero{cfg.train.zero_stage}", "DeepSpeed started"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        if device.type == "cpu":
            skip_cpu_shm_build()
        single_process_env_defaults()
        engine = DeepSpeedEngine(model, cfg, world_size=1, root=ROOT)
    except Exception as exc:  # noqa: BLE001 - reported, then the plain engine
        engine_name, why = "torch", f"DeepSpeed did not start: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        engine = TorchEngine(model, cfg)
    collate = TrainCollator.for_model(tok, model, cfg.model.vlm)
    batches = [collate(make_samples(images, seed, rows=3)).to(device, dtype=next(model.vlm.parameters()).dtype)
               for seed in range(args.steps + 1)]
    rows, tokens = int(batches[0].input_ids.shape[0]), int(batches[0].attention_mask.sum())
    # FLOPs of one micro-batch: counted on a forward whose graph is then dropped (hooks off before any backward)
    with count_flops(engine.module) as fc:
        loss = engine(batches[0]).loss.total
    del loss
    times, losses = [], []
    for i, b in enumerate(batches):
        sync(device)
        t0 = time.perf_counter()
        out = engine(b)
        engine.backward(out.loss.total)
        engine.step()
        sync(device)
        if i > 0:  # the first step warms up kernels and allocators
            times.append(time.perf_counter() - t0)
        losses.append(float(out.loss.total.detach()))
    step = float(np.median(times))
    peak, peak_note = peak_flops(device)
    mfu = fc.total / step / peak if peak else None
    return {
        "engine": engine_name, "engine_note": why, "micro_batch_images": images, "rows": rows, "tokens": tokens,
        "deepspeed_config": cfg.train.deepspeed_config,
        "gradient_checkpointing": bool(cfg.model.vlm.gradient_checkpointing), "dtype": cfg.model.vlm.dtype,
        "step_seconds": step, "images_per_s": images / step, "flops_per_step": fc.total, "flops": fc.as_dict(),
        "mfu": mfu, "peak_note": peak_note, "losses_finite": bool(np.isfinite(losses).all()),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "config": str(args.train_config or args.model_config or ("tiny" if args.tiny else FULL.relative_to(ROOT))),
    }


# -------------------------------------------------------------------------------------------------------- (b) eval
def evaluator_for(cfg, model, tok, device, protocol: str):
    from dataclasses import replace

    from read.eval.evaluator import Evaluator

    cfg = replace(cfg, eval=replace(cfg.eval, protocol=protocol, max_new_tokens=MAX_NEW))
    return Evaluator(cfg, model, tok, None, output_dir=Path("/nonexistent"), device=device)


MAX_NEW = 32


def bench_eval(cfg, model, tok, device, batch_sizes: list[int], n: int) -> dict:
    out: dict = {}
    samples = make_samples(n, 123, answers=True)
    prompts = make_samples(n, 123, answers=False)
    for protocol in ("teacher_forced", "generate"):
        ev = evaluator_for(cfg, model, tok, device, protocol)
        data = samples if protocol == "teacher_forced" else prompts
        for bs in batch_sizes:
            chunks = [data[i:i + bs] for i in range(0, n, bs)]
            batches = [ev.collate(c) for c in chunks]
            ev.predict_batch(batches[0], chunks[0])  # warm-up
            sync(device)
            t0 = time.perf_counter()
            for b, c in zip(batches, chunks, strict=True):
                ev.predict_batch(b, c)
            sync(device)
            out[f"{protocol}_bs{bs}"] = n / (time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------------------------------------------ (c) SAM
def bench_sam(model, device, images: int) -> dict:
    sam = model.sam
    x = torch.randn(images, 3, sam.img_size, sam.img_size, device=device)
    sam.encode_images(x[:1])
    sync(device)
    t0 = time.perf_counter()
    sam.encode_images(x)
    sync(device)
    dt = time.perf_counter() - t0
    return {"images": images, "encoder_batch_size": sam.encoder_batch_size, "ms_per_image": 1000 * dt / images}


# -------------------------------------------------------------------------------------------------- (d) no cache
@torch.no_grad()
def generate_no_cache(model, batch, *, max_new_tokens: int, eos_id: int) -> list[int]:
    """The official evaluation's decoding: one row, every step re-runs CLIP and the whole sequence (no KV cache),
    then the [SEG] masks from the final sequence's states. ``batch``: one sample (one image, one row). Returns the
    generated ids."""
    from dataclasses import replace

    ids = batch.input_ids[:1, : int(batch.attention_mask[0].sum())]
    new: list[int] = []
    for _ in range(max_new_tokens):
        b = replace(batch, input_ids=ids, attention_mask=torch.ones_like(ids), labels=None, gt_masks=None)
        hidden = model.hidden_states(b)
        logits = model.vlm.lm_head(hidden[:, -1]).float()
        if model.output_vocab is not None:
            logits = logits.masked_fill(~model.output_vocab, float("-inf"))
        tok = int(logits.argmax(-1))
        new.append(tok)
        ids = torch.cat([ids, ids.new_tensor([[tok]])], dim=1)
        if tok == eos_id:
            break
    model(replace(batch, input_ids=ids, attention_mask=torch.ones_like(ids), labels=None, gt_masks=None))  # masks of any [SEG] in the final sequence, as the official code re-reads them
    return new


def bench_nocache(cfg, model, tok, device, n: int) -> dict:
    ev = evaluator_for(cfg, model, tok, device, "generate")
    prompts = make_samples(n, 123, answers=False)
    batches = [ev.collate([s]).to(device, dtype=ev.dtype) for s in prompts]
    generate_no_cache(model, batches[0], max_new_tokens=2, eos_id=tok.eos_id)
    sync(device)
    t0 = time.perf_counter()
    for b in batches:
        generate_no_cache(model, b, max_new_tokens=MAX_NEW, eos_id=tok.eos_id)
    sync(device)
    return {"samples": n, "samples_per_s": n / (time.perf_counter() - t0)}


# ---------------------------------------------------------------------------------------------------------- main
def table(report: dict) -> str:
    lines = [f"device: {report['device']}", "| what | figure |", "| --- | ---: |"]
    t = report.get("train")
    if t:
        lines += [f"| train step ({t['engine']}, {t['rows']} rows, {t['tokens']} tokens) | {t['step_seconds']:.3f} s |",
                  f"| train images/s | {t['images_per_s']:.2f} |",
                  f"| train model TFLOPs per step | {t['flops_per_step'] / 1e12:.3f} |",
                  "| train MFU | " + ("-" if t["mfu"] is None else f"{100 * t['mfu']:.1f} %") + " |",
                  "| train peak memory | " + ("-" if t["peak_memory_gib"] is None
                                             else f"{t['peak_memory_gib']:.2f} GiB") + " |"]
    for k, v in (report.get("eval") or {}).items():
        lines.append(f"| eval {k} | {v:.2f} samples/s |")
    s = report.get("sam")
    if s:
        lines.append(f"| SAM image encoder | {s['ms_per_image']:.1f} ms/image |")
    nc = report.get("nocache")
    if nc:
        lines.append(f"| generate, batch 1, no KV cache (official style) | {nc['samples_per_s']:.3f} samples/s |")
        lines.append(f"| best generate / official style | {report['generate_speedup']:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    global SIZE, MAX_NEW
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (CI)")
    parser.add_argument("--out", default=None, help="JSON report")
    parser.add_argument("--only", default="train,eval,sam,nocache", help="comma-separated parts to run")
    parser.add_argument("--train-config", default=None, help="a training recipe to measure instead (memory presets)")
    parser.add_argument("--model-config", default=None,
                        help="another model config (e.g. configs/model/read_qwen25vl_3b_sam2_random.yaml)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (after one warm-up)")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--samples", type=int, default=None, help="samples per evaluation measurement")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default=None)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    SIZE = "tiny" if args.tiny else "full"
    MAX_NEW = args.max_new_tokens
    parts = set(args.only.split(","))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not args.tiny and device.type != "cuda":
        raise SystemExit("the full-size benchmark needs a CUDA GPU; use --tiny on the CPU")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    n = args.samples or max(batch_sizes) * (2 if args.tiny else 2)
    report: dict = {
        "date": datetime.date.today().isoformat(), "command": "python scripts/benchmark.py " + " ".join(argv or []),
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"),
        "torch": torch.__version__, "size": SIZE, "max_new_tokens": MAX_NEW,
    }
    if "train" in parts:
        report["train"] = bench_train(args, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # between measurements (never inside one)
    if parts & {"eval", "sam", "nocache"}:
        cfg = model_config(args, "model.vlm.gradient_checkpointing=false", "model.lora.enabled=false")
        model, tok = build(cfg, device)
        model.eval()
        if "sam" in parts:
            report["sam"] = bench_sam(model, device, 8 if not args.tiny else 4)
        if "eval" in parts:
            report["eval"] = bench_eval(cfg, model, tok, device, batch_sizes, n)
        if "nocache" in parts:
            report["nocache"] = bench_nocache(cfg, model, tok, device, max(2, n // 8))
            best = max((v for k, v in (report.get("eval") or {}).items() if k.startswith("generate")), default=None)
            report["generate_speedup"] = best / report["nocache"]["samples_per_s"] if best else None
    print(table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
