"""The analysis of READ §3.2 over an evaluation split: per query, the [SEG] map against the language model's image
tokens (S_IoU), the map against the SAM decoder's image tokens, P_prompt and the model's own mask ([SEG]_prompt);
resumable records, a Table-1 summary, figures and an HTML report (``scripts/analyze.py``, docs/ANALYSIS.md).

The [SEG] state is read with teacher forcing, as in the official validation (the answer containing [SEG] is part of
the input; LISA's fixed templates for ReasonSeg), so every query has exactly one [SEG] and one ground truth.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from read.analysis.maps import sam_decoder_similarity, sam_map_to_image
from read.analysis.pprompt import extreme_points, points_prompt_mask
from read.analysis.siou import similarity_iou
from read.data.base import Sample
from read.data.transforms import clip_view_box
from read.eval import metrics as M
from read.eval.overlay import query_text
from read.model.sasp import dense_similarity_map, similarity_map, to_input_frame
from read.model.tokens import query_image_states
from read.utils.jsonl import drop_partial_line, read_records
from read.utils.logging import get_logger

log = get_logger()

__all__ = ["AnalysisSettings", "Analyzer", "SettingsMismatchError", "METHODS"]

METHODS = ("p_prompt", "s_iou", "seg_prompt")
"""Table 1's three columns: points only -> SAM; the similarity map itself (best threshold); the model's mask."""


class SettingsMismatchError(ValueError):
    """The output folder holds an analysis made with other settings."""


@dataclass
class AnalysisSettings:
    """Everything an analysis's numbers depend on (written to ``settings.json``; a resumed run must match it, except
    ``limit``: a larger limit continues the same records)."""

    model: str
    weights_digest: str
    dataset: str
    split: str
    data_root: str
    limit: int | None = None
    k: int | None = None
    t: float = 0.8
    down_sample: int = 2
    step: float = 0.01
    sam_original: str | None = None
    conv_template: str = "llava_v1"
    sasp: dict | None = None
    clip: str | None = None
    """A full CLIPModel folder for the CLIP word map (Fig. 1(b)); ``None``: not computed."""
    words: dict | None = None
    """The word of each sample for the CLIP map: keys are sample indices (as strings), image names, or ``*``."""

    def describe_sam(self) -> str:
        return (f"original SAM weights from {self.sam_original}" if self.sam_original
                else "the model's own SAM (its fine-tuned mask decoder); pass --sam-original for the paper's setting")

    def describe_clip(self) -> str:
        if not self.clip:
            return ("not computed: the model's CLIP is LLaVA's vision tower, with no text tower (Qwen2.5-VL's ViT has "
                    "none either); pass --clip <CLIPModel folder> and --word / --words")
        return f"CLIP text tower of {self.clip}"

    def word(self, index: int, name: str) -> str | None:
        """The word for the CLIP map of sample ``index`` (by index, then image name, then ``*``), if any."""
        w = self.words or {}
        return w.get(str(index)) or w.get(name) or w.get("*")


def _one(embeddings, u: int):  # noqa: ANN001, ANN202 - a mask head's encode_images output
    """Image ``u`` of a mask head's embeddings, batch dimension kept (a tensor, or SAM 2's list of levels)."""
    if isinstance(embeddings, list):
        return [level[u:u + 1] for level in embeddings]
    return embeddings[u:u + 1]


def _counts(pred: torch.Tensor, gt: torch.Tensor) -> dict:
    c = M.mask_counts(pred, gt)
    return {"intersection": int(c["intersection"]), "union": int(c["union"])}


class Analyzer:
    """Runs the analysis of one model on one split into ``out_dir`` (records, figures, summary, report).

    Args:
        pipe: a :class:`read.infer.ReadPipeline` (model, tokenizer, collator, device).
        dataset: the teacher-forced evaluation dataset (``read.data.catalog.build_eval_dataset``).
        settings: :class:`AnalysisSettings` (checked against ``settings.json`` when resuming).
        sam_p: the SAM head P_prompt uses (the model's own, or the original SAM on the same device).
        clip_maps: a :class:`read.analysis.clip_text.ClipWordMaps` for the CLIP word map, or ``None``.
        figures: how many samples (the first ones) get a figure.
    """

    def __init__(self, pipe, dataset, out_dir: Path, settings: AnalysisSettings, *, sam_p=None,  # noqa: ANN001
                 clip_maps=None, figures: int = 8, batch_size: int = 4, progress: bool = True,  # noqa: ANN001
                 overwrite: bool = False) -> None:
        self.pipe, self.model = pipe, pipe.model
        self.dataset = dataset
        self.out_dir = Path(out_dir)
        self.settings = settings
        self.sam_p = sam_p if sam_p is not None else self.model.sam
        self.clip_maps = clip_maps  # read.analysis.clip_text.ClipWordMaps or None
        self.figures = int(figures)
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self.prepare(overwrite)

    # ------------------------------------------------------------------------------------------------- folder
    @property
    def records_path(self) -> Path:
        return self.out_dir / "records.jsonl"

    def prepare(self, overwrite: bool) -> None:
        """Create the folder, or check that it holds the same analysis (``--overwrite`` clears another one)."""
        file = self.out_dir / "settings.json"
        mine = asdict(self.settings)
        if file.is_file():
            theirs = json.loads(file.read_text())
            # the sample limit is not part of the identity: a larger --limit continues the same records
            diff = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k) and k != "limit"]
            if diff and not overwrite:
                k = diff[0]
                raise SettingsMismatchError(f"{self.out_dir} holds another analysis ({k}: {theirs.get(k)!r} -> "
                                            f"{mine.get(k)!r}); use another --out or --overwrite")
            if diff:
                shutil.rmtree(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "settings.json").write_text(json.dumps(mine, indent=1))

    def load_records(self) -> dict[int, dict]:
        return read_records([self.records_path])

    # ---------------------------------------------------------------------------------------------------- run
    def run(self) -> dict:
        """Analyse every sample not yet recorded, then write ``summary.json``, ``table.md`` and ``report.html``."""
        from read.analysis.report import summarise, write_outputs

        n = len(self.dataset) if self.settings.limit is None else min(self.settings.limit, len(self.dataset))
        drop_partial_line(self.records_path)
        done = self.load_records()
        todo = [i for i in range(n) if i not in done]
        log.info("analysis in %s: %d of %d samples done, %d to go", self.out_dir, len(done), n, len(todo))
        bar = None
        if self.progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"analyse {self.settings.dataset}/{self.settings.split}")
        t0 = time.time()
        self.model.eval()
        with self.records_path.open("a") as fh:
            for start in range(0, len(todo), self.batch_size):
                idx = todo[start:start + self.batch_size]
                samples = [self.dataset[i] for i in idx]
                for i, s, rec in zip(idx, samples, self.analyse(samples, idx), strict=True):
                    fig = rec.pop("_figure", None)
                    if i < self.figures:
                        self.write_figure(i, s, fig)
                    fh.write(json.dumps({"index": i, **rec}) + "\n")
                fh.flush()
                if bar is not None:
                    bar.update(len(idx))
        if bar is not None:
            bar.close()
        records = self.load_records()
        missing = [i for i in range(n) if i not in records]
        if missing:
            raise RuntimeError(f"{len(missing)} samples have no record (e.g. {missing[:5]}); rerun to complete them")
        recs = [records[i] for i in range(n)]
        summary = summarise(recs, self.settings, seconds=time.time() - t0)
        write_outputs(self.out_dir, summary, recs)
        return summary

    # ------------------------------------------------------------------------------------------------ per batch
    @torch.no_grad()
    def analyse(self, samples: list[Sample], indices: list[int] | None = None) -> list[dict]:
        """One record per sample (its queries' counts for every method) with the arrays its figure needs;
        ``indices``: the samples' dataset indices (to look up their CLIP words)."""
        model, pipe = self.model, self.pipe
        batch = pipe.collator(samples).to(pipe.device, dtype=pipe.dtype)
        hidden = model.hidden_states(batch)
        queries = model.find_queries(batch)
        seg_hidden = hidden[queries.rows, queries.cols]
        grids = model.parts.image_grids(model.vlm, batch)  # None: one square grid (LLaVA)
        image_hidden = query_image_states(hidden, batch.input_ids, queries.rows, model.image_token_id,
                                          per_image_grids=grids is not None)  # per-image grids: padded
        grid_hw = None if grids is None else grids[queries.image]
        sims = similarity_map(image_hidden, seg_hidden).float()  # [P, N]
        used, local = torch.unique(queries.image, sorted=True, return_inverse=True)
        emb = model.sam.encode_images(batch.pixel_values_sam[used])
        per_used, _, _, points = model.segment_states(seg_hidden, image_hidden, queries.image,
                                                      batch.pixel_values_sam, batch.image_hw, batch.sam_input_hw,
                                                      image_embeddings=emb, grid_hw=grid_hw)
        emb_p = emb if self.sam_p is model.sam else self.sam_p.encode_images(batch.pixel_values_sam[used])
        proj = model.text_hidden_fcs(seg_hidden)
        out = []
        taken = [0] * len(per_used)
        indices = list(range(len(samples))) if indices is None else indices
        for b, sample in enumerate(samples):
            word = self.settings.word(indices[b], sample.name) if self.clip_maps is not None else None
            clip_map = None
            if word:
                clip_map = dense_similarity_map(self.clip_maps(sample.image, word), sample.image.shape[:2],
                                                self.clip_maps.size)
            gt_all = sample.masks if sample.masks is not None else sample.meta.get("gt_masks")
            h, w = sample.image.shape[:2]
            in_hw = tuple(int(v) for v in batch.sam_input_hw[b])
            qs = (queries.image == b).nonzero(as_tuple=True)[0].tolist()
            rec_q, fig = [], None
            for j, q in enumerate(qs):
                u = int(local[q])
                gt = torch.from_numpy(np.asarray(gt_all[j]).astype(np.int64))
                seg_mask = (per_used[u][taken[u]] > 0).cpu()
                taken[u] += 1
                grid_q = None if grid_hw is None else tuple(int(v) for v in grid_hw[q])
                sim_q = sims[q].cpu() if grid_q is None else sims[q, : grid_q[0] * grid_q[1]].cpu()
                llava_map = dense_similarity_map(sim_q, (h, w), pipe.clip_size, grid_hw=grid_q, view=pipe.view)
                siou = similarity_iou(llava_map, gt, step=self.settings.step)
                coords, labels = extreme_points(sim_q, (h, w), k=self.settings.k, t=self.settings.t,
                                                down_sample=self.settings.down_sample, grid_hw=grid_q, view=pipe.view)
                coords_sam = to_input_frame(coords[None].float(), [(h, w)], self.sam_p.img_size, self.sam_p.frame)[0]
                p_logits, p_score = points_prompt_mask(self.sam_p, _one(emb_p, u), coords_sam.to(seg_hidden.device),
                                                       labels.to(seg_hidden.device), in_hw, (h, w))
                p_mask = (p_logits > 0).cpu()
                coords_q = None if points is None else points.coords[q:q + 1]
                labels_q = None if points is None else points.labels[q:q + 1]
                sparse, dense = model.sam.prompt_tokens(proj[q:q + 1], coords_q, labels_q)
                sam_sim = sam_decoder_similarity(model.sam, _one(emb, u), sparse, dense)
                sam_map = None if sam_sim is None else sam_map_to_image(sam_sim[0].cpu(), model.sam.img_size, in_hw,
                                                                        (h, w))
                entry = {
                    "seg_prompt": _counts(seg_mask, gt),
                    "p_prompt": {**_counts(p_mask, gt), "k": int(labels.sum()), "score": p_score},
                    "s_iou": siou,
                }
                if sam_map is not None:
                    entry["s_iou_sam"] = similarity_iou(sam_map, gt, step=self.settings.step)
                if clip_map is not None:
                    entry["s_iou_clip"] = {**similarity_iou(clip_map, gt, step=self.settings.step), "word": word}
                rec_q.append(entry)
                if j == 0:
                    valid = None if points is None else points.valid[q].cpu()
                    fig = {
                        "gt": np.asarray(gt_all[0]), "llava_map": llava_map.numpy(),
                        "vlm": {"llava": "LLaVA", "qwen2_5_vl": "Qwen2.5-VL"}.get(model.parts.kind, model.parts.kind),
                        "sam_map": None if sam_map is None else sam_map.numpy(),
                        "p_points": coords.numpy(), "p_labels": labels.numpy(), "p_mask": p_mask.numpy(),
                        "seg_mask": seg_mask.numpy(),
                        "sasp_points": None if points is None else points.coords_image[q].cpu()[valid].numpy(),
                        "sasp_labels": None if points is None else points.labels[q].cpu()[valid].numpy(),
                        "siou_threshold": siou["threshold"],
                        "clip_map": None if clip_map is None else clip_map.numpy(), "clip_word": word,
                    }
            out.append({"name": sample.name, "query": query_text(sample), "queries": rec_q, "_figure": fig})
        return out

    def write_figure(self, index: int, sample: Sample, fig: dict | None) -> Path | None:
        """``figures/<index>.png``: image + GT, LLaVA map, SAM-decoder map, P_prompt, [SEG]_prompt."""
        if fig is None:
            return None
        from read.analysis.report import figure_row
        from read.utils.render import write_png

        h, w = sample.image.shape[:2]
        box = clip_view_box(h, w, self.pipe.clip_size) if self.pipe.view == "center_crop" else None  # full: all seen
        rgb = figure_row(sample.image, fig, box, query_text(sample))
        return write_png(self.out_dir / "figures" / f"{index:05d}.png", rgb)
