"""Synthetic scenes (the reasoning benchmark's renderer) with the texts the stand-in models learn from: captions
for CLIP and LLaVA's alignment stage, questions and answers for its instruction stage."""

from __future__ import annotations

import numpy as np

from read.data.synth.reasoning import draw_scene, implicit_queries
from read.data.synthetic import COLOURS, KINDS, Shape

__all__ = ["NUMBERS", "caption", "caption_words", "qa_pairs", "scene", "vocabulary_sentences"]

NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}


def scene(rng: np.random.Generator, size: int, n: int | None = None) -> tuple[np.ndarray, list[Shape]]:
    """An RGB ``[size, size, 3]`` image with ``n`` (default 1-4) shapes of distinct colours, and the shapes."""
    return draw_scene(rng, size, int(n if n is not None else rng.integers(1, 5)))


def _order(shapes: list[Shape]) -> list[Shape]:
    """Left to right by bounding-box centre (the reading order of captions)."""
    return sorted(shapes, key=lambda s: s.bbox[0] + s.bbox[2] / 2)


def caption(shapes: list[Shape]) -> str:
    """``"a red triangle, a blue circle and a green rectangle"`` (left to right)."""
    names = [f"a {s.colour} {s.kind}" for s in _order(shapes)]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def caption_words(text: str) -> set[tuple[str, str]]:
    """The (colour, kind) pairs a caption names: ``"a red triangle and a blue circle"`` ->
    ``{("red", "triangle"), ("blue", "circle")}``; anything else in the text is ignored."""
    words = text.lower().replace(",", " ").replace(".", " ").split()
    return {(a, b) for a, b in zip(words, words[1:], strict=False) if a in COLOURS and b in KINDS}


def qa_pairs(shapes: list[Shape], rng: np.random.Generator) -> list[tuple[str, str]]:
    """Instruction data about one scene: count, colour of a unique kind, kind of a colour, and every unambiguous
    one-step reasoning query of the benchmark (corners / size / relation) answered with the target's name."""
    out = [("How many shapes are there?", f"{NUMBERS[len(shapes)]}."), ("Describe the image.", caption(shapes) + ".")]
    for kind in KINDS:
        same = [s for s in shapes if s.kind == kind]
        if len(same) == 1:
            out.append((f"What colour is the {kind}?", f"{same[0].colour}."))
    s = shapes[int(rng.integers(len(shapes)))]
    out.append((f"What shape is {s.colour}?", f"a {s.kind}."))
    for target, query, _ in implicit_queries(shapes) if len(shapes) > 1 else []:
        out.append((query, f"the {shapes[target].colour} {shapes[target].kind}."))
    return out


def vocabulary_sentences() -> list[str]:
    """Sentences covering every word of the captions and questions (for the SentencePiece model)."""
    out = []
    for c in COLOURS:
        for k in KINDS:
            out += [f"a {c} {k}", f"the {c} {k}.", f"What colour is the {k}? {c}.", f"What shape is {c}? a {k}.",
                    f"Which shape is left of the {c} {k}?", f"Which shape is right of the {c} {k}?",
                    f"Which shape is above the {c} {k}?", f"Which shape is below the {c} {k}?"]
    out += ["How many shapes are there? one. two. three. four.", "Describe the image.",
            "Which shape has three corners?", "Which shape has four corners?", "Which shape is round?",
            "Which is the largest shape?", "Which is the smallest shape?", "a red triangle, a blue circle and a green"
            " rectangle"]
    return out
