"""GSVA in the framework: several [SEG] per answer, [REJ] for absent targets, gRefCOCO evaluation (teacher forced
as GSVA's eval_gres, and generation), and SasP on top — on the tiny model and generated gRefCOCO-format data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY

from read.config import load_config

QUICK = ROOT / "configs" / "quickstart.yaml"
GSVA = ["model.vlm.rej_token='[REJ]'", "data.style=gsva", "data.datasets=[sem_seg,refer_seg,vqa,reason_seg]",
        "data.sample_rates=[9,6,3,1]", "data.refer_seg_data=[refclef,refcoco,refcoco+,refcocog,grefcoco]",
        "eval.dataset=grefcoco", "eval.split=val", "model.sasp.enabled=false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from read.data.synth import ensure_synthetic_root

    root = tmp_path_factory.mktemp("gsva_data")
    ensure_synthetic_root(root, seed=0)
    return root


@pytest.fixture(scope="module")
def tiny_rej():
    from read.model.builder import build_read_model

    cfg = load_config(TINY, ["model.vlm.rej_token='[REJ]'"])
    torch.manual_seed(0)
    model, tok = build_read_model(cfg)
    return model.eval(), tok, cfg


def test_rej_token_follows_seg_as_in_gsva(tiny_rej):
    _, tok, _ = tiny_rej
    # llava-hf order (<image>, <pad>) first, then GSVA's add_task_tokens order: [SEG], [REJ], <im_start>, <im_end>
    assert (tok.seg_token_id, tok.rej_token_id, tok.im_start_id, tok.im_end_id) == (602, 603, 604, 605)
    assert tok.encode("a:[REJ], b:[SEG].", add_bos=False).count(603) == 1


def slot_rows(model, tok, cfg, answer: str, n_masks: int):
    """A batch with one row whose answer has the given slots, and ``n_masks`` ground-truth masks."""
    from read.data.base import Sample
    from read.data.collate import collate
    from read.data.synthetic import draw_rectangles
    from read.model.llava_backbone import clip_image_size, num_image_tokens

    image, masks, _ = draw_rectangles(np.random.default_rng(0), 64, 80, num_shapes=3)
    sample = Sample(image=image, conversations=[[("<image>\nWhat are a, b, c in this image?", answer)]],
                    masks=np.stack(masks[:n_masks]) if n_masks else np.zeros((0, 64, 80), np.uint8))
    return collate([sample], tok, num_image_tokens=num_image_tokens(model.llava),
                   clip_size=clip_image_size(model.llava), sam_size=model.sam.img_size,
                   use_im_start_end=cfg.model.vlm.use_im_start_end)


def test_several_seg_in_one_row_give_one_mask_each_and_rej_adds_no_mask_loss(tiny_rej):
    model, tok, cfg = tiny_rej
    two = slot_rows(model, tok, cfg, "Sure, a:[SEG], b:[REJ], c:[SEG].", 2)
    with torch.no_grad():
        out = model(two)
    assert out.queries.rows.tolist() == [0, 0] and out.pred_masks[0].shape[0] == 2  # one mask per [SEG], in order
    assert out.loss.num_masks == 2  # the [REJ] slot has no mask and no mask loss
    # the same answer with the [REJ] slot absent gives exactly the same mask losses
    without = slot_rows(model, tok, cfg, "Sure, a:[SEG], c:[SEG].", 2)
    with torch.no_grad():
        ref = model(without)
    torch.testing.assert_close(out.pred_masks[0][0], ref.pred_masks[0][0], atol=1e-5, rtol=0)
    # and the [SEG] of "c" is the second query in both (the order of slots is kept)
    assert out.queries.cols[1] > out.queries.cols[0]


def rig(model, schedule: list[int]):
    """Make greedy decoding emit ``schedule`` token by token (a hook on lm_head adds a large bias)."""
    calls = {"n": 0}

    def hook(_module, _inputs, logits):
        if logits.dim() != 2:  # only the per-step decoding calls [R, V]
            return logits
        k = min(calls["n"], len(schedule) - 1)
        calls["n"] += 1
        bias = torch.zeros_like(logits)
        bias[:, schedule[k]] = 1e4
        return logits + bias

    return model.llava.lm_head.register_forward_hook(hook)


def test_generation_two_seg_one_rej_gives_two_masks_and_one_empty(tiny_rej, monkeypatch):
    from read.eval.gres_predict import predict_gres_generate

    model, tok, cfg = tiny_rej
    model = copy.deepcopy(model)
    batch = slot_rows(model, tok, cfg, None, 0)
    sam_calls = []
    real = model.sam.forward
    monkeypatch.setattr(model.sam, "forward", lambda *a, **k: sam_calls.append(a[1].shape[0]) or real(*a, **k))
    colon = tok.encode(":", add_bos=False)[-1]
    handle = rig(model, [colon, tok.seg_token_id, colon, tok.rej_token_id, colon, tok.seg_token_id, tok.eos_id])
    try:
        (res,) = predict_gres_generate(model, batch, tok, [3], max_new_tokens=10)
    finally:
        handle.remove()
    assert res["slots"] == ["seg", "rej", "seg"] and res["rejected"] == [False, True, False]
    assert res["masks"].shape == (3, 64, 80) and not res["masks"][1].any()
    assert sam_calls == [2]  # SAM decoded the two [SEG] slots only, in one call
    # an expression without a slot in the answer: "missing"
    handle = rig(model, [tok.seg_token_id, tok.eos_id])
    try:
        (res,) = predict_gres_generate(model, batch, tok, [3], max_new_tokens=10)
    finally:
        handle.remove()
    assert res["slots"] == ["seg", "missing", "missing"]


def test_teacher_forced_decisions_follow_eval_gres(tiny_rej):
    """The decision at a slot is the argmax at the position before it: a ground-truth [SEG] slot is rejected when
    that argmax is not [SEG]; a ground-truth [REJ] slot when it is [REJ]. Every slot gets a mask (re-run as
    [SEG]); rej_rule=empty blanks the rejected ones."""
    from read.eval.gres_predict import predict_gres_teacher_forced

    model, tok, cfg = tiny_rej
    model = copy.deepcopy(model)
    batch = slot_rows(model, tok, cfg, "Sure,a:[SEG], b:[REJ], c:[SEG].", 2)

    def forced(token: int, rule: str):
        handle = model.llava.lm_head.register_forward_hook(
            lambda m, i, out: out + torch.nn.functional.one_hot(torch.tensor(token), out.shape[-1]) * 1e4)
        try:
            return predict_gres_teacher_forced(model, batch, tok, rej_rule=rule)[0]
        finally:
            handle.remove()

    always_seg = forced(tok.seg_token_id, "reeval")
    assert always_seg["rejected"] == [False, False, False] and always_seg["masks"].shape[0] == 3
    always_rej = forced(tok.rej_token_id, "reeval")
    assert always_rej["rejected"] == [True, True, True]
    other = forced(tok.eos_id, "reeval")  # neither: [SEG] slots count as rejected, the [REJ] slot as not
    assert other["rejected"] == [True, False, True]
    assert np.array_equal(always_rej["masks"], always_seg["masks"])  # reeval: masks do not depend on decisions
    empty = forced(tok.rej_token_id, "empty")
    assert not empty["masks"].any()


def gsva_args(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return ["--config", str(QUICK), f"output_dir={tmp_path / 'run'}", f"data.root={data}", "data.workers=0",
            "train.progress=false", "train.epochs=1", "train.steps_per_epoch=3", "train.save_every=3",
            "train.warmup_steps=1", "eval.after_train=false", *GSVA, *extra]


@pytest.mark.parametrize("sasp", [False, True], ids=["gsva", "gsva_sasp"])
def test_gsva_trains_and_evaluates_with_both_protocols(tmp_path, data, sasp):
    import evaluate as evaluate_script
    import train as train_script

    extra = ["model.sasp.enabled=true"] if sasp else []
    summary = train_script.main(gsva_args(tmp_path, data, *extra))
    assert summary["global_step"] == 3 and all(np.isfinite(summary[k]) for k in ("total", "ce", "bce", "dice"))
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["total"]) for r in rows)
    results = {}
    for protocol in ("teacher_forced", "generate"):
        out = tmp_path / protocol
        res = evaluate_script.main(["--run", str(tmp_path / "run"), f"eval.protocol={protocol}",
                                    f"eval.output_dir={out}", "eval.max_new_tokens=12", "train.progress=false"])
        m = res["metrics"]["overall"]
        assert {"giou", "ciou", "n_acc", "t_acc"} <= set(m) and res["dataset"] == "grefcoco"
        recs = [json.loads(line) for line in (out / "records.rank0.jsonl").read_text().splitlines()]
        queries = [q for r in recs for q in r["queries"]]
        assert any(not q["is_target"] for q in queries) and any(q["is_target"] for q in queries)
        # recomputed from the records by GSVA's rules, written out plainly
        giou_terms, inter, union = [], 0, 0
        for q in queries:
            if not q["is_target"]:
                giou_terms.append(1.0 if q["rejected"] else 0.0)
                union += 0 if q["rejected"] else q["union"]
            else:
                giou_terms.append(q["intersection"] / (q["union"] + 1e-8))
                inter, union = inter + q["intersection"], union + q["union"]
        assert m["giou"] == pytest.approx(sum(giou_terms) / len(giou_terms), abs=1e-12)
        assert m["ciou"] == pytest.approx(inter / (union + 1e-10), abs=1e-12)
        results[protocol] = res
    assert results["generate"]["decoding"]["kv_cache"] is True


def test_gsva_layout_release_loads_from_a_single_bin_file(tmp_path):
    """A GSVA-style release ([SEG]=V, [REJ]=V+1, <im_start>, <im_end>; official merged key names) given as one
    state-dict file, like GSVA's zero_to_fp32 dumps, loads through the converter with the right token rows."""
    from release_helpers import hand_rename

    from read.model.builder import build_read_model
    from read.model.rebuild import rebuild
    from read.model.tokenizer import ReadTokenizer

    folder = tmp_path / "gsva_release"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(ReadTokenizer.build_tiny(600).model_proto)
    (folder / "added_tokens.json").write_text(json.dumps({"[SEG]": 600, "[REJ]": 601, "<im_start>": 602,
                                                          "<im_end>": 603}))
    over = [f"model.vlm.tokenizer={folder}", "model.vlm.rej_token='[REJ]'", "model.lora.enabled=false"]
    torch.manual_seed(3)
    source, tok = build_read_model(load_config(TINY, over))
    assert (tok.seg_token_id, tok.rej_token_id, tok.im_start_id, tok.im_end_id, tok.image_token_id) == (
        600, 601, 602, 603, 604)
    sd = {}
    for k, v in source.state_dict().items():
        name = hand_rename(k)
        if name is not None:
            sd[name] = v[:604].clone() if name in ("model.embed_tokens.weight", "lm_head.weight") else v.clone()
    torch.save(sd, folder / "gsva-tiny.bin")
    built = rebuild(load_config(TINY, over), folder / "gsva-tiny.bin")
    assert built.kind == "released"
    for k, v in source.state_dict().items():
        if not k.startswith("llava.model.vision_tower."):
            ours = built.model.state_dict()[k]
            rows = slice(0, 604) if k.endswith(("embed_tokens.weight", "lm_head.weight")) else slice(None)
            assert torch.equal(ours[rows], v[rows]), k
