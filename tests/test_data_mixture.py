"""Training mixture: proportions, per-rank draws, restart reproducibility, bad-sample handling; truncation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from read.data.base import DataError, Sample
from read.data.collate import truncate_keeping_seg
from read.data.mixture import MixtureDataset


class Fake:
    """Records which dataset was drawn and a random value from the given generator."""

    def __init__(self, name: str, fail_every: int = 0):
        self.name = name
        self.fail_every = fail_every
        self.calls = 0

    def sample(self, rng: np.random.Generator) -> Sample:
        self.calls += 1
        value = float(rng.random())
        if self.fail_every and self.calls % self.fail_every == 0:
            raise DataError(f"{self.name}/bad_{self.calls}.json: malformed JSON")
        return Sample(image=np.zeros((2, 2, 3), np.uint8), conversations=[], meta={"value": value})


def draws(mix: MixtureDataset, n: int) -> list[tuple[str, float]]:
    return [(mix[i].meta["dataset"], mix[i].meta["value"]) for i in range(n)]


def test_proportions_follow_sample_rates():
    names = ["sem_seg", "refer_seg", "correct_refer_seg", "vqa", "neg_refer_seg", "reason_seg"]
    rates = [10, 1, 1, 1, 1, 10]
    n = 6000
    mix = MixtureDataset([Fake(k) for k in names], rates, samples_per_epoch=n, seed=3)
    counts = {k: 0 for k in names}
    for i in range(n):
        counts[mix[i].meta["dataset"]] += 1
    for k, r in zip(names, rates):
        p = r / sum(rates)
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(counts[k] - n * p) < 5 * sd, (k, counts[k], n * p)


def test_ranks_differ_and_restarts_replay():
    ds = [Fake("a"), Fake("b")]
    r0 = MixtureDataset(ds, [1, 1], 200, seed=7, rank=0, world_size=2)
    r1 = MixtureDataset(ds, [1, 1], 200, seed=7, rank=1, world_size=2)
    assert len(r0) == len(r1) == 100
    a, b = draws(r0, 50), draws(r1, 50)
    assert a != b
    again = MixtureDataset([Fake("a"), Fake("b")], [1, 1], 200, seed=7, rank=0, world_size=2)
    assert draws(again, 50) == a  # restart: identical draws, any order of access
    assert [again[i].meta["value"] for i in reversed(range(50))] == [v for _, v in reversed(a)]
    again.set_epoch(1)
    assert draws(again, 50) != a


def test_bad_samples_raise_or_are_skipped():
    mix = MixtureDataset([Fake("x", fail_every=3)], [1], 30, seed=0)
    with pytest.raises(DataError, match="bad_3.json: malformed JSON"):
        for i in range(30):
            mix[i]
    mix = MixtureDataset([Fake("x", fail_every=3)], [1], 30, seed=0, on_error="skip")
    out = [mix[i] for i in range(30)]
    assert len(out) == 30 and mix.skipped > 0
    always_bad = MixtureDataset([Fake("x", fail_every=1)], [1], 5, on_error="skip", max_attempts=4)
    with pytest.raises(DataError, match="4 bad draws in a row"):
        always_bad[0]


def test_mixture_argument_errors():
    with pytest.raises(ValueError, match="sample rates"):
        MixtureDataset([Fake("a")], [1, 2], 10)
    with pytest.raises(ValueError, match="positive sum"):
        MixtureDataset([Fake("a")], [0], 10)


def test_truncation_never_cuts_seg():
    SEG = 9
    ids = torch.tensor([1, 4, 4, 4, SEG, 5, 2, 7, 7, 7])
    labels = torch.tensor([-100, -100, -100, 4, SEG, 5, 2, 7, 7, 7])
    i2, l2 = truncate_keeping_seg(ids, labels, 7, SEG)
    assert i2.tolist() == [1, 4, 4, 4, SEG, 5, 2] and l2.tolist() == [-100, -100, -100, 4, SEG, 5, 2]
    with pytest.raises(DataError, match=r"img_3.jpg: a \[SEG\] at position 4 lies beyond max_length=4"):
        truncate_keeping_seg(ids, labels, 4, SEG, "img_3.jpg")
