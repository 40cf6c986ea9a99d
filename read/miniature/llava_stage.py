"""Stage 2: a tiny LLaVA-1.5 in llava-hf layout, trained in LLaVA's two stages on synthetic scenes: (a) projector
alignment on captions (CLIP and the language model frozen), (b) instruction tuning of projector + language model on
captions and questions (counts, colours, kinds, "where is" requests, the benchmark's one-step reasoning queries
answered by name, and requests in the words of READ's question/answer templates, ``scenes.read_style_item``).
Its vision tower is stage 1's CLIP. Saved as ``LlavaForConditionalGeneration`` + ``tokenizer.model`` +
``added_tokens.json`` (``<image>``, ``<pad>`` after the SentencePiece pieces, as llava-hf), which
``model.vlm.pretrained`` loads.

Two stand-ins for what a large pretrained LLaVA brings and a 20-minute one does not (docs/BENCHMARKS.md shows
READ fine-tuning turning the [SEG] map against the target without them): the language of READ's templates
(half the instruction items by default, half of those in the evaluation's fixed wording: ``RequestMix``), and
word-to-patch grounding, taught by the pointing loss of ``read.miniature.grounding`` on the words that name a
shape and on every token of an answer about one shape (weight ``pointing_weight``; 0 turns it off).

Quality: caption accuracy (every shape named with its colour, nothing else), answer accuracy on held-out scenes,
and the grounding AUROC of caption words (against all cells and against the other shapes' cells)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from read.data.base import Sample
from read.data.collate import collate
from read.miniature.common import Stage
from read.miniature.grounding import gather_mentions, grounding_auroc, pointing_loss, word_ids
from read.miniature.scenes import (
    POINTING_ANSWERS,
    caption,
    caption_words,
    qa_items,
    read_style_request,
    scene,
    vocabulary_sentences,
)

__all__ = ["LlavaSizes", "RequestMix", "caption_accuracy", "train_llava"]

CONV = "llava_v1"


@dataclass
class LlavaSizes:
    hidden: int = 128
    intermediate: int = 344
    layers: int = 4
    heads: int = 4
    vocab: int = 600


def caption_accuracy(predicted: list[str], truths: list[set[tuple[str, str]]]) -> dict[str, float]:
    """``exact``: the fraction of captions naming exactly the scene's (colour, kind) pairs; ``f1``: the mean
    per-caption F1 of named pairs against the scene's."""
    exact, f1s = 0, []
    for text, truth in zip(predicted, truths, strict=True):
        got = caption_words(text)
        exact += got == truth
        tp = len(got & truth)
        p = tp / len(got) if got else 0.0
        r = tp / len(truth) if truth else 0.0
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    n = max(1, len(predicted))
    return {"exact": exact / n, "f1": float(np.mean(f1s)) if f1s else 0.0}


def _tokenizer(folder: Path, vocab: int):
    """A SentencePiece model trained on the scene vocabulary, written in llava-hf layout (``tokenizer.model`` and
    ``<image>``, ``<pad>`` right after the pieces) and read back exactly as READ will read it (READ's own tokens,
    [SEG] and the image wrappers, come after those and are never seen here)."""
    from read.model.tokenizer import ReadTokenizer

    proto = ReadTokenizer.build_tiny(vocab, extra_sentences=vocabulary_sentences() * 3).model_proto
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(proto)
    v = _pieces(proto)
    (folder / "added_tokens.json").write_text(json.dumps({"<image>": v, "<pad>": v + 1}))
    return ReadTokenizer.from_pretrained(folder, use_im_start_end=False)


def _pieces(proto: bytes) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=proto).get_piece_size()


def build_llava(sizes: LlavaSizes, clip_folder: Path, tok):
    """LLaVA-1.5 with stage 1's CLIP vision tower (loaded strictly) and a random language model."""
    from transformers import CLIPModel, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    clip = CLIPModel.from_pretrained(clip_folder)
    vision = clip.config.vision_config
    text = LlamaConfig(vocab_size=tok.image_token_id + 2, hidden_size=sizes.hidden, intermediate_size=sizes.intermediate,
                       num_hidden_layers=sizes.layers, num_attention_heads=sizes.heads,
                       num_key_value_heads=sizes.heads, max_position_embeddings=512, pad_token_id=tok.pad_id,
                       bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, tie_word_embeddings=False)
    conf = LlavaConfig(text_config=text, vision_config=vision, image_token_index=tok.image_token_id,
                       vision_feature_layer=-2, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=(vision.image_size // vision.patch_size) ** 2,
                       tie_word_embeddings=False)
    model = LlavaForConditionalGeneration(conf)
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict(), strict=True)
    return model


def _batch(model, tok, items: list[tuple[np.ndarray, str, str | None]]):  # noqa: ANN202 - read.data Batch
    vt = model.config.vision_config
    samples = [Sample(image=im, conversations=[[("<image>\n" + q, a)]],
                      masks=np.zeros((0, *im.shape[:2]), np.uint8) if a is not None else None) for im, q, a in items]
    return collate(samples, tok, num_image_tokens=(vt.image_size // vt.patch_size) ** 2, clip_size=vt.image_size,
                   sam_size=64, use_im_start_end=False, conv_template=CONV)


@dataclass
class RequestMix:
    """How often the instruction stage draws a request in READ's words (``scenes.read_style_request``) instead of
    one of ``scenes.qa_items`` (``read_share``), and how often such a request takes the evaluation's fixed
    wording (``val_share``), which READ's training templates never use but its evaluation does (LISA's
    validation prompt): a large language model reads both alike; a 20-minute one only the wordings it saw."""

    read_share: float = 0.5
    val_share: float = 0.5


def _examples(rng: np.random.Generator, n: int, captions_only: bool, mix: RequestMix | None = None) -> list[tuple]:
    """``n`` (image, question, answer, shapes, index of the shape the answer is about or None) items; ``mix``
    ``None``: one of ``qa_items`` at random (read-style requests two of about eight)."""
    out = []
    for _ in range(n):
        im, shapes = scene(rng, 128)
        if captions_only:
            out.append((im, "Describe the image.", caption(shapes) + ".", shapes, None))
        elif mix is not None and rng.random() < mix.read_share:
            q, a, k = read_style_request(shapes, rng, mix.val_share)
            out.append((im, q, a, shapes, k))
        else:
            items = qa_items(shapes, rng)
            q, a, k = items[int(rng.integers(len(items)))]
            out.append((im, q, a, shapes, k))
    return out


def _grid(model) -> int:
    vt = model.config.vision_config
    return vt.image_size // vt.patch_size


def _losses(model, tok, items: list[tuple], words: tuple[dict[int, str], dict[int, str]] | None
            ) -> tuple[Tensor, Tensor]:
    """Next-token cross-entropy (as ``LlavaForConditionalGeneration`` computes it) and the pointing loss of
    ``read.miniature.grounding`` on the post-norm last-layer states, for the shape words ``words``
    (``grounding.word_ids``; zero when ``None`` or nothing is named)."""
    b = _batch(model, tok, [it[:3] for it in items])
    h = model.model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                    pixel_values=b.pixel_values_clip).last_hidden_state
    logits = model.lm_head(h)
    lm = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), b.labels[:, 1:].flatten(), ignore_index=-100)
    if words is None:
        return lm, lm.new_zeros(())
    img, word, target, _ = gather_mentions(h, b.input_ids, [it[3] for it in items], tok.image_token_id,
                                           words, _grid(model), labels=b.labels,
                                           referents=[it[4] for it in items])
    return lm, (pointing_loss(img, word, target) if len(word) else lm.new_zeros(()))


@torch.no_grad()
def generate(model, tok, items: list[tuple[np.ndarray, str]], max_new_tokens: int = 40) -> list[str]:
    """Greedy answers (HF ``generate``, one row per item)."""
    batch = _batch(model, tok, [(im, q, None) for im, q in items])
    out = []
    for r in range(batch.input_ids.shape[0]):
        n = int(batch.attention_mask[r].sum())
        ids = model.generate(input_ids=batch.input_ids[r:r + 1, :n], pixel_values=batch.pixel_values_clip[r:r + 1],
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tok.eos_id,
                             pad_token_id=tok.pad_id)
        out.append(tok.decode(ids[0, n:].tolist(), skip_special_tokens=True))
    return out


def evaluate_llava(model, tok, *, n: int = 40, seed: int = 78) -> dict[str, float]:
    """Caption accuracy and answer accuracy (exact, case-insensitive) on ``n`` held-out scenes each."""
    model.eval()
    rng = np.random.default_rng(seed)
    scenes = [scene(rng, 128) for _ in range(n)]
    caps = generate(model, tok, [(im, "Describe the image.") for im, _ in scenes])
    quality = {f"caption_{k}": v for k, v in caption_accuracy(caps, [{(s.colour, s.kind) for s in sh}
                                                                     for _, sh in scenes]).items()}
    # the last item answered by name (a reasoning query when one exists)
    qa = [(im, *[(q, a) for q, a, _ in qa_items(sh, rng, read_style=False)
                            if a not in POINTING_ANSWERS][-1]) for im, sh in scenes]
    answers = generate(model, tok, [(im, q) for im, q, _ in qa])
    quality["answer_exact"] = float(np.mean([a.strip().lower() == t.lower() for a, (_, _, t) in
                                             zip(answers, qa, strict=True)]))
    quality["example"] = {"caption": caps[0], "truth": caption(scenes[0][1]) + ".", "question": qa[0][1],
                          "answer": answers[0]}
    quality.update(word_grounding(model, tok, scenes))
    model.train()
    return quality


@torch.no_grad()
def word_grounding(model, tok, scenes: list[tuple[np.ndarray, list]]) -> dict[str, float]:
    """Mean AUROC of the word-to-image-token dot products for the named shape's token cells, over every colour
    and kind word of the true captions of ``scenes`` (teacher forced, 8 scenes per forward pass): against all
    other cells (``grounding_auroc``) and against the other shapes' cells only (``grounding_auroc_shapes``)."""
    sims, words = [], word_ids(tok)
    for i in range(0, len(scenes), 8):
        chunk = scenes[i:i + 8]
        b = _batch(model, tok, [(im, "Describe the image.", caption(sh) + ".") for im, sh in chunk])
        h = model.model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                        pixel_values=b.pixel_values_clip).last_hidden_state
        got = gather_mentions(h, b.input_ids, [sh for _, sh in chunk], tok.image_token_id, words, _grid(model))
        if len(got[1]):
            sims.append(got)
    if not sims:
        return {"grounding_auroc": float("nan"), "grounding_auroc_shapes": float("nan")}
    img, word, target, other = (torch.cat(t) for t in zip(*sims, strict=True))
    return {"grounding_auroc": grounding_auroc(img, word, target),
            "grounding_auroc_shapes": grounding_auroc(img, word, target, other)}


def _train_phase(stage: Stage, model, tok, params, *, lr: float, batch: int, captions_only: bool, seed: int,
                 max_steps: int | None, pointing_weight: float = 0.0, mix: RequestMix | None = None) -> float:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    stage.resume({"model": model}, opt)
    rng = np.random.default_rng([seed, 12, stage.step])
    model.train()
    loss = torch.tensor(float("nan"))
    words = word_ids(tok) if pointing_weight > 0 else None
    while stage.elapsed() < stage.budget_s and (max_steps is None or stage.step < max_steps):
        lm, point = _losses(model, tok, _examples(rng, batch, captions_only, mix), words)
        loss = lm + pointing_weight * point
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if not stage.tick({"model": model}, opt):
            break
    return float(loss.detach())


def train_llava(out: Path, *, align_s: float, instruct_s: float, seed: int = 0, batch: int = 16,
                sizes: LlavaSizes | None = None, max_steps: int | None = None, eval_n: int = 40,
                pointing_weight: float = 1.0, mix: RequestMix | None = None) -> dict:
    """Both LLaVA stages into ``out/llava`` (``out/llava_align`` holds the first); needs ``out/clip``.
    ``pointing_weight`` scales the grounding loss of the instruction stage (``read.miniature.grounding``; 0 turns
    it off, as before it existed); ``mix``: the share of READ-style requests (default ``RequestMix()``)."""
    sizes = sizes or LlavaSizes()
    mix = mix or RequestMix()
    clip_folder = Path(out) / "clip"
    if not (clip_folder / "stage.json").is_file():
        raise FileNotFoundError(f"{clip_folder}: run the CLIP stage first")
    record = Path(out) / "llava" / "stage.json"
    if record.is_file():
        return json.loads(record.read_text())
    tok = _tokenizer(Path(out) / "llava", sizes.vocab)
    torch.manual_seed(seed)
    model = build_llava(sizes, clip_folder, tok)
    align = Stage(out, "llava_align", budget_s=align_s)
    for p in model.parameters():
        p.requires_grad_(False)
    projector = list(model.model.multi_modal_projector.parameters())
    if align.done:
        model.model.multi_modal_projector.load_state_dict(
            torch.load(align.folder / "projector.pt", map_location="cpu", weights_only=True))
    else:
        for p in projector:
            p.requires_grad_(True)
        loss = _train_phase(align, model, tok, projector, lr=1e-3, batch=batch, captions_only=True, seed=seed,
                            max_steps=max_steps)
        torch.save(model.model.multi_modal_projector.state_dict(), align.folder / "projector.pt")
        align.finish({"final_loss": loss})
    final = Stage(out, "llava", budget_s=instruct_s)  # its clock starts after the alignment phase
    lm = model.model.language_model
    params = projector + list(lm.parameters()) + list(model.lm_head.parameters())
    for p in params:
        p.requires_grad_(True)
    loss = _train_phase(final, model, tok, params, lr=1e-3, batch=batch, captions_only=False, seed=seed + 1,
                        max_steps=max_steps, pointing_weight=pointing_weight, mix=mix)
    quality = evaluate_llava(model, tok, n=eval_n)
    model.save_pretrained(final.folder)
    return final.finish(quality, final_loss=loss, align=align.record(), sizes=sizes.__dict__,
                        pointing_weight=pointing_weight, mix=mix.__dict__)
