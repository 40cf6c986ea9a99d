"""Config -> datasets: the official mixture keys, evaluation sets, and the data root."""

from __future__ import annotations

import os
from pathlib import Path

from read.config import DataConfig, ReadConfig
from read.data.base import SegDataset
from read.data.mixture import MixtureDataset

DEFAULT_ROOT = "dataset"


def data_root(cfg: DataConfig) -> Path:
    """``data.root``, else ``$READ_DATA_ROOT``, else ``./dataset``."""
    return Path(cfg.root or os.environ.get("READ_DATA_ROOT", DEFAULT_ROOT))


def build_component(key: str, cfg: DataConfig) -> SegDataset:
    """One mixture component by its official key (``--dataset`` entries of train_read.py)."""
    root = data_root(cfg)
    n = cfg.num_classes_per_sample
    if key == "reason_seg":
        from read.data.reason_seg import ReasonSegDataset

        return ReasonSegDataset(root, cfg.reason_seg_split, num_classes_per_sample=n)
    if key in ("refer_seg", "neg_refer_seg", "correct_refer_seg"):
        from read.data.refer_seg import ReferSegDataset

        names = {"refer_seg": cfg.refer_seg_data, "neg_refer_seg": cfg.neg_refer_seg_data,
                 "correct_refer_seg": cfg.correct_refer_seg_data}[key]
        return ReferSegDataset(root, tuple(names), num_classes_per_sample=n, name=key)
    if key == "sem_seg":
        from read.data.sem_seg import SemSegDataset

        return SemSegDataset(root, tuple(cfg.sem_seg_data), num_classes_per_sample=n)
    if key == "vqa":
        from read.data.vqa import VQADataset

        return VQADataset(root)
    raise KeyError(f"unknown dataset key {key!r}")


def samples_per_epoch(cfg: ReadConfig, world_size: int) -> int:
    """``data.samples_per_epoch`` or the official batch x accumulation x steps_per_epoch x world."""
    t = cfg.train
    return cfg.data.samples_per_epoch or t.batch_size * t.grad_accumulation_steps * t.steps_per_epoch * world_size


def build_train_mixture(cfg: ReadConfig, *, rank: int = 0, world_size: int = 1) -> MixtureDataset:
    """The training mixture named by ``data.datasets`` / ``data.sample_rates``."""
    from read.utils import distributed as dist

    d = cfg.data
    if d.generate_synthetic:
        from read.data.synth import ensure_synthetic_root

        if dist.is_main():  # one writer; the other ranks wait for it
            ensure_synthetic_root(data_root(d), seed=cfg.train.seed)
        dist.barrier()
    parts = [build_component(k, d) for k in d.datasets]
    return MixtureDataset(parts, d.sample_rates, samples_per_epoch(cfg, world_size), seed=cfg.train.seed,
                          rank=rank, world_size=world_size, on_error=d.on_error)
