"""Reference outputs of the READ-on-LLaVA + SAM path on one fixed input, recorded before the backbones become
interchangeable parts (issue 18), so that the refactor can show the path unchanged to the last bit.

    python tests/golden_helpers.py --write      # record tests/golden/llava_sam_tiny.json (only before a refactor)
    python tests/golden_helpers.py              # compare this checkout against the record

The record holds sha256 digests (``read.model.fingerprint.tensor_digest``: dtype, shape and bytes) of the LM logits,
every predicted mask, every tensor of the SasP output, the [SEG] query positions, every trainable gradient after
one backward pass, and the generated ids / [SEG] states / masks of greedy decoding; and, for machines whose float
kernels differ, summary values (loss parts, sums) compared with a tolerance. Digests are only compared where the
torch version and the CPU capability equal the recording machine's (``exact_here``).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECORD = HERE / "golden" / "llava_sam_tiny.json"
TINY = ROOT / "configs" / "model" / "tiny.yaml"


def _environment() -> dict:
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine()}


def _tensors(obj, prefix: str) -> dict[str, Tensor]:
    """Every tensor inside ``obj`` (tensors, dataclasses, lists, tuples, dicts), by a dotted path."""
    out: dict[str, Tensor] = {}
    if isinstance(obj, Tensor):
        out[prefix] = obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            out |= _tensors(getattr(obj, f.name), f"{prefix}.{f.name}")
    elif isinstance(obj, (list, tuple)):
        for i, x in enumerate(obj):
            out |= _tensors(x, f"{prefix}.{i}")
    elif isinstance(obj, dict):
        for k, x in obj.items():
            out |= _tensors(x, f"{prefix}.{k}")
    return out


def _prompt_batch(model, tok, cfg):  # noqa: ANN001, ANN202
    from read.data.base import Sample
    from read.data.collate import collate
    from read.data.synthetic import draw_rectangles
    from read.model.llava_backbone import clip_image_size, num_image_tokens

    rng = np.random.default_rng(7)
    samples = []
    for h, w in ((60, 80), (90, 50)):
        image, _, names = draw_rectangles(rng, h, w, num_shapes=1)
        q = f"<image>\nWhat is {names[0]} in this image? Please output segmentation mask."
        samples.append(Sample(image=image, conversations=[[(q, None)]], masks=None))
    return collate(samples, tok, num_image_tokens=num_image_tokens(model.llava),
                   clip_size=clip_image_size(model.llava), sam_size=model.sam.img_size,
                   use_im_start_end=cfg.model.vlm.use_im_start_end)


def compute() -> dict:
    """Build the tiny model (seed 0), run one forward + backward on the fixed batch and one greedy decoding."""
    from read.config import load_config
    from read.model.builder import build_read_model
    from read.model.fingerprint import tensor_digest
    from read.model.generate import greedy_generate, segment_generated

    sys.path.insert(0, str(HERE))
    from conftest import make_tiny_batch

    cfg = load_config(TINY)
    torch.manual_seed(0)
    model, tok = build_read_model(cfg)
    model.eval()  # no LoRA dropout: the forward is a function of the weights and the batch alone
    batch = make_tiny_batch(model, tok, cfg, seed=0, n_images=2)
    out = model(batch, return_logits=True)
    out.loss.total.backward()
    digests = {"logits": tensor_digest(out.logits)}
    digests |= {f"mask.{i}": tensor_digest(m) for i, m in enumerate(out.pred_masks)}
    digests |= {k: tensor_digest(v) for k, v in _tensors(out.points, "points").items()}
    digests |= {k: tensor_digest(v) for k, v in _tensors(out.queries, "queries").items()}
    digests |= {f"grad.{n}": tensor_digest(p.grad) for n, p in sorted(model.named_parameters())
                if p.requires_grad and p.grad is not None}
    summary = {f"loss.{k}": float(getattr(out.loss, k).detach()) for k in ("total", "ce", "bce", "dice")}
    finite = out.logits.detach().double()
    summary["logits.abs_sum"] = float(finite[finite.isfinite()].abs().sum())  # banned ids hold -inf
    summary |= {f"mask.{i}.sum": float(m.detach().double().sum()) for i, m in enumerate(out.pred_masks)}
    summary["grad.norm"] = float(torch.stack([p.grad.double().norm() for p in model.parameters()
                                              if p.requires_grad and p.grad is not None]).norm())
    with torch.no_grad():
        prompts = _prompt_batch(model, tok, cfg)
        gen = greedy_generate(model, prompts, max_new_tokens=12, eos_id=tok.eos_id, pad_id=tok.pad_id,
                              tokenizer=tok)
        # a random model seldom says [SEG]: a second decoding may say nothing else, so that the path from
        # generated [SEG] states to masks is covered as well
        others = [i for i in range(len(tok)) if i != tok.seg_token_id]
        forced = greedy_generate(model, prompts, max_new_tokens=3, eos_id=tok.eos_id, pad_id=tok.pad_id,
                                 tokenizer=tok, banned_ids=others)
        forced_masks = segment_generated(model, prompts, forced)
    digests["generate.sequences"] = tensor_digest(gen.sequences)
    digests["generate.seg_hidden"] = tensor_digest(gen.seg_hidden)
    digests["forced.sequences"] = tensor_digest(forced.sequences)
    digests["forced.seg_hidden"] = tensor_digest(forced.seg_hidden)
    digests |= {f"forced.mask.{i}.{j}": tensor_digest(m) for i, ms in enumerate(forced_masks)
                for j, m in enumerate(ms)}
    summary |= {f"forced.mask.{i}.{j}.sum": float(m.double().sum()) for i, ms in enumerate(forced_masks)
                for j, m in enumerate(ms)}
    return {"environment": _environment(), "digests": digests, "summary": summary,
            "generated_ids": gen.sequences.tolist()}


def exact_here(record: dict) -> bool:
    """Whether this machine's float kernels are the recording machine's (same torch, CPU capability, ISA)."""
    return record["environment"] == _environment()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    got = compute()
    if "--write" in argv:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(got['digests'])} digests in {RECORD}")
        return 0
    want = json.loads(RECORD.read_text())
    bad = [k for k in want["digests"] if want["digests"][k] != got["digests"].get(k)]
    print(f"{len(want['digests']) - len(bad)}/{len(want['digests'])} digests equal; exact_here={exact_here(want)}")
    for k in bad[:20]:
        print("differs:", k)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
