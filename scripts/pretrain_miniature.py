"""Pretrain the miniature READ world from seeds: stand-ins for CLIP, LLaVA-1.5 and SAM on synthetic scenes, each in
the format this project loads, within a time budget, resumable (docs/BENCHMARKS.md, "A miniature READ world").

    python scripts/pretrain_miniature.py                       # data/miniature, 43 minutes on 2 CPU cores
    python scripts/pretrain_miniature.py --out DIR --clip-minutes 2 --llava-minutes 1 4 --sam-minutes 3   # quick

Stages (each skipped when finished, continued when interrupted, with its quality check in ``<stage>/stage.json``):
  clip   a CLIPModel (vision + text towers) trained contrastively on scenes and captions; zero-shot colour / kind
         accuracy on one-shape images;
  llava  LLaVA-1.5 in llava-hf layout: projector alignment on captions, then instruction tuning (half the items
         requests in READ's template words, half of those in the evaluation's fixed wording; captions, counts,
         colours, kinds, one-step reasoning questions answered by name); caption, answer and grounding checks;
  sam    a segment_anything SAM (tiny sizes) for clicks and boxes; click / box mIoU and the IoU with a shape that
         was not clicked (a SAM that ignores its prompts scores as high there as on the clicked one).
Then READ fine-tunes from them: ``python train.py --config configs/experiments/miniature.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/miniature", help="where the parts go (default data/miniature)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip-minutes", type=float, default=10.0)
    parser.add_argument("--llava-minutes", type=float, nargs=2, default=(3.0, 20.0), metavar=("ALIGN", "INSTRUCT"))
    parser.add_argument("--sam-minutes", type=float, default=10.0)
    parser.add_argument("--pointing-weight", type=float, default=1.0,
                        help="weight of the LLaVA instruction stage's word-to-patch grounding loss (0: off)")
    parser.add_argument("--read-share", type=float, default=0.5,
                        help="share of the LLaVA instruction items that are requests in READ's template words")
    parser.add_argument("--val-share", type=float, default=0.5,
                        help="share of those requests in the evaluation's fixed wording (LISA's validation prompt)")
    parser.add_argument("--stages", default="clip,llava,sam", help="comma-separated subset, in this order")
    parser.add_argument("--max-steps", type=int, default=None, help="stop every stage after this many steps (tests)")
    parser.add_argument("--eval-n", type=int, default=None, help="fewer quality-check samples (tests)")
    parser.add_argument("--sam-init", default=None, help="start the SAM stage from these SAM weights (.pth)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    args = parser.parse_args(argv)

    from read.miniature.clip_stage import train_clip
    from read.miniature.llava_stage import RequestMix, train_llava
    from read.miniature.sam_stage import train_sam

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    unknown = sorted(set(stages) - {"clip", "llava", "sam"})
    if unknown:
        raise ValueError(f"--stages: unknown stage(s) {unknown} (clip, llava, sam)")
    ev = {} if args.eval_n is None else {"eval_n": args.eval_n}
    report: dict = {}
    t0 = time.time()
    if "clip" in stages:
        report["clip"] = train_clip(out, budget_s=60 * args.clip_minutes, seed=args.seed, max_steps=args.max_steps,
                                    **ev)
        print("clip:", json.dumps(report["clip"]["quality"]), flush=True)
    if "llava" in stages:
        report["llava"] = train_llava(out, align_s=60 * args.llava_minutes[0], instruct_s=60 * args.llava_minutes[1],
                                      seed=args.seed, max_steps=args.max_steps,
                                      pointing_weight=args.pointing_weight,
                                      mix=RequestMix(read_share=args.read_share, val_share=args.val_share), **ev)
        print("llava:", json.dumps(report["llava"]["quality"]), flush=True)
    if "sam" in stages:
        report["sam"] = train_sam(out, budget_s=60 * args.sam_minutes, seed=args.seed, max_steps=args.max_steps,
                                  init=Path(args.sam_init) if args.sam_init else None, **ev)
        print("sam:", json.dumps(report["sam"]["quality"]), flush=True)
    report["wall_seconds_this_run"] = round(time.time() - t0, 1)
    report["seconds_all_stages"] = round(sum(r["seconds"] for k, r in report.items() if isinstance(r, dict))
                                         + sum(r.get("align", {}).get("seconds", 0) for r in report.values()
                                               if isinstance(r, dict)), 1)
    (out / "miniature.json").write_text(json.dumps(report, indent=1))
    print(f"parts in {out}: llava {out / 'llava'}, sam {out / 'sam' / 'sam_tiny.pth'}, clip {out / 'clip'}")
    return report


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
