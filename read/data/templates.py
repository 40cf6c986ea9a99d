"""Question/answer templates (exact data of the official ``qa_template.py``, spec Appendix A).

The lists are loaded from ``qa_templates.json`` shipped with the package. Training draws templates at random
(from the caller's ``rng``); evaluation uses LISA's fixed ReasonSeg templates or a seeded choice.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np


@lru_cache(maxsize=1)
def _load() -> dict:
    with resources.files("read.data").joinpath("qa_templates.json").open("r", encoding="utf-8") as f:
        return json.load(f)


def _templates() -> dict[str, list[str]]:
    return _load()["templates"]


def _val() -> dict[str, list[str]]:
    return _load()["val_reasonseg_templates(dataloaders/test_dataset.py:156-167)"]


SHORT_QUESTION_TEMPLATE: list[str] = _templates()["SHORT_QUESTION_TEMPLATE"]
LONG_QUESTION_TEMPLATE: list[str] = _templates()["LONG_QUESTION_TEMPLATE"]
SHORT_ANSWER_TEMPLATE: list[str] = _templates()["SHORT_ANSWER_TEMPLATE"]
LONG_ANSWER_TEMPLATE: list[str] = _templates()["LONG_ANSWER_TEMPLATE"]
NEG_ANSWER_TEMPLATE: list[str] = _templates()["NEG_ANSWER_TEMPLATE"]
CORRECT_ANSWER_TEMPLATE: list[str] = _templates()["CORRECT_ANSWER_TEMPLATE"]
EXPLANATORY_QUESTION_TEMPLATE: list[str] = _templates()["EXPLANATORY_QUESTION_TEMPLATE"]

# LISA's fixed ReasonSeg validation/test prompts (official test_dataset.py:156-167).
VAL_SHORT_QUESTION: str = _val()["SHORT_QUESTION_TEMPLATE"][0]
VAL_LONG_QUESTION: str = _val()["LONG_QUESTION_TEMPLATE"][0]
VAL_ANSWER: str = _val()["LONG_ANSWER_TEMPLATE"][0]


def choose(templates: list[str], rng: np.random.Generator) -> str:
    """One template, uniformly at random from ``rng``."""
    return templates[int(rng.integers(len(templates)))]
