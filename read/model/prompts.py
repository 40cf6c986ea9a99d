"""Conversation-template constants of the official LLaVA fork (spec 4.5), shared by the tokenizer (model layer,
its tiny SentencePiece corpus) and the data pipeline (``read.data.conversation`` builds the prompts)."""

from __future__ import annotations

__all__ = ["ROLES", "SEP", "SEP2", "SYSTEM_LLAVA_V1", "SYSTEM_PROMPTS", "SYSTEM_VICUNA_V1"]

SYSTEM_LLAVA_V1 = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
"""System prompt of ``conv_llava_v1`` (official training template)."""

SYSTEM_VICUNA_V1 = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
"""System prompt of ``conv_vicuna_v1`` (what the official test/demo scripts end up using)."""

SYSTEM_PROMPTS: dict[str, str] = {"llava_v1": SYSTEM_LLAVA_V1, "vicuna_v1": SYSTEM_VICUNA_V1}
"""Template name -> system prompt."""

ROLES = ("USER", "ASSISTANT")
SEP = " "
SEP2 = "</s>"
