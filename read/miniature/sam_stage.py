"""Stage 3: a tiny SAM (image encoder, prompt encoder, mask decoder: all trained) for promptable segmentation of
the synthetic shapes from clicks and boxes, saved as a segment_anything state dict (``sam_tiny.pth``, upstream key
names) that ``model.sam.checkpoint`` loads strictly with ``model.sam.variant: tiny`` and the same sizes. As SAM's
training: a single click asks for three masks and only the best one is penalised (ambiguity); several clicks or a
box ask for one. Quality: one-click mIoU on held-out scenes (a click at each shape's innermost pixel, the mask with
the highest predicted IoU)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from read.miniature.common import Stage
from read.miniature.scenes import scene

__all__ = ["SamSizes", "click_iou", "innermost_pixel", "train_sam"]


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


def _preprocess(images: list[np.ndarray], size: int) -> torch.Tensor:
    from read.data.transforms import sam_preprocess

    return torch.stack([sam_preprocess(im, size)[0] for im in images])


def _decode(sam, emb: torch.Tensor, coords, labels, box, multimask: bool, hw: tuple[int, int]):
    """Masks ``[m, H, W]`` (logits) and predicted IoUs ``[m]`` for one image's prompt (coords in SAM's frame)."""
    points = None if coords is None else (coords[None].float(), labels[None].long())
    sparse, dense = sam.prompt_encoder(points=points, boxes=None if box is None else box[None].float(), masks=None)
    low, iou = sam.mask_decoder(image_embeddings=emb[None], image_pe=sam.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=multimask)
    return sam.postprocess(low, hw, hw)[0], iou[0]


def _mask_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-mask BCE + Dice, ``[m]`` (logits ``[m, H, W]``, gt ``[H, W]`` float)."""
    g = gt.expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, g, reduction="none").mean((1, 2))
    p = logits.sigmoid()
    dice = 1 - (2 * (p * g).sum((1, 2)) + 1) / (p.sum((1, 2)) + g.sum((1, 2)) + 1)
    return bce + dice


def _prompt(rng: np.random.Generator, mask: np.ndarray, scale: float):
    """A random prompt for one shape: 1 click (multimask), 2-3 clicks (with a negative one sometimes), or a box."""
    ys, xs = np.nonzero(mask)
    kind = rng.choice(["click", "clicks", "box"], p=[0.5, 0.25, 0.25])
    if kind == "box":
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        jitter = rng.integers(-2, 3, 4)
        box = torch.tensor([x0 + jitter[0], y0 + jitter[1], x1 + jitter[2], y1 + jitter[3]]) * scale
        return None, None, box, False
    k = 1 if kind == "click" else int(rng.integers(2, 4))
    pick = rng.integers(len(xs), size=k)
    pts = [(xs[i], ys[i]) for i in pick]
    labels = [1] * k
    if kind == "clicks" and rng.random() < 0.5:
        by, bx = np.nonzero(mask == 0)
        j = int(rng.integers(len(bx)))
        pts.append((bx[j], by[j]))
        labels.append(0)
    coords = (torch.tensor(pts, dtype=torch.float32) + 0.0) * scale
    return coords, torch.tensor(labels), None, kind == "click"


@torch.no_grad()
def evaluate_sam(sam, size: int, *, n: int = 60, seed: int = 79) -> dict[str, float]:
    sam.eval()
    rng = np.random.default_rng(seed)
    ious, oracle = [], []
    for _ in range(n):
        im, shapes = scene(rng, 128)
        emb = sam.image_encoder(_preprocess([im], size))[0]
        scale = size / 128
        for s in shapes:
            x, y = innermost_pixel(s.mask)
            masks, iou = _decode(sam, emb, torch.tensor([[x, y]], dtype=torch.float32) * scale, torch.tensor([1]),
                                 None, True, (size, size))
            each = [click_iou(cv2.resize((m > 0).numpy().astype(np.uint8), (128, 128),
                                         interpolation=cv2.INTER_NEAREST) > 0, s.mask > 0) for m in masks]
            ious.append(each[int(iou.argmax())])  # the mask SAM itself would pick
            oracle.append(max(each))
    sam.train()
    return {"one_click_miou": float(np.mean(ious)), "one_click_miou_best_of_3": float(np.mean(oracle)),
            "masks": len(ious)}


def train_sam(out: Path, *, budget_s: float, seed: int = 0, batch: int = 8, lr: float = 1e-3,
              sizes: SamSizes | None = None, max_steps: int | None = None, eval_n: int = 60,
              init: Path | None = None) -> dict:
    """Train (or resume, or skip) the SAM stage into ``out/sam``; returns its record. ``init``: start from these
    SAM weights instead of a random initialisation."""
    sizes = sizes or SamSizes()
    stage = Stage(out, "sam", budget_s=budget_s)
    if stage.done:
        return stage.record()
    torch.manual_seed(seed)
    sam = build(sizes)
    if init is not None:  # continue from earlier SAM weights (strictly)
        sam.load_state_dict(torch.load(init, map_location="cpu", weights_only=True), strict=True)
    opt = torch.optim.AdamW(sam.parameters(), lr=lr, weight_decay=0.0)
    stage.resume({"sam": sam}, opt)
    rng = np.random.default_rng([seed, 13, stage.step])
    scale = sizes.img_size / 128
    sam.train()
    loss = torch.tensor(float("nan"))
    while True:
        scenes = [scene(rng, 128) for _ in range(batch)]
        emb = sam.image_encoder(_preprocess([im for im, _ in scenes], sizes.img_size))
        losses = []
        for b, (_, shapes) in enumerate(scenes):
            s = shapes[int(rng.integers(len(shapes)))]
            coords, labels, box, multi = _prompt(rng, s.mask, scale)
            masks, iou_pred = _decode(sam, emb[b], coords, labels, box, multi, (sizes.img_size, sizes.img_size))
            gt = torch.from_numpy(cv2.resize(s.mask, (sizes.img_size,) * 2, interpolation=cv2.INTER_NEAREST)).float()
            # SAM's IoU head learns each mask's real IoU (it picks among the three masks of a lone click)
            with torch.no_grad():
                hard = masks > 0
                inter = (hard & (gt > 0)).sum((1, 2)).float()
                union = (hard | (gt > 0)).sum((1, 2)).float()
                real_iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
            losses.append(_mask_loss(masks, gt).min() + F.mse_loss(iou_pred.float(), real_iou))  # best of three
        loss = torch.stack(losses).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not stage.tick({"sam": sam}, opt) or (max_steps is not None and stage.step >= max_steps):
            break
    quality = evaluate_sam(sam, sizes.img_size, n=eval_n)
    torch.save(sam.state_dict(), stage.folder / "sam_tiny.pth")
    return stage.finish(quality, final_loss=float(loss.detach()), sizes=asdict(sizes))
