"""Evaluate READ with a named protocol; results are resumable and recorded with their settings.

    python evaluate.py --run runs/quickstart                           # the run's config.yaml + latest checkpoint
    python evaluate.py --run runs/quickstart eval.protocol=generate    # real inference: the model must emit [SEG]
    python evaluate.py --config configs/eval/reasonseg_val_7b.yaml eval.weights=$READ_CKPT/READ-LLaVA-v1.5-7B-for-ReasonSeg-valset
    torchrun --nproc_per_node 8 evaluate.py --config ...               # shards, merged into one results.json
    torchrun --nproc_per_node 8 evaluate.py --run_dir runs/x           # (torchrun would take --run for itself)

Writes ``records.rank*.jsonl`` (one line per sample), ``results.json`` (protocol, dataset, split, weights, the
evaluation key, SasP settings actually used, template rule, decoding, metrics), ``eval_key.json`` and, with
``eval.overlays=N``, overlay PNGs into ``eval.output_dir`` (default ``<output_dir>/eval/<name>/<key>``, where
``key`` is a digest of the weights, the model settings and the evaluation settings: another checkpoint or another
SasP setting is a new folder, never a stale one). A rerun of the same evaluation resumes its records; an explicit
``eval.output_dir`` holding another evaluation is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from read.config import load_config
from read.eval.run import format_metrics, run_evaluation
from read.utils import distributed as dist
from read.utils.device import resolve_device
from read.utils.logging import get_logger

log = get_logger()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", "--run_dir", dest="run",
                     help="a training run directory (its config.yaml and latest checkpoint; eval.weights=<run>/"
                          "checkpoints/best for the best-on-val one); under torchrun use --run_dir (torchrun's own "
                          "parser takes --run for its --run-path)")
    src.add_argument("--config", help="a YAML config (configs/eval/...)")
    parser.add_argument("--overwrite", action="store_true",
                        help="an explicit eval.output_dir that holds another evaluation is cleared instead of refused")
    parser.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed launcher")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. eval.split=test")
    args = parser.parse_intermixed_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    cfg = load_config(Path(args.run) / "config.yaml" if args.run else args.config, args.overrides)
    weights = cfg.eval.weights or args.run

    from read.data.catalog import check_eval_split
    from read.eval.run import check_eval_data
    from read.model.rebuild import check_paths, rebuild

    check_paths(cfg, weights, weights_key="eval.weights" if cfg.eval.weights else "--run")
    check_eval_split(cfg)  # the split's files exist (cheap); check_eval_data below parses it
    device = resolve_device(cfg.device, dist.get_local_rank())  # auto/cuda -> cuda:LOCAL_RANK
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before NCCL starts, so every rank talks from its own GPU
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    check_eval_data(cfg)  # the split exists and parses, before the model is built
    built = rebuild(cfg, weights, device)  # config + train.init + weights, base checked exactly; on the device
    model = built.model.eval()
    result = run_evaluation(cfg, model, built.tokenizer, device=device, weights=built.weights,
                            weights_digest=built.digest, overwrite=args.overwrite)
    if dist.is_main():
        print(format_metrics(result))
        print(f"results: {Path(result['output_dir']) / 'results.json'}")
        log.debug(json.dumps(result))
    return result


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
