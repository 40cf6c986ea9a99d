"""Code that only runs with several ranks, executed for real: two gloo processes under torchrun on CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from dist_helpers import free_port

WORKER = ROOT / "tests" / "dist_zero2_worker.py"


def run_two_ranks(tmp_path, pattern: str) -> list[dict]:
    port = free_port()
    env = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    out = tmp_path / "result.json"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(WORKER), str(out), pattern],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-4000:]
    return [json.loads((tmp_path / f"result.json.rank{r}").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("pattern", ["s/n", "sn/ns"], ids=["one_rank_without_seg", "accumulated_mixed_pair"])
def test_zero2_step_with_a_rank_without_seg(tmp_path, pattern):
    """ZeRO-2 reduces gradients in buckets filled in the order gradients become ready: every trainable parameter
    must take part in every backward pass, in the same order on every rank, or the reduction fails ("Received data
    size doesn't match") or mixes up parameters. A rank whose micro-batch has no [SEG] still runs the mask decoder
    and the [SEG] projection (on a dummy query, weight 0)."""
    a, b = run_two_ranks(tmp_path, pattern)
    assert a["global_steps"] == b["global_steps"] == 3
    assert all(math.isfinite(x) for x in a["losses"] + b["losses"])
    assert a["trainable"] == b["trainable"]  # identical weights on both ranks after the step
    assert a["frozen_changed"] == b["frozen_changed"] == []
    changed = a["changed"]
    for part in ("sam.mask_decoder.", "text_hidden_fcs.", "lora_B", "lm_head", "embed_tokens"):
        assert any(part in n for n in changed), part
