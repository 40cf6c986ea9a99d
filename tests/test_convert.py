"""Official READ/LISA/SESAME checkpoint layout <-> ReadModel (read.model.convert and its CLI script).

The fake releases are written here by hand, with the renaming table below (spec 7.2/7.4), independently of the
converter: merged layout, vocabulary truncated to the release's rows, ``added_tokens.json``, sharded
``pytorch_model-0000k-of-0000n.bin`` + index, the ``rotary_emb.inv_freq`` buffers transformers 4.31 saved.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY
from release_helpers import (
    EMBED,
    LM_HEAD,
    RELEASED_ROWS,
    VISION,
    hand_rename,
    official_release_dict,
    write_release,
    write_tokenizer_files,
)

from read.config import load_config
from read.model.builder import build_read_model
from read.model.convert import (
    convert_official_state_dict,
    load_released_checkpoint,
    official_to_read_key,
    read_hf_state_dict,
    read_to_official_key,
    read_to_official_state_dict,
)
from read.utils.weights import CheckpointKeyError


def build(tokenizer_dir: Path | None, seed: int, *overrides: str):
    opts = [f"model.vlm.tokenizer={tokenizer_dir}"] if tokenizer_dir is not None else []
    torch.manual_seed(seed)
    return build_read_model(load_config(TINY, opts + list(overrides)))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(folder, source model, its official state dict): a 3-shard merged release of a LoRA-free tiny model."""
    root = tmp_path_factory.mktemp("release")
    write_tokenizer_files(root)
    source, tok = build(root, 1, "model.lora.enabled=false")
    assert (tok.seg_token_id, tok.im_start_id, tok.im_end_id, tok.image_token_id) == (600, 601, 602, 603)
    sd = official_release_dict(source)
    write_release(root, sd, shards=3)
    return root, source, sd


def copy_release(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------------------------------- key mapping


def test_key_mapping_examples():
    lm = "llava.model.language_model."
    cases = {
        "model.embed_tokens.weight": lm + "embed_tokens.weight",
        "model.layers.31.self_attn.q_proj.weight": lm + "layers.31.self_attn.q_proj.weight",
        "model.layers.0.mlp.down_proj.weight": lm + "layers.0.mlp.down_proj.weight",
        "model.layers.3.post_attention_layernorm.weight": lm + "layers.3.post_attention_layernorm.weight",
        "model.norm.weight": lm + "norm.weight",
        "lm_head.weight": "llava.lm_head.weight",
        "model.mm_projector.0.weight": "llava.model.multi_modal_projector.linear_1.weight",
        "model.mm_projector.2.bias": "llava.model.multi_modal_projector.linear_2.bias",
        "model.visual_model.image_encoder.blocks.7.attn.rel_pos_h": (
            "sam.image_encoder.blocks.7.attn.rel_pos_h"
        ),
        "model.visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (
            "sam.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
        ),
        "model.visual_model.mask_decoder.iou_token.weight": "sam.mask_decoder.iou_token.weight",
        "model.text_hidden_fcs.0.2.weight": "text_hidden_fcs.0.2.weight",
        "model.vision_tower.vision_tower.vision_model.post_layernorm.bias": (
            "llava.model.vision_tower.post_layernorm.bias"
        ),
        # unmerged DeepSpeed / peft-0.4 layout
        "base_model.model.model.layers.2.self_attn.q_proj.weight": lm
        + "layers.2.self_attn.q_proj.base_layer.weight",
        "base_model.model.model.layers.2.self_attn.v_proj.lora_A.default.weight": lm
        + "layers.2.self_attn.v_proj.lora_A.default.weight",
        "base_model.model.model.layers.2.self_attn.k_proj.weight": lm + "layers.2.self_attn.k_proj.weight",
        "base_model.model.lm_head.weight": "llava.lm_head.weight",
    }
    for official, ours in cases.items():
        assert official_to_read_key(official) == ours, official
    for dropped in (
        "model.layers.5.self_attn.rotary_emb.inv_freq",
        "base_model.model.model.layers.0.self_attn.rotary_emb.inv_freq",
        "model.vision_tower.vision_tower.vision_model.embeddings.position_ids",
    ):
        assert official_to_read_key(dropped) is None
    for bad in (
        "model.some_new_module.weight",
        "model.layers.0.self_attn.qkv_proj.weight",
        "model.visual_model.pixel_mean",
        "model.mm_projector.1.weight",
        "model.layers.0.self_attn.q_proj.lora_A.default.weight",
    ):  # LoRA keys only under base_model.model.
        with pytest.raises(ValueError, match=bad.replace(".", r"\.")):
            official_to_read_key(bad)
    # ours -> official is the inverse; the CLIP tower has no release counterpart; LoRA names are refused
    for official, ours in list(cases.items())[:12]:
        assert read_to_official_key(ours) == official
    assert read_to_official_key("llava.model.vision_tower.post_layernorm.bias") is None
    with pytest.raises(ValueError, match="mixed checkpoint layout"):
        convert_official_state_dict(
            {
                "model.norm.weight": torch.ones(2),
                "base_model.model.model.layers.0.input_layernorm.weight": torch.ones(2),
            }
        )
    with pytest.raises(ValueError, match="merge"):
        read_to_official_key(lm + "layers.0.self_attn.q_proj.base_layer.weight")


# ------------------------------------------------------------------------------------------------- file formats


@pytest.mark.parametrize("fmt", ["safetensors", "safetensors-sharded", "bin", "bin-sharded"])
def test_read_hf_state_dict_formats(tmp_path, fmt):
    from safetensors.torch import save_file

    sd = {f"w{i}": torch.randn(3, i + 1) for i in range(5)}
    if fmt == "safetensors":
        save_file(sd, tmp_path / "model.safetensors")
    elif fmt == "bin":
        torch.save(sd, tmp_path / "pytorch_model.bin")
    else:
        ext = "safetensors" if fmt.startswith("safetensors") else "bin"
        stem = "model" if ext == "safetensors" else "pytorch_model"
        weight_map = {}
        for i, keys in enumerate((["w0", "w1"], ["w2", "w3", "w4"])):
            name = f"{stem}-{i + 1:05d}-of-00002.{ext}"
            part = {k: sd[k] for k in keys}
            save_file(part, tmp_path / name) if ext == "safetensors" else torch.save(part, tmp_path / name)
            weight_map.update(dict.fromkeys(keys, name))
        (tmp_path / f"{stem}.{ext}.index.json").write_text(json.dumps({"weight_map": weight_map}))
    got = read_hf_state_dict(tmp_path)
    assert set(got) == set(sd)
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_read_hf_state_dict_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights found"):
        read_hf_state_dict(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_hf_state_dict(tmp_path / "nope")
    (tmp_path / "pytorch_model.bin.index.json").write_text("{not json")
    with pytest.raises(ValueError, match="pytorch_model.bin.index.json"):
        read_hf_state_dict(tmp_path)
    name = "pytorch_model-00001-of-00001.bin"
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"a": name, "b": name}}))
    with pytest.raises(FileNotFoundError, match=name):
        read_hf_state_dict(tmp_path)
    torch.save({"a": torch.zeros(1)}, tmp_path / name)  # "b" is listed but absent
    with pytest.raises(ValueError, match=f"{name} does not match.*b"):
        read_hf_state_dict(tmp_path)


# ------------------------------------------------------------------------------------------ loading a release


def test_load_sharded_release_reproduces_every_tensor(release):
    folder, source, _ = release
    target, tok = build(folder, 2, "model.lora.enabled=false")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_released_checkpoint(target, tok, folder)
    src, got = source.state_dict(), target.state_dict()
    assert set(src) == set(got)
    for k, v in src.items():
        if k.startswith(VISION):  # not in releases: stays the base's
            assert torch.equal(got[k], before[k]), k
        elif k in (EMBED, LM_HEAD):
            assert torch.equal(got[k][:RELEASED_ROWS], v[:RELEASED_ROWS]), k
            assert torch.equal(got[k][RELEASED_ROWS:], before[k][RELEASED_ROWS:]), k  # <image> row untouched
            assert not torch.equal(got[k][RELEASED_ROWS:], v[RELEASED_ROWS:])
        else:
            assert torch.equal(got[k], v), k
    n_vision = sum(k.startswith(VISION) for k in src)
    assert report["loaded_keys"] == len(src) - n_vision
    assert report["kept_from_base"] == n_vision
    assert report["skipped_keys"] == [
        "model.layers.0.self_attn.rotary_emb.inv_freq",
        "model.layers.1.self_attn.rotary_emb.inv_freq",
    ]
    assert (report["released_vocab_size"], report["model_vocab_rows"]) == (603, 604)
    assert report["layout"] == "merged" and report["lora"] == "absent"
    assert report["missing_keys"] == report["unexpected_keys"] == report["unknown_keys"] == []


def test_lora_model_gets_merged_weights_in_base_layer(release):
    folder, source, _ = release
    target, tok = build(folder, 3)  # LoRA enabled (tiny default)
    report = load_released_checkpoint(target, tok, folder)
    assert report["lora"] == "base_layer"
    got, src = target.state_dict(), source.state_dict()
    q = "llava.model.language_model.layers.1.self_attn.q_proj"
    assert torch.equal(got[q + ".base_layer.weight"], src[q + ".weight"])
    assert not got[q + ".lora_B.default.weight"].any()
    ids = torch.tensor([[1, 5, 17, 600, 44, 2]])
    source.eval(), target.eval()
    with torch.no_grad():
        ref = source.llava.model.language_model(input_ids=ids).last_hidden_state
        out = target.llava.model.language_model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # adapters that were trained already would not reproduce the release: refused
    with torch.no_grad():
        got[q + ".lora_B.default.weight"].fill_(0.1)
    with pytest.raises(ValueError, match="lora_B"):
        load_released_checkpoint(target, tok, folder)


def test_unmerged_peft_layout_maps_to_our_lora_names(tmp_path, release):
    folder, _, _ = release
    source, tok = build(folder, 4)  # LoRA r=8 on q_proj/v_proj
    with torch.no_grad():
        for name, p in source.named_parameters():
            if ".lora_B." in name:
                p.normal_()
    peft_sd = {}
    for k, v in source.state_dict().items():
        plain = k.replace(".base_layer.", ".")
        if k.startswith(VISION):  # a DeepSpeed dump has the CLIP tower (transformers 4.31 names)
            name = "model.vision_tower.vision_tower.vision_model." + k[len(VISION) :]
        elif ".lora_" in k:
            name = hand_rename(k)
        else:
            name = hand_rename(plain)
        peft_sd["base_model.model." + name] = (
            v.clone()[:RELEASED_ROWS] if k in (EMBED, LM_HEAD) else v.clone()
        )
    peft_sd["base_model.model.model.vision_tower.vision_tower.vision_model.embeddings.position_ids"] = (
        torch.arange(65)
    )

    conv = convert_official_state_dict(peft_sd)
    assert conv.layout == "peft" and conv.lora_targets == ("q_proj", "v_proj")
    want = {k for k in source.state_dict()}
    assert set(conv.state_dict) == want

    dump = tmp_path / "dump"
    write_release(dump, peft_sd, shards=2)
    target, tok2 = build(dump, 5)
    report = load_released_checkpoint(target, tok2, dump)
    assert report["layout"] == "peft" and report["lora"] == "loaded" and report["kept_from_base"] == 0
    src, got = source.state_dict(), target.state_dict()
    for k, v in src.items():
        n = RELEASED_ROWS if k in (EMBED, LM_HEAD) else None
        assert torch.equal(got[k][:n], v[:n]), k

    # the same dump into a model without LoRA: unexpected keys and a hint
    plain_model, tok3 = build(dump, 6, "model.lora.enabled=false")
    with pytest.raises(CheckpointKeyError, match="unmerged LoRA dump"):
        load_released_checkpoint(plain_model, tok3, dump)


def test_round_trip_read_official_read(tmp_path, release):
    from safetensors.torch import save_file

    folder, source, hand_sd = release
    exported = read_to_official_state_dict(source)
    hand = {k: v for k, v in hand_sd.items() if "inv_freq" not in k}
    assert set(exported) == set(hand)
    assert all(torch.equal(exported[k], v) for k, v in hand.items())

    out = tmp_path / "exported"
    write_tokenizer_files(out)
    save_file({k: v.contiguous() for k, v in exported.items()}, out / "model.safetensors")
    target, tok = build(out, 7, "model.lora.enabled=false")
    load_released_checkpoint(target, tok, out)
    again = read_to_official_state_dict(target)
    assert set(again) == set(exported)
    assert all(torch.equal(again[k], v) for k, v in exported.items())
    # key level: official -> ours -> official is the identity
    for k in exported:
        assert read_to_official_key(official_to_read_key(k)) == k

    lora_model, _ = build(folder, 8)
    with pytest.raises(ValueError, match="merge_lora"):
        read_to_official_state_dict(lora_model)


# ------------------------------------------------------------------------------------------------------ errors


def test_missing_unexpected_and_unknown_keys(tmp_path, release):
    folder, _, hand_sd = release
    target, tok = build(folder, 9, "model.lora.enabled=false")

    sd = dict(hand_sd)
    del sd["model.text_hidden_fcs.0.2.bias"]
    missing = write_release(tmp_path / "missing", sd, shards=1)[0].parent
    with pytest.raises(CheckpointKeyError, match="missing") as e:
        load_released_checkpoint(target, tok, missing)
    assert str(missing) in str(e.value) and "model.text_hidden_fcs.0.2.bias" in str(e.value)
    report = load_released_checkpoint(target, tok, missing, strict=False)
    assert report["missing_keys"] == ["text_hidden_fcs.0.2.bias"]

    extra = write_release(
        tmp_path / "extra", {**hand_sd, "model.layers.7.mlp.up_proj.weight": torch.zeros(128, 64)}, shards=1
    )[0].parent
    with pytest.raises(CheckpointKeyError, match=r"unexpected keys: model\.layers\.7\.mlp\.up_proj\.weight"):
        load_released_checkpoint(target, tok, extra)

    unknown = write_release(
        tmp_path / "unknown", {**hand_sd, "model.some_new_module.weight": torch.zeros(2)}, shards=1
    )[0].parent
    with pytest.raises(ValueError, match=r"model\.some_new_module\.weight"):
        load_released_checkpoint(target, tok, unknown)
    assert load_released_checkpoint(target, tok, unknown, strict=False)["unknown_keys"] == [
        "model.some_new_module.weight"
    ]

    bad_shape = dict(hand_sd)
    bad_shape["model.mm_projector.2.weight"] = torch.zeros(64, 32)
    bad = write_release(tmp_path / "shape", bad_shape, shards=1)[0].parent
    with pytest.raises(CheckpointKeyError, match=r"shape mismatches: model\.mm_projector\.2\.weight"):
        load_released_checkpoint(target, tok, bad, strict=False)


def test_corrupt_or_missing_shard_is_named(tmp_path, release):
    folder, _, _ = release
    target, tok = build(folder, 10, "model.lora.enabled=false")
    broken = copy_release(folder, tmp_path / "broken")
    shard = broken / "pytorch_model-00002-of-00003.bin"
    shard.write_bytes(b"definitely not a torch file")
    with pytest.raises(RuntimeError, match="pytorch_model-00002-of-00003.bin"):
        load_released_checkpoint(target, tok, broken)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="pytorch_model-00002-of-00003.bin"):
        load_released_checkpoint(target, tok, broken)


def test_tokenizer_and_size_mismatches(tmp_path, release):
    folder, _, hand_sd = release
    # a model built with the llava-hf-ordered tiny tokenizer (<image>=600, [SEG]=602)
    other, other_tok = build(None, 11, "model.lora.enabled=false")
    with pytest.raises(ValueError, match="image token id 600"):
        load_released_checkpoint(other, other_tok, folder)
    # config.json of another size
    target, tok = build(folder, 12, "model.lora.enabled=false")
    big = write_release(tmp_path / "big", hand_sd, shards=1, config={"hidden_size": 5120})[0].parent
    with pytest.raises(ValueError, match="config.json.*hidden_size=5120"):
        load_released_checkpoint(target, tok, big)
    # added_tokens.json that disagrees with the tokenizer
    odd = copy_release(folder, tmp_path / "odd")
    (odd / "added_tokens.json").write_text(
        json.dumps({"[SEG]": 600, "<im_start>": 601, "<im_end>": 602, "<extra>": 603})
    )
    with pytest.raises(ValueError, match="added_tokens.json"):
        load_released_checkpoint(target, tok, odd)


# --------------------------------------------------------------------------------------------------------- CLI


def write_llava_hf_base(path: Path, vocab_size: int = 640):
    """A tiny llava-hf-layout base (padded vocabulary, CLIP weights) of the tiny sizes."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(13)
    conf = LlavaConfig(
        text_config=LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            tie_word_embeddings=False,
        ),
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=112,
            patch_size=14,
        ),
        image_token_index=600,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    base = LlavaForConditionalGeneration(conf)
    base.save_pretrained(path)
    return base


def test_cli_converts_release_on_llava_hf_base(tmp_path, release):
    from safetensors.torch import load_file

    folder, source, _ = release
    base = write_llava_hf_base(tmp_path / "llava")
    base_sd = base.state_dict()
    spec = importlib.util.spec_from_file_location(
        "convert_cli", ROOT / "scripts" / "convert_released_ckpt.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "out"
    assert (
        cli.main(
            [
                "--config",
                str(TINY),
                "--released",
                str(folder),
                "--out",
                str(out),
                f"model.vlm.pretrained={tmp_path / 'llava'}",
            ]
        )
        == 0
    )

    saved = load_file(out / "model.safetensors")
    assert not any(".lora_" in k or ".base_layer." in k for k in saved)
    src = source.state_dict()
    for k, v in saved.items():
        if k.startswith(VISION):  # CLIP from the llava-hf base
            assert torch.equal(v, base_sd["model.vision_tower." + k[len(VISION) :]]), k
        elif k in (EMBED, LM_HEAD):
            assert v.shape[0] == 640
            assert torch.equal(v[:RELEASED_ROWS], src[k][:RELEASED_ROWS])
            base_key = "model.language_model.embed_tokens.weight" if k == EMBED else "lm_head.weight"
            # row 603 = <image>, new to the release's tokenizer: freshly initialised (never read: image features
            # replace its embedding, and it is outside the output vocabulary); llava-hf's padding rows untouched
            assert not torch.equal(v[RELEASED_ROWS], base_sd[base_key][RELEASED_ROWS])
            assert torch.equal(v[RELEASED_ROWS + 1 :], base_sd[base_key][RELEASED_ROWS + 1 :])
        else:
            assert torch.equal(v, src[k]), k
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["released_vocab_size"] == 603 and report["model_vocab_rows"] == 640

    # the output folder rebuilds the same model: tokenizer ids and state-dict keys
    cfg = load_config(out)
    assert Path(cfg.model.vlm.tokenizer) == out.resolve() and cfg.model.lora.enabled is False
    assert cfg.model.sam.checkpoint is None
    rebuilt, tok = build_read_model(cfg)
    assert (tok.seg_token_id, tok.im_start_id, tok.im_end_id, tok.image_token_id) == (600, 601, 602, 603)
    assert set(rebuilt.state_dict()) == set(saved)

    with pytest.raises(FileExistsError, match="--overwrite"):
        cli.main(["--config", str(TINY), "--released", str(folder), "--out", str(out)])
