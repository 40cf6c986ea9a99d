"""Evaluation entry points shared by ``evaluate.py`` and ``train.py`` (``eval.after_train``)."""

from __future__ import annotations

from pathlib import Path

import torch

from read.config import ReadConfig, save_config
from read.utils import distributed as dist


def eval_name(cfg: ReadConfig) -> str:
    """``<dataset>_<split>_<protocol>[_<subset>]``."""
    e = cfg.eval
    return f"{e.dataset}_{e.split}_{e.protocol}" + (f"_{e.subset}" if e.subset != "all" else "")


def eval_output_dir(cfg: ReadConfig, digest: str) -> Path:
    """``eval.output_dir`` when given, else ``<output_dir>/eval/<name>/<digest[:12]>``: every distinct evaluation
    (weights, model or evaluation settings) gets its own folder, so none can report another's numbers."""
    e = cfg.eval
    if e.output_dir:
        return Path(e.output_dir)
    return Path(cfg.output_dir) / "eval" / eval_name(cfg) / digest[:12]


def check_eval_data(cfg: ReadConfig) -> int:
    """Open the evaluation split ``eval.*`` names (writing the synthetic data first when configured) so a missing
    or malformed split fails before any model is built; returns its number of items.

    Raises:
        read.data.base.DataError / FileNotFoundError: naming the missing or bad file.
    """
    from read.data.catalog import data_root
    from read.eval.evaluator import build_eval_dataset

    root = data_root(cfg.data)
    if cfg.data.generate_synthetic and dist.is_main():
        from read.data.synth import ensure_synthetic_root

        ensure_synthetic_root(root, seed=cfg.train.seed)
    dist.barrier()
    n = len(build_eval_dataset(cfg, root))
    if n == 0:
        from read.data.base import DataError

        raise DataError(f"{root}: the evaluation split {cfg.eval.dataset}/{cfg.eval.split} has no items")
    return n


def run_evaluation(cfg: ReadConfig, model, tokenizer, *, device: torch.device, weights: Path | None = None,
                   weights_digest: str | None = None, overwrite: bool = False) -> dict:
    """Evaluate an already built (and loaded) model; returns results.json's content on rank 0.

    Args:
        weights: what was loaded (recorded in results.json).
        weights_digest: digest of all of the model's weights (``read.model.rebuild.BuiltModel.digest``); computed
            here when ``None`` (hashes the whole model).
        overwrite: clear an explicit ``eval.output_dir`` that holds another evaluation instead of refusing.

    Raises:
        read.eval.identity.EvalMismatchError: ``eval.output_dir`` holds another evaluation and no ``overwrite``.
    """
    from read.data.catalog import data_root
    from read.eval.evaluator import Evaluator, build_eval_dataset
    from read.eval.identity import evaluation_identity, identity_digest, prepare_output_dir
    from read.model.fingerprint import model_digest

    root = data_root(cfg.data)
    if cfg.data.generate_synthetic and dist.is_main():
        from read.data.synth import ensure_synthetic_root

        ensure_synthetic_root(root, seed=cfg.train.seed)
    dist.barrier()
    if weights_digest is None:
        weights_digest = model_digest(model)
    identity = evaluation_identity(cfg, tokenizer, weights_digest, device.type, root)
    key = identity_digest(identity)
    out_dir = eval_output_dir(cfg, key)
    status = "new"
    if dist.is_main():
        status = prepare_output_dir(out_dir, identity, overwrite=overwrite)
        save_config(cfg, out_dir)
    dist.barrier()
    dataset = build_eval_dataset(cfg, root)
    evaluator = Evaluator(cfg, model, tokenizer, dataset, output_dir=out_dir, device=device, weights=weights,
                          eval_key=key, status=status)
    return evaluator.run()


def format_metrics(result: dict) -> str:
    lines = []
    for part, m in result["metrics"].items():
        if isinstance(m, dict) and "n_acc" in m:
            lines.append(f"{part}: gIoU {m['giou']:.4f}  cIoU {m['ciou']:.4f}  N-acc {m['n_acc']:.4f}  "
                         f"T-acc {m['t_acc']:.4f}  ({m['num_expressions']} expressions)")
        elif isinstance(m, dict) and "giou" in m:
            lines.append(f"{part}: gIoU {m['giou']:.4f}  cIoU {m['ciou']:.4f}  ({m['num_masks']} masks)")
        elif isinstance(m, dict):
            lines.append(f"{part}: " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in m.items()))
        else:
            lines.append(f"{part}: {m:.4f}" if isinstance(m, float) else f"{part}: {m}")
    head = f"{result['protocol']} on {result['dataset']}/{result['split']} ({result['num_samples']} samples)"
    return "\n".join([head, *lines])
