"""Layout of a training run directory (pure path logic, shared by training, evaluation, merge and rebuild).

::

    <run>/config.yaml                       resolved config of the run
    <run>/checkpoints/step_00000100/        one complete checkpoint (``COMPLETE`` written last)
    <run>/checkpoints/best/                 best-on-validation checkpoint (``train.keep_best``), same layout
    <run>/eval/<dataset>_<split>_<protocol>/<key>/   one evaluation (``key`` = digest of weights + settings)
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "step_"
BEST = "best"
COMPLETE = "COMPLETE"
TRAINABLE_FILE = "trainable.safetensors"
BASE_FILE = "base.json"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def is_complete(path: Path) -> bool:
    return path.is_dir() and (path / COMPLETE).is_file()


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete step checkpoints, oldest first (the best-on-val copy is not listed)."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(PREFIX) and not p.name.endswith(".tmp") and is_complete(p)]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def best_checkpoint(output_dir: str | Path) -> Path | None:
    """The best-on-validation checkpoint (``train.keep_best``), if one was kept."""
    path = checkpoint_dir(output_dir) / BEST
    return path if is_complete(path) else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a checkpoint directory, a ``trainable.safetensors`` file, a run directory
    (its latest complete checkpoint) or a run's ``checkpoints/`` folder.

    Raises:
        FileNotFoundError: naming the path, when none of these applies.
    """
    p = Path(path)
    if p.is_file() and p.name == TRAINABLE_FILE:
        p = p.parent
    if (p / TRAINABLE_FILE).is_file():
        return p
    if p.is_dir():
        latest = latest_checkpoint(p.parent if p.name == "checkpoints" else p)
        if latest is not None:
            return latest
        raise FileNotFoundError(f"{p}: neither a checkpoint nor a run directory with complete checkpoints")
    raise FileNotFoundError(f"{p}: no such checkpoint or run directory")
