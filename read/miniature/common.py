"""What every pretraining stage shares: a time budget, resumable progress, and a record of its quality check."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

__all__ = ["Stage"]


class Stage:
    """One stage's folder: ``progress.pt`` (weights + optimiser state + step, tensors only, read with
    ``weights_only=True``) saved every ``save_every`` seconds, and ``stage.json`` once finished (steps, seconds,
    quality). A finished stage is skipped; an interrupted one continues from its last progress file, with the time
    already spent counted against its budget.
    """

    def __init__(self, folder: Path, name: str, *, budget_s: float, save_every_s: float = 60.0) -> None:
        self.folder = Path(folder) / name
        self.name = name
        self.budget_s = float(budget_s)
        self.save_every_s = save_every_s
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spent = 0.0
        self.step = 0
        self._last_save = time.time()
        self._start = time.time()

    @property
    def record_path(self) -> Path:
        return self.folder / "stage.json"

    @property
    def done(self) -> bool:
        return self.record_path.is_file()

    def record(self) -> dict:
        return json.loads(self.record_path.read_text())

    def resume(self, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None) -> None:
        """Load ``progress.pt`` into the modules and the optimiser when an earlier run left one."""
        path = self.folder / "progress.pt"
        if not path.is_file():
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        if optimizer is not None and "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        self.step, self.spent = int(state["step"]), float(state["spent"])

    def tick(self, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None) -> bool:
        """Count one step; save progress when due. Returns False once the time budget is used up."""
        self.step += 1
        now = time.time()
        if now - self._last_save >= self.save_every_s:
            self.save_progress(modules, optimizer)
        return self.elapsed() < self.budget_s

    def elapsed(self) -> float:
        return self.spent + (time.time() - self._start)

    def save_progress(self, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None) -> None:
        state = {"modules": {k: m.state_dict() for k, m in modules.items()}, "step": self.step,
                 "spent": self.elapsed()}
        if optimizer is not None:
            state["optimizer"] = optimizer.state_dict()
        tmp = self.folder / "progress.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.folder / "progress.pt")
        self._last_save = time.time()

    def finish(self, quality: dict, **extra) -> dict:
        """Write ``stage.json`` (steps, seconds, quality check) and drop the progress file."""
        rec = {"stage": self.name, "steps": self.step, "seconds": round(self.elapsed(), 1), "quality": quality,
               **extra}
        self.record_path.write_text(json.dumps(rec, indent=1))
        (self.folder / "progress.pt").unlink(missing_ok=True)
        return rec
