"""The miniature READ world: texts and quality checks on hand-checkable cases, resumable stages, and each pretraining
stage run for a few steps into a folder that the project's own loaders read strictly."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from read.data.synthetic import Shape
from read.miniature.clip_stage import clip_vocabulary, zero_shot_accuracy
from read.miniature.common import Stage
from read.miniature.llava_stage import caption_accuracy
from read.miniature.sam_stage import click_iou, innermost_pixel
from read.miniature.scenes import caption, caption_words, qa_pairs


def shape(kind: str, colour: str, x: int, y: int, w: int = 20, h: int = 20) -> Shape:
    mask = np.zeros((128, 128), np.uint8)
    mask[y:y + h, x:x + w] = 1
    return Shape(kind=kind, colour=colour, polygon=np.zeros((4, 2)), mask=mask, bbox=(x, y, w, h))


def test_captions_read_left_to_right_and_name_pairs():
    shapes = [shape("circle", "blue", 80, 10), shape("triangle", "red", 5, 60), shape("rectangle", "green", 40, 90)]
    assert caption(shapes) == "a red triangle, a green rectangle and a blue circle"
    assert caption(shapes[:1]) == "a blue circle"
    assert caption_words("A red triangle, a green rectangle and a blue circle.") == {
        ("red", "triangle"), ("green", "rectangle"), ("blue", "circle")}
    assert caption_words("the red. a circle") == set()


def test_questions_include_the_reasoning_queries_answered_by_name():
    shapes = [shape("circle", "blue", 80, 10, 40, 40), shape("triangle", "red", 5, 60)]
    pairs = dict(qa_pairs(shapes, np.random.default_rng(0)))
    assert pairs["How many shapes are there?"] == "two."
    assert pairs["What colour is the triangle?"] == "red."
    assert pairs["Which shape has three corners?"] == "the red triangle."
    assert pairs["Which is the largest shape?"] == "the blue circle."  # 1600 vs 400 px


def test_clip_vocabulary_makes_every_caption_word_one_token(tmp_path):
    from read.miniature.clip_stage import _tokenizer

    vocab, merges = clip_vocabulary()
    assert {"red</w>", "triangle</w>", "<|startoftext|>", "<|endoftext|>"} <= set(vocab)
    tok = _tokenizer(tmp_path / "tok")
    assert tok.tokenize("a red triangle and a blue circle") == [
        "a</w>", "red</w>", "triangle</w>", "and</w>", "a</w>", "blue</w>", "circle</w>"]


def test_quality_checks_on_hand_built_cases():
    prompts = [("red", "circle"), ("red", "triangle"), ("blue", "circle")]
    sim = np.array([[0.9, 0.1, 0.0],   # best: red circle   (truth red circle: both right)
                    [0.1, 0.2, 0.8],   # best: blue circle  (truth red triangle: both wrong)
                    [0.0, 0.7, 0.1]])  # best: red triangle (truth blue triangle: kind right)
    acc = zero_shot_accuracy(sim, ["red", "red", "blue"], ["circle", "triangle", "triangle"], prompts)
    assert acc == {"colour": pytest.approx(1 / 3), "kind": pytest.approx(2 / 3)}
    truths = [{("red", "circle")}, {("red", "circle"), ("blue", "square")}]
    got = caption_accuracy(["a red circle.", "a red circle and a green circle"], truths)
    # caption 1 exact (F1 1); caption 2 names red circle (right) and green circle (wrong) of 2 truths: P 1/2, R 1/2
    assert got == {"exact": 0.5, "f1": pytest.approx((1 + 0.5) / 2)}
    m = np.zeros((9, 11), bool)
    m[2:7, 3:8] = True  # a 5 x 5 square: its centre (x 5, y 4) is the one pixel 3 steps from the background
    assert innermost_pixel(m) == (5, 4)
    p = np.zeros((9, 11), bool)
    p[2:7, 1:4] = True  # 15 pixels, 5 of them inside m: IoU 5 / (25 + 15 - 5)
    assert click_iou(p, m) == pytest.approx(5 / 35) and click_iou(p[:0], m[:0]) == 1.0


def test_a_stage_resumes_its_steps_and_time(tmp_path):
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1)
    st = Stage(tmp_path, "s", budget_s=100, save_every_s=0)
    for _ in range(3):
        lin(torch.ones(2)).sum().backward()
        opt.step()
        st.tick({"m": lin}, opt)
    saved = {k: v.clone() for k, v in lin.state_dict().items()}
    again = torch.nn.Linear(2, 2)
    opt2 = torch.optim.AdamW(again.parameters(), lr=0.1)
    st2 = Stage(tmp_path, "s", budget_s=100)
    st2.resume({"m": again}, opt2)
    assert st2.step == 3 and st2.spent > 0
    assert all(torch.equal(saved[k], v) for k, v in again.state_dict().items())
    assert opt2.state_dict()["state"][0]["step"] == 3
    st2.finish({"q": 1.0})
    assert Stage(tmp_path, "s", budget_s=1).done and not (tmp_path / "s" / "progress.pt").exists()


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "scripts"))
    import pretrain_miniature

    out = tmp_path_factory.mktemp("miniature")
    report = pretrain_miniature.main(["--out", str(out), "--max-steps", "2", "--eval-n", "2"])
    return out, report


def test_every_stage_reports_its_quality_check(parts):
    out, report = parts
    assert set(report["clip"]["quality"]) == {"colour", "kind"}
    assert {"caption_exact", "caption_f1", "answer_exact"} <= set(report["llava"]["quality"])
    assert report["sam"]["quality"]["masks"] >= 2
    assert report["llava"]["align"]["steps"] == 2 and report["sam"]["steps"] == 2
    # a second run skips finished stages
    sys.path.insert(0, str(ROOT / "scripts"))
    import pretrain_miniature

    again = pretrain_miniature.main(["--out", str(out), "--max-steps", "2", "--eval-n", "2"])
    assert again["sam"] == report["sam"] and again["clip"] == report["clip"]


def test_the_parts_load_strictly_with_the_projects_loaders(parts):
    from transformers import CLIPModel

    from read.analysis.clip_text import ClipWordMaps
    from read.config import load_config
    from read.model.builder import build_read_model, build_sam

    out, _ = parts
    ClipWordMaps(out / "clip")  # strict: refuses missing or unexpected keys
    cfg = load_config(ROOT / "configs" / "experiments" / "miniature.yaml",
                      [f"model.vlm.pretrained={out / 'llava'}", f"model.sam.checkpoint={out / 'sam' / 'sam_tiny.pth'}"])
    sam = build_sam(cfg.model.sam)  # strict segment_anything state dict
    saved = torch.load(out / "sam" / "sam_tiny.pth", weights_only=True)
    assert all(torch.equal(v, sam.state_dict()[k]) for k, v in saved.items())
    model, tok = build_read_model(cfg)
    clip = CLIPModel.from_pretrained(out / "clip")
    tower = model.llava.model.vision_tower.state_dict()
    assert all(torch.equal(v, tower[k]) for k, v in clip.vision_model.state_dict().items())  # stage 1's CLIP
    assert (tok.seg_token_id, tok.image_token_id) == (tok.sp_vocab_size + 2, tok.sp_vocab_size)
    assert model.llava.config.text_config.hidden_size == 128


def test_the_sam_stage_can_start_from_earlier_weights(parts, tmp_path):
    from read.miniature.sam_stage import SamSizes, build, train_sam

    out, _ = parts
    init = out / "sam" / "sam_tiny.pth"
    rec = train_sam(tmp_path, budget_s=60, max_steps=1, eval_n=1, init=init)
    assert rec["steps"] == 1 and "one_click_miou_best_of_3" in rec["quality"]
    fresh = build(SamSizes()).state_dict()
    start = torch.load(init, weights_only=True)
    after = torch.load(tmp_path / "sam" / "sam_tiny.pth", weights_only=True)
    # one small step from the given weights: far closer to them than to a random initialisation
    key = "mask_decoder.output_upscaling.0.weight"
    assert (after[key] - start[key]).abs().max() < (after[key] - fresh[key]).abs().max()
