"""Conversation prompts and LLaVA-v1 label masking, as in the official code (spec 4.5).

Prompt (separator style TWO, ``sep=" "``, ``sep2="</s>"``)::

    system + " " + "USER: " + q + " " + "ASSISTANT: " + a + "</s>"      (per round, rounds concatenated)

with ``"ASSISTANT:"`` (no trailing space) when the last answer is missing. Labels follow the official LLaVA-v1
rule: only the assistant answers and their ``</s>`` are supervised; lengths are counted with the image as ONE
token (the official ``-200`` placeholder) and the result is applied to the sequence in which the image
placeholder is expanded to ``num_image_tokens`` image ids (all ignored).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from read.model.prompts import ROLES, SEP, SEP2, SYSTEM_LLAVA_V1, SYSTEM_PROMPTS, SYSTEM_VICUNA_V1

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from read.model.tokenizer import ReadTokenizer

__all__ = [
    "IGNORE_INDEX",
    "SYSTEM_LLAVA_V1",
    "SYSTEM_VICUNA_V1",
    "ROLES",
    "SEP",
    "SEP2",
    "build_prompt",
    "wrap_image_tokens",
    "tokenize_conversation",
]

IGNORE_INDEX = -100

Template = Literal["llava_v1", "vicuna_v1"]
_SYSTEMS = SYSTEM_PROMPTS


def system_prompt(template: Template = "llava_v1") -> str:
    """The system prompt of ``template``."""
    try:
        return _SYSTEMS[template]
    except KeyError:
        raise ValueError(
            f"unknown conversation template {template!r} (expected one of {sorted(_SYSTEMS)})"
        ) from None


def build_prompt(turns: list[tuple[str, str | None]], template: Template = "llava_v1") -> str:
    """The official ``Conversation.get_prompt()`` for ``(question, answer)`` rounds.

    A falsy message (``None`` or ``""``) renders as ``"ROLE:"`` with no separator, exactly as the official code.
    """
    out = system_prompt(template) + SEP
    seps = (SEP, SEP2)
    for question, answer in turns:
        for i, (role, message) in enumerate(zip(ROLES, (question, answer), strict=True)):
            out += f"{role}: {message}{seps[i]}" if message else f"{role}:"
    return out


def wrap_image_tokens(
    text: str,
    use_im_start_end: bool = True,
    *,
    image_token: str = "<image>",
    im_start: str = "<im_start>",
    im_end: str = "<im_end>",
) -> str:
    """Replace every ``<image>`` by ``<im_start><image><im_end>`` (no-op when ``use_im_start_end`` is False)."""
    if not use_im_start_end:
        return text
    return text.replace(image_token, im_start + image_token + im_end)


def _official_labels(
    tokenizer: ReadTokenizer, prompt: str, total_len: int, max_length: int | None, *, open_round: bool = False
) -> list[bool]:
    """Which positions of the collapsed sequence (image = 1 token) are supervised, by the official rule.

    With ``open_round`` (a generation prompt ending with ``"ASSISTANT:"``) the unanswered last round is left
    unsupervised and not counted, so the length check does not apply to it.

    Raises:
        ValueError: the counted length differs from ``total_len`` (the official code asserts), unless the count
            reached ``max_length``.
    """
    sep = SEP + ROLES[1] + ": "
    supervised = [True] * total_len
    cur = 1
    supervised[0] = False  # BOS
    for rnd in prompt.split(SEP2):
        if rnd == "":
            break
        parts = rnd.split(sep)
        if len(parts) != 2:
            break
        round_len = len(tokenizer.tokenizer_image_token(rnd))
        instruction_len = len(tokenizer.tokenizer_image_token(parts[0] + sep)) - 2
        for j in range(cur, min(cur + instruction_len, total_len)):
            supervised[j] = False
        cur += round_len
    for j in range(cur, total_len):
        supervised[j] = False
    if not open_round and (max_length is None or cur < max_length) and cur != total_len:
        raise ValueError(
            f"tokenization mismatch: the official LLaVA-v1 label rule counts {cur} tokens but the prompt has "
            f"{total_len} (image counted as one token); labels would be misaligned. Prompt: {prompt!r}"
        )
    return supervised


def tokenize_conversation(
    tokenizer: ReadTokenizer, prompt: str, num_image_tokens: int, *, max_length: int | None = None
) -> tuple[Tensor, Tensor]:
    """Input ids and labels of one conversation row, image placeholder expanded.

    Args:
        tokenizer: the READ tokenizer.
        prompt: the full prompt from :func:`build_prompt` (after :func:`wrap_image_tokens`), e.g.
            ``"A chat ... USER: <im_start><image><im_end>\\nWhat is ...? ASSISTANT: Sure, ... [SEG].</s>"``.
        num_image_tokens: image ids per ``<image>`` (576 for LLaVA-1.5 at 336 px).
        max_length: the official ``tokenizer.model_max_length``, counted with the image as ONE token as the
            official code does. When the counted length reaches it, the consistency check is skipped (official
            behaviour for sequences that are truncated later). No truncation is done here.

    Returns:
        ``(input_ids, labels)``, both ``LongTensor[T]``; ``labels`` is :data:`IGNORE_INDEX` except on the
        assistant answers and their ``</s>``. A generation prompt (ending with ``"ASSISTANT:"``) has no
        supervised position.

    Raises:
        ValueError: the official length count disagrees with the real tokenisation (the message shows the
            prompt), e.g. a prompt without a complete ``" ASSISTANT: "`` round.
    """
    import torch  # local: keeps importing the prompt helpers light

    from read.model.tokenizer import IMAGE_PLACEHOLDER_ID

    if num_image_tokens < 1:
        raise ValueError(f"num_image_tokens must be >= 1, got {num_image_tokens}")
    collapsed = tokenizer.tokenizer_image_token(prompt)
    open_round = prompt.endswith(f"{ROLES[1]}:")  # a generation prompt: the last answer is None
    supervised = _official_labels(tokenizer, prompt, len(collapsed), max_length, open_round=open_round)
    input_ids: list[int] = []
    labels: list[int] = []
    for idx, keep in zip(collapsed, supervised, strict=True):
        if idx == IMAGE_PLACEHOLDER_ID:
            input_ids.extend([tokenizer.image_token_id] * num_image_tokens)
            labels.extend([IGNORE_INDEX] * num_image_tokens)
        else:
            input_ids.append(idx)
            labels.append(idx if keep else IGNORE_INDEX)
    return torch.tensor(input_ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)
