"""Synthetic scenes (the reasoning benchmark's renderer) with the texts the stand-in models learn from: captions
for CLIP and LLaVA's alignment stage, questions and answers for its instruction stage."""

from __future__ import annotations

import numpy as np

from read.data.synth.reasoning import draw_scene, implicit_queries
from read.data.synthetic import COLOURS, KINDS, Shape
from read.data.templates import (
    LONG_ANSWER_TEMPLATE,
    LONG_QUESTION_TEMPLATE,
    SHORT_QUESTION_TEMPLATE,
    VAL_ANSWER,
    VAL_LONG_QUESTION,
    VAL_SHORT_QUESTION,
    choose,
)

__all__ = ["NUMBERS", "POINTING_ANSWERS", "caption", "caption_words", "qa_items", "qa_pairs", "read_style_item",
           "read_style_request", "scene", "vocabulary_sentences"]

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


POINTING_ANSWERS = ("It is here.", "Here it is.", "Sure, it is here.")


def qa_items(shapes: list[Shape], rng: np.random.Generator,
             read_style: bool = True) -> list[tuple[str, str, int | None]]:
    """Instruction data about one scene as (question, answer, index of the one shape the answer is about, or
    None): count, colour of a unique kind, kind of a colour, where a named shape is (answered by pointing, see
    ``read.miniature.grounding``), and every unambiguous one-step reasoning query of the benchmark (corners /
    size / relation) answered with the target's name; with ``read_style``, two requests in READ's template words
    (``read_style_item``: one naming a shape, one with a reasoning query when the scene has one)."""
    out: list[tuple[str, str, int | None]] = [("How many shapes are there?", f"{NUMBERS[len(shapes)]}.", None),
                                              ("Describe the image.", caption(shapes) + ".", None)]
    for kind in KINDS:
        same = [i for i, s in enumerate(shapes) if s.kind == kind]
        if len(same) == 1:
            out.append((f"What colour is the {kind}?", f"{shapes[same[0]].colour}.", same[0]))
    k = int(rng.integers(len(shapes)))
    out.append((f"What shape is {shapes[k].colour}?", f"a {shapes[k].kind}.", k))
    k = int(rng.integers(len(shapes)))
    out.append((f"Where is the {shapes[k].colour} {shapes[k].kind}?",
                POINTING_ANSWERS[int(rng.integers(len(POINTING_ANSWERS)))], k))
    implicit = implicit_queries(shapes) if len(shapes) > 1 else []
    for target, query, _ in implicit:
        out.append((query, f"the {shapes[target].colour} {shapes[target].kind}.", target))
    if not read_style:
        return out
    k = int(rng.integers(len(shapes)))
    out.append(read_style_item(shapes, k, None, rng))
    if implicit:
        target, query, _ = implicit[int(rng.integers(len(implicit)))]
        out.append(read_style_item(shapes, target, query, rng))
    return out


def read_style_item(shapes: list[Shape], target: int, query: str | None, rng: np.random.Generator,
                    val_share: float | None = None) -> tuple[str, str, int]:
    """A request in the words of READ's templates (``read.data.templates``: the training lists and the fixed
    validation prompt, as ``read.data.reason_seg`` phrases them) about shape ``target``: the short template with
    its name when ``query`` is None, else the long one with the query sentence; answered by a READ answer
    template whose ``[SEG]`` is the target's name. The miniature language model thus knows READ's English as
    LLaMA does, and the answer's tokens point at the target (``read.miniature.grounding``). ``val_share``: the
    probability of the validation wording (question and answer); ``None`` makes it one template among the
    others."""
    name = f"the {shapes[target].colour} {shapes[target].kind}"
    if val_share is None:  # the validation prompt as one more template
        shorts, longs, answers = (SHORT_QUESTION_TEMPLATE + [VAL_SHORT_QUESTION],
                                  LONG_QUESTION_TEMPLATE + [VAL_LONG_QUESTION], LONG_ANSWER_TEMPLATE + [VAL_ANSWER])
    elif rng.random() < val_share:
        shorts, longs, answers = [VAL_SHORT_QUESTION], [VAL_LONG_QUESTION], [VAL_ANSWER]
    else:
        shorts, longs, answers = SHORT_QUESTION_TEMPLATE, LONG_QUESTION_TEMPLATE, LONG_ANSWER_TEMPLATE
    if query is None:
        question = choose(shorts, rng).format(class_name=name)
    else:
        question = choose(longs, rng).format(sent=query)
    answer = choose(answers, rng).replace("[SEG]", name)
    return question.removeprefix("<image>\n"), answer, target


def read_style_request(shapes: list[Shape], rng: np.random.Generator,
                       val_share: float) -> tuple[str, str, int]:
    """One ``read_style_item``: a reasoning query (when the scene has one) or a named shape, each half the time."""
    implicit = implicit_queries(shapes) if len(shapes) > 1 else []
    if implicit and rng.random() < 0.5:
        target, query, _ = implicit[int(rng.integers(len(implicit)))]
        return read_style_item(shapes, target, query, rng, val_share)
    return read_style_item(shapes, int(rng.integers(len(shapes))), None, rng, val_share)


def qa_pairs(shapes: list[Shape], rng: np.random.Generator) -> list[tuple[str, str]]:
    """``qa_items`` without the target index."""
    return [(q, a) for q, a, _ in qa_items(shapes, rng)]


def vocabulary_sentences() -> list[str]:
    """Sentences covering every word of the captions and questions (for the SentencePiece model)."""
    out = []
    for c in COLOURS:
        for k in KINDS:
            out += [f"a {c} {k}", f"the {c} {k}.", f"What colour is the {k}? {c}.", f"What shape is {c}? a {k}.",
                    f"Which shape is left of the {c} {k}?", f"Which shape is right of the {c} {k}?",
                    f"Which shape is above the {c} {k}?", f"Which shape is below the {c} {k}?"]
    out += [f"Where is the {c} {k}? {a}" for c in COLOURS for k in KINDS for a in POINTING_ANSWERS]
    out += ["How many shapes are there? one. two. three. four.", "Describe the image.",
            "Which shape has three corners?", "Which shape has four corners?", "Which shape is round?",
            "Which is the largest shape?", "Which is the smallest shape?", "a red triangle, a blue circle and a green"
            " rectangle"]
    return out
