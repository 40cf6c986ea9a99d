"""Evaluation entry points shared by ``evaluate.py`` and ``train.py`` (``eval.after_train``)."""

from __future__ import annotations

from pathlib import Path

import torch

from read.config import ReadConfig, save_config
from read.utils import distributed as dist


def eval_output_dir(cfg: ReadConfig) -> Path:
    e = cfg.eval
    if e.output_dir:
        return Path(e.output_dir)
    name = f"{e.dataset}_{e.split}_{e.protocol}" + (f"_{e.subset}" if e.subset != "all" else "")
    return Path(cfg.output_dir) / "eval" / name


def run_evaluation(cfg: ReadConfig, model, tokenizer, *, device: torch.device, weights: Path | None = None) -> dict:
    """Evaluate an already built (and loaded) model; returns results.json's content on rank 0."""
    from read.data.catalog import data_root
    from read.eval.evaluator import Evaluator, build_eval_dataset

    root = data_root(cfg.data)
    if cfg.data.generate_synthetic and dist.is_main():
        from read.data.synth import ensure_synthetic_root

        ensure_synthetic_root(root, seed=cfg.train.seed)
    dist.barrier()
    out_dir = eval_output_dir(cfg)
    if dist.is_main():
        save_config(cfg, out_dir)
    dataset = build_eval_dataset(cfg, root)
    return Evaluator(cfg, model, tokenizer, dataset, output_dir=out_dir, device=device, weights=weights).run()


def format_metrics(result: dict) -> str:
    lines = []
    for part, m in result["metrics"].items():
        if isinstance(m, dict) and "giou" in m:
            lines.append(f"{part}: gIoU {m['giou']:.4f}  cIoU {m['ciou']:.4f}  ({m['num_masks']} masks)")
        elif isinstance(m, dict):
            lines.append(f"{part}: " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in m.items()))
        else:
            lines.append(f"{part}: {m:.4f}" if isinstance(m, float) else f"{part}: {m}")
    head = f"{result['protocol']} on {result['dataset']}/{result['split']} ({result['num_samples']} samples)"
    return "\n".join([head, *lines])
