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
from read.utils.device import get_device, seed_everything
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
    if cfg.device == "auto" and torch.cuda.is_available():
        device = torch.device("cuda", dist.get_local_rank())
        torch.cuda.set_device(device)
    else:
        device = get_device(cfg.device)
    return rank, world, device


def initialise_weights(cfg: ReadConfig, model, tokenizer) -> None:
    """``train.init``: llava (nothing to do: built that way), released, or one of our checkpoints."""
    if cfg.train.init == "released":
        from read.model.convert import load_released_checkpoint

        report = load_released_checkpoint(model, tokenizer, cfg.train.init_checkpoint)
        log.info("initialised from the released checkpoint %s: %s", cfg.train.init_checkpoint, report)
    elif cfg.train.init == "checkpoint":
        from read.train.checkpoint import load_trainable

        load_trainable(model, Path(cfg.train.init_checkpoint))
        log.info("initialised trainable weights from %s", cfg.train.init_checkpoint)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed launcher")
    parser.add_argument("--auto_resume", dest="auto_resume", action="store_const", const=True, default=None,
                        help="continue from the latest complete checkpoint in output_dir (the default; "
                             "same as train.auto_resume=true)")
    parser.add_argument("--no_auto_resume", "--no-auto_resume", dest="auto_resume", action="store_const",
                        const=False, help="start from step 0 even if output_dir has checkpoints")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=1e-4")
    args = parser.parse_intermixed_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    overrides = list(args.overrides)
    if args.auto_resume is not None:
        overrides.append(f"train.auto_resume={str(args.auto_resume).lower()}")
    cfg = load_config(args.config, overrides)

    from read.data.catalog import build_train_mixture
    from read.model.builder import build_read_model, count_parameters
    from read.train.engine import build_engine
    from read.train.trainer import TrainCollator, Trainer

    rank, world, device = setup_distributed(cfg)
    out_dir = Path(cfg.output_dir)
    if dist.is_main():
        save_config(cfg, out_dir)
    seed_everything(cfg.train.seed)  # same initial weights on every rank
    t0 = time.time()
    model, tokenizer = build_read_model(cfg)
    initialise_weights(cfg, model, tokenizer)
    model.to(device)
    counts = count_parameters(model)
    if dist.is_main():
        log.info("built %s in %.1fs: %s parameters, %s trainable; %d process(es) on %s", cfg.model.name,
                 time.time() - t0, f"{counts['total']:,}", f"{counts['trainable']:,}", world, device)
    seed_everything(cfg.train.seed + rank)  # per-rank dropout
    dataset = build_train_mixture(cfg, rank=rank, world_size=world)
    collator = TrainCollator.for_model(tokenizer, model, cfg.model.vlm)
    engine = build_engine(model, cfg, world_size=world, root=ROOT)
    summary = Trainer(cfg, engine, dataset, collator, output_dir=out_dir, device=device).fit()
    if dist.is_main():
        print("final: " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in summary.items()))
    if cfg.eval.after_train:
        from read.eval.run import format_metrics, run_evaluation
        from read.train.checkpoint import latest_checkpoint

        result = run_evaluation(cfg, engine.module.eval(), tokenizer, device=device,
                                weights=latest_checkpoint(out_dir))
        if dist.is_main():
            print(format_metrics(result))
            summary["eval"] = result["metrics"]
    return summary


if __name__ == "__main__":
    main()
