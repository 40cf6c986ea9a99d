"""Parameter counts of the real-size READ models, built on the meta device (no weights, no GPU, no download).

    python scripts/model_size.py --config configs/model/read_7b.yaml

Prints total / trainable parameters by part and the bytes they take as bf16 weights, fp32 master weights, fp32
gradients and AdamW moments. These are exact sizes of tensors, not a measurement of peak GPU memory
(activations are not included).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from read.config import load_config  # noqa: E402

LLAVA_15 = {  # llava-hf/llava-1.5-{7b,13b}-hf text sizes; CLIP ViT-L/14-336 is shared
    "read_7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
    "read_13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40),
}


def build_meta(cfg):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from read.model.builder import apply_lora, build_tokenizer, set_trainable  # noqa: F401
    from read.model.projector import SegProjector
    from read.model.read_model import ReadModel
    from read.model.sam_head import build_sam_head

    sizes = LLAVA_15[cfg.model.name]
    text = LlamaConfig(vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       num_key_value_heads=sizes["num_attention_heads"], **sizes)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    conf = LlavaConfig(text_config=text, vision_config=vision, image_token_index=32000, vision_feature_layer=-2,
                       vision_feature_select_strategy="default", tie_word_embeddings=False)
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(conf)
        sam = build_sam_head(cfg.model.sam.variant)
        proj = SegProjector(sizes["hidden_size"], cfg.model.out_dim)
    model = ReadModel(llava=llava, sam=sam, text_hidden_fcs=proj, seg_token_id=32002, image_token_id=32000)
    if cfg.model.lora.enabled:
        apply_lora(model, cfg.model)
    set_trainable(model, cfg.model.trainable)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/model/read_7b.yaml")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    model = build_meta(cfg)
    parts: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            key = "lora"
        elif name.startswith("llava.model.vision_tower"):
            key = "clip"
        elif name.startswith("llava.model.multi_modal_projector"):
            key = "mm_projector"
        elif name.startswith("llava.model.language_model.embed_tokens"):
            key = "embed_tokens"
        elif name.startswith("llava.lm_head"):
            key = "lm_head"
        elif name.startswith("llava"):
            key = "llama_layers"
        elif name.startswith("sam."):
            key = "sam." + name.split(".")[1]
        else:
            key = name.split(".")[0]
        tot, tr = parts.setdefault(key, [0, 0])
        parts[key] = [tot + p.numel(), tr + (p.numel() if p.requires_grad else 0)]
    total = sum(v[0] for v in parts.values())
    trainable = sum(v[1] for v in parts.values())
    print(f"{cfg.model.name}: LoRA r={cfg.model.lora.r}")
    print(f"{'part':<22}{'parameters':>16}{'trainable':>16}")
    for k, (t, tr) in sorted(parts.items()):
        print(f"{k:<22}{t:>16,}{tr:>16,}")
    print(f"{'total':<22}{total:>16,}{trainable:>16,}")
    gib = 1024**3
    print(f"\nbf16 weights (all): {2 * total / gib:.2f} GiB; trainable as fp32 master + fp32 grads + AdamW m, v: "
          f"{16 * trainable / gib:.2f} GiB in one process (ZeRO-2 divides the optimizer states and grads by the "
          "number of GPUs)")


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
