"""Training entry point.

Current scope (foundation issue): builds the model from a config and runs ``train.steps`` optimiser steps of a
forward/backward on a freshly generated batch of coloured-rectangle images, printing the loss parts. The full
trainer (DeepSpeed, data mixture, checkpoints, resume) replaces this loop in the training issue.

    python train.py --config configs/model/tiny.yaml [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from read.config import load_config, save_config
from read.data.base import Sample
from read.data.collate import collate
from read.data.synthetic import draw_rectangles
from read.model.builder import build_read_model, count_parameters
from read.model.llava_backbone import clip_image_size, num_image_tokens
from read.utils.device import get_device, seed_everything

QUESTION = "<image>\nWhat is {name} in this image? Please output segmentation mask."
ANSWER = "Sure, the segmentation result is [SEG]."


def make_samples(rng: np.random.Generator, n: int) -> list[Sample]:
    """``n`` images (random sizes) with one conversation row and one mask per rectangle."""
    samples = []
    for i in range(n):
        h, w = int(rng.integers(48, 160)), int(rng.integers(48, 160))
        image, masks, names = draw_rectangles(rng, h, w, num_shapes=2)
        convs = [[(QUESTION.format(name=nm), ANSWER)] for nm in names]
        samples.append(Sample(image=image, conversations=convs, masks=np.stack(masks), name=f"synthetic_{i}"))
    return samples


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=5")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    seed_everything(cfg.train.seed)
    device = get_device(cfg.device)
    out_dir = Path(cfg.output_dir)
    save_config(cfg, out_dir)

    t0 = time.time()
    model, tokenizer = build_read_model(cfg)
    model.to(device)
    counts = count_parameters(model)
    print(f"built {cfg.model.name} in {time.time() - t0:.1f}s: {counts['total']:,} parameters, "
          f"{counts['trainable']:,} trainable; device {device}")

    rng = np.random.default_rng(cfg.train.seed)
    batch = collate(
        make_samples(rng, cfg.train.batch_size),
        tokenizer,
        num_image_tokens=num_image_tokens(model.llava),
        clip_size=clip_image_size(model.llava),
        sam_size=model.sam.img_size,
        use_im_start_end=cfg.model.vlm.use_im_start_end,
        conv_template=cfg.model.vlm.conv_template,
    ).to(device, dtype=next(model.llava.parameters()).dtype)

    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.train.lr, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    last: dict[str, float] = {}
    with open(out_dir / "metrics.jsonl", "a") as log:
        for step in range(1, cfg.train.steps + 1):
            out = model(batch)
            assert out.loss is not None
            out.loss.total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            optim.zero_grad(set_to_none=True)
            last = out.loss.as_floats()
            print(f"step {step}/{cfg.train.steps}  " + "  ".join(f"{k} {v:.4f}" for k, v in last.items()))
            log.write(json.dumps({"step": step, **last}) + "\n")
    return last


if __name__ == "__main__":
    main()
