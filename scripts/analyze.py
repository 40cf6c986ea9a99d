"""READ's analysis of the [SEG] token (paper §3.2, Table 1, Fig. 1, 4, 5, Appendix A.1) for any model this project loads.

    python scripts/analyze.py --model $READ_WEIGHTS --dataset reason_seg --split test --sam-original $SAM_CKPT
    python scripts/analyze.py --model runs/quickstart --dataset reason_seg --split val --limit 50
    python scripts/analyze.py --combine analysis/lisa analysis/sesame analysis/read --out table.md   # rows per model

Per query (teacher-forced [SEG] state): S_IoU (the [SEG] map over the language model's image tokens, best threshold
per image), the map over the SAM decoder's image tokens, P_prompt (SAM prompted by the k highest / lowest
similarity points, no [SEG]; ``--sam-original`` for the paper's original SAM, else the model's own decoder) and
[SEG]_prompt (the model's mask). Writes ``records.jsonl`` (resumable: a rerun continues), ``figures/*.png`` (the
first ``--figures`` samples), ``summary.json``, ``table.md`` and a self-contained ``report.html`` into ``--out``
(default ``<model folder>/analysis/<dataset>_<split>``). docs/ANALYSIS.md defines every quantity.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def default_out(model: str, dataset: str, split: str) -> Path:
    p = Path(model)
    base = p / "analysis" if p.is_dir() else Path("analysis") / p.stem
    return base / f"{dataset}_{split}"


def main(argv: list[str] | None = None) -> dict | str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="run, checkpoint, merged model, release folder or YAML config")
    parser.add_argument("--dataset", default="reason_seg", help="reason_seg, refcoco, refcoco+, refcocog, ...")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    parser.add_argument("--out", default=None, help="output folder (with --combine: the table's .md file)")
    parser.add_argument("--config", help="config to use instead of the one next to --model (e.g. for a release)")
    parser.add_argument("--name", default=None, help="the model's name in the table (default: --model)")
    parser.add_argument("--k", type=int, default=None,
                        help="P_prompt points of each kind (default: the official rule, min(#cells >= t, cells / 2))")
    parser.add_argument("--t", type=float, default=0.8, help="P_prompt threshold of the default rule (0.8)")
    parser.add_argument("--step", type=float, default=0.01, help="S_IoU threshold step (0.01)")
    parser.add_argument("--sam-original", default=None, help="original SAM checkpoint (.pth) for P_prompt")
    parser.add_argument("--figures", type=int, default=8, help="figures for the first N samples (default 8)")
    parser.add_argument("--clip", default=None, help="a full CLIPModel folder (with its text tower) for Fig. 1(b)")
    parser.add_argument("--word", default=None, help="the word of the CLIP map, for every sample")
    parser.add_argument("--words", default=None,
                        help="JSON file: {sample index or image path: word} for the CLIP map (\"*\": default)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--overwrite", action="store_true", help="clear an --out folder holding another analysis")
    parser.add_argument("--combine", nargs="+", default=None, help="analysis folders to put in one table")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides (data.root=..., model.sasp.*)")
    args = parser.parse_args(argv)

    if args.combine:
        from read.analysis.report import combine_tables

        table, _ = combine_tables([Path(f) for f in args.combine])
        if args.out:
            Path(args.out).write_text(table)
        print(table, end="")
        return table
    if not args.model:
        parser.error("--model is required (or --combine)")

    from read.analysis.runner import AnalysisSettings, Analyzer
    from read.config import to_dict
    from read.data.catalog import build_eval_dataset, check_eval_split, data_root
    from read.infer import ReadPipeline

    overrides = [*args.overrides, f"eval.dataset={args.dataset}", f"eval.split={args.split}",
                 "eval.protocol=teacher_forced"]
    pipe = ReadPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype, config=args.config,
                                        overrides=overrides)
    cfg = pipe.cfg
    root = data_root(cfg.data)
    if cfg.data.generate_synthetic:
        from read.data.synth import ensure_synthetic_root

        ensure_synthetic_root(root, seed=cfg.train.seed)
    check_eval_split(cfg)
    dataset = build_eval_dataset(cfg, root)
    sam_p = None
    if args.sam_original:
        from read.model.builder import build_sam, cast_parameters

        sam_p = build_sam(dataclasses.replace(cfg.model.sam, checkpoint=args.sam_original)).to(pipe.device).eval()
        cast_parameters(sam_p, pipe.dtype, keep_fp32=("prompt_encoder",))
    words = None
    if args.words:
        from read.data.base import DataError
        from read.data.io import load_json

        table = load_json(args.words)
        if not isinstance(table, dict):
            raise DataError(f"{args.words}: expected a JSON object {{sample index or image path: word}}")
        words = {str(k): str(v) for k, v in table.items()}
    if args.word:
        words = {**(words or {}), "*": args.word}
    if args.clip and not words:
        parser.error("--clip needs --word or --words (the word whose CLIP map is drawn)")
    clip_maps = None
    if args.clip:
        from read.analysis.clip_text import ClipWordMaps

        clip_maps = ClipWordMaps(args.clip, pipe.device)
    settings = AnalysisSettings(
        model=args.name or str(args.model), weights_digest=pipe.digest, dataset=args.dataset, split=args.split,
        data_root=str(root), limit=args.limit, k=args.k, t=args.t, step=args.step, sam_original=args.sam_original,
        conv_template=pipe.conv_template, sasp=to_dict(cfg.model.sasp) if cfg.model.sasp.enabled else None,
        clip=args.clip, words=words)
    out = Path(args.out) if args.out else default_out(args.model, args.dataset, args.split)
    summary = Analyzer(pipe, dataset, out, settings, sam_p=sam_p, clip_maps=clip_maps, figures=args.figures,
                       batch_size=args.batch_size,
                       progress=not args.no_progress, overwrite=args.overwrite).run()
    from read.analysis.report import table_markdown

    print(table_markdown([summary]), end="")
    print(f"P_prompt used {summary['sam_for_p_prompt']}")
    print(f"CLIP word map: {summary['clip_text_map']}")
    print(f"report: {out / 'report.html'}")
    return summary


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
