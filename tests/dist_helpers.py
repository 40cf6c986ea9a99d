"""Helpers for tests that run two ranks on gloo: a free local port, and an accumulator reduced across
two forked processes (each rank writes what it ended with to ``rank{r}.json``)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reduce_worker(rank: int, world: int, port: int, out_dir: str, fill: Callable[[int], Any]) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        acc = fill(rank)
        acc.reduce()
        second_reduce_raises = False
        try:
            acc.reduce()
        except RuntimeError:
            second_reduce_raises = True
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump({"result": acc.result(), "state": acc.state(), "second": second_reduce_raises}, f)
    finally:
        dist.destroy_process_group()


def reduce_on_two_ranks(out_dir: Path, fill: Callable[[int], Any]) -> list[dict]:
    """Fork two gloo ranks; rank ``r`` builds its accumulator with ``fill(r)``, reduces it, then reduces again
    (which must raise). Returns per rank ``{"result", "state", "second"}`` read back from JSON."""
    import torch.multiprocessing as mp

    mp.start_processes(
        _reduce_worker, args=(2, free_port(), str(out_dir), fill), nprocs=2, join=True, start_method="fork"
    )
    return [json.loads((Path(out_dir) / f"rank{rank}.json").read_text()) for rank in (0, 1)]
