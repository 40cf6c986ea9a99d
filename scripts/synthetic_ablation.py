"""The SasP ablation (paper Table 6) on the synthetic reasoning benchmark, under a fixed CPU budget per run.

    python scripts/synthetic_ablation.py                                   # 4 variants x 3 seeds x 15 minutes
    python scripts/synthetic_ablation.py --variants full --seeds 0 1 2     # a subset; finished runs are skipped
    python scripts/synthetic_ablation.py --report-only                     # tables and curves from what exists
    python scripts/synthetic_ablation.py --config configs/experiments/miniature.yaml --out runs/miniature

Each run trains ``configs/experiments/synthetic_ablation.yaml`` (plus the variant's overrides) for
``--minutes`` of training time, then evaluates the final checkpoint on the whole val split with the
``teacher_forced`` and ``generate`` protocols. The report (``<out>/report.md``, ``<out>/curves.png``) gives
mean +- std over seeds of gIoU / cIoU, overall, explicit and implicit (and per implicit kind), beside the
text-blind baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "experiments" / "synthetic_ablation.yaml"
VARIANTS: dict[str, list[str]] = {
    "points_only": ["model.seg_prompt=false"],          # Table 6 row 1: SasP points, no [SEG] embedding
    "seg_only": ["model.sasp.enabled=false"],            # row 2: [SEG] only (LISA/SESAME prompting)
    "seg_discrete": ["model.sasp.continuous=false"],     # row 3: [SEG] + discrete points
    "full": [],                                          # row 4: [SEG] + points + Discrete-to-Continuous
}
PROTOCOLS = ("teacher_forced", "generate")
KIND_GROUPS = {"explicit": ("explicit",), "implicit": ("corners", "size", "relation"), "corners": ("corners",),
               "size": ("size",), "relation": ("relation",)}


def run_one(variant: str, seed: int, minutes: float, out: Path, data_root: Path, config: Path = CONFIG) -> Path:
    run = out / variant / f"seed{seed}"
    if (run / "done.json").is_file():
        print(f"skip {variant} seed {seed}: done")
        return run
    env = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    common = [f"data.root={data_root}"]
    train = [sys.executable, str(ROOT / "train.py"), "--config", str(config), f"output_dir={run}",
             f"train.seed={seed}", f"train.max_minutes={minutes}", *common, *VARIANTS[variant]]
    print("+", " ".join(train[1:]), flush=True)
    subprocess.run(train, cwd=ROOT, env=env, check=True)
    for protocol in PROTOCOLS:
        cmd = [sys.executable, str(ROOT / "evaluate.py"), "--run", str(run), f"eval.protocol={protocol}",
               "eval.limit=null", "eval.max_new_tokens=24", f"eval.output_dir={eval_dir(run, protocol)}", *common]
        print("+", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    (run / "done.json").write_text(json.dumps({"variant": variant, "seed": seed, "minutes": minutes}))
    return run


def eval_dir(run: Path, protocol: str) -> Path:
    """Fixed evaluation folder per protocol (explicit, so the report finds it; a rerun resumes it)."""
    return run / "eval" / f"reason_seg_val_{protocol}"


def kind_metrics(folder: Path) -> dict[str, dict[str, float]]:
    """gIoU/cIoU per query kind, from the per-sample records and the benchmark JSONs."""
    from read.eval.metrics import SegMetricAccumulator

    acc = {k: SegMetricAccumulator() for k in ("overall", *KIND_GROUPS)}
    for path in folder.glob("records.rank*.jsonl"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            kind = json.loads(Path(rec["meta"]["json_path"]).read_text())["synthetic"]["kind"]
            i = [q["intersection"] for q in rec["queries"]]
            u = [q["union"] for q in rec["queries"]]
            acc["overall"].update_counts(i, u)
            for group, kinds in KIND_GROUPS.items():
                if kind in kinds:
                    acc[group].update_counts(i, u)
    return {k: a.result() for k, a in acc.items() if a.result()["num_masks"]}


def collect(out: Path) -> dict:
    table: dict = {}
    for variant in VARIANTS:
        for run in sorted((out / variant).glob("seed*")):
            if not (run / "done.json").is_file():
                continue
            for protocol in PROTOCOLS:
                d = eval_dir(run, protocol)
                if (d / "results.json").is_file():
                    table.setdefault(variant, {}).setdefault(protocol, []).append(kind_metrics(d))
    return table


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    a = np.asarray(values)
    return f"{a.mean():.3f} +- {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def report(out: Path, data_root: Path) -> str:
    from read.eval.baselines import text_blind_baselines
    from read.utils.plot import plot_curves

    table = collect(out)
    groups = ["overall", "explicit", "implicit", "corners", "size", "relation"]
    lines = ["| variant | protocol | seeds | " + " | ".join(f"{g} gIoU" for g in groups) + " | overall cIoU |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in groups) + " | ---: |"]
    for variant in VARIANTS:
        for protocol in PROTOCOLS:
            runs = table.get(variant, {}).get(protocol, [])
            if not runs:
                continue
            cells = [fmt([r[g]["giou"] for r in runs if g in r]) for g in groups]
            lines.append(f"| {variant} | {protocol} | {len(runs)} | " + " | ".join(cells)
                         + f" | {fmt([r['overall']['ciou'] for r in runs])} |")
    base = text_blind_baselines(data_root, "val")
    lines += ["", "| text-blind baseline (val) | gIoU | cIoU |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {v['giou']:.3f} | {v['ciou']:.3f} |" for k, v in base.items()]
    series = {}
    for variant in VARIANTS:
        pts: dict[int, list[tuple[float, float]]] = {}
        for run in sorted((out / variant).glob("seed*")):
            m = run / "metrics.jsonl"
            if not m.is_file():
                continue
            for row in map(json.loads, m.read_text().splitlines()):
                if "val_giou" in row:
                    pts.setdefault(row["step"], []).append((row["time"] / 60, row["val_giou"]))
        n_seeds = max((len(v) for v in pts.values()), default=0)
        shared = {k: v for k, v in pts.items() if len(v) == n_seeds}  # steps every seed reached
        if shared:
            series[variant] = [(float(np.mean([t for t, _ in v])), float(np.mean([g for _, g in v])))
                               for _, v in sorted(shared.items())]
    if series:
        refs = {f"{k.replace('_', ' ')} {v['giou']:.2f}": v["giou"] for k, v in base.items()
                if k in ("random_shape", "union_of_shapes")}  # the text-blind baselines to beat
        plot_curves(series, out / "curves.png", title="val gIoU (first 100 val items, mean over seeds)",
                    xlabel="training minutes (2-core CPU)", ylim=(0.0, 1.0), hlines=refs)
    text = "\n".join(lines)
    (out / "report.md").write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--out", default="runs/synthetic_ablation")
    parser.add_argument("--data-root", default="data/reasoning_bench")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--config", default=str(CONFIG),
                        help="the experiment (configs/experiments/miniature.yaml: the miniature pretrained world)")
    args = parser.parse_args(argv)
    out, data_root = Path(args.out), Path(args.data_root)
    if not (data_root / "reason_seg" / "ReasonSeg" / "val").is_dir():
        from read.data.synth.reasoning import write_reasoning_benchmark

        print(write_reasoning_benchmark(data_root))
    if not args.report_only:
        for seed in args.seeds:
            for variant in args.variants:
                run_one(variant, seed, args.minutes, out, data_root, Path(args.config))
    print(report(out, data_root))


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
