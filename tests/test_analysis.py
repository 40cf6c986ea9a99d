"""READ's analysis tools: S_IoU's grid search, P_prompt's points and SAM call, the SAM-decoder map, the summary, the
figures, scripts/analyze.py end to end with resumption, and report.html in a browser."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, TINY

from read.analysis import extreme_points, points_prompt_mask, sam_decoder_similarity, sam_map_to_image
from read.analysis.siou import similarity_iou, thresholds

# --------------------------------------------------------------------------------------------------------- S_IoU


def test_grid_search_by_hand_with_ties_and_ignore_pixels():
    sim = torch.tensor([[0.0, 0.205, 0.5, 0.5, 0.9, 1.0]], dtype=torch.float64)
    gt = torch.tensor([[0, 0, 1, 1, 1, 255]])
    # t = 0: the 5 valid pixels, I 3 U 5; t in (0, 0.205]: I 3 U 4; t in (0.205, 0.5]: I 3 U 3 (IoU 1, 30 tied
    # thresholds 0.21 ... 0.50: the smallest wins); above 0.5 the IoU falls. The ignore pixel counts nowhere.
    r = similarity_iou(sim, gt)
    assert r == {"threshold": pytest.approx(0.21), "intersection": 3, "union": 3, "iou": 1.0}
    # min-max normalisation first: an affine change of the map changes nothing
    assert similarity_iou(3 * sim - 7, gt) == r
    # a constant map is 0.5 everywhere: every t <= 0.5 selects all valid pixels
    assert similarity_iou(torch.ones(1, 6), gt) == {"threshold": 0.0, "intersection": 3, "union": 5, "iou": 0.6}


def test_grid_search_equals_a_slow_loop():
    rng = np.random.default_rng(0)
    for trial in range(5):
        sim = rng.normal(size=(23, 31)).astype(np.float32)
        gt = (rng.random((23, 31)) < 0.3).astype(np.int64)
        gt[rng.random((23, 31)) < 0.05] = 255
        x = (sim.astype(np.float64) - sim.min()) / (sim.max() - sim.min())
        best = (-1.0, None)
        for k in range(101):
            t = k * 0.01
            pred = (x >= t) & (gt != 255)
            tgt = gt == 1
            i, u = int((pred & tgt).sum()), int((pred | tgt).sum())
            iou = i / u if u else 1.0
            if iou > best[0]:
                best = (iou, (t, i, u))
        r = similarity_iou(torch.from_numpy(sim), torch.from_numpy(gt))
        assert (r["threshold"], r["intersection"], r["union"]) == pytest.approx(best[1]), trial
    assert len(thresholds(0.01)) == 101 and float(thresholds(0.25)[-1]) == 1.0
    with pytest.raises(ValueError, match="same"):
        similarity_iou(torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.long))


# ------------------------------------------------------------------------------------------------------ P_prompt


def test_extreme_points_by_hand():
    # a 4x4 token map on a 4x4 image: no aspect padding, one pixel per cell (coordinate = cell index)
    sim = torch.arange(16, dtype=torch.float32)
    sim[5] = 15.0  # ties with cell 15: raster order, so cell 5 comes first
    coords, labels = extreme_points(sim, (4, 4), k=2, down_sample=1)
    assert labels.tolist() == [1, 1, 0, 0]
    assert coords.tolist() == [[1, 1], [3, 3], [0, 0], [1, 0]]  # cells 5, 15 (highest), 0, 1 (lowest)
    # the official rule: k = min(#cells >= 0.8 after min-max, #cells // 2): values >= 12 -> cells 5, 12..15
    _, labels = extreme_points(sim, (4, 4), down_sample=1)
    assert int(labels.sum()) == 5 and len(labels) == 10
    # an 8 x 4 image: the grid is padded to 8 x 4 cells... with -1 rows that are never chosen
    coords, labels = extreme_points(sim, (8, 4), k=8, down_sample=1)
    assert len(labels) == 16 and (coords[:, 1] < 8).all()


class Recorder:
    """Wraps a module's forward and keeps the keyword arguments of every call."""

    def __init__(self, module):
        self.module, self.calls, self.forward = module, [], module.forward
        module.forward = self

    def __call__(self, *args, **kw):
        self.calls.append(kw)
        return self.forward(*args, **kw)


def test_p_prompt_gives_sam_exactly_the_points_asked_for(tiny_model):
    sam = tiny_model[0].sam
    torch.manual_seed(0)
    emb = sam.encode_images(torch.randn(1, 3, sam.img_size, sam.img_size))
    coords = torch.tensor([[10.0, 20.0], [30.0, 5.0], [100.0, 90.0]])
    labels = torch.tensor([1, 1, 0])
    enc, dec = Recorder(sam.prompt_encoder), Recorder(sam.mask_decoder)
    try:
        logits, score = points_prompt_mask(sam, emb, coords, labels, (128, 96), (64, 48))
    finally:
        sam.prompt_encoder.forward, sam.mask_decoder.forward = enc.forward, dec.forward
    (call,) = enc.calls
    pts, lab = call["points"]
    assert torch.equal(pts, coords[None]) and torch.equal(lab, labels[None])
    assert call["boxes"] is None and call["masks"] is None
    assert dec.calls[0]["multimask_output"] is True
    assert logits.shape == (64, 48) and isinstance(score, float)
    empty, s0 = points_prompt_mask(sam, emb, coords[:0], labels[:0], (128, 96), (64, 48))
    assert not bool((empty > 0).any()) and s0 == 0.0


# --------------------------------------------------------------------------------------------------- SAM map


def test_sam_decoder_map_equals_a_slow_direct_computation(tiny_model):
    """The [SEG] token's output state of SAM's two-way transformer against every updated image token, read from a
    hook on a normal mask-head call and multiplied out one pixel at a time."""
    model = tiny_model[0]
    sam = model.sam
    torch.manual_seed(1)
    emb = sam.encode_images(torch.randn(1, 3, sam.img_size, sam.img_size))
    seg = torch.randn(2, sam.prompt_encoder.embed_dim)
    coords = torch.rand(2, 3, 2) * 100
    labels = torch.tensor([[1, 0, -1], [1, 1, 0]])
    seen = {}

    def hook(_module, _inputs, outputs):
        seen["hs"], seen["keys"] = outputs

    handle = sam.mask_decoder.transformer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            sam(emb, seg, torch.tensor([0, 0]), torch.tensor([[128, 96]]), torch.tensor([[64, 48]]), coords=coords,
                labels=labels)
    finally:
        handle.remove()
    sparse, dense = sam.prompt_tokens(seg, coords, labels)
    fast = sam_decoder_similarity(sam, emb, sparse, dense)
    e = emb.shape[-1]
    assert fast.shape == (2, e, e)
    seg_pos = 1 + sam.mask_decoder.num_mask_tokens + sparse.shape[1] - 1  # [iou | masks | points | pad | [SEG]]
    hs, keys = seen["hs"], seen["keys"]
    assert hs.shape[1] == seg_pos + 1
    for n in range(2):
        slow = torch.tensor([[sum(float(keys[n, r * e + c, d]) * float(hs[n, seg_pos, d]) for d in range(keys.shape[-1]))
                              for c in range(e)] for r in range(e)])
        torch.testing.assert_close(fast[n], slow, rtol=1e-4, atol=1e-4)
    img_map = sam_map_to_image(fast[0], sam.img_size, (128, 96), (64, 48))
    assert img_map.shape == (64, 48) and float(img_map.min()) >= 0 and float(img_map.max()) <= 1


# ------------------------------------------------------------------------------------------------- summaries


def test_summary_has_the_three_method_columns():
    from read.analysis.report import summarise, table_markdown
    from read.analysis.runner import AnalysisSettings

    q = {"p_prompt": {"intersection": 1, "union": 4, "k": 2, "score": 0.5},
         "s_iou": {"threshold": 0.3, "intersection": 2, "union": 4, "iou": 0.5},
         "seg_prompt": {"intersection": 3, "union": 4}}
    st = AnalysisSettings(model="m", weights_digest="x", dataset="reason_seg", split="val", data_root="d")
    summary = summarise([{"index": 0, "queries": [q]}, {"index": 1, "queries": [q]}], st)
    assert set(summary["methods"]) == {"p_prompt", "s_iou", "seg_prompt"}
    assert summary["methods"]["seg_prompt"]["ciou"] == pytest.approx(6 / 8)  # sum I / sum U
    assert summary["methods"]["p_prompt"]["giou"] == pytest.approx(0.25, abs=1e-4)
    table = table_markdown([summary])
    assert "P_prompt gIoU | P_prompt cIoU | S_IoU gIoU | S_IoU cIoU | [SEG]_prompt gIoU | [SEG]_prompt cIoU" in table
    assert "| 25.0 | 25.0 | 50.0 | 50.0 | 75.0 | 75.0 |" in table


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from read.data.synth import ensure_synthetic_root

    root = tmp_path_factory.mktemp("analysis_data")
    ensure_synthetic_root(root, seed=0)
    return root


def analyze(*args):
    sys.path.insert(0, str(ROOT / "scripts"))
    import analyze as script

    return script.main([*args, "--no-progress", "--device", "cpu"])


@pytest.fixture(scope="module")
def report(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis") / "out"
    summary = analyze("--model", str(TINY), "--dataset", "reason_seg", "--split", "val", "--limit", "4",
                      "--figures", "2", "--out", str(out), f"data.root={data}")
    return out, summary


def test_analyze_runs_end_to_end_and_resumes(report, data):
    out, summary = report
    assert summary["num_samples"] == 4 and set(summary["methods"]) >= {"p_prompt", "s_iou", "seg_prompt", "s_iou_sam"}
    for name in ("records.jsonl", "summary.json", "table.md", "report.html", "settings.json"):
        assert (out / name).is_file(), name
    figs = sorted((out / "figures").glob("*.png"))
    assert [p.name for p in figs] == ["00000.png", "00001.png"]
    for p in figs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and cv2.imread(str(p)) is not None
    first = (out / "records.jsonl").read_text()
    # a crash in the middle of the last line: the rerun redoes only that sample and ends with the same records
    lines = first.splitlines(keepends=True)
    (out / "records.jsonl").write_text("".join(lines[:-1]) + lines[-1][:25])
    again = analyze("--model", str(TINY), "--dataset", "reason_seg", "--split", "val", "--limit", "4", "--figures", "2",
                    "--out", str(out), f"data.root={data}")
    def strip(text):  # SAM's predicted-IoU score of a sample redone alone differs from its batch by ~1e-8
        recs = [json.loads(line) for line in text.splitlines()]
        scores = [q["p_prompt"].pop("score") for r in recs for q in r["queries"]]
        return recs, scores

    (recs_a, scores_a), (recs_b, scores_b) = strip(first), strip((out / "records.jsonl").read_text())
    assert recs_a == recs_b  # every count, threshold and k identical, in the same order
    np.testing.assert_allclose(scores_a, scores_b, rtol=1e-5)
    assert again["methods"] == summary["methods"]
    # another setting in the same folder is refused, naming it; --overwrite starts afresh
    from read.analysis.runner import SettingsMismatchError

    with pytest.raises(SettingsMismatchError, match=r"k: None -> 3"):
        analyze("--model", str(TINY), "--dataset", "reason_seg", "--split", "val", "--limit", "4", "--k", "3",
                "--out", str(out), f"data.root={data}")
    # rows per model: several finished analyses in one table
    table = analyze("--combine", str(out), str(out), "--out", str(out.parent / "t.md"))
    assert table.count("| reason_seg/val (4) |") == 2


def test_settings_and_records_are_plain_json(report):
    out, _ = report
    st = json.loads((out / "settings.json").read_text())
    assert st["dataset"] == "reason_seg" and st["k"] is None and st["sam_original"] is None
    for line in (out / "records.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert {"p_prompt", "s_iou", "seg_prompt"} <= set(rec["queries"][0])


def test_report_opens_in_a_browser(report, tmp_path):
    from test_web_demo import CHROMIUM_ARGS, chromium

    exe = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        exe = None
    if exe is None:
        reason = "report.html browser test skipped: no Playwright or no Chromium (apt-get install chromium)"
        print(reason)
        pytest.skip(reason)
    out, _ = report
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched from elsewhere
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto((out / "report.html").as_uri())
            assert page.locator("#table1").is_visible()
            assert "[SEG]_prompt" in page.locator("#table1").inner_text()
            fig = page.locator("img.fig").first
            assert fig.is_visible()
            assert page.evaluate("document.querySelector('img.fig').naturalWidth") > 100
            # sorting by the [SEG]_prompt IoU column orders the rows by that value
            page.click("#samples th:nth-child(5)")
            vals = [float(v) for v in page.eval_on_selector_all(
                "#samples tbody tr td:nth-child(5)", "cells => cells.map(c => c.dataset.v)")]
            assert vals == sorted(vals) and len(vals) == 4
        finally:
            browser.close()


# ----------------------------------------------------------------------------------------------- CLIP word map


def write_tiny_clip(folder):
    """A tiny CLIPModel with a character-level BPE tokenizer (vocab.json + merges.txt written here)."""
    import string

    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(string.ascii_lowercase)}
    vocab.update({c + "</w>": 26 + i for i, c in enumerate(string.ascii_lowercase)})
    vocab.update({"<|startoftext|>": 52, "<|endoftext|>": 53})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=54, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=16, bos_token_id=52, eos_token_id=53, pad_token_id=53),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=56, patch_size=14),
        projection_dim=16)
    CLIPModel(cfg).save_pretrained(folder)
    return folder


def test_clip_word_map_is_a_cosine_per_patch_and_runs_in_the_analysis(report, data, tmp_path):
    from read.analysis.clip_text import ClipWordMaps

    clip = ClipWordMaps(write_tiny_clip(tmp_path / "clip"))
    img = np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8)
    red, blue = clip(img, "red"), clip(img, "blue")
    assert red.shape == (16,) and float(red.abs().max()) <= 1.0 + 1e-5  # 4 x 4 patches of a 56 px view; cosines
    assert not torch.allclose(red, blue)
    # slow: each patch's projected last hidden state, normalised by hand, dot the normalised text feature
    from read.data.transforms import clip_preprocess

    px, _, _ = clip_preprocess(img, 56)
    with torch.no_grad():
        hs = clip.model.vision_model(pixel_values=px[None], output_hidden_states=True).hidden_states[-1][0]
        text = clip.text_feature("red")
        for n in range(16):
            v = clip.model.visual_projection(hs[n + 1])
            assert float(v @ text / v.norm()) == pytest.approx(float(red[n]), abs=1e-5)
    # in the analysis: an extra S_IoU and an extra figure panel; without --clip the summary says why there is none
    out, summary = report
    assert summary["clip_text_map"].startswith("not computed: the model's CLIP is LLaVA's vision tower")
    out2 = tmp_path / "with_clip"
    s2 = analyze("--model", str(TINY), "--dataset", "reason_seg", "--split", "val", "--limit", "2", "--figures", "1",
                 "--out", str(out2), "--clip", str(tmp_path / "clip"), "--word", "red", f"data.root={data}")
    assert "s_iou_clip" in s2["methods"] and s2["clip_text_map"].startswith("CLIP text tower of")
    wide = cv2.imread(str(out2 / "figures" / "00000.png")).shape[1]
    assert wide > cv2.imread(str(out / "figures" / "00000.png")).shape[1]  # one more panel
