"""Every pairing of the two parts (issue 18) on tiny random models: LLaVA + SAM 2, Qwen2.5-VL + SAM, Qwen2.5-VL +
SAM 2 (LLaVA + SAM has its own, untouched tests): forward + backward with finite losses and masks at the original
size, then a short training run, both evaluation protocols end to end (gIoU / cIoU recomputed from the records),
the pipeline's demo picture and the paper's analysis."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from test_evaluate import recompute  # gIoU / cIoU from the records, written plainly

from read.config import load_config
from read.model.builder import build_read_model

PAIRINGS = {
    "llava+sam2": ("tiny_llava_sam2.yaml", "quickstart_llava_sam2.yaml"),
    "qwen+sam": ("tiny_qwen25vl_sam.yaml", "quickstart_qwen25vl_sam.yaml"),
    "qwen+sam2": ("tiny_qwen25vl_sam2.yaml", "quickstart_qwen25vl_sam2.yaml"),
}


def tiny_batch(model, tok, cfg):
    """Two generated images with two [SEG] questions each, through the model's own collator."""
    from read.data.base import Sample
    from read.data.synthetic import draw_rectangles
    from read.train.trainer import TrainCollator

    rng = np.random.default_rng(0)
    samples = []
    for h, w in [(60, 80), (90, 50)]:
        image, masks, names = draw_rectangles(rng, h, w, num_shapes=2)
        q = "<image>\nWhat is {} in this image? Please output segmentation mask."
        convs = [[(q.format(n), "Sure, the segmentation result is [SEG].")] for n in names]
        samples.append(Sample(image=image, conversations=convs, masks=np.stack(masks)))
    return TrainCollator.for_model(tok, model, cfg.model.vlm)(samples)


@pytest.mark.parametrize("pairing", sorted(PAIRINGS))
def test_forward_backward_every_pairing(pairing):
    cfg = load_config(ROOT / "configs" / "model" / PAIRINGS[pairing][0])
    torch.manual_seed(0)
    model, tok = build_read_model(cfg)
    assert (model.parts.kind, model.sam.frame) == {
        "llava+sam2": ("llava", "square"), "qwen+sam": ("qwen2_5_vl", "longest_side"),
        "qwen+sam2": ("qwen2_5_vl", "square")}[pairing]
    model = copy.deepcopy(model).train()
    batch = tiny_batch(model, tok, cfg)
    out = model(batch)
    assert [tuple(m.shape) for m in out.pred_masks] == [(2, 60, 80), (2, 90, 50)]
    assert all(np.isfinite(v) for v in out.loss.as_floats().values())
    out.loss.total.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in trainable)
    assert sum(int(p.grad is not None and p.grad.abs().sum() > 0) for p in trainable) > len(trainable) // 2
    # the SasP points sit inside the image
    assert bool((out.points.coords_image[..., 0] < 80 + 1e-3).all())


@pytest.mark.parametrize("pairing", sorted(PAIRINGS))
def test_trainable_set_and_strict_round_trip_every_pairing(pairing, tmp_path):
    """The official rule, written out by hand from parameter names: LoRA A/B on q_proj and v_proj of the language
    model's layers only, embed_tokens, lm_head, the whole mask decoder, the [SEG] projection; then the trainable
    weights saved and loaded back strictly."""
    from read.model.fingerprint import base_record
    from read.model.run_weights import load_trainable, save_trainable

    cfg = load_config(ROOT / "configs" / "model" / PAIRINGS[pairing][0])
    torch.manual_seed(0)
    model, _ = build_read_model(cfg)
    lm = {"llava": "llava.model.language_model.", "qwen2_5_vl": "qwen.model.language_model."}[model.parts.kind]
    expect = set()
    for n, _ in model.named_parameters():
        lora = any(f".layers.{i}.self_attn.{p}.lora_" in n for i in range(2) for p in ("q_proj", "v_proj"))
        if (n.startswith(lm) and lora) or n.startswith(("sam.mask_decoder.", "text_hidden_fcs.")):
            expect.add(n)
        if n.endswith(("embed_tokens.weight", "lm_head.weight")) and not n.startswith("sam."):
            expect.add(n)
    assert set(model.trainable_parameter_names()) == expect
    assert sum("lora_" in n for n in expect) == 8  # 2 layers x (q, v) x (A, B)
    src = copy.deepcopy(model)
    with torch.no_grad():
        for p in src.parameters():
            if p.requires_grad:
                p.add_(0.01)
    save_trainable(tmp_path, src, base_record(src))
    load_trainable(model, tmp_path)
    for (n, p), (_, q) in zip(src.named_parameters(), model.named_parameters(), strict=True):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("pairing", sorted(PAIRINGS))
def test_train_evaluate_demo_end_to_end(pairing, tmp_path_factory):
    import evaluate as evaluate_script
    import train as train_script
    from read.infer.pipeline import ReadPipeline

    base = tmp_path_factory.mktemp(pairing.replace("+", "_"))
    config = ROOT / "configs" / "experiments" / PAIRINGS[pairing][1]
    train_script.main(["--config", str(config), f"output_dir={base / 'run'}", f"data.root={base / 'data'}",
                       "data.workers=0", "train.progress=false", "train.epochs=1", "train.steps_per_epoch=3",
                       "train.save_every=3", "eval.after_train=false", "--no_auto_resume"])
    for protocol in ("teacher_forced", "generate"):
        out = base / protocol
        res = evaluate_script.main([f"eval.output_dir={out}", "--run", str(base / "run"), "train.progress=false",
                                    f"eval.protocol={protocol}", "eval.limit=4", "eval.max_new_tokens=8",
                                    "eval.overlays=1"])
        giou, ciou, n = recompute(out)
        assert n == 4 and res["num_samples"] == 4
        assert res["metrics"]["overall"]["giou"] == pytest.approx(giou, abs=1e-12)
        assert res["metrics"]["overall"]["ciou"] == pytest.approx(ciou, abs=1e-12)
        assert len(list(out.glob("overlay_*.png"))) == 1
    pipe = ReadPipeline.from_pretrained(base / "run", device="cpu")
    image = np.zeros((70, 90, 3), np.uint8)
    image[10:40, 20:60] = (220, 30, 30)
    pred = pipe.predict(image, "What is red?", max_new_tokens=6)
    assert pred.masks.shape[1:] == (70, 90)
    path = pred.save(base / "answer.png")
    assert Path(path).stat().st_size > 1000
    # the paper's analysis on this pairing: every Table-1 column, a figure
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    import analyze as analyze_script

    summary = analyze_script.main(["--model", str(base / "run"), "--dataset", "reason_seg", "--split", "val",
                                   "--limit", "2", "--figures", "1", "--out", str(base / "analysis"), "--no-progress",
                                   "--device", "cpu"])
    assert summary["num_samples"] == 2 and set(summary["methods"]) >= {"p_prompt", "s_iou", "seg_prompt", "s_iou_sam"}
    assert len(list((base / "analysis" / "figures").glob("*.png"))) == 1


def test_full_size_qwen_sam2_config_builds_with_the_released_sizes():
    """The random full-size config (for GPU benchmarks) on the meta device: Qwen2.5-VL-3B-Instruct's 3.75 B
    parameters (its model card's count, tied embeddings), SAM 2.1's image encoder, every trainable part present."""
    cfg = load_config(ROOT / "configs" / "model" / "read_qwen25vl_3b_sam2_random.yaml")
    with torch.device("meta"):
        model, _ = build_read_model(cfg)
    qwen = sum(p.numel() for n, p in model.named_parameters() if n.startswith("qwen.") and "lora_" not in n)
    assert abs(qwen - 3.75e9) < 0.01e9
    assert model.sam.img_size == 1024 and model.sam.prompt_dim == 256 and model.sam.frame == "square"
    names = model.trainable_parameter_names()
    assert "qwen.model.language_model.embed_tokens.weight" in names and "sam.mask_decoder.conv_s0.weight" in names


def test_pretrained_folders_load_strictly(tmp_path):
    """The loading code of the real weights, on tiny models saved in the released layouts: a Qwen2.5-VL folder
    (config, safetensors, tokenizer files with [SEG]) and a SAM 2 folder in transformers layout load bit-exactly;
    a SAM 2 checkpoint with a missing tensor is refused naming the folder."""
    from safetensors.torch import load_file, save_file

    from read.model.builder import build_tokenizer
    from read.model.qwen_backbone import build_qwen
    from read.model.sam2_head import build_sam2_model
    from read.utils.weights import CheckpointKeyError

    cfg = load_config(ROOT / "configs" / "model" / "tiny_qwen25vl_sam2.yaml")
    torch.manual_seed(0)
    tok = build_tokenizer(cfg.model)
    qwen = build_qwen(cfg.model.vlm, tok)
    qwen.save_pretrained(tmp_path / "qwen")
    tok.save_pretrained(tmp_path / "qwen")
    sam2 = build_sam2_model(cfg.model.sam)
    sam2.save_pretrained(tmp_path / "sam2")
    loaded = load_config(ROOT / "configs" / "model" / "tiny_qwen25vl_sam2.yaml",
                         [f"model.vlm.pretrained={tmp_path / 'qwen'}", f"model.sam.checkpoint={tmp_path / 'sam2'}"])
    model, tok2 = build_read_model(loaded)
    assert (tok2.seg_token_id, tok2.image_token_id, len(tok2)) == (tok.seg_token_id, tok.image_token_id, len(tok))
    theirs = dict(qwen.named_parameters())
    for n, p in model.qwen.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, theirs[n.replace(".base_layer", "")]), n
    theirs = dict(sam2.named_parameters())
    for n, p in model.sam.named_parameters():
        assert torch.equal(p, theirs[n]), n
    sd = load_file(str(tmp_path / "sam2" / "model.safetensors"))
    sd.pop(sorted(k for k in sd if "mask_decoder" in k)[0])
    save_file(sd, str(tmp_path / "sam2" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointKeyError, match="sam2.*missing"):
        build_read_model(loaded)


def test_every_protocol_on_qwen_sam2(tmp_path):
    """FP-RefCOCO (see / segment) and GSVA's gRefCOCO ([REJ], several [SEG]; teacher forced and generated) on a
    Qwen2.5-VL + SAM 2 run trained GSVA-style for a few steps."""
    import evaluate as evaluate_script
    import train as train_script

    config = ROOT / "configs" / "experiments" / "quickstart_qwen25vl_sam2.yaml"
    run, data = tmp_path / "run", tmp_path / "data"
    train_script.main(["--config", str(config), f"output_dir={run}", f"data.root={data}", "data.workers=0",
                       "model.vlm.rej_token='[REJ]'", "data.style=gsva", "data.datasets=[sem_seg,refer_seg,vqa,reason_seg]",
                       "data.sample_rates=[9,6,3,1]", "data.refer_seg_data=[refclef,refcoco,refcoco+,refcocog,grefcoco]",
                       "train.progress=false", "train.epochs=1", "train.steps_per_epoch=3", "train.save_every=3",
                       "eval.after_train=false", "--no_auto_resume"])

    def evaluate(name: str, *extra: str) -> dict:
        return evaluate_script.main([f"eval.output_dir={tmp_path / name}", "--run", str(run), "train.progress=false",
                                     "eval.max_new_tokens=8", *extra])

    fp = evaluate("fp", "eval.protocol=fp_refcoco", "eval.dataset=fprefcoco")
    queries = [json.loads(line)["queries"] for line in (tmp_path / "fp" / "records.rank0.jsonl").read_text().splitlines()]
    queries = [q for qs in queries for q in qs]
    expected_see = sum(q["gt_exists"] == q["pred_exists"] for q in queries) / len(queries)
    assert fp["metrics"]["see_segment"]["see"] == pytest.approx(expected_see)
    for protocol in ("teacher_forced", "generate"):
        res = evaluate(f"gres_{protocol}", f"eval.protocol={protocol}", "eval.dataset=grefcoco", "eval.split=val")
        assert res["dataset"] == "grefcoco" and {"giou", "ciou", "n_acc", "t_acc"} <= set(res["metrics"]["overall"])
