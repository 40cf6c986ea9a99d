"""Does the [SEG]-to-image similarity map find the target? Localisation statistics of SasP on val.

    python scripts/probe_sasp_points.py --run runs/synthetic_ablation/full/seed0
    python scripts/probe_sasp_points.py --run runs/synthetic_ablation/full/seed0 --untrained   # same config, no weights

Teacher-forced forward of the run's latest checkpoint (or, with ``--untrained``, of the freshly built model)
over the first ``--items`` val items, with the evaluation's fixed prompts (``--prompts eval``, the default: LISA's
validation templates, as ``evaluate.py`` scores them) or the training templates drawn at random (``--prompts
train``; the figures recorded before 2026-11-30's third session used these); per query, from the similarity map
and the SasP points:

* ``auroc``: probability that a random target pixel has a higher similarity than a random non-target pixel
  (each pixel takes its image token's similarity; ties count one half). 0.5 = the map ignores the target.
* ``top1_hit``: whether the most similar token's cell centre lies on the target; ``chance`` is the target's
  share of the image (the hit rate of a map that ignores the target).
* ``pos_precision`` / ``neg_on_target``: share of positive / negative SasP points on the target.

Square images only (the similarity grid then covers the image exactly, CLIP's centre crop being a resize).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from read.utils.stats import auroc  # noqa: E402


def pixel_similarity(sim: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``[N]`` token similarities on an ``s x s`` grid -> ``[H, W]``, each pixel taking its cell's value."""
    s = int(round(len(sim) ** 0.5))
    if s * s != len(sim):
        raise ValueError(f"{len(sim)} image tokens do not form a square grid")
    h, w = hw
    rows = np.minimum(np.arange(h) * s // h, s - 1)
    cols = np.minimum(np.arange(w) * s // w, s - 1)
    return sim.reshape(s, s)[rows[:, None], cols[None, :]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="training run directory (config.yaml + checkpoints/)")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--untrained", action="store_true", help="skip loading the checkpoint")
    parser.add_argument("--prompts", choices=("eval", "train"), default="eval",
                        help="eval: the evaluation's fixed prompts (what evaluate.py scores); train: the training "
                             "templates, drawn at random")
    args = parser.parse_args(argv)

    from read.config import load_config
    from read.data.reason_seg import ReasonSegDataset
    from read.model.rebuild import rebuild
    from read.train.checkpoint import latest_checkpoint
    from read.train.trainer import TrainCollator

    run = Path(args.run)
    cfg = load_config(run / "config.yaml")
    if not cfg.model.sasp.enabled:
        raise SystemExit(f"{run}: model.sasp.enabled is false, there is no similarity map to probe")
    ckpt = None
    if not args.untrained:
        ckpt = latest_checkpoint(run)
        if ckpt is None:
            raise SystemExit(f"{run}: no checkpoint under {run / 'checkpoints'}")
    built = rebuild(cfg, ckpt)  # seeded: the frozen random parts are rebuilt as in training, base checked
    model, tokenizer = built.model.eval(), built.tokenizer
    collate = TrainCollator.for_model(tokenizer, model, cfg.model.vlm)
    if args.prompts == "eval":
        from read.eval.evaluator import build_eval_dataset

        val = build_eval_dataset(cfg, Path(cfg.data.root))
    else:
        val = ReasonSegDataset(cfg.data.root, cfg.eval.split, num_classes_per_sample=1)
    stats: dict[str, list[float]] = {k: [] for k in ("auroc", "top1_hit", "chance", "pos_precision",
                                                     "neg_on_target")}
    n = min(args.items, len(val))
    with torch.no_grad():
        for start in range(0, n, 8):
            samples = [val[i] for i in range(start, min(n, start + 8))]
            batch = collate(samples)
            out = model(batch)
            pts = out.points
            q = 0
            for b, gt in enumerate(batch.gt_masks):
                h, w = (int(v) for v in batch.image_hw[b])
                if h != w:
                    raise SystemExit(f"{samples[b].name}: {h}x{w} is not square (see the module docstring)")
                for j in range(gt.shape[0]):
                    target = (gt[j] == 1).numpy()
                    sim = pts.similarity[q].float().numpy()
                    pix = pixel_similarity(sim, (h, w))
                    stats["auroc"].append(auroc(pix.ravel(), target.ravel()))
                    s = int(round(len(sim) ** 0.5))
                    top = int(sim.argmax())
                    cy, cx = int((top // s + 0.5) * h / s), int((top % s + 0.5) * w / s)
                    stats["top1_hit"].append(float(target[min(cy, h - 1), min(cx, w - 1)]))
                    stats["chance"].append(float(target.mean()))
                    xy = pts.coords_image[q].numpy()
                    lab = pts.labels[q].numpy()
                    on = np.array([target[min(int(y), h - 1), min(int(x), w - 1)] for x, y in xy], bool)
                    if (lab == 1).any():
                        stats["pos_precision"].append(float(on[lab == 1].mean()))
                    if (lab == 0).any():
                        stats["neg_on_target"].append(float(on[lab == 0].mean()))
                    q += 1
    summary = {k: (round(float(np.nanmean(v)), 4) if v else None) for k, v in stats.items()}
    summary.update(run=str(run), untrained=args.untrained, prompts=args.prompts, queries=len(stats["auroc"]))
    print(json.dumps(summary))


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
