"""Two engines behind one interface: DeepSpeed (default on GPU) and plain PyTorch (CPU, tests).

Both follow DeepSpeed's semantics: ``backward(loss)`` scales by ``1 / grad_accumulation_steps``; ``step()`` is
called after every micro-batch and applies gradient clipping, the optimiser and the lr schedule only at
accumulation boundaries; ``global_steps`` counts optimiser steps.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from read.config import ReadConfig
from read.train.schedule import WarmupDecaySchedule


class Engine(Protocol):
    module: nn.Module
    global_steps: int

    def __call__(self, batch): ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> None: ...
    def is_boundary(self) -> bool: ...
    def get_lr(self) -> float: ...
    def save(self, directory: Path) -> None: ...
    def load(self, directory: Path) -> None: ...


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


class TorchEngine:
    """Plain PyTorch: AdamW (betas, eps, weight decay, fused or not from config) + the WarmupDecayLR schedule.

    In bf16/fp16 the optimiser runs on fp32 master copies of the trainable weights (as DeepSpeed does): gradients
    are copied to the masters, clipped and applied there, and the model's low-precision weights are refreshed from
    them. Pure-bf16 AdamW would lose every update smaller than bf16's resolution. The masters are saved with the
    engine state, so a resumed run continues from the exact fp32 values.
    """

    def __init__(self, model: nn.Module, cfg: ReadConfig) -> None:
        t = cfg.train
        self.module = model
        self.params = trainable_parameters(model)
        self.mixed = any(p.dtype != torch.float32 for p in self.params)
        self.masters = ([p.detach().float().clone().requires_grad_(True) for p in self.params]
                        if self.mixed else None)
        on_cuda = any(p.is_cuda for p in self.params)
        fused = t.optimizer == "adamw_fused" or (t.optimizer == "auto" and on_cuda)
        kwargs = {"fused": True} if fused else {}
        self.optimizer = torch.optim.AdamW(
            self.masters or self.params, lr=t.lr, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay,
            **kwargs
        )
        self.scheduler = WarmupDecaySchedule(
            self.optimizer, max_lr=t.lr, total_steps=t.epochs * t.steps_per_epoch, warmup_steps=t.warmup_steps
        )
        self.accumulation = t.grad_accumulation_steps
        self.grad_clip = t.grad_clip
        self.micro_steps = 0
        self.global_steps = 0

    def __call__(self, batch):
        return self.module(batch)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accumulation).backward()

    def is_boundary(self) -> bool:
        """True when the *next* ``step()`` applies the optimiser."""
        return (self.micro_steps + 1) % self.accumulation == 0

    def step(self) -> None:
        boundary = self.is_boundary()
        self.micro_steps += 1
        if not boundary:
            return
        updated = self.masters or self.params
        if self.masters is not None:
            for p, m in zip(self.params, self.masters, strict=True):
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(updated, self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.masters is not None:
            with torch.no_grad():
                for p, m in zip(self.params, self.masters, strict=True):
                    p.copy_(m)
        self.global_steps += 1

    def get_lr(self) -> float:
        return self.scheduler.get_lr()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "micro_steps": self.micro_steps,
                "global_steps": self.global_steps,
                "masters": [m.detach() for m in self.masters] if self.masters is not None else None,
            },
            directory / "torch_engine.pt",
        )

    def load(self, directory: Path) -> None:
        from read.train.safe_load import safe_torch_load

        state = safe_torch_load(directory / "torch_engine.pt", map_location="cpu")
        if (state.get("masters") is None) != (self.masters is None):
            raise ValueError(f"{directory / 'torch_engine.pt'}: saved with another precision (fp32 master weights "
                             f"{'present' if state.get('masters') is not None else 'absent'}); keep model.vlm.dtype")
        if self.masters is not None:
            with torch.no_grad():
                for m, saved in zip(self.masters, state["masters"], strict=True):
                    m.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_steps = int(state["micro_steps"])
        self.global_steps = int(state["global_steps"])


def skip_cpu_shm_build() -> None:
    """DeepSpeed's CPU comm backend JIT-builds a shared-memory all-reduce op (40-55 s the first time) that a
    single CPU process does not need (STACK.md 1.4). Replace the builder with a no-op; CUDA runs are untouched."""
    importlib.import_module("deepspeed.comm.torch")
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


class DeepSpeedEngine:
    """``deepspeed.initialize`` with the config generated from the YAML (ZeRO-2, bf16, clipping, AdamW,
    WarmupDecayLR). Checkpoints of the engine exclude frozen parameters (the trainable weights are saved
    separately as safetensors by ``read.train.checkpoint``)."""

    def __init__(self, model: nn.Module, cfg: ReadConfig, *, world_size: int, root: Path | None = None) -> None:
        try:
            import deepspeed
        except ImportError as e:  # pragma: no cover
            raise ImportError("the DeepSpeed engine needs deepspeed: pip install deepspeed") from e
        from read.train.deepspeed_config import build_deepspeed_config
        from read.utils.distributed import is_initialized, single_process_env_defaults

        cpu = not torch.cuda.is_available()
        if cpu:
            skip_cpu_shm_build()
        if not is_initialized():
            single_process_env_defaults()
        self.ds_config = build_deepspeed_config(cfg, world_size=world_size, cpu=cpu, root=root)
        # DeepSpeed casts every parameter to bf16/fp16 (buffers are kept): the frozen SAM prompt encoder, which this
        # project keeps exactly fp32 (read.model.builder.FP32_MODULES), is restored afterwards, bit for bit.
        from read.model.builder import FP32_MODULES

        keep = {n: p.detach().clone() for n, p in model.named_parameters()
                if not p.requires_grad and any(n.startswith(k + ".") for k in FP32_MODULES)}
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, model_parameters=trainable_parameters(model), config=self.ds_config
        )
        self.module = self.engine.module
        with torch.no_grad():
            for n, p in self.module.named_parameters():
                if n in keep:
                    p.data = keep[n].to(p.device)
        from read.train.safe_load import install_safe_deepspeed_loader

        install_safe_deepspeed_loader(self.engine)

    @property
    def global_steps(self) -> int:
        return int(self.engine.global_steps)

    def __call__(self, batch):
        return self.engine(batch)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def is_boundary(self) -> bool:
        return bool(self.engine.is_gradient_accumulation_boundary())

    def step(self) -> None:
        self.engine.step()

    def get_lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save(self, directory: Path) -> None:
        self.engine.save_checkpoint(str(directory), tag="engine", exclude_frozen_parameters=True)

    def load(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(directory), tag="engine", load_module_strict=False)
        if path is None:
            raise FileNotFoundError(f"{directory}: no DeepSpeed engine checkpoint (tag 'engine')")


def build_engine(model: nn.Module, cfg: ReadConfig, *, world_size: int = 1, root: Path | None = None):
    """``train.engine``: ``auto`` = DeepSpeed when CUDA is available, else plain PyTorch."""
    kind = cfg.train.engine
    if kind == "auto":
        kind = "deepspeed" if torch.cuda.is_available() else "torch"
    if kind == "deepspeed":
        return DeepSpeedEngine(model, cfg, world_size=world_size, root=root)
    if world_size > 1:
        raise RuntimeError("the plain PyTorch engine runs one process; use train.engine=deepspeed for several")
    return TorchEngine(model, cfg)
