"""Train READ.

    python train.py --config configs/quickstart.yaml [key=value ...]                       # CPU, tiny model
    deepspeed --num_gpus 8 train.py --config configs/train/read_7b_reasonseg.yaml          # one node
    deepspeed --hostfile hostfile train.py --config configs/train/read_7b_reasonseg.yaml   # several nodes
    torchrun --nproc_per_node 8 train.py --config ... train.engine=deepspeed

Every run writes its resolved ``config.yaml``, ``metrics.jsonl``, checkpoints under ``checkpoints/`` and
``loss_curves.png`` into ``output_dir``. With ``train.auto_resume=true`` (default) the same command continues
from the latest complete checkpoint.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from read.config import ReadConfig, load_config, save_config
from read.utils import distributed as dist
from read.utils.device import resolve_device, seed_everything
from read.utils.logging import get_logger

ROOT = Path(__file__).resolve().parent
log = get_logger()


def setup_distributed(cfg: ReadConfig) -> tuple[int, int, torch.device]:
    """Initialise the process group when launched by deepspeed/torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    engine = cfg.train.engine
    if engine == "auto":
        engine = "deepspeed" if torch.cuda.is_available() else "torch"
    if engine == "deepspeed" or world > 1:
        import deepspeed

        if not torch.cuda.is_available():
            from read.train.engine import skip_cpu_shm_build

            skip_cpu_shm_build()
        dist.single_process_env_defaults()
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = resolve_device(cfg.device, dist.get_local_rank())  # auto/cuda -> cuda:LOCAL_RANK
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return rank, world, device


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed launcher")
    parser.add_argument("--auto_resume", dest="auto_resume", action="store_const", const=True, default=None,
                        help="continue from the latest complete checkpoint in output_dir (the default; "
                             "same as train.auto_resume=true)")
    parser.add_argument("--no_auto_resume", "--no-auto_resume", dest="auto_resume", action="store_const",
                        const=False, help="start from step 0 even if output_dir has checkpoints")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=1e-4")
    args = parser.parse_intermixed_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    overrides = list(args.overrides)
    if args.auto_resume is not None:
        overrides.append(f"train.auto_resume={str(args.auto_resume).lower()}")
    cfg = load_config(args.config, overrides)

    from read.data.catalog import build_train_mixture, check_eval_split, check_train_sources
    from read.model.builder import count_parameters
    from read.model.rebuild import build_for_training, check_paths
    from read.train.engine import build_engine
    from read.train.trainer import TrainCollator, Trainer

    # Before anything slow: every path the config names exists, every training source (and the validation split)
    # is laid out as its loader needs; all missing paths are named in one message.
    check_paths(cfg)
    check_train_sources(cfg)
    if cfg.eval.after_train or cfg.train.eval_every:
        check_eval_split(cfg)
    rank, world, device = setup_distributed(cfg)
    # Every training source (and the validation split) is opened before the model is built, so a missing or
    # malformed dataset stops the run in seconds, not after loading 7B weights.
    dataset = build_train_mixture(cfg, rank=rank, world_size=world)
    if cfg.eval.after_train or cfg.train.eval_every:
        from read.eval.run import check_eval_data

        check_eval_data(cfg)
    out_dir = Path(cfg.output_dir)
    if dist.is_main():
        save_config(cfg, out_dir)
    t0 = time.time()
    # seeded: the same initial weights on every rank; train.init applied; weights loaded straight onto the device
    built = build_for_training(cfg, device)
    model, tokenizer = built.model, built.tokenizer
    counts = count_parameters(model)
    if dist.is_main():
        init = f"; init {cfg.train.init} {built.weights or built.release or ''}".rstrip()
        log.info("built %s in %.1fs: %s parameters, %s trainable; %d process(es) on %s%s", cfg.model.name,
                 time.time() - t0, f"{counts['total']:,}", f"{counts['trainable']:,}", world, device, init)
    seed_everything(cfg.train.seed + rank)  # per-rank dropout
    collator = TrainCollator.for_model(tokenizer, model, cfg.model.vlm)
    engine = build_engine(model, cfg, world_size=world, root=ROOT)
    trainer = Trainer(cfg, engine, dataset, collator, output_dir=out_dir, device=device, base=built.base)
    summary = trainer.fit()
    if dist.is_main():
        print("final: " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in summary.items()))
    if cfg.eval.after_train:
        from read.eval.run import format_metrics, run_evaluation
        from read.model.fingerprint import model_digest
        from read.train.checkpoint import latest_checkpoint

        module = engine.module.eval()
        result = run_evaluation(cfg, module, tokenizer, device=device, weights=latest_checkpoint(out_dir),
                                weights_digest=model_digest(module, built.base))
        if dist.is_main():
            print(format_metrics(result))
            summary["eval"] = result["metrics"]
    return summary


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
