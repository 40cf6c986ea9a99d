"""The READ-on-LLaVA + SAM path against its record on a fixed input (tests/golden_helpers.py, recorded before the
backbone refactor of issue 18): bit-identical where the float kernels are the recording machine's, and within
float tolerance elsewhere."""

from __future__ import annotations

import json

import pytest
from golden_helpers import RECORD, compute, exact_here


@pytest.fixture(scope="module")
def outputs():
    return json.loads(RECORD.read_text()), compute()


def test_the_record_covers_every_stage_of_the_path(outputs):
    want, _ = outputs
    keys = set(want["digests"])
    for prefix in ("logits", "mask.", "points.similarity", "points.coords", "points.labels", "queries.rows",
                   "grad.", "generate.sequences", "forced.seg_hidden", "forced.mask."):
        assert any(k.startswith(prefix) for k in keys), prefix
    assert sum(k.startswith("grad.") for k in keys) >= 10


def test_outputs_equal_the_record(outputs):
    want, got = outputs
    assert set(got["digests"]) == set(want["digests"])
    for k, v in want["summary"].items():
        assert got["summary"][k] == pytest.approx(v, rel=1e-4, abs=1e-4), k
    if exact_here(want):
        bad = sorted(k for k in want["digests"] if got["digests"][k] != want["digests"][k])
        assert not bad, f"{len(bad)} outputs are no longer bit-identical, first: {bad[:5]}"
        assert got["generated_ids"] == want["generated_ids"]
