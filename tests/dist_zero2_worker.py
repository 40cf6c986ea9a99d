"""One rank of a two-process DeepSpeed ZeRO-2 run on CPU (gloo), launched by tests/test_distributed.py.

    torchrun --nproc_per_node 2 tests/dist_zero2_worker.py OUT.json PATTERN

``PATTERN`` gives each rank's micro-batches per optimiser step, ranks separated by ``/``: ``s`` = a micro-batch with
[SEG] queries, ``n`` = one without (VQA-like rows: no [SEG], no masks). ``s/n`` = rank 0 has [SEG], rank 1 none
(gradient accumulation 1); ``sn/ns`` = accumulation 2 over a mixed pair. Three optimiser steps run (the first two
have lr 0 under WarmupDecayLR); each rank writes the digests of its trainable and frozen weights to ``OUT.rank{r}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def no_seg_batch(model, tokenizer, cfg, seed: int):
    """Two images whose rows have no [SEG] and no masks (VQA / false-premise answers)."""
    from read.data.base import Sample
    from read.data.collate import collate
    from read.data.synthetic import draw_rectangles
    from read.model.llava_backbone import clip_image_size, num_image_tokens

    rng = np.random.default_rng(seed)
    samples = []
    for h, w in ((60, 80), (70, 70)):
        image, _, names = draw_rectangles(rng, h, w, num_shapes=2)
        q = f"<image>\nIs there a {names[0]} in this image?"
        samples.append(Sample(image=image, conversations=[[(q, "No, there is none.")]],
                              masks=np.zeros((0, h, w), np.uint8)))
    return collate(samples, tokenizer, num_image_tokens=num_image_tokens(model.llava),
                   clip_size=clip_image_size(model.llava), sam_size=model.sam.img_size,
                   use_im_start_end=cfg.model.vlm.use_im_start_end)


def main() -> None:
    out, pattern = Path(sys.argv[1]), sys.argv[2]
    import deepspeed
    from conftest import make_tiny_batch

    from read.config import load_config
    from read.model.builder import build_read_model
    from read.model.fingerprint import tensor_digest
    from read.train.engine import build_engine, skip_cpu_shm_build

    skip_cpu_shm_build()
    deepspeed.init_distributed(dist_backend="gloo")
    rank = torch.distributed.get_rank()
    mine = pattern.split("/")[rank]
    cfg = load_config(ROOT / "configs" / "model" / "tiny.yaml", [
        "train.engine=deepspeed", "train.zero_stage=2", f"train.grad_accumulation_steps={len(mine)}",
        "train.batch_size=2", "train.warmup_steps=1", "train.lr=1e-3", "train.epochs=1", "train.steps_per_epoch=10"])
    torch.manual_seed(0)
    model, tok = build_read_model(cfg)
    before = {n: tensor_digest(p) for n, p in model.named_parameters()}
    engine = build_engine(model, cfg, world_size=2, root=ROOT)
    batches = {"s": make_tiny_batch(model, tok, cfg, seed=rank), "n": no_seg_batch(model, tok, cfg, seed=rank)}
    losses = []
    for _step in range(3):
        for kind in mine:
            res = engine(batches[kind])
            losses.append(float(res.loss.total))
            engine.backward(res.loss.total)
            engine.step()
    module = engine.module
    trainable = {n: tensor_digest(p) for n, p in module.named_parameters() if p.requires_grad}
    frozen = {n: tensor_digest(p) for n, p in module.named_parameters() if not p.requires_grad}
    changed = sorted(n for n in trainable if trainable[n] != before[n])
    frozen_changed = sorted(n for n in frozen if frozen[n] != before[n])
    Path(f"{out}.rank{rank}").write_text(json.dumps({
        "trainable": trainable, "changed": changed, "frozen_changed": frozen_changed, "losses": losses,
        "global_steps": engine.global_steps}))


if __name__ == "__main__":
    main()
