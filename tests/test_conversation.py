"""Prompt building and LLaVA-v1 label masking against hand-written expectations.

Labels are checked segment by segment: each expected segment is encoded with the ``sentencepiece`` library
directly and marked supervised or ignored by hand (only assistant answers and their ``</s>``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from conftest import train_llama_sp_model

from read.data.conversation import (
    IGNORE_INDEX,
    SYSTEM_LLAVA_V1,
    SYSTEM_VICUNA_V1,
    build_prompt,
    tokenize_conversation,
    wrap_image_tokens,
)
from read.model.tokenizer import ReadTokenizer

SYS = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
N = 5


@pytest.fixture(scope="module")
def sp_and_tok(tmp_path_factory: pytest.TempPathFactory) -> tuple[spm.SentencePieceProcessor, ReadTokenizer]:
    """A LLaMA-style SentencePiece model trained here; ReadTokenizer loads it from an official-layout folder."""
    corpus = [
        SYS,
        "USER: ASSISTANT: Sure, the segmentation result is. What is the dog in this image?",
        "Please output segmentation mask. And the tree? No, it is not here. It is red green blue circle.",
    ]
    model_bytes = train_llama_sp_model(corpus, 330)
    d: Path = tmp_path_factory.mktemp("conv_tok")
    (d / "tokenizer.model").write_bytes(model_bytes)
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    v = sp.get_piece_size()
    (d / "added_tokens.json").write_text(f'{{"[SEG]": {v}, "<im_start>": {v + 1}, "<im_end>": {v + 2}}}')
    return sp, ReadTokenizer.from_pretrained(d)


# ------------------------------------------------------------------------------------------------- prompts


def test_system_prompts_exact() -> None:
    assert SYSTEM_LLAVA_V1 == SYS
    assert SYSTEM_VICUNA_V1 == (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    )


def test_build_prompt_one_round() -> None:
    p = build_prompt([("<image>\nWhat is it?", "It is [SEG].")])
    assert p == SYS + " USER: <image>\nWhat is it? ASSISTANT: It is [SEG].</s>"


def test_build_prompt_two_rounds_and_open_answer() -> None:
    p = build_prompt([("q1", "a1"), ("q2", None)], template="vicuna_v1")
    assert p == SYSTEM_VICUNA_V1 + " USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT:"
    assert build_prompt([("q", "")]).endswith("USER: q ASSISTANT:")
    with pytest.raises(ValueError):
        build_prompt([("q", "a")], template="llama_2")  # type: ignore[arg-type]


def test_wrap_image_tokens() -> None:
    assert wrap_image_tokens("<image>\nq") == "<im_start><image><im_end>\nq"
    assert wrap_image_tokens("<image>\nq", use_im_start_end=False) == "<image>\nq"


# -------------------------------------------------------------------------------------------------- labels


def _segments(
    sp: spm.SentencePieceProcessor, segs: list[tuple[str | int | list[int], bool]]
) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    for part, supervised in segs:
        piece_ids = (
            sp.encode(part) if isinstance(part, str) else ([part] if isinstance(part, int) else list(part))
        )
        ids += piece_ids
        labels += piece_ids if supervised else [IGNORE_INDEX] * len(piece_ids)
    return ids, labels


def test_two_round_labels(sp_and_tok: tuple[spm.SentencePieceProcessor, ReadTokenizer]) -> None:
    sp, tok = sp_and_tok
    v = sp.get_piece_size()
    seg, ims, ime, img = v, v + 1, v + 2, v + 3
    prompt = wrap_image_tokens(
        build_prompt(
            [
                ("<image>\nWhat is the dog in this image?", "Sure, the segmentation result is [SEG]."),
                ("And the tree?", "No, it is not here."),
            ]
        )
    )
    assert prompt == (
        SYS + " USER: <im_start><image><im_end>\nWhat is the dog in this image? ASSISTANT: "
        "Sure, the segmentation result is [SEG].</s>USER: And the tree? ASSISTANT: No, it is not here.</s>"
    )
    exp_ids, exp_labels = _segments(
        sp,
        [
            (1, False),  # BOS
            (SYS + " USER:", False),
            (ims, False),
            ([img] * N, False),
            (ime, False),
            ("What is the dog in this image? ASSISTANT:", False),
            ("Sure, the segmentation result is", True),  # answer 1
            (seg, True),
            (".", True),
            (2, True),  # [SEG] . </s>
            ("USER: And the tree? ASSISTANT:", False),
            ("No, it is not here.", True),
            (2, True),  # answer 2 + </s>
        ],
    )
    ids, labels = tokenize_conversation(tok, prompt, N)
    assert ids.dtype == torch.long and labels.dtype == torch.long and ids.shape == labels.shape
    assert ids.tolist() == exp_ids
    assert labels.tolist() == exp_labels
    assert int((ids == img).sum()) == N and bool((labels[ids == img] == IGNORE_INDEX).all())
    # Only the answers and their </s> are supervised.
    sup = [i for i, lab in zip(ids.tolist(), labels.tolist(), strict=True) if lab != IGNORE_INDEX]
    n_expected = len(sp.encode("Sure, the segmentation result is")) + 1 + len(sp.encode(".")) + 1
    n_expected += len(sp.encode("No, it is not here.")) + 1
    assert len(sup) == n_expected
    assert tok.decode(sup) == "Sure, the segmentation result is[SEG].</s>No, it is not here.</s>"


def test_single_image_token_matches_official_collapsed(
    sp_and_tok: tuple[spm.SentencePieceProcessor, ReadTokenizer],
) -> None:
    """With one image id the sequence is the official one (the -200 placeholder replaced by the image id)."""
    sp, tok = sp_and_tok
    prompt = wrap_image_tokens(build_prompt([("<image>\nWhat is the dog?", "It is [SEG].")]))
    ids, labels = tokenize_conversation(tok, prompt, 1)
    official = [tok.image_token_id if i == -200 else i for i in tok.tokenizer_image_token(prompt)]
    assert ids.tolist() == official
    n_answer = len(sp.encode("It is")) + 1 + len(sp.encode(".")) + 1
    assert labels.tolist()[-n_answer:] == ids.tolist()[-n_answer:]
    assert all(lab == IGNORE_INDEX for lab in labels.tolist()[:-n_answer])


def test_no_im_start_end(sp_and_tok: tuple[spm.SentencePieceProcessor, ReadTokenizer]) -> None:
    sp, tok = sp_and_tok
    v = sp.get_piece_size()
    prompt = build_prompt([("<image>\nWhat is the dog?", "It is red.")])
    exp_ids, exp_labels = _segments(
        sp,
        [
            (1, False),
            (SYS + " USER: ", False),
            ([v + 3] * N, False),
            ("\nWhat is the dog? ASSISTANT:", False),
            ("It is red.", True),
            (2, True),
        ],
    )
    ids, labels = tokenize_conversation(tok, prompt, N)
    assert (ids.tolist(), labels.tolist()) == (exp_ids, exp_labels)


def test_mismatch_raises_with_prompt(sp_and_tok: tuple[spm.SentencePieceProcessor, ReadTokenizer]) -> None:
    _, tok = sp_and_tok
    twice = build_prompt([("<image>\nq ASSISTANT: x", "It is red.")])  # two separators in one round
    with pytest.raises(ValueError, match="tokenization mismatch"):
        tokenize_conversation(tok, twice, N)


def test_max_length_skips_check_like_official(
    sp_and_tok: tuple[spm.SentencePieceProcessor, ReadTokenizer],
) -> None:
    sp, tok = sp_and_tok
    prompt = wrap_image_tokens(
        build_prompt([("<image>\nWhat is the dog?", "It is red."), ("And the tree?", None)])
    )
    with pytest.raises(ValueError, match="tokenization mismatch"):  # a round with two separators
        tokenize_conversation(tok, build_prompt([("<image>\nq ASSISTANT: x", "It is red.")]), N)
    # A generation prompt: its open last round is unsupervised; the complete first round keeps its labels.
    _, open_labels = tokenize_conversation(tok, prompt, N)
    # Official: the check only runs while the counted length is below model_max_length. The counted length here
    # is the first round (image = 1 token): BOS..'red.' + </s>.
    first_round = len(tok.tokenizer_image_token(prompt.split("</s>")[0]))
    ids, labels = tokenize_conversation(tok, prompt, N, max_length=first_round)
    n_sup = len(sp.encode("It is red.")) + 1
    sup = labels[labels != IGNORE_INDEX].tolist()
    assert sup == sp.encode("It is red.") + [2] and len(sup) == n_sup
    assert open_labels.tolist() == labels.tolist()
    assert ids.tolist()[-len(sp.encode("USER: And the tree? ASSISTANT:")) :] == sp.encode(
        "USER: And the tree? ASSISTANT:"
    )


def test_generation_prompt_has_no_supervised_position():
    from read.data.conversation import build_prompt, tokenize_conversation, wrap_image_tokens
    from read.model.tokenizer import ReadTokenizer

    tok = ReadTokenizer.build_tiny(600)
    prompt = build_prompt([(wrap_image_tokens("<image>\nWhat is the red circle?"), None)])
    assert prompt.endswith("ASSISTANT:")
    ids, labels = tokenize_conversation(tok, prompt, 4)
    assert (labels == -100).all()
    assert ids.tolist() == tok.encode_with_image(prompt, 4)
