"""Checkpoints that a crash can never leave half-written.

Layout of ``<output_dir>/checkpoints/step_00000100/``:

* ``trainable.safetensors``: every parameter with ``requires_grad`` (LoRA, embed_tokens, lm_head, mask decoder,
  projection), by its name in ``ReadModel``;
* ``engine/``: optimiser and scheduler state (``torch_engine.pt``, or DeepSpeed's own files);
* ``rng/rank{r}.pt``: Python, NumPy, torch (and CUDA) RNG states of each rank;
* ``trainer_state.json``: step, epoch, data position, non-finite counters;
* ``COMPLETE``: written last.

Everything is written into ``step_XXXXXXXX.tmp`` and renamed when complete (rename is atomic on POSIX), so
``latest_checkpoint`` only ever sees finished checkpoints; older ones beyond ``keep_last`` are then deleted.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from read.utils import distributed as dist
from read.utils.weights import CheckpointKeyError

PREFIX = "step_"


def checkpoint_dir(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and not p.name.endswith(".tmp")
            and (p / "COMPLETE").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(output_dir: Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


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


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def base_fingerprint(model: nn.Module) -> dict[str, list[float]]:
    """Mean and standard deviation of every frozen tensor: cheap evidence of *which* base weights a checkpoint's
    trainable weights belong to (random-init bases must be rebuilt with the same seed; real bases from the same
    files)."""
    out = {}
    for n, p in model.named_parameters():
        if not p.requires_grad and p.numel() > 1:
            x = p.detach().float()
            out[n] = [float(x.mean()), float(x.std())]
    return out


def check_base_fingerprint(model: nn.Module, saved: dict[str, list[float]], source: str) -> None:
    """Raise when the model's frozen weights are not those the checkpoint was trained on (tolerant to dtype)."""
    ours = base_fingerprint(model)
    bad = [n for n, (m, s) in saved.items()
           if n in ours and (abs(ours[n][0] - m) > 1e-3 + 1e-2 * abs(m) or abs(ours[n][1] - s) > 1e-3 + 1e-2 * abs(s))]
    missing = sorted(set(saved) - set(ours))
    if bad or missing:
        raise CheckpointKeyError(
            f"{source}: the model's frozen (base) weights differ from those this checkpoint was trained on "
            f"({len(bad)} tensors differ, e.g. {bad[:3]}; {len(missing)} missing). Build the model from the run's "
            "config.yaml (same seed for random-init bases, same pretrained files otherwise)."
        )


def save_checkpoint(output_dir: Path, step: int, model: nn.Module, engine, trainer_state: dict,
                    *, keep_last: int = 2) -> Path:
    """Write checkpoint ``step`` (all ranks call this; rank 0 writes the shared files and renames)."""
    from safetensors.torch import save_file

    root = checkpoint_dir(output_dir)
    final = root / step_name(step)
    tmp = root / (step_name(step) + ".tmp")
    rank = dist.get_rank()
    if dist.is_main():
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a crash during an earlier save
        (tmp / "rng").mkdir(parents=True)
    dist.barrier()
    torch.save(rng_state(), tmp / "rng" / f"rank{rank}.pt")
    engine.save(tmp / "engine")
    if dist.is_main():
        save_file(trainable_state_dict(model), str(tmp / "trainable.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
        (tmp / "base_fingerprint.json").write_text(json.dumps(base_fingerprint(model)))
    dist.barrier()
    if dist.is_main():
        (tmp / "COMPLETE").write_text(str(step))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_trainable(model: nn.Module, path: Path, *, check_base: bool = True) -> Path:
    """Strictly load ``trainable.safetensors`` into the trainable parameters of ``model``.

    ``path`` may be the file, a checkpoint directory, or a run directory (its latest complete checkpoint).
    With ``check_base``, the frozen weights are compared with the checkpoint's ``base_fingerprint.json``.
    Returns the file that was loaded.
    """
    from safetensors.torch import load_file

    file = Path(path)
    if file.is_dir() and not (file / "trainable.safetensors").is_file():
        latest = latest_checkpoint(file.parent if file.name == "checkpoints" else file)
        if latest is None:
            raise FileNotFoundError(f"{file}: neither a checkpoint nor a run directory with complete checkpoints")
        file = latest
    if file.is_dir():
        file = file / "trainable.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: trainable weights not found")
    sd = load_file(str(file))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(sd))
    unexpected = sorted(set(sd) - set(params))
    shapes = sorted(n for n in set(sd) & set(params) if tuple(sd[n].shape) != tuple(params[n].shape))
    if missing or unexpected or shapes:
        raise CheckpointKeyError(
            f"{file}: trainable weights do not match the model: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), shape mismatches {shapes[:5]}"
        )
    fp = file.parent / "base_fingerprint.json"
    if check_base and fp.is_file():
        check_base_fingerprint(model, json.loads(fp.read_text()), str(file.parent))
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(sd[n].to(p.dtype))
    return file


def load_checkpoint(path: Path, model: nn.Module, engine) -> dict:
    """Restore engine state, trainable weights and this rank's RNG; return the trainer state."""
    path = Path(path)
    if not (path / "COMPLETE").is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint")
    engine.load(path / "engine")
    load_trainable(model, path)
    rng_file = path / "rng" / f"rank{dist.get_rank()}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return json.loads((path / "trainer_state.json").read_text())
