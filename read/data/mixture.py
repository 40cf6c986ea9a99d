"""The training mixture: named datasets drawn with sample rates, reproducible per (seed, rank, epoch, index).

The official ``HybridDataset`` ignores the index and draws from global RNGs seeded identically on every rank,
so all data-parallel ranks see the same samples (spec 10.32). Here every draw uses its own generator
``np.random.default_rng([seed, rank, epoch, index, attempt])``: ranks differ, a restarted run replays exactly
the same samples from any position, and the result does not depend on the number of DataLoader workers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from read.data.base import DataError, Sample, SegDataset

log = logging.getLogger(__name__)


class MixtureDataset:
    """``len(self)`` training samples per epoch for one rank.

    Args:
        datasets: the component datasets (each with ``sample(rng)``).
        weights: unnormalised sample rates, one per dataset (the official ``--sample_rates``).
        samples_per_epoch: samples per epoch over *all* ranks; each rank serves ``samples_per_epoch // world``.
        seed: base seed.
        rank, world_size: this process's data-parallel position.
        on_error: ``raise`` (a bad sample stops the run with the file named) or ``skip`` (logged, counted in
            ``self.skipped``, and re-drawn with the next attempt's generator).
        max_attempts: consecutive bad draws tolerated for one index under ``skip``.
    """

    def __init__(
        self,
        datasets: Sequence[SegDataset],
        weights: Sequence[float],
        samples_per_epoch: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        on_error: str = "raise",
        max_attempts: int = 20,
    ) -> None:
        if len(datasets) != len(weights) or not datasets:
            raise ValueError(f"{len(datasets)} datasets but {len(weights)} sample rates")
        w = np.asarray(weights, dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"sample rates must be >= 0 with a positive sum, got {list(weights)}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.datasets = list(datasets)
        self.probs = w / w.sum()
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.on_error = on_error
        self.max_attempts = max_attempts
        self.epoch = 0
        self.skipped = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch // self.world_size

    def rng_for(self, index: int, attempt: int = 0) -> np.random.Generator:
        """The generator of draw ``index`` of the current epoch on this rank."""
        return np.random.default_rng([self.seed, self.rank, self.epoch, int(index), attempt])

    def choose_dataset(self, rng: np.random.Generator) -> int:
        return int(rng.choice(len(self.datasets), p=self.probs))

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        last: DataError | None = None
        for attempt in range(self.max_attempts if self.on_error == "skip" else 1):
            rng = self.rng_for(index, attempt)
            k = self.choose_dataset(rng)
            try:
                sample = self.datasets[k].sample(rng)
                sample.validate()
            except DataError as e:
                if self.on_error == "raise":
                    raise
                self.skipped += 1
                last = e
                log.warning("skipped a bad sample (%s): %s", getattr(self.datasets[k], "name", k), e)
                continue
            sample.meta.setdefault("dataset", getattr(self.datasets[k], "name", str(k)))
            return sample
        raise DataError(f"{self.max_attempts} bad draws in a row for index {index}; last: {last}")
