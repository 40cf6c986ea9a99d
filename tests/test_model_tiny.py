"""Tiny READ on CPU: trainable set, forward/backward, shapes, bf16, LoRA merge, strict SAM loading."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_tiny_batch

from read.model.builder import build_read_model, build_sam, merge_lora
from read.utils.weights import CheckpointKeyError


def expected_trainable_names(n_layers: int) -> set[str]:
    """Built by hand from the official rule (spec 1.6), independently of the builder."""
    from segment_anything.modeling import MaskDecoder, TwoWayTransformer

    names = set()
    for i in range(n_layers):
        for proj in ("q_proj", "v_proj"):
            for ab in ("lora_A", "lora_B"):
                names.add(f"llava.model.language_model.layers.{i}.self_attn.{proj}.{ab}.default.weight")
    names |= {"llava.model.language_model.embed_tokens.weight", "llava.lm_head.weight"}
    names |= {f"text_hidden_fcs.0.{i}.{k}" for i in (0, 2) for k in ("weight", "bias")}
    dec = MaskDecoder(
        transformer_dim=256,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=64, num_heads=8),
        num_multimask_outputs=3,
    )
    names |= {f"sam.mask_decoder.{n}" for n, _ in dec.named_parameters()}
    return names


def test_exact_trainable_parameter_set(tiny_model, tiny_cfg):
    model, _ = tiny_model
    n_layers = tiny_cfg.model.vlm.tiny.num_hidden_layers
    assert set(model.trainable_parameter_names()) == expected_trainable_names(n_layers)
    # LoRA only inside the language model (CLIP and SAM have q_proj/v_proj-like layers too)
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora and all(n.startswith("llava.model.language_model.") for n in lora)


def test_forward_backward_finite_and_gradients(tiny_model, tiny_cfg):
    model, tok = tiny_model
    model = copy.deepcopy(model)
    batch = make_tiny_batch(model, tok, tiny_cfg)
    model.train()
    out = model(batch)
    parts = out.loss.as_floats()
    assert all(torch.isfinite(torch.tensor(v)) for v in parts.values())
    assert parts["total"] == pytest.approx(parts["ce"] + parts["bce"] + parts["dice"], rel=1e-5)
    assert out.loss.num_masks == 4
    assert [tuple(m.shape) for m in out.pred_masks] == [(2, 60, 80), (2, 90, 50)]
    out.loss.total.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    def nonzero(pred):
        return [n for n, g in grads.items() if pred(n) and g is not None and g.abs().sum() > 0]

    # lora_B starts at 0, so only lora_B gets a gradient on the first step (A's gradient is B^T * ...)
    assert len(nonzero(lambda n: "lora_B" in n)) == 4
    assert nonzero(lambda n: n.startswith("sam.mask_decoder.transformer"))
    assert len(nonzero(lambda n: n.startswith("text_hidden_fcs"))) == 4
    # frozen parts receive nothing
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    # after one optimiser step lora_A gets gradients too
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    opt.zero_grad()
    model(batch).loss.total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_A" in n)


def test_ce_matches_transformers_own_loss(tiny_model, tiny_cfg):
    """Our CE (CLIP once per image, logits only where supervised) equals transformers' forward with labels when
    taken over every row, and the model's CE is the same token mean over the official vocabulary only: the
    tokenizer's ids minus <image> and llava-hf's <pad> (hand-picked here by their text)."""
    import torch.nn.functional as F

    from read.model import llava_backbone as lb

    model, tok = tiny_model
    model.eval()
    batch = make_tiny_batch(model, tok, tiny_cfg, seed=3)
    with torch.no_grad():
        hidden = model.hidden_states(batch)
        all_rows = lb.causal_lm_loss(model.llava, hidden, batch.labels)
        ours = model.compute_loss(hidden, batch.labels, [], []).ce
        out = model.llava(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            pixel_values=batch.pixel_values_clip[batch.row_to_image],
            labels=batch.labels,
        )
    assert all_rows.item() == pytest.approx(out.loss.item(), rel=1e-5)
    # by hand: drop the two non-official rows, then the plain shifted token mean
    excluded = [tok.token_to_id("<image>"), tok.token_to_id("<pad>")]
    logits = out.logits[:, :-1].float().clone()
    logits[..., excluded] = float("-inf")
    targets = batch.labels[:, 1:]
    sel = targets != -100
    expected = F.cross_entropy(logits[sel], targets[sel])
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(ours.item() - all_rows.item()) > 1e-4  # the restriction matters on this model


def test_mask_count_mismatch_is_an_error(tiny_model, tiny_cfg):
    model, tok = tiny_model
    batch = make_tiny_batch(model, tok, tiny_cfg)
    batch.gt_masks[0] = batch.gt_masks[0][:1]
    with pytest.raises(ValueError, match="image 0 has 2 \\[SEG\\] queries but 1 ground-truth masks"):
        model(batch)


def test_text_only_prompting(tiny_model, tiny_cfg):
    model, tok = tiny_model
    model = copy.deepcopy(model)
    model.point_prompter = None
    out = model(make_tiny_batch(model, tok, tiny_cfg))
    assert out.points is None and torch.isfinite(out.loss.total)


def test_bf16_forward_on_cpu(tiny_cfg):
    from conftest import TINY

    from read.config import load_config

    cfg = load_config(TINY, ["model.vlm.dtype=bf16"])
    torch.manual_seed(0)
    model, tok = build_read_model(cfg)
    assert next(model.llava.parameters()).dtype == torch.bfloat16
    assert model.sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.dtype == torch.float32
    batch = make_tiny_batch(model, tok, cfg).to("cpu", torch.bfloat16)
    out = model(batch)
    assert torch.isfinite(out.loss.total)
    assert all(m.dtype == torch.float32 for m in out.pred_masks)
    out.loss.total.backward()


def test_lora_merge_equals_unmerged(tiny_model, tiny_cfg):
    model, tok = tiny_model
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)  # non-zero adapters so the merge matters
    batch = make_tiny_batch(model, tok, tiny_cfg, seed=5)
    with torch.no_grad():
        before = model(batch)
        assert merge_lora(model) == 4
        after = model(batch)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert after.loss.total.item() == pytest.approx(before.loss.total.item(), rel=1e-5)
    for a, b in zip(before.pred_masks, after.pred_masks):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(model)


def test_sam_checkpoint_strict_loading(tiny_cfg, tmp_path):
    torch.manual_seed(1)
    sam = build_sam(tiny_cfg.model.sam)
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    cfg = copy.deepcopy(tiny_cfg.model.sam)
    cfg.checkpoint = str(path)
    torch.manual_seed(2)
    loaded = build_sam(cfg)
    for (n, a), (_, b) in zip(sam.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    sd = sam.state_dict()
    sd["mask_decoder.extra.weight"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(CheckpointKeyError, match=r"sam_tiny.pth: .*1 unexpected keys: mask_decoder.extra.weight"):
        build_sam(cfg)
    sd = sam.state_dict()
    del sd["mask_decoder.iou_token.weight"]
    torch.save(sd, path)
    with pytest.raises(CheckpointKeyError, match="1 missing keys: mask_decoder.iou_token.weight"):
        build_sam(cfg)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="sam_tiny.pth: cannot read checkpoint"):
        build_sam(cfg)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_cfg):
    from conftest import TINY

    from read.config import load_config

    grads = []
    for flag in ("false", "true"):
        cfg = load_config(TINY, [f"model.vlm.gradient_checkpointing={flag}", "model.lora.dropout=0.0"])
        torch.manual_seed(0)
        model, tok = build_read_model(cfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        model.train()
        batch = make_tiny_batch(model, tok, cfg)
        model(batch).loss.total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert model.llava.model.language_model.gradient_checkpointing
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4)
