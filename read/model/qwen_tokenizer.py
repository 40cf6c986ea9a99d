"""The Qwen2.5-VL tokenizer (byte-level BPE, ChatML) with READ's added tokens, behind the attributes the data
pipeline and the model use from :class:`read.model.tokenizer.ReadTokenizer` (``seg_token_id``, ``image_token_id``,
``pad_id``, ``eos_id``, ``encode``, ``decode``, ``new_token_ids``, ``non_output_ids``).

Qwen2.5-VL's own tokens: ``<|endoftext|>`` (padding), ``<|im_start|>``/``<|im_end|>`` (ChatML turns; ``<|im_end|>``
ends an answer, so it is the EOS of generation), ``<|vision_start|>``/``<|vision_end|>`` around an image, and
``<|image_pad|>`` repeated once per merged patch (the image token). ``[SEG]`` (and ``[REJ]`` for GSVA) are added as
special tokens, so each is one id that the BPE never splits. There is no BOS.

``build_tiny`` trains a byte-level BPE with the ``tokenizers`` library on the tiny corpus (tests, quick runs);
``from_pretrained`` reads a Qwen2.5-VL checkpoint directory or hub id (``Qwen/Qwen2.5-VL-3B-Instruct``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["QWEN_SPECIAL_TOKENS", "QwenTokenizer"]

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>")
PAD, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = QWEN_SPECIAL_TOKENS


class QwenTokenizer:
    """A transformers fast tokenizer with READ's tokens; ids are the fast tokenizer's.

    Args:
        hf: a ``PreTrainedTokenizerFast`` holding every token of :data:`QWEN_SPECIAL_TOKENS`.
        seg_token, rej_token: READ's segmentation / rejection tokens (added when missing).
    """

    kind = "qwen2_5_vl"

    def __init__(self, hf, *, seg_token: str = "[SEG]", rej_token: str | None = None) -> None:  # noqa: ANN001
        before = len(hf)
        missing = [t for t in (seg_token, rej_token) if t and hf.convert_tokens_to_ids(t) in (None, hf.unk_token_id)]
        if missing:
            hf.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        self.hf = hf
        self.seg_token = seg_token
        self.rej_token = rej_token
        self.new_token_ids = tuple(range(before, len(hf)))
        for tok in (*QWEN_SPECIAL_TOKENS, seg_token, *([rej_token] if rej_token else [])):
            ids = self.encode(tok)
            if len(ids) != 1:
                raise ValueError(f"{tok!r} must be one token of this Qwen tokenizer, it encodes to {ids}")

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, seg_token: str = "[SEG]",
                        rej_token: str | None = None) -> QwenTokenizer:
        """The tokenizer of a Qwen2.5-VL checkpoint (local directory or hub id)."""
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(path_or_hub_id))
        except OSError as e:
            raise OSError(f"cannot load the Qwen tokenizer from {str(path_or_hub_id)!r}: {e}. Give "
                          "model.vlm.pretrained (or model.vlm.tokenizer) as a local directory when the hub is "
                          "unreachable.") from e
        return cls(hf, seg_token=seg_token, rej_token=rej_token)

    @classmethod
    def build_tiny(cls, vocab_size: int = 600, *, seg_token: str = "[SEG]", rej_token: str | None = None
                   ) -> QwenTokenizer:
        """A byte-level BPE trained in memory on the tiny corpus plus ChatML words (deterministic)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        from read.model.sp_train import tiny_corpus

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        specials = list(QWEN_SPECIAL_TOKENS) + [seg_token] + ([rej_token] if rej_token else [])
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        corpus = tiny_corpus() + ["system user assistant You are a helpful assistant."]
        tok.train_from_iterator(corpus, trainer=trainer)
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=IM_END,
                                     additional_special_tokens=specials[1:])
        return cls(hf, seg_token=seg_token, rej_token=rej_token)

    def save_pretrained(self, directory: str | Path) -> list[Path]:
        """Write the tokenizer files (transformers layout) into ``directory``."""
        return [Path(p) for p in self.hf.save_pretrained(str(directory))]

    def digest(self) -> str:
        """sha256 of the whole tokenizer (vocabulary, merges, added tokens) and READ's token choices."""
        import hashlib

        h = hashlib.sha256(self.hf.backend_tokenizer.to_str().encode())
        h.update(f"seg={self.seg_token}|rej={self.rej_token}".encode())
        return h.hexdigest()

    # -- ids -----------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.hf)

    def __repr__(self) -> str:
        return f"QwenTokenizer(vocab={len(self)}, seg={self.seg_token}={self.seg_token_id})"

    def token_to_id(self, token: str) -> int:
        idx = self.hf.convert_tokens_to_ids(token)
        if idx is None or (idx == self.hf.unk_token_id and token != self.hf.unk_token):
            raise ValueError(f"{token!r} is not a token of this vocabulary")
        return int(idx)

    @property
    def seg_token_id(self) -> int:
        return self.token_to_id(self.seg_token)

    @property
    def rej_token_id(self) -> int | None:
        return self.token_to_id(self.rej_token) if self.rej_token else None

    @property
    def image_token_id(self) -> int:
        """``<|image_pad|>``: one per merged patch."""
        return self.token_to_id(IMAGE_PAD)

    @property
    def image_token(self) -> str:
        return IMAGE_PAD

    @property
    def pad_id(self) -> int:
        return self.token_to_id(PAD)

    @property
    def eos_id(self) -> int:
        """``<|im_end|>``: the end of an assistant turn, where generation stops."""
        return self.token_to_id(IM_END)

    @property
    def bos_id(self) -> None:
        """Qwen has no BOS."""
        return None

    @property
    def non_output_ids(self) -> tuple[int, ...]:
        """Ids the model never emits: the image and video placeholders and the vision brackets."""
        return tuple(self.token_to_id(t) for t in (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD))

    # -- text ----------------------------------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of ``text`` (special tokens recognised; no BOS exists, ``add_bos`` is ignored)."""
        del add_bos
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; with ``skip_special_tokens`` the ChatML / vision tokens are dropped but ``[SEG]`` and
        ``[REJ]`` are kept (the answer text shows where a mask was asked for)."""
        ids = [int(i) for i in ids]
        if not skip_special_tokens:
            return self.hf.decode(ids, skip_special_tokens=False)
        drop = {self.token_to_id(t) for t in QWEN_SPECIAL_TOKENS}
        return self.hf.decode([i for i in ids if i not in drop], skip_special_tokens=False)
