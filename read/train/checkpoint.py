"""Checkpoints that a crash can never leave half-written, and that never unpickle code.

Layout of ``<output_dir>/checkpoints/step_00000100/`` (paths in ``read.utils.run_dir``):

* ``trainable.safetensors`` + ``base.json``: every parameter with ``requires_grad`` and the exact digests of the
  frozen base they belong to (``read.model.run_weights``);
* ``engine/``: optimiser and scheduler state (``torch_engine.pt``, read back with ``weights_only=True``; or
  DeepSpeed's own files, read through :func:`read.train.safe_load.safe_deepspeed_loader`);
* ``rng/rank{r}.json`` + ``rng/rank{r}.safetensors``: Python, NumPy, torch (and CUDA) RNG states of each rank;
* ``trainer_state.json``: step, epoch, data position, non-finite counters;
* ``COMPLETE``: written last.

Nothing here is read with pickle: an attacker who can write into a run folder cannot make resuming execute code
(official: ``torch.load`` with ``weights_only`` off everywhere). Everything is written into ``step_XXXXXXXX.tmp`` and
renamed when complete (atomic on POSIX), so only finished checkpoints are ever seen; older ones beyond
``keep_last`` are then deleted. ``train.keep_best`` keeps a copy of the best-on-validation checkpoint in
``checkpoints/best`` (with ``best.json``: metric, value, step), never deleted by ``keep_last``.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from read.model.fingerprint import BaseRecord
from read.model.run_weights import load_trainable, save_trainable
from read.utils import distributed as dist
from read.utils.run_dir import (
    BASE_FILE,
    BEST,
    COMPLETE,
    TRAINABLE_FILE,
    checkpoint_dir,
    is_complete,
    latest_checkpoint,
    list_checkpoints,
    step_name,
)

__all__ = [
    "best_record",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_rng_state",
    "rng_state",
    "save_best",
    "save_checkpoint",
    "save_rng_state",
    "set_rng_state",
]

BEST_RECORD = "best.json"


# --------------------------------------------------------------------------------------------------------------
# RNG state as JSON + safetensors
# --------------------------------------------------------------------------------------------------------------


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng_state(directory: Path, rank: int) -> None:
    """This process's RNG states as ``rank{r}.json`` (Python, NumPy) and ``rank{r}.safetensors`` (torch, CUDA)."""
    from safetensors.torch import save_file

    state = rng_state()
    version, words, gauss = state["python"]
    kind, keys, pos, has_gauss, cached = state["numpy"]
    meta = {
        "python": {"version": version, "state": list(words), "gauss": gauss},
        "numpy": {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "cuda_devices": len(state.get("cuda", [])),
    }
    tensors = {"torch": state["torch"].contiguous()}
    for i, s in enumerate(state.get("cuda", [])):
        tensors[f"cuda.{i}"] = s.contiguous()
    (directory / f"rank{rank}.json").write_text(json.dumps(meta))
    save_file(tensors, str(directory / f"rank{rank}.safetensors"))


def load_rng_state(directory: Path, rank: int) -> dict:
    """The state written by :func:`save_rng_state` (a malformed file is a ``ValueError`` naming it)."""
    from safetensors.torch import load_file

    meta_path, tensor_path = directory / f"rank{rank}.json", directory / f"rank{rank}.safetensors"
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensor_path))
        py, npy = meta["python"], meta["numpy"]
        state = {
            "python": (int(py["version"]), tuple(int(w) for w in py["state"]), py["gauss"]),
            "numpy": (str(npy["kind"]), np.asarray(npy["keys"], dtype=np.uint32), int(npy["pos"]),
                      int(npy["has_gauss"]), float(npy["cached_gaussian"])),
            "torch": tensors["torch"],
        }
        n_cuda = int(meta.get("cuda_devices", 0))
        if n_cuda:
            state["cuda"] = [tensors[f"cuda.{i}"] for i in range(n_cuda)]
    except Exception as e:  # noqa: BLE001 - any failure: the files are not what save_rng_state wrote
        raise ValueError(f"{meta_path} / {tensor_path.name}: unreadable RNG state ({type(e).__name__}: {e})") from e
    return state


# --------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------


def save_checkpoint(output_dir: Path, step: int, model: nn.Module, engine, trainer_state: dict,
                    *, base: BaseRecord, keep_last: int = 2) -> Path:
    """Write checkpoint ``step`` (all ranks call this; rank 0 writes the shared files and renames).

    Args:
        base: the model's base record (``read.model.rebuild.BuiltModel.base``), written as ``base.json``.
    """
    root = checkpoint_dir(output_dir)
    final = root / step_name(step)
    tmp = root / (step_name(step) + ".tmp")
    rank = dist.get_rank()
    if dist.is_main():
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a crash during an earlier save
        (tmp / "rng").mkdir(parents=True)
    dist.barrier()
    save_rng_state(tmp / "rng", rank)
    engine.save(tmp / "engine")
    if dist.is_main():
        save_trainable(tmp, model, base)
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
    dist.barrier()
    if dist.is_main():
        (tmp / COMPLETE).write_text(str(step))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def read_trainer_state(path: Path) -> dict:
    """A checkpoint's ``trainer_state.json`` (a malformed file is a ``ValueError`` naming it)."""
    file = Path(path) / "trainer_state.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{file}: unreadable ({type(e).__name__}: {e})") from e


def load_checkpoint(path: Path, model: nn.Module, engine, *, base: BaseRecord | None = None) -> dict:
    """Restore engine state, trainable weights (base checked exactly) and this rank's RNG; return the trainer
    state.

    Raises:
        ValueError: the checkpoint was written by another number of processes (the optimiser shards, the RNG
            states and the data order all depend on it): the message says how to continue from its weights.
    """
    path = Path(path)
    if not is_complete(path):
        raise FileNotFoundError(f"{path}: not a complete checkpoint")
    state = read_trainer_state(path)
    saved_world, world = int(state.get("world_size", 1)), dist.get_world_size()
    if saved_world != world:
        raise ValueError(
            f"{path} was written by {saved_world} process(es) but this run has {world}: resuming needs the same "
            f"number (optimiser shards, RNG states and data order are per rank). Resume with {saved_world}, or start "
            f"a new run from its weights: train.init=checkpoint train.init_checkpoint={path} --no_auto_resume"
        )
    engine.load(path / "engine")
    load_trainable(model, path, ours=base)
    rng_dir = path / "rng"
    if (rng_dir / f"rank{dist.get_rank()}.json").is_file():
        set_rng_state(load_rng_state(rng_dir, dist.get_rank()))
    return state


# --------------------------------------------------------------------------------------------------------------
# Best on validation
# --------------------------------------------------------------------------------------------------------------


def best_record(output_dir: Path) -> dict | None:
    """``{"metric", "value", "step", "checkpoint"}`` of the kept best checkpoint, or ``None``."""
    path = checkpoint_dir(output_dir) / BEST
    if not is_complete(path) or not (path / BEST_RECORD).is_file():
        return None
    return json.loads((path / BEST_RECORD).read_text())


def save_best(output_dir: Path, source: Path, record: dict) -> Path:
    """Copy the weights of the complete checkpoint ``source`` (trainable tensors, base record, trainer state; not
    the optimiser or RNG state: the best checkpoint is for evaluation and merging, resuming uses the latest) to
    ``checkpoints/best``, atomically replacing the previous best, with ``best.json`` = ``record``. Rank 0 only."""
    root = checkpoint_dir(output_dir)
    final, tmp, old = root / BEST, root / (BEST + ".tmp"), root / (BEST + ".old")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    tmp.mkdir(parents=True)
    for name in (TRAINABLE_FILE, BASE_FILE, "trainer_state.json", COMPLETE):
        shutil.copy2(source / name, tmp / name)
    (tmp / BEST_RECORD).write_text(json.dumps(record, indent=1))
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final
