"""The training loop: epochs x steps_per_epoch optimiser steps of grad_accumulation_steps micro-batches.

Data order is a pure function of (seed, rank, epoch, micro-batch index) (``MixtureDataset``), so a resumed run
continues with exactly the micro-batches an uninterrupted run would have seen; RNG states (LoRA dropout) are
restored from the checkpoint, so the final weights match too.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from read.config import ReadConfig, to_dict
from read.data.collate import collate
from read.model.fingerprint import BaseRecord
from read.train import checkpoint as ckpt
from read.utils import distributed as dist
from read.utils.logging import MetricLogger, get_logger
from read.utils.plot import plot_curves

log = get_logger()


class NonFiniteLossError(RuntimeError):
    """Too many consecutive micro-batches with a non-finite loss."""


class TrainCollator:
    """Picklable collate function for DataLoader workers."""

    def __init__(self, tokenizer, *, num_image_tokens: int, clip_size: int, sam_size: int, use_im_start_end: bool,
                 conv_template: str, max_length: int, sam_frame: str = "longest_side") -> None:
        self.tokenizer = tokenizer
        self.kw = dict(num_image_tokens=num_image_tokens, clip_size=clip_size, sam_size=sam_size,
                       sam_frame=sam_frame,
                       use_im_start_end=use_im_start_end, conv_template=conv_template, max_length=max_length)

    @classmethod
    def for_model(cls, tokenizer, model, vlm_cfg) -> TrainCollator:
        """The collator matching a built :class:`ReadModel` (image-token count, CLIP and SAM sizes) and
        ``model.vlm`` settings (``use_im_start_end``, ``conv_template``, ``model_max_length``); a Qwen2.5-VL model
        gets :class:`read.data.qwen_inputs.QwenCollator`."""
        from read.model.llava_backbone import clip_image_size, num_image_tokens

        if model.parts.kind == "qwen2_5_vl":
            from read.data.qwen_inputs import QwenCollator

            return QwenCollator.for_model(tokenizer, model, vlm_cfg, max_length=vlm_cfg.model_max_length)

        return cls(tokenizer, num_image_tokens=num_image_tokens(model.llava), clip_size=clip_image_size(model.llava),
                   sam_size=model.sam.img_size, sam_frame=model.sam.frame,
                   use_im_start_end=vlm_cfg.use_im_start_end,
                   conv_template=vlm_cfg.conv_template, max_length=vlm_cfg.model_max_length)

    def __call__(self, samples):
        return collate(samples, self.tokenizer, **self.kw)


@dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0
    """Micro-batches of ``epoch`` already consumed."""
    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    samples_seen: int = 0
    train_seconds: float = 0.0


class Trainer:
    """Runs ``fit()``; engine-agnostic (see ``read.train.engine``)."""

    def __init__(self, cfg: ReadConfig, engine, dataset, collator: TrainCollator, *, output_dir: Path,
                 device: torch.device, base: BaseRecord) -> None:
        """``base``: the model's base record (``read.model.rebuild.BuiltModel.base``), saved with every checkpoint
        and checked when resuming."""
        self.cfg = cfg
        self.base = base
        self.engine = engine
        self.model: nn.Module = engine.module
        self.dataset = dataset
        self.collator = collator
        self.output_dir = Path(output_dir)
        self.device = device
        self.dtype = next(self.model.vlm.parameters()).dtype
        self.pin_memory = torch.device(device).type == "cuda"
        t = cfg.train
        self.micro_per_epoch = t.steps_per_epoch * t.grad_accumulation_steps
        self.total_steps = t.epochs * t.steps_per_epoch
        self.stop_step = min(self.total_steps, t.max_steps) if t.max_steps else self.total_steps
        needed = self.micro_per_epoch * t.batch_size
        if len(dataset) < needed:
            raise ValueError(f"the dataset serves {len(dataset)} samples per epoch on this rank, but "
                             f"steps_per_epoch x grad_accumulation_steps x batch_size = {needed}")
        self.state = TrainState()
        self.logger = MetricLogger(self.output_dir, t.report_to, enabled=dist.is_main(), run_config=to_dict(cfg))

    # ---------------------------------------------------------------------------------------------------------
    def loader(self, epoch: int, start_micro: int) -> DataLoader:
        b = self.cfg.train.batch_size
        self.dataset.set_epoch(epoch)
        batches = [list(range(m * b, (m + 1) * b)) for m in range(start_micro, self.micro_per_epoch)]
        workers = self.cfg.data.workers
        return DataLoader(
            self.dataset,
            batch_sampler=batches,
            collate_fn=self.collator,
            num_workers=workers,
            generator=torch.Generator(),  # leave the global RNG (dropout) untouched by worker seeding
            persistent_workers=False,
            prefetch_factor=2 if workers > 0 else None,
            pin_memory=self.pin_memory,  # CUDA: page-locked batches, copied without blocking the step
        )

    def resume(self) -> bool:
        path = ckpt.latest_checkpoint(self.output_dir) if self.cfg.train.auto_resume else None
        if path is None:
            return False
        state = ckpt.load_checkpoint(path, self.model, self.engine, base=self.base)
        self.state = TrainState(**state["trainer"])
        self.logger.truncate_after(self.state.global_step)
        log.info("resumed from %s (step %d, epoch %d, micro-batch %d)", path, self.state.global_step,
                 self.state.epoch, self.state.micro_in_epoch)
        return True

    def save(self) -> Path:
        trainer_state = {"trainer": asdict(self.state), "total_steps": self.total_steps,
                         "world_size": dist.get_world_size()}
        path = ckpt.save_checkpoint(self.output_dir, self.state.global_step, self.model, self.engine,
                                    trainer_state, base=self.base, keep_last=self.cfg.train.keep_last)
        if dist.is_main():
            log.info("saved %s", path)
        return path

    def curve_point(self, checkpoint: Path | None) -> dict:
        """Evaluate on ``eval.*`` (first ``train.eval_limit`` items; all with ``null``), log val gIoU/cIoU, and with
        ``train.keep_best`` copy ``checkpoint`` (this step's) to ``checkpoints/best`` when it beats the best so far
        (official ``train_read.py``: validate every epoch, keep the best cIoU)."""
        import copy

        from read.eval.run import run_evaluation
        from read.model.fingerprint import model_digest

        st = self.state
        cfg = copy.deepcopy(self.cfg)
        cfg.eval.output_dir = str(self.output_dir / "curve" / f"step_{st.global_step:08d}")
        cfg.eval.limit = self.cfg.train.eval_limit
        cfg.eval.overlays = 0
        cfg.train.progress = False
        digest = model_digest(self.model, self.base)
        result = run_evaluation(cfg, self.model.eval(), self.collator.tokenizer, device=self.device,
                                weights=checkpoint, weights_digest=digest, overwrite=True)
        self.model.train()
        row = {"step": st.global_step, "time": st.train_seconds}
        if dist.is_main():
            overall = result["metrics"]["overall"]
            row.update(val_giou=overall["giou"], val_ciou=overall["ciou"])
            metric = self.cfg.train.keep_best
            if metric is not None and checkpoint is not None:
                best = ckpt.best_record(self.output_dir)
                value = float(overall[metric])
                if best is None or value > float(best["value"]):
                    ckpt.save_best(self.output_dir, checkpoint, {
                        "metric": metric, "value": value, "step": st.global_step, "checkpoint": checkpoint.name,
                        "eval": {"dataset": cfg.eval.dataset, "split": cfg.eval.split, "limit": cfg.eval.limit,
                                 "protocol": cfg.eval.protocol},
                    })
                    log.info("new best %s %.4f at step %d (previous: %s)", metric, value, st.global_step,
                             "none" if best is None else f"{float(best['value']):.4f} at step {best['step']}")
                    row["best"] = 1
            self.logger.log(row)
        dist.barrier()
        return row

    def zero_loss(self) -> torch.Tensor:
        """A loss of exactly 0 whose graph touches every trainable parameter (keeps ZeRO's hooks in step)."""
        return sum((p * 0.0).sum() for p in self.model.parameters() if p.requires_grad)

    # ---------------------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        t = self.cfg.train
        if not self.resume():
            self.logger.truncate_after(0)  # a fresh start in a used output_dir: no stale rows
        st = self.state
        if st.global_step >= self.stop_step:
            log.info("nothing to do: already at step %d", st.global_step)
            return self.finish(saved=True)
        self.model.train()
        bar = None
        if t.progress and dist.is_main():
            from tqdm.auto import tqdm

            bar = tqdm(total=self.stop_step, initial=st.global_step, desc="train", dynamic_ncols=True)
        images_per_step = t.batch_size * t.grad_accumulation_steps * dist.get_world_size()
        window: dict[str, list[float]] = {}
        last_saved = -1
        step_start = time.time()
        while st.global_step < self.stop_step:
            if st.micro_in_epoch >= self.micro_per_epoch:
                st.epoch += 1
                st.micro_in_epoch = 0
            for batch in self.loader(st.epoch, st.micro_in_epoch):
                batch = batch.to(self.device, dtype=self.dtype, non_blocking=self.pin_memory)
                out = self.engine(batch)
                loss = out.loss.total
                if dist.all_true(bool(torch.isfinite(loss)), self.device):
                    self.engine.backward(loss)
                    st.nonfinite_streak = 0
                    for k, v in out.loss.as_floats().items():
                        window.setdefault(k, []).append(v)
                else:
                    self.engine.backward(self.zero_loss())
                    st.nonfinite_total += 1
                    st.nonfinite_streak += 1
                    log.warning("non-finite loss at step %d (micro-batch %d); contributing no gradient",
                                st.global_step, st.micro_in_epoch)
                    if st.nonfinite_streak >= t.max_nonfinite:
                        raise NonFiniteLossError(
                            f"{st.nonfinite_streak} consecutive micro-batches with a non-finite loss at step "
                            f"{st.global_step}; lower train.lr, check the data, or resume from an earlier checkpoint"
                        )
                boundary = self.engine.is_boundary()
                lr = self.engine.get_lr()
                self.engine.step()
                st.micro_in_epoch += 1
                if not boundary:
                    continue
                st.global_step += 1
                st.samples_seen += images_per_step
                elapsed = time.time() - step_start
                st.train_seconds += elapsed
                step_start = time.time()
                row = {"step": st.global_step, "epoch": st.epoch, "lr": lr,
                       **{k: sum(v) / len(v) for k, v in window.items()},
                       "samples_per_s": images_per_step / max(elapsed, 1e-9),
                       "nonfinite_total": st.nonfinite_total, "time": st.train_seconds}
                window = {}
                if st.global_step % t.log_every == 0:
                    self.logger.log(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{row[k]:.4f}" for k in ("total", "ce", "bce", "dice") if k in row}
                                    | {"lr": f"{lr:.2e}", "img/s": f"{row['samples_per_s']:.1f}"})
                out_of_time = t.max_minutes is not None and st.train_seconds >= 60 * t.max_minutes
                if out_of_time:
                    log.info("training budget of %.1f minutes reached at step %d", t.max_minutes, st.global_step)
                    self.stop_step = st.global_step
                evaluate_now = bool(t.eval_every) and (
                    st.global_step % t.eval_every == 0 or st.global_step >= self.stop_step)
                saved_path = None
                if (st.global_step % t.save_every == 0 or st.global_step >= self.stop_step
                        or (evaluate_now and t.keep_best is not None)):
                    saved_path = self.save()  # keep_best needs this step's weights on disk
                    last_saved = st.global_step
                if evaluate_now:
                    self.curve_point(saved_path)
                    step_start = time.time()  # evaluation time is not training time
                if st.global_step >= self.stop_step:
                    break
        if bar is not None:
            bar.close()
        return self.finish(saved=last_saved == st.global_step)

    def finish(self, *, saved: bool) -> dict:
        if not saved:
            self.save()
        summary = {"global_step": self.state.global_step, "nonfinite_total": self.state.nonfinite_total}
        if dist.is_main():
            rows = self.logger.read()
            if rows:
                series = {k: [(r["step"], r[k]) for r in rows if k in r and math.isfinite(r[k])]
                          for k in ("total", "ce", "bce", "dice")}
                plot_curves(series, self.output_dir / "loss_curves.png", title=f"{self.cfg.model.name} losses")
                last = next((r for r in reversed(rows) if "total" in r), {})
                summary.update({k: last[k] for k in ("total", "ce", "bce", "dice") if k in last})
                curve = [r for r in rows if "val_giou" in r]
                if curve:
                    plot_curves({"val gIoU": [(r["time"] / 60, r["val_giou"]) for r in curve],
                                 "val cIoU": [(r["time"] / 60, r["val_ciou"]) for r in curve]},
                                self.output_dir / "val_curve.png", title="validation during training",
                                xlabel="training minutes")
        self.logger.close()
        return summary
