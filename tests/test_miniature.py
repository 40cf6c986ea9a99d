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
from read.miniature.grounding import (
    cell_fractions,
    gather_mentions,
    grounding_auroc,
    mentions,
    pointing_loss,
    word_ids,
)
from read.miniature.llava_stage import caption_accuracy
from read.miniature.sam_stage import click_iou, innermost_pixel
from read.miniature.scenes import (
    POINTING_ANSWERS,
    caption,
    caption_words,
    qa_items,
    qa_pairs,
    read_style_item,
)


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
    items = {q: (a, k) for q, a, k in qa_items(shapes, np.random.default_rng(0))}
    assert items["Which shape has three corners?"] == ("the red triangle.", 1)
    assert items["What colour is the circle?"] == ("blue.", 0) and items["How many shapes are there?"][1] is None
    where = [(q, a, k) for q, (a, k) in items.items() if q.startswith("Where is")]
    assert len(where) == 1 and where[0][1] in POINTING_ANSWERS
    assert where[0][0] == f"Where is the {shapes[where[0][2]].colour} {shapes[where[0][2]].kind}?"
    assert len(qa_items(shapes, np.random.default_rng(0), read_style=False)) == len(items) - 2


def test_read_style_requests_use_reads_templates_with_the_name_in_place_of_seg():
    from read.data import templates as T

    shapes = [shape("circle", "blue", 80, 10, 40, 40), shape("triangle", "red", 5, 60)]
    rng = np.random.default_rng(3)
    for _ in range(20):
        q, a, k = read_style_item(shapes, 1, None, rng)
        assert k == 1 and "the red triangle" in q and not q.startswith("<image>")
        assert any(a == t.replace("[SEG]", "the red triangle") for t in T.LONG_ANSWER_TEMPLATE + [T.VAL_ANSWER])
        q, a, k = read_style_item(shapes, 0, "Which is the largest shape?", rng)
        assert q.startswith("Which is the largest shape? ") and a.endswith("the blue circle.") and k == 0


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


class FakeTok:
    """One id per word: colours 10.., kinds 20.., anything else 1."""

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        from read.data.synthetic import COLOURS, KINDS

        table = {w: 10 + i for i, w in enumerate(COLOURS)} | {w: 20 + i for i, w in enumerate(KINDS)}
        return [table.get(w, 1) for w in text.split()]


def test_mentions_name_shapes_only_when_unambiguous():
    tok = FakeTok()
    colours, kinds = word_ids(tok)
    shapes = [shape("circle", "red", 0, 0), shape("circle", "blue", 40, 0), shape("triangle", "green", 80, 0)]
    ids = tok.encode("a red circle , a circle , the triangle , a blue triangle , orange")
    # red -> 0, circle after red -> 0, a lone "circle" is ambiguous (two circles), lone "triangle" -> 2,
    # blue -> 1, "triangle" after blue: blue is a circle, and the scene has one triangle -> 2; orange: absent
    assert mentions(ids, shapes, colours, kinds) == [(1, 0), (2, 0), (8, 2), (11, 1), (12, 2)]


def test_cell_fractions_and_pointing_loss_by_hand():
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0] = mask[0, 1] = mask[1, 0] = 1  # 3 of 4 pixels of the top-left 2x2 cell
    assert cell_fractions(mask, 2).tolist() == [0.75, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="square"):
        cell_fractions(np.zeros((4, 6), np.uint8), 2)
    # D = 4, so logits are dot / 2: word . tokens = [4, 0, 0, -4] -> logits [2, 0, 0, -2]
    img = torch.tensor([[[2.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [-2.0, 0, 0, 0]]])
    word = torch.tensor([[2.0, 0, 0, 0]])
    target = torch.tensor([[3.0, 1.0, 0.0, 0.0]])  # normalised to [0.75, 0.25, 0, 0]
    z = np.log(np.exp(2) + 2 + np.exp(-2))
    want = -(0.75 * (2 - z) + 0.25 * (0 - z))
    assert pointing_loss(img, word, target).item() == pytest.approx(want, rel=1e-6)


def test_gather_mentions_points_words_and_answer_tokens_at_their_shape():
    tok = FakeTok()
    shapes = [shape("circle", "red", 0, 0, 64, 64), shape("triangle", "blue", 64, 64, 64, 64)]
    # 4 image tokens (id 99) on a 2 x 2 grid, then "x blue triangle x" and an answer "x x" about shape 0
    ids = torch.tensor([[99, 99, 99, 99, 1, 11, 21, 1, 1, 1]])
    from read.data.synthetic import COLOURS, KINDS

    assert tok.encode("blue triangle") == [10 + list(COLOURS).index("blue"), 20 + list(KINDS).index("triangle")]
    ids[0, 5:7] = torch.tensor(tok.encode("blue triangle"))
    labels = torch.full_like(ids, -100)
    labels[0, 8:] = ids[0, 8:]
    states = torch.arange(10 * 3, dtype=torch.float32).reshape(1, 10, 3)
    img, word, target, other = gather_mentions(states, ids, [shapes], 99, word_ids(tok), 2, labels=labels,
                                               referents=[0])
    assert word.tolist() == states[0, [5, 6, 8, 9]].tolist()  # the two words, then the two answer tokens
    assert target.tolist() == [[0, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0], [1, 0, 0, 0]]
    assert other.tolist() == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]
    assert torch.equal(img[0], states[0, :4])
    with pytest.raises(ValueError, match="labels"):
        gather_mentions(states, ids, [shapes], 99, word_ids(tok), 2, referents=[0])
    with pytest.raises(ValueError, match="image tokens"):
        gather_mentions(states, ids, [shapes], 99, word_ids(tok), 3)


def test_grounding_auroc_against_background_and_against_other_shapes():
    # similarity = the first feature; cells: target [0, 1], other shape [2], background [3, 4]
    feats = torch.tensor([[5.0], [3.0], [4.0], [1.0], [0.0]])
    img, word = feats[None], torch.tensor([[1.0]])
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
    other = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])
    # against all cells: pairs (5>4, 5>1, 5>0, 3<4, 3>1, 3>0) -> 5/6; against the other shape only: (5>4, 3<4) -> 1/2
    assert grounding_auroc(img, word, target) == pytest.approx(5 / 6)
    assert grounding_auroc(img, word, target, other) == pytest.approx(0.5)
    assert np.isnan(grounding_auroc(img, word, torch.zeros(1, 5)))


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
    assert {"caption_exact", "caption_f1", "answer_exact", "grounding_auroc",
            "grounding_auroc_shapes"} <= set(report["llava"]["quality"])
    assert report["llava"]["pointing_weight"] == 1.0
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


def test_sam_prompts_by_hand():
    from read.miniature.sam_stage import shape_prompts

    a, b = shape("rectangle", "red", 10, 20, 30, 10).mask, shape("circle", "blue", 70, 70, 20, 20).mask
    rng = np.random.default_rng(0)
    coords, labels, boxes = shape_prompts(rng, [a, b], "click", 2.0)
    assert boxes is None and labels.tolist() == [[1], [1]] and coords.shape == (2, 1, 2)
    for (x, y), m in zip((coords[:, 0] / 2 - 0.5).tolist(), (a, b), strict=True):
        assert m[int(y), int(x)]  # each click inside its own shape (pixel centres, scaled into SAM's frame)
    for _ in range(20):
        coords, labels, _ = shape_prompts(rng, [a, b], "clicks", 1.0)
        for row, lab, m in zip(coords.tolist(), labels.tolist(), (a, b), strict=True):
            n = [v for v in lab if v != -1]
            assert 1 <= n.count(1) <= 10 and n.count(0) <= 3 and lab == n + [-1] * (len(lab) - len(n))
            assert lab[: n.count(1)] == [1] * n.count(1)  # positives first, then negatives, then padding
            for (x, y), v in zip(row, lab, strict=True):
                if v != -1:
                    assert m[int(y - 0.5), int(x - 0.5)] == v  # positives inside, negatives outside
    _, _, boxes = shape_prompts(rng, [a, b], "box", 1.0)
    # bounding boxes (x0, y0, x1, y1) = (10, 20, 39, 29) and (70, 70, 89, 89), each corner jittered by <= 2 px
    assert (boxes - torch.tensor([[10.0, 20, 39, 29], [70, 70, 89, 89]])).abs().max() <= 2


class StubSam:
    """Just enough of a SAM for ``evaluate_sam``: ``oracle`` returns the scene's shape under a prompt's first point
    (a box: under its centre), three times over for a lone click; otherwise the whole image, whatever the prompt."""

    def __init__(self, masks: list[np.ndarray], oracle: bool) -> None:
        self.masks, self.oracle = masks, oracle
        self.image_encoder = lambda x: torch.zeros(x.shape[0], 1, 1, 1)
        self.prompt_encoder = self
        self.mask_decoder = self.decode

    def eval(self):
        return self

    train = eval

    def __call__(self, points, boxes, masks):  # the prompt encoder: hands the first point on as the "embedding"
        first = points[0][:, :1] if points is not None else ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None]
        return first, None

    def get_dense_pe(self):
        return None

    def decode(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
               multimask_output):
        m = 3 if multimask_output else 1
        out = []
        for x, y in sparse_prompt_embeddings[:, 0].tolist():
            hit = [k for k in self.masks if k[int(y), int(x)]] if self.oracle else [np.ones((128, 128), bool)]
            out.append(torch.from_numpy(np.where(hit[0], 10.0, -10.0)).float().expand(m, -1, -1))
        return torch.stack(out), torch.ones(len(out), m)

    def postprocess(self, low, input_hw, original_hw):
        return low


def test_the_sam_quality_check_tells_a_prompt_following_sam_from_one_that_ignores_prompts(monkeypatch):
    from read.miniature import sam_stage

    shapes = [shape("rectangle", "red", 10, 20, 30, 10), shape("circle", "blue", 70, 70, 20, 20),
              shape("triangle", "green", 10, 80, 10, 40)]
    image = np.zeros((128, 128, 3), np.uint8)
    monkeypatch.setattr(sam_stage, "scene", lambda rng, size: (image, shapes))
    masks = [s.mask > 0 for s in shapes]
    good = sam_stage.evaluate_sam(StubSam(masks, oracle=True), 128, n=2)
    assert good == {"one_click_miou": 1.0, "one_click_miou_best_of_3": 1.0, "five_click_miou": 1.0,
                    "box_miou": 1.0, "wrong_shape_iou": 0.0, "masks": 6}
    blind = sam_stage.evaluate_sam(StubSam(masks, oracle=False), 128, n=2)
    # the whole image for every prompt: each shape's IoU is its area over 128^2 (300, 400, 400 px), and a click's
    # mask matches every other shape exactly as well: wrong_shape_iou equals the one-click mIoU
    want = (300 + 400 + 400) / 3 / 128**2
    for key in ("one_click_miou", "five_click_miou", "box_miou", "wrong_shape_iou"):
        assert blind[key] == pytest.approx(want)


def test_sam_rate_warms_up_then_follows_a_cosine_over_the_budget():
    from read.miniature.sam_stage import _rate

    assert _rate(0, 0.0, 100) == pytest.approx(0.01) and _rate(49, 0.0, 100) == pytest.approx(0.5)
    assert _rate(500, 0.0, 100) == pytest.approx(1.0)
    assert _rate(500, 0.5, 100) == pytest.approx(0.05 + 0.95 * 0.5)  # cos(pi / 2) = 0
    assert _rate(500, 1.0, 100) == pytest.approx(0.05) and _rate(500, 2.0, 100) == pytest.approx(0.05)


def test_read_style_requests_take_the_evaluation_wording_at_the_asked_share():
    from read.data import templates as T
    from read.miniature.scenes import read_style_request

    shapes = [shape("circle", "blue", 80, 10, 40, 40), shape("triangle", "red", 5, 60)]
    rng = np.random.default_rng(1)
    always = [read_style_request(shapes, rng, 1.0) for _ in range(30)]
    assert all(a == T.VAL_ANSWER.replace("[SEG]", f"the {shapes[k].colour} {shapes[k].kind}") for _, a, k in always)
    assert all(q.endswith("Please output segmentation mask.") for q, _, _ in always)
    never = [read_style_request(shapes, rng, 0.0) for _ in range(30)]
    assert not any(q.endswith("Please output segmentation mask.") for q, _, _ in never)
    # both kinds of request occur: a reasoning query (the scene has some) and a named shape
    assert any(q.startswith("Which ") for q, _, _ in always) and any(q.startswith("What is the ") for q, _, _ in always)
