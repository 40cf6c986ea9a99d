"""Question/answer templates (exact data of the official ``qa_template.py``, spec Appendix A).

The lists are loaded from ``qa_templates.json`` shipped with the package. Training draws templates at random
(from the caller's ``rng``); evaluation uses LISA's fixed ReasonSeg templates or a seeded choice.

The ``GSVA_*`` lists are GSVA's (``LeapLabTHU/GSVA`` ``model/llava/constants.py``, the JSON's ``"gsva"`` key):
the multi-target ``SHORT_QUESTION_LIST_MODE4`` and the slot answers ``ANSWER_LIST_MODE4_START/TEMPLATE/END``
used by GSVA's referring and semantic-segmentation draws, and LISA's lists that GSVA's ReasonSeg draw uses
(``SHORT_QUESTION_LIST``, ``LONG_QUESTION_LIST``, ``EXPLANATORY_QUESTION_LIST`` with its ``explaination`` typo,
``ANSWER_LIST``). ``GREFCOCO_EVAL_*`` are the pieces of GSVA's fixed gRefCOCO evaluation prompt
(``data/dataset.py`` ``ValDataset``), spacing quirks included (:mod:`read.data.gsva_eval`).
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


def _gsva() -> dict:
    return _load()["gsva"]


GSVA_SHORT_QUESTION_LIST: list[str] = _gsva()["SHORT_QUESTION_LIST"]
GSVA_SHORT_QUESTION_LIST_MODE4: list[str] = _gsva()["SHORT_QUESTION_LIST_MODE4"]
GSVA_LONG_QUESTION_LIST: list[str] = _gsva()["LONG_QUESTION_LIST"]
GSVA_EXPLANATORY_QUESTION_LIST: list[str] = _gsva()["EXPLANATORY_QUESTION_LIST"]
GSVA_ANSWER_LIST: list[str] = _gsva()["ANSWER_LIST"]
GSVA_ANSWER_LIST_MODE4_START: list[str] = _gsva()["ANSWER_LIST_MODE4_START"]
GSVA_ANSWER_LIST_MODE4_TEMPLATE: list[str] = _gsva()["ANSWER_LIST_MODE4_TEMPLATE"]
GSVA_ANSWER_LIST_MODE4_END: list[str] = _gsva()["ANSWER_LIST_MODE4_END"]
# GSVA's gRefCOCO evaluation prompt: prefix + ", ".join(expressions) + suffix; "Sure," + ", ".join(slots) + ".".
GREFCOCO_EVAL_QUESTION_PREFIX: str = _gsva()["grefcoco_eval"]["question_prefix"]
GREFCOCO_EVAL_QUESTION_SUFFIX: str = _gsva()["grefcoco_eval"]["question_suffix"]
GREFCOCO_EVAL_ANSWER_PREFIX: str = _gsva()["grefcoco_eval"]["answer_prefix"]
GREFCOCO_EVAL_ANSWER_SUFFIX: str = _gsva()["grefcoco_eval"]["answer_suffix"]


def choose(templates: list[str], rng: np.random.Generator) -> str:
    """One template, uniformly at random from ``rng``."""
    return templates[int(rng.integers(len(templates)))]
