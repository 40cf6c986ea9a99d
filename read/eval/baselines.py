"""Scores of text-blind predictions on the synthetic reasoning benchmark: a model near them ignores the query."""

from __future__ import annotations

from pathlib import Path

from read.data.synth.reasoning import text_blind_predictions
from read.eval.metrics import giou_ciou

__all__ = ["text_blind_baselines"]


def text_blind_baselines(root: str | Path, split: str = "val", *, seed: int = 0) -> dict[str, dict[str, float]]:
    """gIoU/cIoU of each text-blind predictor (:func:`read.data.synth.reasoning.text_blind_predictions`)."""
    preds, gts = text_blind_predictions(root, split, seed=seed)
    return {k: giou_ciou(v, gts) for k, v in preds.items()}
