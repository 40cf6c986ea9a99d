"""Config -> datasets: the official mixture keys, evaluation sets, the data root, and cheap start-up checks.

:func:`check_train_sources` and :func:`check_eval_split` look only for the files and folders each loader opens
first (class lists, annotation JSON/pickle files, image folders: each module's ``required_paths``), without
listing folders, reading annotations or decoding images, so ``train.py`` / ``evaluate.py`` can call them before
building the model. Each raises one :class:`~read.data.base.DataError` naming every missing path together with
the config key that asked for it.

``data.style`` picks how training samples are phrased: ``read`` (the official READ/SESAME datasets) or ``gsva``
(:mod:`read.data.gsva`: several expressions or classes per question, ``[SEG]``/``[REJ]`` slots; gRefCOCO is only
read in this style). :func:`build_eval_dataset` builds every evaluation set, gRefCOCO's included.
"""

from __future__ import annotations

import os
from pathlib import Path

from read.config import DataConfig, ReadConfig
from read.data.base import DataError, SegDataset
from read.data.grefer import GREFCOCO
from read.data.mixture import MixtureDataset

DEFAULT_ROOT = "dataset"
REFER_KEYS = {"refer_seg": "refer_seg_data", "neg_refer_seg": "neg_refer_seg_data",
              "correct_refer_seg": "correct_refer_seg_data"}
_FILE_SUFFIXES = (".json", ".p", ".pkl", ".txt")


def data_root(cfg: DataConfig) -> Path:
    """``data.root``, else ``$READ_DATA_ROOT``, else ``./dataset``."""
    return Path(cfg.root or os.environ.get("READ_DATA_ROOT", DEFAULT_ROOT))


def _refer_names(key: str, cfg: DataConfig) -> list[str]:
    return list(getattr(cfg, REFER_KEYS[key]))


def _reject_grefcoco_in_read_style(cfg: DataConfig) -> None:
    for key, field in REFER_KEYS.items():
        if key in cfg.datasets and GREFCOCO in getattr(cfg, field):
            raise ValueError(f"data.{field}: grefcoco is read only with data.style: gsva (its answers need [REJ])")


def build_gsva_component(key: str, cfg: DataConfig) -> SegDataset:
    """One mixture component in GSVA's style (``data.style: gsva``, :mod:`read.data.gsva`).

    ``refer_seg`` / ``neg_refer_seg`` / ``correct_refer_seg``: :class:`~read.data.gsva.GSVAReferSegDataset` over
    the key's dataset list (``grefcoco`` allowed); ``sem_seg``: :class:`~read.data.gsva.GSVASemSegDataset`;
    ``reason_seg``: :class:`~read.data.gsva_reason.GSVAReasonSegDataset`; ``vqa``: the project's
    :class:`~read.data.vqa.VQADataset` (GSVA's VQA draw is LISA's).
    """
    root = data_root(cfg)
    n = cfg.num_classes_per_sample
    if key in REFER_KEYS:
        from read.data.gsva import GSVAReferSegDataset

        return GSVAReferSegDataset(root, tuple(_refer_names(key, cfg)), num_classes_per_sample=n, name=key)
    if key == "sem_seg":
        from read.data.gsva import GSVASemSegDataset

        return GSVASemSegDataset(root, tuple(cfg.sem_seg_data), num_classes_per_sample=n)
    if key == "reason_seg":
        from read.data.gsva_reason import GSVAReasonSegDataset

        return GSVAReasonSegDataset(root, cfg.reason_seg_split, num_classes_per_sample=n)
    if key == "vqa":
        from read.data.vqa import VQADataset

        return VQADataset(root)
    raise KeyError(f"unknown dataset key {key!r}")


def build_component(key: str, cfg: DataConfig) -> SegDataset:
    """One mixture component by its official key (``--dataset`` entries of train_read.py), in ``data.style``."""
    if getattr(cfg, "style", "read") == "gsva":
        return build_gsva_component(key, cfg)
    _reject_grefcoco_in_read_style(cfg)
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


def build_eval_dataset(cfg: ReadConfig, root: str | os.PathLike | None = None):
    """The evaluation dataset named by ``cfg.eval`` (answers present for teacher forcing, absent otherwise).

    ``eval.protocol`` ``generate`` / ``fp_refcoco`` -> answers ``None``; ``teacher_forced`` -> the fixed answers.

    * ``reason_seg``: :class:`~read.data.reason_seg.ReasonSegEvalDataset` (``eval.split``, ``eval.subset``);
    * the refCOCO family, FP- and R-RefCOCO: :class:`~read.data.refer_seg.ReferSegEvalDataset` (``eval.split``,
      ``eval.template_seed``);
    * ``grefcoco``: :class:`~read.data.gsva_eval.GRefCOCOEvalDataset` (``eval.split``: ``val``/``testA``/
      ``testB``), GSVA's fixed question and ``[SEG]``/``[REJ]`` answer; ``masks`` is ``None``, the ground truth
      is ``meta["gt_masks"]``.

    Args:
        cfg: the run configuration.
        root: the data root; ``None`` -> :func:`data_root` of ``cfg.data``.
    """
    e = cfg.eval
    r = Path(root) if root is not None else data_root(cfg.data)
    generate = e.protocol in ("generate", "fp_refcoco")
    if e.dataset == "reason_seg":
        from read.data.reason_seg import ReasonSegEvalDataset

        return ReasonSegEvalDataset(r, e.split, subset=e.subset, generate_prompts=generate)
    if e.dataset == GREFCOCO:
        from read.data.gsva_eval import GRefCOCOEvalDataset

        return GRefCOCOEvalDataset(r, e.split, mode="generate" if generate else "teacher_forced")
    from read.data.refer_seg import ReferSegEvalDataset

    return ReferSegEvalDataset(r, e.dataset, e.split, template_seed=e.template_seed,
                               mode="generate" if generate else "teacher_forced")


# ----------------------------------------------------------------------------------------------------------
# Fail-early checks (no dataset construction, no decoding)
# ----------------------------------------------------------------------------------------------------------


def _present(path: Path) -> bool:
    return path.is_file() if path.suffix in _FILE_SUFFIXES else path.is_dir()


def train_requirements(cfg: ReadConfig, root: Path) -> list[tuple[str, list[Path]]]:
    """``(config key: value, paths)`` for every training source of ``cfg.data.datasets``.

    Raises:
        ValueError: an unknown mixture key or semantic-segmentation source name.
    gRefCOCO (``grefcoco`` in a referring list) needs ``data.style: gsva``: a ValueError otherwise.
    """
    from read.data import grefer, reason_seg, refer, sem_seg, vqa

    d = cfg.data
    if getattr(d, "style", "read") != "gsva":
        _reject_grefcoco_in_read_style(d)
    out: list[tuple[str, list[Path]]] = []
    for key in d.datasets:
        if key == "reason_seg":
            split = d.reason_seg_split
            out.append((f"data.reason_seg_split: {split}", reason_seg.required_paths(root, split)))
        elif key in REFER_KEYS:
            field = REFER_KEYS[key]
            out += [(f"data.{field}: {name}",
                     grefer.required_paths(root) if name == GREFCOCO else refer.required_paths(root, name))
                    for name in getattr(d, field)]
        elif key == "sem_seg":
            out += [(f"data.sem_seg_data: {name}", sem_seg.required_paths(root, name)) for name in d.sem_seg_data]
        elif key == "vqa":
            out.append(("data.datasets: vqa", vqa.required_paths(root)))
        else:
            raise ValueError(f"data.datasets: unknown dataset key {key!r}")
    return out


def eval_requirements(cfg: ReadConfig, root: Path) -> list[tuple[str, list[Path]]]:
    """``(config key: value, paths)`` for ``cfg.eval.dataset`` / ``cfg.eval.split``.

    ReasonSeg: the split folder(s). refCOCO family: the refs pickle, ``instances.json`` and the image folder
    (the split itself is a field inside the pickle, checked when the dataset is built). gRefCOCO: the
    ``grefs(unc).json`` (or ``.p``), ``instances.json`` and the train2014 folder.
    """
    from read.data import grefer, reason_seg, refer

    e = cfg.eval
    if e.dataset == "reason_seg":
        return [(f"eval.dataset: reason_seg, eval.split: {e.split}", reason_seg.required_paths(root, e.split))]
    if e.dataset == GREFCOCO:
        return [(f"eval.dataset: grefcoco, eval.split: {e.split}", grefer.required_paths(root))]
    return [(f"eval.dataset: {e.dataset}", refer.required_paths(root, e.dataset))]


def _raise_missing(what: str, root: Path, needs: list[tuple[str, list[Path]]]) -> None:
    parts = []
    for key, paths in needs:
        missing = [p for p in paths if not _present(p)]
        if missing:
            parts.append(f"{key} needs {', '.join(str(p) for p in missing)}")
    if parts:
        raise DataError(f"{root}: missing {what}: " + "; ".join(parts))


def _will_be_generated(cfg: ReadConfig, root: Path) -> bool:
    from read.data.synth import MARKER

    return bool(cfg.data.generate_synthetic) and not (root / MARKER).is_file()


def check_train_sources(cfg: ReadConfig, root: str | os.PathLike | None = None) -> None:
    """Fail early when a training source of ``cfg.data`` is not on disk in the layout its loader needs.

    Args:
        cfg: the run configuration (``data.datasets`` and the per-key sub-dataset lists).
        root: the data root; ``None`` -> :func:`data_root` of ``cfg.data``.

    Nothing is checked when ``data.generate_synthetic`` is set and the root has no synthetic tree yet (it is
    written when the mixture is built).

    Raises:
        DataError: one message naming every missing path and the config key that asked for it.
        ValueError: an unknown dataset key or sub-dataset name.
    """
    r = Path(root) if root is not None else data_root(cfg.data)
    if _will_be_generated(cfg, r):
        return
    _raise_missing("training data", r, train_requirements(cfg, r))


def check_eval_split(cfg: ReadConfig, root: str | os.PathLike | None = None) -> None:
    """Fail early when the evaluation set ``cfg.eval.dataset`` / ``cfg.eval.split`` is not on disk.

    Same contract as :func:`check_train_sources` (``root=None`` -> :func:`data_root`; skipped while a
    synthetic root is still to be generated).
    """
    r = Path(root) if root is not None else data_root(cfg.data)
    if _will_be_generated(cfg, r):
        return
    _raise_missing("evaluation data", r, eval_requirements(cfg, r))
