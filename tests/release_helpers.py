"""Writing tiny *official-layout* releases by hand (spec 7.2-7.4), independently of ``read.model.convert``:
the merged ``READForCausalLM`` key names, the vocabulary truncated to the release's rows, ``added_tokens.json``,
sharded ``pytorch_model-0000k-of-0000n.bin`` + index, the ``rotary_emb.inv_freq`` buffers transformers 4.31
saved, and a ``config.json`` with the architecture fields of the official LlavaConfig."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from read.model.tokenizer import ReadTokenizer

# Our prefix -> official merged-layout prefix. The CLIP tower (llava.model.vision_tower.*) is not in releases.
HAND_TABLE = (
    ("llava.model.language_model.embed_tokens.", "model.embed_tokens."),
    ("llava.model.language_model.layers.", "model.layers."),
    ("llava.model.language_model.norm.", "model.norm."),
    ("llava.lm_head.", "lm_head."),
    ("llava.model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("llava.model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("sam.", "model.visual_model."),
    ("text_hidden_fcs.", "model.text_hidden_fcs."),
)
VISION = "llava.model.vision_tower."
EMBED = "llava.model.language_model.embed_tokens.weight"
LM_HEAD = "llava.lm_head.weight"
SP_SIZE = 600  # tiny SentencePiece size: [SEG]=600, <im_start>=601, <im_end>=602 (released rows), <image>=603
RELEASED_ROWS = 603


def hand_rename(key: str) -> str | None:
    if key.startswith(VISION):
        return None
    for ours, official in HAND_TABLE:
        if key.startswith(ours):
            return official + key[len(ours) :]
    raise AssertionError(f"no hand rule for {key}")


def official_release_dict(model) -> dict[str, torch.Tensor]:
    """Merged official layout of a LoRA-free model, by hand."""
    out = {}
    for k, v in model.state_dict().items():
        assert ".lora_" not in k and ".base_layer." not in k
        name = hand_rename(k)
        if name is None:
            continue
        v = v.detach().clone()
        if k in (EMBED, LM_HEAD):
            v = v[:RELEASED_ROWS].clone()
        out[name] = v
    n_layers = model.llava.config.text_config.num_hidden_layers
    for i in range(n_layers):  # transformers 4.31 saved this buffer; the converter drops it
        out[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = torch.arange(8, dtype=torch.float32)
    return out


def write_tokenizer_files(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(ReadTokenizer.build_tiny(SP_SIZE).model_proto)
    added = {"<im_end>": SP_SIZE + 2, "<im_start>": SP_SIZE + 1, "[SEG]": SP_SIZE}
    (directory / "added_tokens.json").write_text(json.dumps(added, indent=2, sort_keys=True))


def write_release(directory: Path, sd: dict, *, shards: int = 3, config: dict | None = None) -> list[Path]:
    """Tokenizer files, config.json and the weights (``shards`` .bin shards + index, or one file for 1)."""
    write_tokenizer_files(directory)
    conf = dict(TINY_RELEASE_CONFIG)
    (directory / "config.json").write_text(json.dumps({**conf, **(config or {})}))
    keys = list(sd)
    if shards == 1:
        torch.save(sd, directory / "pytorch_model.bin")
        return [directory / "pytorch_model.bin"]
    paths, weight_map = [], {}
    per = -(-len(keys) // shards)
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        chunk = {k: sd[k] for k in keys[i * per : (i + 1) * per]}
        torch.save(chunk, directory / name)
        weight_map.update(dict.fromkeys(chunk, name))
        paths.append(directory / name)
    total = sum(v.numel() * v.element_size() for v in sd.values())
    (directory / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return paths




TINY_RELEASE_CONFIG = {
    # what the official code writes (spec 7.3), with the sizes of configs/model/tiny.yaml
    "model_type": "llava",
    "architectures": ["READForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": RELEASED_ROWS,
    "out_dim": 256,
}
FULL_RELEASE_CONFIG = {
    **TINY_RELEASE_CONFIG,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "mm_hidden_size": 32,
    "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch",
    "mm_use_im_start_end": True,
    "mm_use_im_patch_token": False,
    "use_mm_proj": True,
    "image_aspect_ratio": "square",
    "train_mask_decoder": True,
    "use_cache": False,
}
"""Every architecture field of an official config.json, matching the tiny model (LLaMA's default rms_norm_eps in
transformers is 1e-6; rope_theta is absent as in transformers-4.31 configs)."""
