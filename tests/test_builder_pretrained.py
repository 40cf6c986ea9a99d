"""The real loading path (from_pretrained on a local llava-hf-layout directory, SAM .pth), on tiny weights."""

from __future__ import annotations

import json

import torch
from conftest import TINY

from read.config import load_config
from read.model.builder import build_read_model, build_sam
from read.model.tokenizer import ReadTokenizer


def write_llava_hf_dir(path, vocab_size: int = 640):
    """A tiny checkpoint laid out like llava-hf/llava-1.5-7b-hf: tokenizer.model with <image>/<pad> added
    tokens in tokenizer_config.json, and a LlavaForConditionalGeneration saved with save_pretrained."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    base = ReadTokenizer.build_tiny(600)
    path.mkdir(parents=True)
    (path / "tokenizer.model").write_bytes(base.model_proto)
    entry = {"lstrip": False, "rstrip": False, "normalized": False, "single_word": False, "special": True}
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "added_tokens_decoder": {
                    "600": {"content": "<image>", **entry},
                    "601": {"content": "<pad>", **entry},
                },
                "legacy": False,
                "pad_token": "<pad>",
            }
        )
    )
    torch.manual_seed(0)
    conf = LlavaConfig(
        text_config=LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=112, patch_size=14),
        image_token_index=600,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    model = LlavaForConditionalGeneration(conf)
    model.save_pretrained(path)
    return model


def test_build_from_local_llava_hf_dir_and_sam_checkpoint(tmp_path):
    ref = write_llava_hf_dir(tmp_path / "llava")
    tiny_sam_cfg = load_config(TINY).model.sam
    torch.manual_seed(3)
    sam_ref = build_sam(tiny_sam_cfg)
    torch.save(sam_ref.state_dict(), tmp_path / "sam.pth")

    cfg = load_config(
        TINY,
        [f"model.vlm.pretrained={tmp_path / 'llava'}", f"model.sam.checkpoint={tmp_path / 'sam.pth'}"],
    )
    model, tok = build_read_model(cfg)
    # llava-hf ids kept, READ tokens appended after them (spec 7.4)
    assert (tok.image_token_id, tok.seg_token_id, tok.im_start_id, tok.im_end_id) == (600, 602, 603, 604)
    assert model.llava.config.image_token_id == 600
    # the padded vocabulary is large enough: no resize
    assert model.llava.get_input_embeddings().weight.shape[0] == 640
    ref_sd = ref.state_dict()
    ours = {k.replace(".base_layer", ""): v for k, v in model.llava.state_dict().items() if "lora_" not in k}
    assert set(ours) == set(ref_sd)
    new_rows = [602, 603, 604]  # [SEG], <im_start>, <im_end>: new to the llava-hf checkpoint
    vocab_keys = ("model.language_model.embed_tokens.weight", "lm_head.weight")
    for k, v in ref_sd.items():
        if k in vocab_keys:
            keep = [i for i in range(v.shape[0]) if i not in new_rows]
            assert torch.equal(ours[k][keep], v[keep]), k
            fresh = ours[k][new_rows]
            # official resize_token_embeddings (transformers 4.31): fresh Normal(0, 0.02) rows, not llava-hf's
            # padding values
            assert not torch.equal(fresh, v[new_rows])
            assert 0.012 < float(fresh.std()) < 0.03 and abs(float(fresh.mean())) < 0.01, (k, fresh.std())
        else:
            assert torch.equal(ours[k], v), k
    embed, head = (ours[k][new_rows] for k in vocab_keys)
    assert not torch.equal(embed, head)  # independent draws for the two matrices
    for k, v in sam_ref.state_dict().items():
        assert torch.equal(model.sam.state_dict()[k], v), k


def test_embeddings_grow_when_tokenizer_is_larger(tmp_path):
    write_llava_hf_dir(tmp_path / "llava", vocab_size=602)  # no room for [SEG], <im_start>, <im_end>
    cfg = load_config(TINY, [f"model.vlm.pretrained={tmp_path / 'llava'}"])
    model, tok = build_read_model(cfg)
    assert len(tok) == 605
    assert model.llava.get_input_embeddings().weight.shape[0] == 605
    assert model.llava.lm_head.weight.shape[0] == 605
    for w in (model.llava.get_input_embeddings().weight, model.llava.lm_head.weight):
        fresh = w[602:605].detach()
        assert 0.012 < float(fresh.std()) < 0.03 and abs(float(fresh.mean())) < 0.01
