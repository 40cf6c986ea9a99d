"""Generate the DeepSpeed JSON from the YAML config, so batch size, accumulation, lr, optimiser, schedule and
precision have one source of truth. The JSON file named by ``train.deepspeed_config`` may only hold ZeRO knobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from read.config import ReadConfig

# Keys the YAML owns; a knobs file that sets them is refused rather than silently overridden.
OWNED = {
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "optimizer",
    "scheduler", "gradient_clipping", "bf16", "fp16",
}


def _find_auto(obj: Any, path: str = "") -> list[str]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _find_auto(v, f"{path}.{k}" if path else k)]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _find_auto(v, f"{path}[{i}]")]
    return [path] if obj == "auto" else []


def build_deepspeed_config(cfg: ReadConfig, *, world_size: int = 1, cpu: bool = False,
                           root: Path | None = None) -> dict:
    """The DeepSpeed config dict for this run.

    Args:
        world_size: data-parallel processes (``train_batch_size = micro x accumulation x world``).
        cpu: building for the CPU accelerator (``train.optimizer=deepspeed_fused_adam`` is refused there).
        root: directory the knobs path is relative to (default: the current directory).
    """
    t = cfg.train
    knobs: dict = {}
    if t.deepspeed_config:
        path = Path(t.deepspeed_config)
        if not path.is_absolute() and root is not None:
            path = root / path
        if not path.is_file():
            raise FileNotFoundError(f"train.deepspeed_config: {path} not found")
        knobs = json.loads(path.read_text())
        clash = sorted(OWNED & set(knobs))
        if clash:
            raise ValueError(f"{path}: sets {clash}, which come from the YAML config (train.* / model.vlm.dtype)")
    zero = dict(knobs.pop("zero_optimization", {}))
    zero["stage"] = t.zero_stage
    dtype = cfg.model.vlm.dtype
    params: dict[str, Any] = {"lr": t.lr, "betas": list(t.betas), "eps": t.eps, "weight_decay": t.weight_decay}
    offload = (zero.get("offload_optimizer") or {}).get("device") in ("cpu", "nvme")
    # auto: the fused kernel where the optimiser runs on the GPU; the plain loop on the CPU (no GPU, or offloaded)
    optimizer = t.optimizer if t.optimizer != "auto" else ("adamw" if cpu or offload else "adamw_fused")
    if optimizer == "deepspeed_fused_adam":
        if cpu:
            raise ValueError("train.optimizer=deepspeed_fused_adam needs CUDA (DeepSpeed's FusedAdam is a CUDA kernel); "
                             "use adamw or adamw_fused")
    else:  # torch.optim.AdamW inside DeepSpeed: nothing to compile
        params["torch_adam"] = True
        if optimizer == "adamw_fused":
            params["fused"] = True
    ds = {
        **knobs,
        "train_micro_batch_size_per_gpu": t.batch_size,
        "gradient_accumulation_steps": t.grad_accumulation_steps,
        "train_batch_size": t.batch_size * t.grad_accumulation_steps * world_size,
        "optimizer": {"type": "AdamW", "params": params},
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {
                "total_num_steps": t.epochs * t.steps_per_epoch,
                "warmup_min_lr": 0.0,
                "warmup_max_lr": t.lr,
                "warmup_num_steps": t.warmup_steps,
                "warmup_type": "linear",
            },
        },
        "gradient_clipping": t.grad_clip,
        "bf16": {"enabled": dtype == "bf16"},
        "fp16": {"enabled": dtype == "fp16"},
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    autos = _find_auto(ds)
    if autos:
        raise ValueError(f"DeepSpeed config still has 'auto' values at {autos} (only the HF Trainer resolves them)")
    return ds
