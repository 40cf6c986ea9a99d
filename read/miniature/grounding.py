"""Word-to-patch grounding for the miniature LLaVA: the stand-in for what large pretrained VLMs show without being
asked (the last-layer state of a word that names an object is most similar to the image tokens of that object),
which READ's SasP relies on. A 20-minute LLaVA does not acquire it from captions alone (AUROC of word-to-patch
dot products about 0.6, docs/BENCHMARKS.md), so its instruction stage adds a pointing loss at every word naming
a shape: a softmax over the image tokens of the dot products with that word's last-layer state, trained towards
the shape's share of each token cell (cross-entropy with soft targets).

Pure functions; the scenes are square (as the benchmark's), so CLIP's resize-and-centre-crop is a plain resize and
image token ``k`` covers cell ``(k // g, k % g)`` of a ``g x g`` grid."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from read.data.synthetic import COLOURS, KINDS, Shape
from read.utils.stats import auroc

__all__ = ["cell_fractions", "gather_mentions", "grounding_auroc", "mentions", "pointing_loss", "word_ids"]


def word_ids(tok) -> tuple[dict[int, str], dict[int, str]]:  # noqa: ANN001 - ReadTokenizer
    """Token id -> colour word, token id -> kind word, for the words the tokenizer keeps as one piece."""
    colours, kinds = {}, {}
    for words, table in ((COLOURS, colours), (KINDS, kinds)):
        for w in words:
            ids = tok.encode(w, add_bos=False)
            if len(ids) == 1:
                table[ids[0]] = w
    return colours, kinds


def mentions(input_ids: list[int], shapes: list[Shape], colours: dict[int, str],
             kinds: dict[int, str]) -> list[tuple[int, int]]:
    """``(position, shape index)`` for every token that names one shape of the scene unambiguously: a colour word
    (colours are distinct within a scene), a kind word right after its shape's colour, or a kind word alone when
    the scene has one shape of that kind. Other words are skipped."""
    by_colour = {s.colour: i for i, s in enumerate(shapes)}
    out = []
    for pos, t in enumerate(input_ids):
        if t in colours and colours[t] in by_colour:
            out.append((pos, by_colour[colours[t]]))
        elif t in kinds:
            prev = input_ids[pos - 1] if pos else None
            if prev in colours and colours[prev] in by_colour and shapes[by_colour[colours[prev]]].kind == kinds[t]:
                out.append((pos, by_colour[colours[prev]]))
                continue
            same = [i for i, s in enumerate(shapes) if s.kind == kinds[t]]
            if len(same) == 1:
                out.append((pos, same[0]))
    return out


def cell_fractions(mask: np.ndarray, grid: int) -> np.ndarray:
    """``[H, W]`` 0/1 mask of a square image -> ``[grid * grid]`` share of each token cell it covers (row-major)."""
    h, w = mask.shape
    if h != w:
        raise ValueError(f"grounding targets need square scenes, got {h}x{w}")
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.adaptive_avg_pool2d(m, grid).flatten().numpy()


def pointing_loss(image_states: Tensor, word_states: Tensor, targets: Tensor) -> Tensor:
    """Mean over words of the cross-entropy between the softmax over image tokens of
    ``word . image / sqrt(D)`` and the normalised cell shares.

    image_states ``[M, N, D]`` (each word's own image), word_states ``[M, D]``, targets ``[M, N]`` (shares, each
    row with a positive sum). Returns a scalar."""
    logits = torch.einsum("mnd,md->mn", image_states, word_states) / image_states.shape[-1] ** 0.5
    q = targets / targets.sum(-1, keepdim=True)
    return -(q * logits.float().log_softmax(-1)).sum(-1).mean()


def grounding_auroc(image_states: Tensor, word_states: Tensor, targets: Tensor, others: Tensor | None = None,
                    threshold: float = 0.5) -> float:
    """Mean AUROC, over words, of the dot-product map with the cells the named shape covers by more than
    ``threshold`` as positives (shapes ``[M, N, D]``, ``[M, D]``, ``[M, N]``). Negatives: every other cell, or,
    with ``others`` ``[M, N]`` (the other shapes' shares), only the cells other shapes cover by more than
    ``threshold``, which asks whether the map tells the named shape from the rest rather than shapes from the
    background. Words without positives or negatives are skipped; NaN when none is left."""
    sims = torch.einsum("mnd,md->mn", image_states.float(), word_states.float()).numpy()
    got = []
    for i, (s, t) in enumerate(zip(sims, targets.numpy(), strict=True)):
        pos = t > threshold
        keep = np.ones_like(pos) if others is None else pos | (others[i].numpy() > threshold)
        got.append(auroc(s[keep], pos[keep]))
    got = [a for a in got if not np.isnan(a)]
    return float(np.mean(got)) if got else float("nan")


def gather_mentions(states: Tensor, input_ids: Tensor, scenes: list[list[Shape]], image_token_id: int,
                    words: tuple[dict[int, str], dict[int, str]], grid: int, *, labels: Tensor | None = None,
                    referents: list[int | None] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The pointing problems of a batch: every word that names a shape (``mentions``) and, for a row whose
    answer is about one shape (``referents[b]``, with ``labels`` ``[B, L]`` marking the answer by ids other than
    -100), every answer token, which points at that shape.

    states ``[B, L, D]`` last-layer states, input_ids ``[B, L]`` (image placeholders expanded to ``grid ** 2``
    tokens), ``scenes[b]`` the shapes of row ``b``. Returns image states ``[M, grid**2, D]``, word states
    ``[M, D]``, the named shape's cell shares ``[M, grid**2]`` and the other shapes' ``[M, grid**2]`` for the ``M``
    mentions (``M`` may be 0)."""
    img, word, target, other = [], [], [], []
    for b, shapes in enumerate(scenes):
        ids = input_ids[b].tolist()
        where = (input_ids[b] == image_token_id).nonzero()[:, 0]
        if len(where) != grid * grid:
            raise ValueError(f"row {b}: {len(where)} image tokens, expected {grid * grid}")
        found = dict(mentions(ids, shapes, *words))
        if referents is not None and referents[b] is not None:
            if labels is None:
                raise ValueError("referents need the labels that mark the answers")
            for pos in (labels[b] != -100).nonzero()[:, 0].tolist():
                found.setdefault(pos, referents[b])
        shares = [cell_fractions(s.mask, grid) for s in shapes]  # once per row, shared by its mentions
        total = np.sum(shares, 0)
        for pos, k in sorted(found.items()):
            if shares[k].sum() <= 0:
                continue
            img.append(states[b, where])
            word.append(states[b, pos])
            target.append(torch.from_numpy(shares[k]))
            other.append(torch.from_numpy(total - shares[k]))
    d, n = states.shape[-1], grid * grid
    if not word:
        return states.new_zeros(0, n, d), states.new_zeros(0, d), torch.zeros(0, n), torch.zeros(0, n)
    return (torch.stack(img), torch.stack(word), torch.stack(target).to(states.dtype),
            torch.stack(other).to(states.dtype))
