"""The learning-rate schedule of the official recipe: DeepSpeed ``WarmupDecayLR`` with linear warm-up.

DeepSpeed semantics, reproduced exactly for the plain engine: the scheduler starts at iteration -1 (lr = min_lr)
and is stepped *after* each optimiser step, so optimiser step k (0-based) runs with iteration ``k - 1``:

* ``it < 0``: ``min_lr`` (the very first optimiser step uses lr 0 with the official min_lr = 0);
* ``0 <= it < warmup``: ``min_lr + (max_lr - min_lr) * it / warmup``;
* otherwise: ``min_lr + (max_lr - min_lr) * max(0, (total - it) / max(1, total - warmup))``.
"""

from __future__ import annotations

import torch


def warmup_decay_lr(optimizer_step: int, *, max_lr: float, total_steps: int, warmup_steps: int,
                    min_lr: float = 0.0) -> float:
    """Learning rate used by the 0-based ``optimizer_step``-th optimiser step."""
    it = optimizer_step - 1
    if it < 0:
        return min_lr
    if it < warmup_steps:
        gamma = it / warmup_steps
    else:
        gamma = max(0.0, (total_steps - it) / max(1.0, total_steps - warmup_steps))
    return min_lr + (max_lr - min_lr) * gamma


class WarmupDecaySchedule:
    """Sets ``param_group["lr"]`` like DeepSpeed's WarmupDecayLR (call :meth:`step` after ``optimizer.step()``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, max_lr: float, total_steps: int, warmup_steps: int,
                 min_lr: float = 0.0) -> None:
        self.optimizer = optimizer
        self.kw = dict(max_lr=max_lr, total_steps=total_steps, warmup_steps=warmup_steps, min_lr=min_lr)
        self.steps_done = 0
        self._apply()

    def _apply(self) -> None:
        lr = warmup_decay_lr(self.steps_done, **self.kw)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        self.steps_done += 1
        self._apply()

    def get_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"steps_done": self.steps_done, **self.kw}

    def load_state_dict(self, state: dict) -> None:
        self.steps_done = int(state["steps_done"])
        self._apply()
