"""A release's config.json is checked field by field against the model built for it; any SAM checkpoint loads
strictly once its head sizes are configured (and the error says which sizes)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY
from release_helpers import FULL_RELEASE_CONFIG, official_release_dict, write_release, write_tokenizer_files

from read.config import load_config
from read.model.builder import build_read_model, build_sam
from read.model.convert import load_released_checkpoint
from read.utils.weights import CheckpointKeyError


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rel")
    write_tokenizer_files(folder)
    cfg = load_config(TINY, [f"model.vlm.tokenizer={folder}", "model.lora.enabled=false"])
    torch.manual_seed(2)
    source, _ = build_read_model(cfg)
    return folder, cfg, official_release_dict(source)


def test_the_matching_full_config_loads(release, tmp_path):
    folder, cfg, sd = release
    write_release(tmp_path / "ok", sd, shards=1, config=FULL_RELEASE_CONFIG)
    write_tokenizer_files(tmp_path / "ok")
    model, tok = build_read_model(cfg)
    report = load_released_checkpoint(model, tok, tmp_path / "ok")
    assert report["released_vocab_size"] == 603


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rms_norm_eps", 1e-5, r"rms_norm_eps=1e-05 \(model built: 1e-06\)"),
        ("hidden_size", 128, r"hidden_size=128 \(model built: 64\)"),
        ("intermediate_size", 256, "intermediate_size=256"),
        ("num_hidden_layers", 3, "num_hidden_layers=3"),
        ("num_attention_heads", 8, "num_attention_heads=8"),
        ("num_key_value_heads", 2, "num_key_value_heads=2"),
        ("max_position_embeddings", 4096, "max_position_embeddings=4096"),
        ("rope_theta", 500000.0, r"rope_theta=500000.0 \(model built: 10000.0\)"),
        ("rope_scaling", {"type": "linear", "factor": 2.0}, "rope_scaling="),
        ("hidden_act", "gelu", "hidden_act='gelu'"),
        ("tie_word_embeddings", True, "tie_word_embeddings=True"),
        ("vocab_size", 32003, r"vocab_size=32003 \(model built: 603\)"),
        ("mm_hidden_size", 1024, r"mm_hidden_size=1024 \(model built: 32\)"),
        ("mm_vision_select_layer", -1, r"mm_vision_select_layer=-1 \(model built: -2\)"),
        ("mm_vision_select_feature", "cls_patch", "mm_vision_select_feature='cls_patch'"),
        ("mm_projector_type", "linear", "mm_projector_type='linear'"),
        ("mm_use_im_start_end", False, r"mm_use_im_start_end=False \(model built: True\)"),
        ("mm_use_im_patch_token", True, "mm_use_im_patch_token=True"),
        ("out_dim", 512, r"out_dim=512 \(model built: 256\)"),
    ],
)
def test_one_changed_config_field_is_refused_naming_it(release, tmp_path, field, value, message):
    folder, cfg, sd = release
    target = tmp_path / "rel"
    write_tokenizer_files(target)
    write_release(target, sd, shards=1, config={**FULL_RELEASE_CONFIG, field: value})
    model, tok = build_read_model(cfg)
    with pytest.raises(ValueError, match=r"config\.json: the release does not match.*" + message):
        load_released_checkpoint(model, tok, target)


def test_any_sam_checkpoint_loads_once_its_head_sizes_are_set(tmp_path):
    base = load_config(TINY)
    other = ["model.sam.iou_head_hidden_dim=128", "model.sam.global_attn_indexes=[0,1]",
             "model.sam.num_multimask_outputs=2"]
    torch.manual_seed(0)
    sam = build_sam(load_config(TINY, other).model.sam)
    assert sam.mask_decoder.iou_prediction_head.layers[0].out_features == 128
    assert [b.window_size for b in sam.image_encoder.blocks] == [0, 0]  # both blocks global
    torch.save(sam.state_dict(), tmp_path / "sam.pth")
    with pytest.raises(CheckpointKeyError) as info:  # the default sizes cannot hold it
        build_sam(load_config(TINY, [f"model.sam.checkpoint={tmp_path / 'sam.pth'}"]).model.sam)
    msg = str(info.value)
    assert "model.sam.iou_head_hidden_dim=128" in msg and "model.sam.global_attn_indexes=[0,1]" in msg
    assert "model.sam.num_multimask_outputs=2" in msg
    loaded = build_sam(load_config(TINY, [*other, f"model.sam.checkpoint={tmp_path / 'sam.pth'}"]).model.sam)
    for k, v in sam.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert base.model.sam.iou_head_hidden_dim == 256 and base.model.sam.global_attn_indexes is None


def test_real_variant_global_blocks_default_and_override():
    from read.model.sam_head import SAM_VARIANTS, build_sam_head

    with torch.device("meta"):
        vit_b = build_sam_head("vit_b")
        custom = build_sam_head("vit_b", global_attn_indexes=[0, 11], iou_head_hidden_dim=64)
    assert [i for i, b in enumerate(vit_b.image_encoder.blocks) if b.window_size == 0] == SAM_VARIANTS["vit_b"][3]
    assert [i for i, b in enumerate(custom.image_encoder.blocks) if b.window_size == 0] == [0, 11]
    assert custom.mask_decoder.iou_prediction_head.layers[0].out_features == 64
    with pytest.raises(ValueError, match="outside the encoder's 12 blocks"):
        build_sam_head("vit_b", global_attn_indexes=[12])
