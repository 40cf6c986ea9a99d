"""Evaluation: named protocols over the evaluation datasets, resumable per-sample records, merged shards.

Protocols (spec 5):

* ``teacher_forced``: the official ReasonSeg/refCOCO validation. The answer containing [SEG] is part of the input;
  no generation. ReasonSeg uses LISA's fixed templates and ``text[0]``; refCOCO uses seeded short templates.
* ``generate``: real inference. The model must emit [SEG] itself (greedy, KV cache, batched with left padding);
  a row without [SEG] gets an empty mask. A row with several [SEG] is scored with its first mask (official) or
  their union (``eval.multi_seg``).
* ``fp_refcoco``: FP-RefCOCO(+/g) "See" (did the model emit [SEG] with a non-empty mask exactly when the target
  exists) and "Segment" (cIoU over all queries, false premises having an all-zero ground truth).

Every processed item appends one JSON line to ``records.rank{r}.jsonl`` (flushed), so an interrupted run resumes
where it stopped and several processes (torchrun / deepspeed launcher) each take every world-th item; rank 0 merges
all records into ``results.json``. The SAM image embedding is computed once per image for all of its queries.

Batches are read and collated by ``data.workers`` DataLoader worker processes (0: on the main thread) while the
model runs, pinned and copied without blocking on CUDA; items, order, batches and records do not depend on the
number of workers. A worker's exception is re-raised as itself (e.g. the DataError naming a corrupt image).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from read.config import ReadConfig, to_dict
from read.data.base import Sample
from read.eval import metrics as M
from read.eval.loader import EvalCollator, WorkerFailure, eval_loader
from read.model.batch import Batch
from read.utils import distributed as dist
from read.utils.jsonl import drop_partial_line, read_records
from read.utils.logging import get_logger

log = get_logger()


def build_eval_dataset(cfg: ReadConfig, root: Path):
    """The evaluation dataset named by ``cfg.eval`` (``read.data.catalog.build_eval_dataset``)."""
    from read.data.catalog import build_eval_dataset as build

    return build(cfg, root)


class Evaluator:
    """Runs one protocol on one dataset split and writes records and ``results.json`` to ``output_dir``."""

    def __init__(self, cfg: ReadConfig, model, tokenizer, dataset, *, output_dir: Path, device: torch.device,
                 weights: Path | None = None, eval_key: str | None = None, status: str = "new") -> None:
        """``eval_key``: digest of the evaluation's identity (``read.eval.identity``), recorded in results.json;
        ``status``: ``new`` or ``resume`` (from ``prepare_output_dir``), for the message."""
        self.cfg = cfg
        self.e = cfg.eval
        self.model = model
        self.tokenizer = tokenizer
        self.dataset = dataset
        self.output_dir = Path(output_dir)
        self.device = device
        self.weights = weights
        self.eval_key = eval_key
        self.status = status
        self.dtype = next(model.vlm.parameters()).dtype
        self.conv = self.e.conv_template or cfg.model.vlm.conv_template
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.collator = EvalCollator.for_model(tokenizer, model, cfg, self.conv)
        self.pin_memory = torch.device(device).type == "cuda"

    # ---------------------------------------------------------------------------------------------------------
    def records_path(self, rank: int) -> Path:
        return self.output_dir / f"records.rank{rank}.jsonl"

    def repair_records(self) -> None:
        """Drop a last line cut by a crash (no trailing newline), so appended records start on their own line."""
        drop_partial_line(self.records_path(self.rank))

    def load_records(self) -> dict[int, dict]:
        """All records written so far by any rank (resume, merge)."""
        return read_records(sorted(self.output_dir.glob("records.rank*.jsonl")))

    def collate(self, samples: list[Sample]) -> Batch:
        return self.collator(samples)

    def loader(self, batches: list[list[int]]) -> DataLoader:
        """Batches ``batches`` (lists of dataset indices) in this order as :class:`EvalItem`, read and collated by
        ``data.workers`` worker processes (0: on this thread), pinned when evaluating on CUDA."""
        return eval_loader(self.dataset, batches, self.collator, workers=int(self.cfg.data.workers),
                           pin_memory=self.pin_memory)

    # ---------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, samples: list[Sample] | Batch) -> list[dict]:
        """Per sample: predicted binary masks per query (numpy bool), and generation details. ``samples``: the
        samples, collated here, or their already collated (host) :class:`Batch`."""
        if isinstance(samples, Batch):
            return self.predict_batch(samples)
        return self.predict_batch(self.collate(samples), samples)

    @torch.no_grad()
    def predict_batch(self, batch: Batch, samples: list[Sample] | None = None) -> list[dict]:
        """:meth:`predict` of a collated host batch (pinned ones are copied to the device without blocking)."""
        pinned = self.pin_memory and batch.pixel_values_sam.is_pinned()
        batch = batch.to(self.device, dtype=self.dtype, non_blocking=pinned)
        if self.e.dataset == "grefcoco":
            from read.eval.gres_predict import predict_gres_generate, predict_gres_teacher_forced

            if self.e.protocol == "teacher_forced":
                return predict_gres_teacher_forced(self.model, batch, self.tokenizer, rej_rule=self.e.rej_rule)
            if samples is None:
                raise ValueError("gRefCOCO generation needs the samples (their number of expressions)")
            n_expr = [len(s.meta["expressions"]) for s in samples]
            return predict_gres_generate(self.model, batch, self.tokenizer, n_expr,
                                         max_new_tokens=self.e.max_new_tokens)
        if self.e.protocol == "teacher_forced":
            out = self.model(batch)
            preds = [(m > 0).cpu().numpy() for m in out.pred_masks]
            image_of = out.queries.image.tolist()
            sim = out.points.similarity if out.points is not None else None
            return [{"masks": p, "points": out.points, "similarity": sim,
                     "query": image_of.index(b) if b in image_of else None} for b, p in enumerate(preds)]
        from read.model.generate import greedy_generate, left_pad, segment_generated_detail

        lb = left_pad(batch, self.tokenizer.pad_id)
        gen = greedy_generate(self.model, lb, max_new_tokens=self.e.max_new_tokens, eos_id=self.tokenizer.eos_id,
                              pad_id=self.tokenizer.pad_id)
        detail = segment_generated_detail(self.model, lb, gen)
        row_masks = detail.masks
        seg_rows = gen.seg_rows.tolist()
        row_to_image = lb.row_to_image.tolist()
        first_row = {b: row_to_image.index(b) for b in set(row_to_image)}
        results: list[dict] = [
            {"masks": [], "texts": [], "has_seg": [], "points": detail.points, "similarity": detail.similarity,
             "query": seg_rows.index(first_row[b]) if first_row.get(b) in seg_rows else None}
            for b in range(batch.num_images)]
        for r, masks in enumerate(row_masks):
            b = int(lb.row_to_image[r])
            h, w = (int(v) for v in lb.image_hw[b])
            if not masks:
                pred = np.zeros((h, w), dtype=bool)
            elif self.e.multi_seg == "union":
                pred = torch.stack([m > 0 for m in masks]).any(0).cpu().numpy()
            else:
                pred = (masks[0] > 0).cpu().numpy()
            results[b]["masks"].append(pred)
            results[b]["has_seg"].append(bool(masks))
            results[b]["texts"].append(self.tokenizer.decode(gen.new_tokens[r], skip_special_tokens=True))
        for res in results:
            res["masks"] = np.stack(res["masks"]) if res["masks"] else np.zeros((0, 1, 1), bool)
        return results

    def record(self, index: int, sample: Sample, pred: dict) -> dict:
        gt = sample.masks if sample.masks is not None else sample.meta.get("gt_masks")
        gt = np.asarray(gt)
        masks = pred["masks"]
        if gt.shape != masks.shape:
            raise ValueError(f"{sample.name}: prediction {masks.shape} vs ground truth {gt.shape}")
        meta = {k: v for k, v in sample.meta.items() if isinstance(v, str | int | float | bool)}
        if "rejected" in pred:  # gRefCOCO: one record per expression, GSVA's counting (read.eval.gres_metrics)
            return {"index": index, "name": sample.name, "queries": gres_queries(pred, gt, sample), "meta": meta}
        queries = []
        for k in range(gt.shape[0]):
            pm, gm = torch.from_numpy(masks[k]), torch.from_numpy(gt[k].astype(np.int64))
            counts = M.mask_counts(pm, gm)
            q = {"intersection": int(counts["intersection"]), "union": int(counts["union"]),
                 "gt_area": int(counts["gt_area"]), "pred_area": int(counts["pred_area"]),
                 "pred_box": M.mask_box(pm), "gt_box": M.mask_box(gm == 1)}
            if "texts" in pred:
                q["text"] = pred["texts"][k]
                q["has_seg"] = pred["has_seg"][k]
                q["pred_exists"] = M.pred_exists(pred["has_seg"][k], torch.from_numpy(masks[k]))
            if sample.exists is not None:
                q["gt_exists"] = bool(sample.exists[k])
            queries.append(q)
        return {"index": index, "name": sample.name, "queries": queries, "meta": meta}

    # ---------------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.repair_records()
        n = len(self.dataset) if self.e.limit is None else min(self.e.limit, len(self.dataset))
        done = self.load_records()
        todo = [i for i in range(n) if i % self.world == self.rank and i not in done]
        if dist.is_main():
            if self.status == "resume" and len(done) >= n:
                log.info("evaluation in %s is complete (%d items): metrics from its records", self.output_dir, n)
            elif self.status == "resume":
                log.info("resuming the evaluation in %s: %d of %d items already done", self.output_dir, len(done), n)
            else:
                log.info("new evaluation in %s (%d items)", self.output_dir, n)
        bar = None
        if self.cfg.train.progress and dist.is_main():
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"eval {self.e.dataset}/{self.e.split}", dynamic_ncols=True)
        self.model.eval()
        overlay_budget = max(0, self.e.overlays - len(list(self.output_dir.glob("overlay_*.png"))))
        t0 = time.time()
        batches = [todo[start:start + self.e.batch_size] for start in range(0, len(todo), self.e.batch_size)]
        done_now = 0
        with self.records_path(self.rank).open("a") as fh:
            items = iter(self.loader(batches)) if batches else iter(())
            try:
                for item in items:
                    if isinstance(item, WorkerFailure):
                        item.reraise()
                    preds = self.predict_batch(item.batch, item.samples)
                    for i, s, p in zip(item.indices, item.samples, preds, strict=True):
                        fh.write(json.dumps(self.record(i, s, p)) + "\n")
                        if overlay_budget > 0:
                            self.write_overlay(i, s, p)
                            overlay_budget -= 1
                    fh.flush()
                    done_now += len(item.indices)
                    if bar is not None:
                        bar.update(len(item.indices))
                        bar.set_postfix({"items/s": f"{done_now / max(time.time() - t0, 1e-9):.2f}"})
            finally:
                del items  # stop the workers now, also when an error keeps this frame alive in its traceback
        if bar is not None:
            bar.close()
        dist.barrier()
        result = self.finish(n) if dist.is_main() else {}
        dist.barrier()
        return result

    def finish(self, n: int) -> dict:
        records = self.load_records()
        missing = [i for i in range(n) if i not in records]
        if missing:
            raise RuntimeError(f"{len(missing)} items have no record (e.g. {missing[:5]}); rerun to complete them")
        recs = [records[i] for i in range(n)]
        metrics = self.metrics(recs)
        e = self.e
        result = {
            "protocol": e.protocol,
            "dataset": e.dataset,
            "split": e.split,
            "subset": e.subset,
            "num_samples": n,
            "num_queries": sum(len(r["queries"]) for r in recs),
            "metrics": metrics,
            "model": self.cfg.model.name,
            "checkpoint": {"path": str(self.weights) if self.weights else None},
            "eval_key": self.eval_key,
            "output_dir": str(self.output_dir),
            "sasp": to_dict(self.cfg.model.sasp) if self.cfg.model.sasp.enabled else {"enabled": False},
            "templates": ("LISA fixed ReasonSeg templates, text[0]" if e.dataset == "reason_seg" else
                          f"seeded short templates (seed {e.template_seed}, per image id and sentence index)"),
            "conv_template": self.conv,
            "decoding": ({"greedy": True, "kv_cache": True, "max_new_tokens": e.max_new_tokens,
                          "multi_seg": e.multi_seg} if e.protocol != "teacher_forced" else None),
        }
        (self.output_dir / "results.json").write_text(json.dumps(result, indent=1))
        return result

    def metrics(self, recs: list[dict]) -> dict:
        def seg_metrics(rs: list[dict]) -> dict:
            acc = M.SegMetricAccumulator()
            for r in rs:
                acc.update_counts([q["intersection"] for q in r["queries"]], [q["union"] for q in r["queries"]])
            return acc.result()

        if self.e.dataset == "grefcoco":
            return {"overall": M.grefcoco_from_records([q for r in recs for q in r["queries"]])}
        out = {"overall": seg_metrics(recs)}
        if self.e.dataset != "reason_seg":  # REC (GSVA 4.3): boxes of the masks, precision@0.5 over present targets
            pairs = [(q["pred_box"], q["gt_box"]) for r in recs for q in r["queries"] if q.get("gt_box") is not None]
            if pairs:
                out["rec_precision_at_0.5"] = M.rec_precision([p for p, _ in pairs], [g for _, g in pairs])
        if self.e.dataset == "reason_seg" and self.e.subset == "all":
            for name, flag in (("short", False), ("long", True)):
                part = [r for r in recs if bool(r["meta"].get("is_sentence")) == flag]
                if part:
                    out[name] = seg_metrics(part)
        if self.e.protocol in ("generate", "fp_refcoco"):
            queries = [q for r in recs for q in r["queries"]]
            if all("gt_exists" in q for q in queries):
                out["see_segment"] = M.see_segment(queries)
            out["seg_emitted"] = sum(q.get("has_seg", False) for q in queries) / max(1, len(queries))
        return out

    # ---------------------------------------------------------------------------------------------------------
    def write_overlay(self, index: int, sample: Sample, pred: dict) -> None:
        """``overlay_<index>.png``: the sample's first query, its prediction, ground truth, points and heat-map."""
        from read.eval.overlay import draw_overlay

        texts = pred.get("texts")
        answer = (texts[0] if isinstance(texts, list) and texts else texts) if texts is not None else None
        draw_overlay(self.output_dir / f"overlay_{index:05d}.png", sample, np.asarray(pred["masks"]),
                     clip_size=self.model.parts.image_side(self.model.vlm), query=pred.get("query"),
                     similarity=pred.get("similarity"), points=pred.get("points"), answer=answer,
                     protocol=self.e.protocol, view=self.model.parts.view)


def gres_queries(pred: dict, gt: np.ndarray, sample: Sample) -> list[dict]:
    """Per expression of a gRefCOCO sample: GSVA's counts (``read.eval.gres_metrics.gres_counts``) plus what the
    model decided (``slot``: seg/rej/missing) and its expression. A slot the model never emitted counts as a
    wrong decision: rejected for a target, not rejected for a no-target expression."""
    out = []
    expressions = sample.meta.get("expressions") or [None] * gt.shape[0]
    for k in range(gt.shape[0]):
        g = torch.from_numpy(gt[k].astype(np.int64))
        slot = pred["slots"][k]
        rejected = bool(pred["rejected"][k]) if slot != "missing" else bool(g.sum() >= 1)
        q = M.gres_counts(torch.from_numpy(pred["masks"][k]), g, rejected)
        q.update(slot=slot, expression=expressions[k])
        out.append(q)
    if "texts" in pred and out:
        out[0]["text"] = pred["texts"]  # the whole generated answer, once per image
    return out
