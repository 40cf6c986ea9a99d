"""Rank statistics shared by the probes and the miniature quality checks (pure numpy)."""

from __future__ import annotations

import numpy as np

__all__ = ["auroc", "average_ranks"]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` ``[N]`` with ties given their average rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    ranks = np.empty(len(values), np.float64)
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_v[end] != sorted_v[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2.0
            start = end
    return ranks


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC of ``scores`` ``[N]`` for the boolean labels ``positive`` ``[N]`` (ties count 1/2);
    NaN if one class is empty."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = average_ranks(scores.astype(np.float64))
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
