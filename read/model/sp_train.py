"""Training the LLaMA-style SentencePiece model of the tiny tokenizer (tests, quickstart), in memory.

The corpus is the official system prompts, the question/answer templates of ``read/data/qa_templates.json``
(package data, read as a file) and some shape/colour words, so the tiny tokenizer covers every prompt the tiny
pipeline builds.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sentencepiece as spm

from read.model.prompts import SYSTEM_LLAVA_V1, SYSTEM_VICUNA_V1

__all__ = ["tiny_corpus", "train_llama_style_sentencepiece"]

QA_TEMPLATES_FILE = Path(__file__).resolve().parents[1] / "data" / "qa_templates.json"


_TINY_EXTRA_WORDS = (
    "red green blue yellow orange purple pink brown black white gray grey cyan magenta dark light bright pale "
    "circle square rectangle triangle ellipse oval disc disk ring star cross diamond polygon shape shapes "
    "object objects thing things left right top bottom middle centre center upper lower small large big tiny "
    "the a an of on in at to and or with without near next behind above below one two three four five six "
    "cat dog person man woman car bus tree sky road building table chair bottle cup bird horse sheep cow "
    "segment segmentation mask masks region area image picture photo please output result Sure Yes No not "
    "0 1 2 3 4 5 6 7 8 9 10 100 2025"
)


def tiny_corpus() -> list[str]:
    """System prompts, question/answer templates (placeholders removed) and a few shape/colour words."""
    data = json.loads(QA_TEMPLATES_FILE.read_text(encoding="utf-8"))
    lines: list[str] = [SYSTEM_LLAVA_V1, SYSTEM_VICUNA_V1, "USER: ASSISTANT:", _TINY_EXTRA_WORDS]
    groups: list[Any] = list(data["templates"].values())
    groups += [v for k, v in data.items() if k.startswith("val_reasonseg_templates")]
    for group in groups:
        lists = group.values() if isinstance(group, Mapping) else [group]
        for lst in lists:
            lines.extend(str(s) for s in lst)
    cleaned = []
    for line in lines:
        for placeholder in ("<image>\n", "<image>", "[SEG]", "{class_name}", "{sent}", "{gt_name}"):
            line = line.replace(placeholder, "")
        line = line.strip()
        if line:
            cleaned.append(line)
    return cleaned


def train_llama_style_sentencepiece(sentences: Iterable[str], vocab_size: int) -> bytes:
    """Train a LLaMA-style SentencePiece BPE model in memory and return its serialized proto.

    LLaMA settings: BPE, byte fallback, identity normalisation, dummy prefix, whitespace kept, digits split,
    ``<unk>=0, <s>=1, </s>=2``, no pad piece. Single-threaded, hence deterministic for a given input order.
    """
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(sentences)),
        model_writer=writer,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return writer.getvalue()
