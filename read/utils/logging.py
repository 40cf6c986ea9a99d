"""Metrics to JSONL (always), TensorBoard and W&B when installed and asked for (lazy imports)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("read")


def get_logger() -> logging.Logger:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return log


class MetricLogger:
    """Writes one JSON object per ``log`` call to ``metrics.jsonl``; mirrors scalars to TensorBoard / W&B."""

    def __init__(self, output_dir: Path, report_to: list[str], *, enabled: bool = True, run_config: dict | None = None):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if "tensorboard" in report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("tensorboard is not installed (pip install tensorboard); skipping it")
            else:
                self.tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        if "wandb" in report_to:
            try:
                import wandb
            except ImportError:
                log.warning("wandb is not installed (pip install wandb); skipping it")
            else:
                self.wandb = wandb.init(project="read", dir=str(output_dir), config=run_config or {})

    def truncate_after(self, step: int) -> None:
        """Drop rows past ``step`` (written after the checkpoint a resumed run restarts from)."""
        if not self.enabled or not self.path.is_file():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if json.loads(r).get("step", 0) <= step]
        self.path.write_text("".join(r + "\n" for r in kept))

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        step = int(row.get("step", 0))
        scalars = {k: v for k, v in row.items() if isinstance(v, int | float) and k != "step"}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
