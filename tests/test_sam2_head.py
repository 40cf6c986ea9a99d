"""SAM 2 as READ's mask decoder (issue 18): the head against transformers' own ``Sam2Model.forward``, the SAM 2
preprocessing by hand, and READ with LLaVA + SAM 2 end to end on tiny random models (forward + backward, the exact
trainable set, masks at the original size, strict save / load)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import make_tiny_batch

from read.config import load_config
from read.data.transforms import IMAGENET_MEAN, IMAGENET_STD, sam2_preprocess
from read.model.builder import build_read_model
from read.model.sam2_head import Sam2MaskHead, build_sam2_model

CFG = "configs/model/tiny_llava_sam2.yaml"


@pytest.fixture(scope="module")
def sam2_cfg():
    return load_config(CFG)


@pytest.fixture(scope="module")
def sam2_model(sam2_cfg):
    torch.manual_seed(0)
    return build_read_model(sam2_cfg)


def test_head_equals_transformers_sam2_forward(sam2_cfg):
    """Points only ([SEG] off), scaled-up weights so that the logits are far from 0: our composition (encoder once, conv_s0/s1 after it, our positional grid, our point
    padding) gives exactly ``Sam2Model.forward``'s single-mask logits."""
    torch.manual_seed(1)
    ref = build_sam2_model(sam2_cfg.model.sam).eval()
    with torch.no_grad():
        for p in ref.mask_decoder.parameters():
            p.mul_(4.0)
    head = Sam2MaskHead(copy.deepcopy(ref), seg_prompt=False).eval()
    ref.mask_decoder.dynamic_multimask_via_stability = False  # READ keeps mask token 0 (the head's default)
    pixels = torch.randn(2, 3, 128, 128)
    coords = torch.rand(3, 4, 2) * 127
    labels = torch.tensor([[1, 0, 1, -1], [1, 1, 0, 0], [0, 1, -1, -1]])
    query_image = torch.tensor([0, 0, 1])
    with torch.no_grad():
        ours = head(head.encode_images(pixels), torch.zeros(3, 32), query_image, torch.tensor([[128, 128]] * 2),
                    torch.tensor([[32, 32]] * 2), coords=coords, labels=labels)  # 32 = low-res side: no resize
        for b, rows in ((0, [0, 1]), (1, [2])):
            out = ref(pixel_values=pixels[b : b + 1], input_points=coords[rows][None], input_labels=labels[rows][None],
                      multimask_output=False)
            torch.testing.assert_close(ours[b], out.pred_masks[0, :, 0], rtol=0, atol=1e-5)


def test_sam2_preprocess_by_hand():
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = (255, 0, 0)
    image[:, 20:] = (0, 0, 255)
    x, hw = sam2_preprocess(image, 16)
    assert hw == (16, 16) and x.shape == (3, 16, 16)  # squashed to a square: aspect not kept
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    left = (torch.tensor([1.0, 0.0, 0.0]) - mean) / std
    right = (torch.tensor([0.0, 0.0, 1.0]) - mean) / std
    torch.testing.assert_close(x[:, :, :7], left[:, None, None].expand(3, 16, 7))
    torch.testing.assert_close(x[:, :, 9:], right[:, None, None].expand(3, 16, 7))


def test_exact_trainable_parameter_set(sam2_model, sam2_cfg):
    """LoRA + embed_tokens + lm_head + [SEG] projection as with SAM, and SAM 2's whole mask decoder (including the
    conv_s0 / conv_s1 projections of the high-resolution features): the names of a fresh transformers decoder."""
    from transformers.models.sam2.modeling_sam2 import Sam2MaskDecoder

    model, _ = sam2_model
    ref = build_sam2_model(sam2_cfg.model.sam)
    names = {f"sam.mask_decoder.{n}" for n, _ in Sam2MaskDecoder(ref.config.mask_decoder_config).named_parameters()}
    for i in range(sam2_cfg.model.vlm.tiny.num_hidden_layers):
        for proj in ("q_proj", "v_proj"):
            for ab in ("lora_A", "lora_B"):
                names.add(f"llava.model.language_model.layers.{i}.self_attn.{proj}.{ab}.default.weight")
    names |= {"llava.model.language_model.embed_tokens.weight", "llava.lm_head.weight"}
    names |= {f"text_hidden_fcs.0.{i}.{k}" for i in (0, 2) for k in ("weight", "bias")}
    assert set(model.trainable_parameter_names()) == names
    assert "sam.mask_decoder.conv_s0.weight" in names


def test_forward_backward_masks_at_original_size(sam2_model, sam2_cfg):
    model, tok = sam2_model
    model = copy.deepcopy(model).train()
    batch = make_tiny_batch(model, tok, sam2_cfg)
    assert tuple(batch.pixel_values_sam.shape[-2:]) == (128, 128)
    assert batch.sam_input_hw.tolist() == [[128, 128], [128, 128]]
    out = model(batch)
    assert [tuple(m.shape) for m in out.pred_masks] == [(2, 60, 80), (2, 90, 50)]
    parts = out.loss.as_floats()
    assert all(np.isfinite(v) for v in parts.values())
    # SasP points land in SAM 2's square frame: x scaled by 128 / W, y by 128 / H
    hw = batch.image_hw[out.queries.image].float()
    scale = torch.stack([128 / hw[:, 1], 128 / hw[:, 0]], dim=-1)[:, None, :]
    torch.testing.assert_close(out.points.coords, out.points.coords_image * scale)
    out.loss.total.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    got = {n for n, g in grads.items() if g is not None and g.abs().sum() > 0}
    assert "sam.mask_decoder.conv_s0.weight" in got and "sam.mask_decoder.conv_s1.weight" in got
    assert {n for n in got if n.startswith("text_hidden_fcs")} == {n for n in grads if n.startswith("text_hidden_fcs")}
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_seg_embedding_changes_the_mask(sam2_model, sam2_cfg):
    model, tok = sam2_model
    batch = make_tiny_batch(model, tok, sam2_cfg)
    with torch.no_grad():
        a = model(batch).pred_masks[0]
        model2 = copy.deepcopy(model)
        model2.text_hidden_fcs.apply(lambda m: torch.nn.init.normal_(m.weight) if hasattr(m, "weight") else None)
        b = model2(batch).pred_masks[0]
    assert (a - b).abs().max() > 0.1 * a.abs().max()  # random SAM 2 logits are ~1e-5: compare relatively


def test_strict_save_load_round_trip(sam2_model, tmp_path):
    from read.model.fingerprint import base_record
    from read.model.run_weights import load_trainable, save_trainable
    from read.utils.weights import CheckpointKeyError

    model, _ = sam2_model
    src = copy.deepcopy(model)
    with torch.no_grad():
        for p in src.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    base = base_record(src)
    save_trainable(tmp_path, src, base)
    dst = copy.deepcopy(model)
    load_trainable(dst, tmp_path)
    for (n, p), (_, q) in zip(src.named_parameters(), dst.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    # a LLaVA + SAM model cannot take these weights: the error names the SAM 2 keys
    torch.manual_seed(0)
    sam1, _ = build_read_model(load_config("configs/model/tiny.yaml"))
    with pytest.raises(CheckpointKeyError, match="conv_s0|unexpected"):
        load_trainable(sam1, tmp_path)


def test_analysis_on_sam2_decoder_map_and_p_prompt(sam2_cfg):
    """The analysis on a SAM 2 head: the [SEG]-to-image-token map equals the dot products read from a hook on the
    head's own decoding, one pixel at a time; P_prompt equals ``Sam2Model.forward`` with three outputs, best IoU."""
    from read.analysis.maps import sam_decoder_similarity
    from read.analysis.pprompt import points_prompt_mask

    torch.manual_seed(2)
    ref = build_sam2_model(sam2_cfg.model.sam).eval()
    with torch.no_grad():
        for p in ref.mask_decoder.parameters():
            p.mul_(4.0)
    ref.mask_decoder.dynamic_multimask_via_stability = False
    head = Sam2MaskHead(copy.deepcopy(ref)).eval()
    pixels = torch.randn(1, 3, 128, 128)
    emb = head.encode_images(pixels)
    seg = torch.randn(1, 32)
    coords = torch.rand(1, 3, 2) * 127
    labels = torch.tensor([[1, 0, -1]])
    seen = {}
    handle = head.mask_decoder.transformer.register_forward_hook(lambda m, i, o: seen.update(hs=o[0], keys=o[1]))
    try:
        with torch.no_grad():
            head(emb, seg, torch.tensor([0]), torch.tensor([[128, 128]]), torch.tensor([[32, 32]]), coords=coords,
                 labels=labels)
    finally:
        handle.remove()
    with torch.no_grad():
        sparse, dense = head.prompt_tokens(seg, coords, labels)
        fast = sam_decoder_similarity(head, emb, sparse, dense)
    e = emb[-1].shape[-1]
    hs, keys = seen["hs"][0, 0], seen["keys"][0, 0]  # [T', D], [e*e, D]
    seg_pos = hs.shape[0] - 1  # [object score | iou | masks | points | pad | [SEG]]
    assert seg_pos == 2 + head.mask_decoder.num_mask_tokens + 3 + 1
    slow = torch.tensor([[sum(float(keys[r * e + c, d]) * float(hs[seg_pos, d]) for d in range(keys.shape[-1]))
                          for c in range(e)] for r in range(e)])
    torch.testing.assert_close(fast[0], slow, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        logits, score = points_prompt_mask(head, emb, coords[0], labels[0], (128, 128), (32, 32))
        out = ref(pixel_values=pixels, input_points=coords[None], input_labels=labels[None], multimask_output=True)
    best = int(out.iou_scores[0, 0].argmax())
    torch.testing.assert_close(logits, out.pred_masks[0, 0, best], rtol=0, atol=1e-5)
    assert score == pytest.approx(float(out.iou_scores[0, 0, best]))
