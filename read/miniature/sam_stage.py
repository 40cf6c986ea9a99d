"""Stage 3: a tiny SAM (image encoder, prompt encoder, mask decoder: all trained) for promptable segmentation of
the synthetic shapes from clicks and boxes, saved as a segment_anything state dict (``sam_tiny.pth``, upstream key
names) that ``model.sam.checkpoint`` loads strictly with ``model.sam.variant: tiny`` and the same sizes.

As SAM's training: every shape of every image gets a prompt each step (one decoder call per image, its prompts
batched); a single click asks for three masks and only the best one is penalised (ambiguity); several clicks
(1-10 positives, up to 3 negatives, padded with SAM's "not a point" label -1) or a box ask for one, the mask READ
uses. The rate warms up, then follows a cosine over the time budget.

Quality, on held-out scenes, with a click at each shape's innermost pixel: one-click mIoU (the mask SAM itself
picks, and the best of its three), 5-click and box mIoU (single mask), and ``wrong_shape_iou``, the IoU of a
click's mask with *another* shape of the scene: near 0 for a SAM that follows its prompts, as high as the
one-click mIoU for a SAM that ignores them (the first stand-in did: docs/BENCHMARKS.md)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from read.miniature.common import Stage
from read.miniature.scenes import scene

__all__ = ["SamSizes", "click_iou", "evaluate_sam", "innermost_pixel", "shape_prompts", "train_sam"]

KINDS = ("click", "clicks", "box")


@dataclass
class SamSizes:
    img_size: int = 128
    patch_size: int = 8
    encoder_dim: int = 64
    encoder_depth: int = 3
    encoder_heads: int = 2
    window_size: int = 4
    prompt_dim: int = 256
    decoder_mlp_dim: int = 128


def build(sizes: SamSizes):
    from read.model.sam_head import build_sam_head

    return build_sam_head("tiny", **asdict(sizes))


def innermost_pixel(mask: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the mask pixel farthest from the background (ties: the first in raster order)."""
    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def click_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    inter, union = np.logical_and(pred, gt).sum(), np.logical_or(pred, gt).sum()
    return float(inter / union) if union else 1.0


def _preprocess(images: list[np.ndarray], size: int) -> Tensor:
    from read.data.transforms import sam_preprocess

    return torch.stack([sam_preprocess(im, size)[0] for im in images])


def _decode(sam, emb: Tensor, coords: Tensor | None, labels: Tensor | None, boxes: Tensor | None,
            multimask: bool, hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Masks ``[n, m, H, W]`` (logits) and predicted IoUs ``[n, m]`` for ``n`` prompts on one image: points
    ``[n, K, 2]`` / labels ``[n, K]`` (SAM's frame) or boxes ``[n, 4]``; ``emb`` ``[D, e, e]``."""
    points = None if coords is None else (coords.float(), labels.long())
    sparse, dense = sam.prompt_encoder(points=points, boxes=None if boxes is None else boxes.float(), masks=None)
    low, iou = sam.mask_decoder(image_embeddings=emb[None], image_pe=sam.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=multimask)
    return sam.postprocess(low, hw, hw), iou


def _mask_loss(logits: Tensor, gt: Tensor) -> Tensor:
    """Per-mask BCE + Dice, ``[n, m]`` (logits ``[n, m, H, W]``, gt ``[n, H, W]`` float)."""
    g = gt[:, None].expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, g, reduction="none").mean((2, 3))
    p = logits.sigmoid()
    dice = 1 - (2 * (p * g).sum((2, 3)) + 1) / (p.sum((2, 3)) + g.sum((2, 3)) + 1)
    return bce + dice


def _box(mask: np.ndarray) -> list[int]:
    """``[x0, y0, x1, y1]``, inclusive pixel bounds of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def _pixels(mask: np.ndarray) -> np.ndarray:
    """``[n, 2]`` (x, y) of the mask's pixels, in raster order."""
    ys, xs = np.nonzero(mask)
    return np.stack([xs, ys], 1)


def shape_prompts(rng: np.random.Generator, masks: list[np.ndarray], kind: str, scale: float
                  ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """One prompt of ``kind`` per shape mask (``[H, W]``, pixel frame; output scaled by ``scale`` into SAM's):
    ``click`` one positive point; ``clicks`` 1-10 positives in the shape and 0-3 negatives outside it, padded to
    a common length with label -1; ``box`` the bounding box jittered by up to 2 px. Returns coords ``[n, K, 2]``,
    labels ``[n, K]`` (or ``None``) and boxes ``[n, 4]`` (or ``None``)."""
    if kind == "box":
        boxes = [np.add(_box(m), rng.integers(-2, 3, 4)) for m in masks]
        return None, None, torch.tensor(np.array(boxes), dtype=torch.float32) * scale
    rows = []
    for m in masks:
        ys, xs = np.nonzero(m)
        k = 1 if kind == "click" else int(rng.integers(1, 11))
        pick = rng.integers(len(xs), size=k)
        pts = [(xs[i], ys[i], 1) for i in pick]
        if kind == "clicks":
            by, bx = np.nonzero(m == 0)
            pts += [(bx[j], by[j], 0) for j in rng.integers(len(bx), size=int(rng.integers(0, 4)))]
        rows.append(pts)
    width = max(len(r) for r in rows)
    coords = torch.zeros(len(rows), width, 2)
    labels = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        coords[i, : len(r)] = torch.tensor([(x + 0.5, y + 0.5) for x, y, _ in r], dtype=torch.float32)
        labels[i, : len(r)] = torch.tensor([lab for _, _, lab in r])
    return coords * scale, labels, None


def _binary(masks: Tensor) -> list[np.ndarray]:
    """``[n, H', W']`` logits in SAM's frame -> boolean masks at the scene's 128 x 128."""
    return [cv2.resize((m > 0).numpy().astype(np.uint8), (128, 128), interpolation=cv2.INTER_NEAREST) > 0
            for m in masks]


@torch.no_grad()
def evaluate_sam(sam, size: int, *, n: int = 60, seed: int = 79) -> dict[str, float]:
    """The stage's quality check (module docstring) on ``n`` held-out scenes of 1-4 shapes."""
    sam.eval()
    rng = np.random.default_rng(seed)
    scale = size / 128
    got: dict[str, list[float]] = {k: [] for k in ("one_click_miou", "one_click_miou_best_of_3", "five_click_miou",
                                                   "box_miou", "wrong_shape_iou")}
    for _ in range(n):
        im, shapes = scene(rng, 128)
        emb = sam.image_encoder(_preprocess([im], size))[0]
        gts = [s.mask > 0 for s in shapes]
        clicks = torch.tensor([innermost_pixel(s.mask) for s in shapes], dtype=torch.float32)[:, None] + 0.5
        masks, iou = _decode(sam, emb, clicks * scale, torch.ones(len(shapes), 1), None, True, (size, size))
        picked = _binary(masks[torch.arange(len(shapes)), iou.argmax(1)])
        for i, gt in enumerate(gts):
            got["one_click_miou"].append(click_iou(picked[i], gt))
            got["one_click_miou_best_of_3"].append(max(click_iou(m, gt) for m in _binary(masks[i])))
            got["wrong_shape_iou"] += [click_iou(picked[i], other) for j, other in enumerate(gts) if j != i]
        five = torch.stack([torch.from_numpy(_pixels(s.mask)[rng.integers(int(s.mask.sum()), size=5)]).float() + 0.5
                            for s in shapes])
        masks, _ = _decode(sam, emb, five * scale, torch.ones(len(shapes), 5), None, False, (size, size))
        got["five_click_miou"] += [click_iou(m, gt) for m, gt in zip(_binary(masks[:, 0]), gts, strict=True)]
        boxes = torch.tensor([_box(s.mask) for s in shapes], dtype=torch.float32)
        masks, _ = _decode(sam, emb, None, None, boxes * scale, False, (size, size))
        got["box_miou"] += [click_iou(m, gt) for m, gt in zip(_binary(masks[:, 0]), gts, strict=True)]
    sam.train()
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in got.items()}
    out["masks"] = len(got["one_click_miou"])
    return out


def _rate(step: int, elapsed_fraction: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then a cosine from 1 to 0.05 over the time budget."""
    warm = min(1.0, (step + 1) / warmup)
    return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed_fraction))))


def train_sam(out: Path, *, budget_s: float, seed: int = 0, batch: int = 8, lr: float = 1e-3,
              encoder_lr: float = 3e-4, warmup: int = 100, sizes: SamSizes | None = None,
              max_steps: int | None = None, eval_n: int = 60, init: Path | None = None) -> dict:
    """Train (or resume, or skip) the SAM stage into ``out/sam``; returns its record. ``lr`` for the prompt
    encoder and mask decoder, ``encoder_lr`` for the image encoder. ``init``: start from these SAM weights instead
    of a random initialisation."""
    sizes = sizes or SamSizes()
    stage = Stage(out, "sam", budget_s=budget_s)
    if stage.done:
        return stage.record()
    torch.manual_seed(seed)
    sam = build(sizes)
    if init is not None:  # continue from earlier SAM weights (strictly)
        sam.load_state_dict(torch.load(init, map_location="cpu", weights_only=True), strict=True)
    encoder = list(sam.image_encoder.parameters())
    rest = [p for n, p in sam.named_parameters() if not n.startswith("image_encoder.")]
    opt = torch.optim.AdamW([{"params": encoder, "lr": encoder_lr}, {"params": rest, "lr": lr}], weight_decay=0.0)
    base = [g["lr"] for g in opt.param_groups]
    stage.resume({"sam": sam}, opt)
    rng = np.random.default_rng([seed, 13, stage.step])
    scale = sizes.img_size / 128
    hw = (sizes.img_size, sizes.img_size)
    sam.train()
    loss = torch.tensor(float("nan"))
    while True:
        for g, b0 in zip(opt.param_groups, base, strict=True):
            g["lr"] = b0 * _rate(stage.step, stage.elapsed() / max(stage.budget_s, 1e-9), warmup)
        scenes = [scene(rng, 128) for _ in range(batch)]
        emb = sam.image_encoder(_preprocess([im for im, _ in scenes], sizes.img_size))
        losses = []
        for b, (_, shapes) in enumerate(scenes):
            kind = KINDS[int(rng.choice(3, p=[0.3, 0.5, 0.2]))]
            coords, labels, boxes = shape_prompts(rng, [s.mask for s in shapes], kind, scale)
            masks, iou_pred = _decode(sam, emb[b], coords, labels, boxes, kind == "click", hw)
            gt = torch.from_numpy(np.stack([cv2.resize(s.mask, hw, interpolation=cv2.INTER_NEAREST)
                                            for s in shapes])).float()
            per = _mask_loss(masks, gt)  # [n, m]
            with torch.no_grad():  # SAM's IoU head learns each mask's real IoU (it picks among a click's three)
                hard, g = masks > 0, gt[:, None] > 0
                inter, union = (hard & g).sum((2, 3)).float(), (hard | g).sum((2, 3)).float()
                real = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
            losses.append(per.min(1).values.mean() + F.mse_loss(iou_pred.float(), real))  # best of three
        loss = torch.stack(losses).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        opt.step()
        if not stage.tick({"sam": sam}, opt) or (max_steps is not None and stage.step >= max_steps):
            break
    quality = evaluate_sam(sam, sizes.img_size, n=eval_n)
    torch.save(sam.state_dict(), stage.folder / "sam_tiny.pth")
    return stage.finish(quality, final_loss=float(loss.detach()), sizes=asdict(sizes), lr=lr,
                        encoder_lr=encoder_lr)
