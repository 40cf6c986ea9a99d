"""The packaged templates equal the specification's Appendix A, entry by entry (order and duplicates kept)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from read.data import templates as T

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "READ_OFFICIAL.md"
QUESTION_LISTS = {"SHORT_QUESTION_TEMPLATE", "LONG_QUESTION_TEMPLATE"}
COUNTS = {"SHORT_QUESTION_TEMPLATE": 100, "LONG_QUESTION_TEMPLATE": 49, "NEG_ANSWER_TEMPLATE": 100,
          "LONG_ANSWER_TEMPLATE": 35, "SHORT_ANSWER_TEMPLATE": 81, "CORRECT_ANSWER_TEMPLATE": 99,
          "EXPLANATORY_QUESTION_TEMPLATE": 3}


def spec_lists() -> dict[str, list[str]]:
    text = SPEC.read_text(encoding="utf-8")
    appendix = text[text.index("## Appendix A"):]
    out = {}
    for section in re.split(r"^### ", appendix, flags=re.M)[1:]:
        name = section.split(" ", 1)[0].strip()
        if name in COUNTS:
            out[name] = re.findall(r"^\d+\. `(.*)`$", section, flags=re.M)
    return out


@pytest.mark.skipif(not SPEC.is_file(), reason="the specification (../shared) is not beside the project")
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_templates_equal_the_spec(name):
    expected = spec_lists()[name]
    if name in QUESTION_LISTS:  # the appendix writes the "<image>\n" prefix once, not per entry
        expected = ["<image>\n" + e for e in expected]
    assert getattr(T, name) == expected


def test_counts_and_lisa_val_prompts():
    for name, n in COUNTS.items():
        assert len(getattr(T, name)) == n, name
    assert T.VAL_SHORT_QUESTION == "<image>\nWhat is {class_name} in this image? Please output segmentation mask."
    assert T.VAL_LONG_QUESTION == "<image>\n{sent} Please output segmentation mask."
    assert T.VAL_ANSWER == "Sure, the segmentation result is [SEG]."
