"""Synthetic on-disk datasets in the real formats (tests, smoke runs; no downloads).

``ensure_synthetic_root(root)`` writes every format the training mixture reads (ReasonSeg JSON + JPEG, REFER
pickles + COCO instances for the refCOCO family, FP- and R-RefCOCO, gRefCOCO's JSON refs + instances, the five
semantic-segmentation layouts and an LLaVA-Instruct JSON), then a marker file; a root with the marker is left
untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER = ".read_synthetic.json"

REFER_SETS = ("refclef", "refcoco", "refcoco+", "refcocog", "fprefcoco", "fprefcoco+", "fprefcocog",
              "R-refcoco", "R-refcoco+", "R-refcocog")


def write_all(root: str | Path, *, seed: int = 0, reason_seg_splits: dict[str, int] | None = None,
              refer_images: int = 12, sem_seg_images: int = 6, vqa_items: int = 4,
              grefcoco_images: int = 16) -> dict:
    """Write every synthetic dataset under ``root``; returns the counts each writer reports."""
    from read.data.synth.grefcoco import write_grefcoco
    from read.data.synth.reason_seg import write_reason_seg
    from read.data.synth.refer import write_refer
    from read.data.synth.sem_seg import write_sem_seg
    from read.data.synth.vqa import write_llava_instruct

    root = Path(root)
    return {
        "reason_seg": write_reason_seg(root, seed=seed, splits=reason_seg_splits),
        "refer": write_refer(root, seed=seed, datasets=REFER_SETS, n_images=refer_images),
        "grefcoco": write_grefcoco(root, seed=seed, n_images=grefcoco_images),
        "sem_seg": write_sem_seg(root, seed=seed, num_images=sem_seg_images),
        "vqa": write_llava_instruct(root, seed=seed, num_items=vqa_items),
    }


def ensure_synthetic_root(root: str | Path, *, seed: int = 0, **kwargs) -> dict:
    """Write the synthetic datasets unless ``root`` already holds a completed synthetic tree."""
    root = Path(root)
    marker = root / MARKER
    if marker.is_file():
        return json.loads(marker.read_text())
    counts = write_all(root, seed=seed, **kwargs)
    marker.write_text(json.dumps({"seed": seed, "counts": counts}, indent=1))
    return {"seed": seed, "counts": counts}
