"""Where does the synthetic benchmark's learning stall? Train the SAM side alone under oracle conditioning.

    python scripts/probe_sam_oracle.py --mode click  --steps 1500   # one oracle click on the target + bag-of-words
    python scripts/probe_sam_oracle.py --mode target --steps 3000   # text-only: learned embedding of the target's
                                                                    # colour + kind (perfect language side)
    python scripts/probe_sam_oracle.py --mode bow    --steps 6000   # text-only: learned bag-of-words of the prompt

No language model is involved: the frozen tiny SAM image encoder of ``configs/experiments/synthetic_ablation.yaml``
(random, as in the ablation) feeds the trainable mask decoder, and the prompt is an oracle:

* ``click``: one positive point at the target pixel nearest the target's centroid, plus a learned mean
  bag-of-words embedding of the prompt tokens as the sparse text token (the localisation is given);
* ``target``: a learned embedding of the target's colour plus one of its kind (from the benchmark JSON's
  ``synthetic`` record) as the only sparse token (the language side is perfect, localisation must be learned);
* ``bow``: the learned bag-of-words embedding alone.

Loss: the READ mask loss (``loss.bce_weight`` BCE + ``loss.dice_weight`` Dice: 2 and 0.5), AdamW, batch 4.
Every ``--eval-every`` steps, the official gIoU of the first ``--val-items`` val items (deterministic prompts) is
printed as a JSON line. If ``target`` stays near the text-blind baselines while ``click`` is high, the bottleneck
is learning *where* the named shape is from frozen random features, not the mask quality (docs/BENCHMARKS.md,
"Does it learn?").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from read.config import load_config  # noqa: E402
from read.data.reason_seg import ReasonSegDataset  # noqa: E402
from read.data.synthetic import COLOURS, KINDS  # noqa: E402
from read.eval.metrics import giou_ciou  # noqa: E402
from read.model.batch import Batch  # noqa: E402
from read.model.builder import build_read_model  # noqa: E402
from read.model.losses import aggregate_mask_losses  # noqa: E402
from read.train.trainer import TrainCollator  # noqa: E402

CONFIG = ROOT / "configs" / "experiments" / "synthetic_ablation.yaml"


def target_ids(ds: ReasonSegDataset, index: int) -> tuple[int, int]:
    """(colour index, kind index) of the target of item ``index``, from its JSON ``synthetic`` record."""
    json_path = ds.items[index][1]
    try:
        record = json.loads(Path(json_path).read_text())["synthetic"]
        shape = record["shapes"][record["target"]]
        return list(COLOURS).index(shape["colour"]), list(KINDS).index(shape["kind"])
    except (KeyError, ValueError, IndexError) as e:
        raise SystemExit(f"{json_path}: not a synthetic reasoning-benchmark item ({e!r})") from e


def oracle_click(gt_masks: list[Tensor]) -> tuple[Tensor, Tensor]:
    """One positive click per image: the target pixel nearest the target's centroid.

    Returns:
        coords ``[B, 1, 2]`` (x, y) at pixel centres, labels ``[B, 1]`` ones.
    """
    coords = []
    for gt in gt_masks:
        ys, xs = torch.nonzero(gt[0] == 1, as_tuple=True)
        cy, cx = ys.float().mean(), xs.float().mean()
        k = ((ys - cy) ** 2 + (xs - cx) ** 2).argmin()
        coords.append(torch.stack([xs[k], ys[k]]).float() + 0.5)
    c = torch.stack(coords)[:, None, :]
    return c, torch.ones(c.shape[0], 1, dtype=torch.long)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("click", "target", "bow"), required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--val-items", type=int, default=200)
    parser.add_argument("--train-encoder", action="store_true", help="also train the SAM image encoder")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.sam.tiny.encoder_dim=128")
    args = parser.parse_intermixed_args(argv)

    cfg = load_config(CONFIG, [*args.overrides])
    torch.manual_seed(0)
    model, tokenizer = build_read_model(cfg)
    collate = TrainCollator.for_model(tokenizer, model, cfg.model.vlm)
    train_set = ReasonSegDataset(cfg.data.root, "train", num_classes_per_sample=1)
    val_set = ReasonSegDataset(cfg.data.root, "val", num_classes_per_sample=1)
    vocab = int(model.llava.get_input_embeddings().weight.shape[0])
    bow = nn.EmbeddingBag(vocab, model.sam.prompt_encoder.embed_dim, mode="mean")
    params = list(bow.parameters()) + list(model.sam.mask_decoder.parameters())
    if args.train_encoder:
        params += list(model.sam.image_encoder.parameters())
    model.sam.image_encoder.requires_grad_(args.train_encoder)
    colour_emb = kind_emb = None
    if args.mode == "target":
        dim = model.sam.prompt_encoder.embed_dim
        colour_emb, kind_emb = nn.Embedding(len(COLOURS), dim), nn.Embedding(len(KINDS), dim)
        nn.init.normal_(colour_emb.weight, std=0.02)
        nn.init.normal_(kind_emb.weight, std=0.02)
        params += list(colour_emb.parameters()) + list(kind_emb.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(0)
    image_token = model.image_token_id

    def masks(batch: Batch, targets: list[tuple[int, int]]) -> list[Tensor]:
        if args.train_encoder:
            emb = model.sam.image_encoder(batch.pixel_values_sam)
        else:
            emb = model.sam.encode_images(batch.pixel_values_sam)
        if args.mode == "target":
            assert colour_emb is not None and kind_emb is not None
            seg = colour_emb(torch.tensor([c for c, _ in targets])) + kind_emb(torch.tensor([k for _, k in targets]))
        else:
            keep = (batch.input_ids != image_token) & (batch.attention_mask > 0)
            seg = torch.cat([bow(batch.input_ids[r][keep[r]][None]) for r in range(batch.input_ids.shape[0])])
        coords = labels = None
        if args.mode == "click":
            coords, labels = oracle_click(batch.gt_masks)
        return model.sam(emb, seg, batch.row_to_image, batch.sam_input_hw, batch.image_hw,
                         coords=coords, labels=labels)

    def evaluate() -> float:
        preds, gts = [], []
        with torch.no_grad():
            for start in range(0, args.val_items, 8):
                idx = list(range(start, min(args.val_items, start + 8)))
                batch = collate([val_set[i] for i in idx])
                preds += [(p > 0).long() for p in masks(batch, [target_ids(val_set, i) for i in idx])]
                gts += batch.gt_masks
        return giou_ciou(preds, gts)["giou"]

    t0 = time.time()
    for step in range(1, args.steps + 1):
        if args.mode == "target":
            idx = [int(rng.integers(len(train_set))) for _ in range(4)]
            targets, samples = [target_ids(train_set, i) for i in idx], [train_set[i] for i in idx]
        else:
            targets, samples = [], [train_set.sample(rng) for _ in range(4)]
        batch = collate(samples)
        bce, dice, _ = aggregate_mask_losses(masks(batch, targets), batch.gt_masks)
        loss = cfg.loss.bce_weight * bce + cfg.loss.dice_weight * dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            print(json.dumps({"mode": args.mode, "step": step, "minutes": round((time.time() - t0) / 60, 2),
                              "loss": round(loss.item(), 4), "val_giou": round(evaluate(), 4)}), flush=True)


if __name__ == "__main__":
    from read.cli import main_with_errors

    main_with_errors(main)
