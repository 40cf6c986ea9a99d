"""Stage 1: a tiny CLIP (vision + text towers) trained contrastively on synthetic scenes and their captions, saved as
a transformers ``CLIPModel`` folder with a word-level BPE ``CLIPTokenizer`` (``vocab.json`` + ``merges.txt``).
Its vision tower becomes LLaVA's (stage 2). Quality: zero-shot colour and kind accuracy on one-shape images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from read.data.synthetic import COLOURS, KINDS
from read.data.transforms import clip_preprocess
from read.miniature.common import Stage
from read.miniature.scenes import caption, scene

__all__ = ["ClipSizes", "clip_vocabulary", "train_clip", "zero_shot_accuracy"]

WORDS = sorted({*COLOURS, *KINDS, "a", "and", "shape", "photo", "of", "the"})
PUNCT = [",", ".", "?"]


@dataclass
class ClipSizes:
    image_size: int = 112
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 3
    text_hidden: int = 64
    text_layers: int = 2
    heads: int = 2
    projection: int = 64


def clip_vocabulary() -> tuple[dict[str, int], list[str]]:
    """A word-level BPE: every character (and its end-of-word form), the prefixes of every caption word with their
    merges (so whole words become single tokens), and CLIP's two special tokens."""
    vocab: dict[str, int] = {}

    def add(tok: str) -> None:
        vocab.setdefault(tok, len(vocab))

    for c in "abcdefghijklmnopqrstuvwxyz" + "".join(PUNCT):
        add(c)
        add(c + "</w>")
    merges: list[str] = []
    for w in sorted(WORDS, key=lambda x: (-len(x), x)):  # long words first: their chains outrank short words' merges
        if len(w) == 1:
            continue
        cur = w[0]
        for i, ch in enumerate(w[1:], start=1):
            nxt = ch + ("</w>" if i == len(w) - 1 else "")
            merged = cur + nxt
            pair = f"{cur} {nxt}"
            if pair not in merges:
                merges.append(pair)
            add(merged)
            cur = merged
    add("<|startoftext|>")
    add("<|endoftext|>")
    return vocab, merges


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok.save_pretrained(folder)
    return tok


def build_clip(sizes: ClipSizes, vocab_size: int):
    from transformers import CLIPConfig, CLIPModel

    eos = vocab_size - 1
    cfg = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=sizes.text_hidden, intermediate_size=2 * sizes.text_hidden,
                         num_hidden_layers=sizes.text_layers, num_attention_heads=sizes.heads,
                         max_position_embeddings=64, bos_token_id=eos - 1, eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=sizes.vision_hidden, intermediate_size=2 * sizes.vision_hidden,
                           num_hidden_layers=sizes.vision_layers, num_attention_heads=sizes.heads,
                           image_size=sizes.image_size, patch_size=sizes.patch_size),
        projection_dim=sizes.projection)
    return CLIPModel(cfg)


def zero_shot_accuracy(sim: np.ndarray, true_colour: list[str], true_kind: list[str],
                       prompts: list[tuple[str, str]]) -> dict[str, float]:
    """Colour and kind accuracy of the best-matching prompt per image.

    Args:
        sim: ``[N, P]`` image-to-prompt similarities; prompts: the ``(colour, kind)`` each of the P prompts names.
    """
    best = [prompts[int(i)] for i in np.asarray(sim).argmax(1)]
    n = max(1, len(best))
    return {"colour": sum(b[0] == c for b, c in zip(best, true_colour, strict=True)) / n,
            "kind": sum(b[1] == k for b, k in zip(best, true_kind, strict=True)) / n}


def _images(imgs: list[np.ndarray], size: int) -> torch.Tensor:
    return torch.stack([clip_preprocess(im, size)[0] for im in imgs])


@torch.no_grad()
def evaluate_clip(model, tok, sizes: ClipSizes, *, n: int = 120, seed: int = 77) -> dict[str, float]:
    """Zero-shot colour / kind accuracy on ``n`` one-shape scenes against the 18 prompts ``"a <colour> <kind>"``."""
    model.eval()
    rng = np.random.default_rng(seed)
    imgs, colours, kinds = [], [], []
    for _ in range(n):
        im, shapes = scene(rng, 128, 1)
        imgs.append(im)
        colours.append(shapes[0].colour)
        kinds.append(shapes[0].kind)
    prompts = [(c, k) for c in COLOURS for k in KINDS]
    text = tok([f"a {c} {k}" for c, k in prompts], return_tensors="pt", padding=True)
    out = model(input_ids=text.input_ids, attention_mask=text.attention_mask,
                pixel_values=_images(imgs, sizes.image_size))
    model.train()
    return zero_shot_accuracy(out.logits_per_image.numpy(), colours, kinds, prompts)


def train_clip(out: Path, *, budget_s: float, seed: int = 0, batch: int = 48, lr: float = 1e-3,
               sizes: ClipSizes | None = None, max_steps: int | None = None, eval_n: int = 120) -> dict:
    """Train (or resume, or skip when done) the CLIP stage into ``out/clip``; returns its ``stage.json`` record."""
    sizes = sizes or ClipSizes()
    stage = Stage(out, "clip", budget_s=budget_s)
    if stage.done:
        return stage.record()
    tok = _tokenizer(stage.folder)
    torch.manual_seed(seed)
    model = build_clip(sizes, len(tok))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    stage.resume({"model": model}, opt)
    rng = np.random.default_rng([seed, 11, stage.step])
    model.train()
    while True:
        scenes = [scene(rng, 128) for _ in range(batch)]
        text = tok([caption(s) for _, s in scenes], return_tensors="pt", padding=True)
        loss = model(input_ids=text.input_ids, attention_mask=text.attention_mask,
                     pixel_values=_images([im for im, _ in scenes], sizes.image_size), return_loss=True).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not stage.tick({"model": model}, opt) or (max_steps is not None and stage.step >= max_steps):
            break
    quality = evaluate_clip(model, tok, sizes, n=eval_n)
    model.save_pretrained(stage.folder)
    return stage.finish(quality, final_loss=float(loss.detach()), sizes=sizes.__dict__)
