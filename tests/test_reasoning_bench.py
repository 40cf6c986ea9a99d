"""The synthetic reasoning benchmark: queries are unambiguous and correct; baselines; ablation switches."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from read.data.synth.reasoning import write_reasoning_benchmark
from read.eval.baselines import text_blind_baselines


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    counts = write_reasoning_benchmark(root, splits={"train": 40, "val": 30, "test": 10})
    return root, counts


def answer(query: str, shapes: list[dict]) -> int:
    """Solve a query from the shape list, written independently of the generator."""
    def centre(s):
        p = np.asarray(s["points"])
        return (p[:, 0].min() + p[:, 0].max()) / 2, (p[:, 1].min() + p[:, 1].max()) / 2

    def area(s):
        m = np.zeros((256, 256), np.uint8)
        cv2.fillPoly(m, [np.round(np.asarray(s["points"])).astype(np.int32)], 1)
        return int(m.sum())

    q = query.lower()
    if q.startswith("the "):
        colour, kind = q[4:].split()
        return next(i for i, s in enumerate(shapes) if s["colour"] == colour and s["kind"] == kind)
    for words, kind in (("three corners", "triangle"), ("four corners", "rectangle"), ("round", "circle")):
        if words in q:
            (i,) = [i for i, s in enumerate(shapes) if s["kind"] == kind]
            return i
    if "largest" in q or "smallest" in q:
        areas = [area(s) for s in shapes]
        return int(np.argmax(areas) if "largest" in q else np.argmin(areas))
    rel, ref = q[len("which shape is "):-1].split(" the ")
    colour, kind = ref.split()
    r = next(i for i, s in enumerate(shapes) if s["colour"] == colour and s["kind"] == kind)
    axis, sign = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}[rel]
    (i,) = [i for i, s in enumerate(shapes) if i != r and sign * (centre(s)[axis] - centre(shapes[r])[axis]) > 0]
    return i


def test_queries_are_correct_and_half_explicit(bench):
    root, counts = bench
    for split, n in (("train", 40), ("val", 30), ("test", 10)):
        files = sorted((root / "reason_seg" / "ReasonSeg" / split).glob("*.json"))
        assert len(files) == n == sum(counts[split].values())
        explicit = 0
        for f in files:
            rec = json.loads(f.read_text())
            syn = rec["synthetic"]
            assert answer(rec["text"][0], syn["shapes"]) == syn["target"], (f, rec["text"])
            assert rec["is_sentence"] == (syn["kind"] != "explicit")
            assert rec["shapes"][0]["points"] == syn["shapes"][syn["target"]]["points"]
            explicit += syn["kind"] == "explicit"
        assert explicit == (n + 1) // 2
    train = {json.loads(f.read_text())["text"][0] for f in (root / "reason_seg/ReasonSeg/train").glob("*.json")}
    assert len(train) > 10


def test_text_blind_baselines(bench):
    root, _ = bench
    b = text_blind_baselines(root, "val")
    assert b["empty"] == {"giou": 0.0, "ciou": 0.0}
    assert 0.0 < b["whole_image"]["giou"] < 0.2
    assert 0.2 < b["union_of_shapes"]["giou"] < 0.6 and 0.2 < b["random_shape"]["giou"] < 0.7


def test_points_only_variant_has_no_seg_token_in_sam(tiny_cfg):
    from conftest import TINY, make_tiny_batch

    from read.config import ConfigError, load_config
    from read.model.builder import build_read_model

    cfg = load_config(TINY, ["model.seg_prompt=false"])
    torch.manual_seed(0)
    model, tok = build_read_model(cfg)
    seen = {}
    def spy(module, args, kwargs):
        seen["sparse"] = kwargs["sparse_prompt_embeddings"].shape

    model.sam.mask_decoder.register_forward_pre_hook(spy, with_kwargs=True)
    out = model(make_tiny_batch(model, tok, cfg))
    out.loss.total.backward()
    assert seen["sparse"][1] == cfg.model.sasp.num_points + 1  # points + SAM's pad point, no [SEG]
    assert all(p.grad is None for p in model.text_hidden_fcs.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    with pytest.raises(ConfigError, match="no prompt"):
        load_config(TINY, ["model.seg_prompt=false", "model.sasp.enabled=false"])
