"""Faithful re-implementation of the official READ tokenisation on the ``sentencepiece`` library.

The official code tokenises with the transformers-4.31 *slow* ``LlamaTokenizer`` (``use_fast=False``,
``legacy=True``; spec 1.3). transformers 5.x no longer ships it, and its SentencePiece conversion drops the
dummy-prefix ``▁`` on the first word after BOS (STACK.md section 7), so the semantics are reproduced here:

1. No-split tokens (the SentencePiece control pieces ``<unk>``, ``<s>``, ``</s>`` and every added token) are cut
   out of the text first, leftmost-longest match.
2. Whitespace next to a no-split token is stripped according to the token's flags. Tokens that were added as
   plain strings (``[SEG]``, ``<im_start>``, ``<im_end>`` in the official code) strip both sides: the text chunk on
   their left is ``rstrip()``-ed, the chunk on their right ``lstrip()``-ed (so ``"<im_end>\\n..."`` loses the
   newline). ``<s>``, ``</s>``, ``<unk>`` are ``AddedToken(lstrip=False, rstrip=False)`` and strip nothing.
   Chunks left empty are dropped.
3. Every remaining chunk is encoded on its own with ``SentencePieceProcessor.encode(chunk, out_type=str)``
   (``legacy=True``: each chunk gets the dummy prefix ``▁``), pieces are mapped to ids (added tokens first).
4. BOS is prepended (``add_bos_token=True``), no EOS.

The official ``tokenizer_image_token`` splits the prompt on the literal ``"<image>"``, tokenises every chunk with
BOS, keeps only the first BOS and puts one ``-200`` placeholder between chunks. :meth:`ReadTokenizer.
tokenizer_image_token` does exactly that; :meth:`ReadTokenizer.encode_with_image` then expands the placeholder to
``num_image_tokens`` copies of the real ``<image>`` id, as transformers' native LLaVA expects.

Vocabulary (spec 1.3, 7.4): SentencePiece ids ``0..V-1``, then the checkpoint's added tokens (read from
``read_tokenizer.json``, ``tokenizer_config.json`` ``added_tokens_decoder`` or the legacy ``added_tokens.json``),
then, if missing and in this order, the seg token, ``<im_start>``, ``<im_end>`` and the image token. An official
READ checkpoint keeps ``[SEG]=32000, <im_start>=32001, <im_end>=32002`` and gets ``<image>=32003``; a llava-hf one
(``<image>=32000, <pad>=32001``) gets ``[SEG]=32002, <im_start>=32003, <im_end>=32004``.

Deliberate simplifications: ``legacy`` is always True and ``add_bos_token`` always on, whatever a checkpoint's
``tokenizer_config.json`` says (the official code forces ``legacy=True``); the ``normalized`` and
``single_word`` flags of added tokens are ignored (all False in the checkpoints concerned).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import sentencepiece as spm

from read.model.sp_train import tiny_corpus, train_llama_style_sentencepiece
from read.model.tokenizer_files import (
    FORMAT,
    FORMAT_VERSION,
    IM_END_TOKEN,
    IM_START_TOKEN,
    LLAVA_HF_PAD_TOKEN,
    READ_TOKENIZER_FILE,
    SP_MODEL_FILE,
    AddedToken,
    parse_read_file,
    resolve_directory,
    split_base_and_added,
    tokens_from_hf_files,
)
from read.model.vocabulary import Vocabulary

__all__ = ["IMAGE_PLACEHOLDER_ID", "AddedToken", "ReadTokenizer", "expand_image_placeholders"]

IMAGE_PLACEHOLDER_ID = -200
"""The official ``IMAGE_TOKEN_INDEX``: one placeholder per image in :meth:`ReadTokenizer.tokenizer_image_token`."""


class ReadTokenizer(Vocabulary):
    """Slow-``LlamaTokenizer`` (transformers 4.31, ``legacy=True``) semantics on a SentencePiece model.

    Build it with :meth:`from_pretrained` (a checkpoint directory or hub id) or :meth:`build_tiny` (tests); the
    constructor arguments are :class:`read.model.vocabulary.Vocabulary`'s.
    """

    def _validate(self) -> None:
        """The pad token and every required token (``[SEG]``, the image token, ``<im_start>``/``<im_end>``) must
        encode to exactly one id (called at the end of :meth:`Vocabulary.__init__`)."""
        self._single_id(self.pad_token, "pad token")
        for role, tok in self._required_tokens().items():
            self._single_id(tok, role)

    def _single_id(self, token: str, role: str) -> int:
        """The id of ``token``, checking that the tokenizer encodes it as exactly that one id."""
        try:
            idx = self.token_to_id(token)
        except ValueError as e:
            raise ValueError(f"{role} {token!r} is not a single token of this vocabulary") from e
        ids = self.encode(token, add_bos=False)
        if ids != [idx]:
            raise ValueError(f"{role} {token!r} must encode to the single id {idx}, got {ids}")
        return idx

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        *,
        seg_token: str = "[SEG]",
        rej_token: str | None = None,
        image_token: str = "<image>",
        use_im_start_end: bool = True,
        pad_token: str | None = None,
        revision: str | None = None,
    ) -> ReadTokenizer:
        """Load ``tokenizer.model`` and the added tokens of a checkpoint.

        Args:
            path_or_hub_id: a local directory with ``tokenizer.model`` (and optionally ``read_tokenizer.json``,
                ``tokenizer_config.json``, ``added_tokens.json``), the path of a ``tokenizer.model`` file, or a
                Hugging Face Hub id (files fetched with ``huggingface_hub.hf_hub_download``).
            seg_token, image_token, use_im_start_end: see :class:`ReadTokenizer`.
            pad_token: ``None``: the value saved in ``read_tokenizer.json``, else ``"<unk>"`` (official).
            revision: hub revision (hub ids only).

        Raises:
            FileNotFoundError: a local directory without ``tokenizer.model``.
            OSError: a hub id that cannot be fetched (the message suggests a local path).
        """
        directory = resolve_directory(path_or_hub_id, revision)
        model_path = directory / SP_MODEL_FILE
        if not model_path.is_file():
            raise FileNotFoundError(
                f"no {SP_MODEL_FILE} in {directory}: ReadTokenizer needs the SentencePiece model of the checkpoint"
            )
        proto = model_path.read_bytes()
        read_path = directory / READ_TOKENIZER_FILE
        if read_path.is_file():
            added, flags, saved_pad = parse_read_file(read_path)
        else:
            special_names = {IM_START_TOKEN, IM_END_TOKEN, image_token, LLAVA_HF_PAD_TOKEN}
            tokens = tokens_from_hf_files(directory, special_names)
            added, flags = split_base_and_added(proto, tokens, directory)
            saved_pad = None
        return cls(
            proto,
            added,
            seg_token=seg_token,
            rej_token=rej_token,
            image_token=image_token,
            use_im_start_end=use_im_start_end,
            pad_token=pad_token if pad_token is not None else (saved_pad or "<unk>"),
            control_flags=flags,
        )

    @classmethod
    def build_tiny(
        cls,
        vocab_size: int = 600,
        *,
        seed: int = 0,
        seg_token: str = "[SEG]",
        rej_token: str | None = None,
        image_token: str = "<image>",
        use_im_start_end: bool = True,
        pad_token: str = "<unk>",
        extra_sentences: Iterable[str] = (),
    ) -> ReadTokenizer:
        """A small LLaMA-style tokenizer trained in memory (deterministic; well under 1 s).

        The SentencePiece BPE model is trained on the system prompts, the question/answer templates of
        ``read/data/qa_templates.json``, some shape/colour words and ``extra_sentences``. ``seed`` shuffles the
        sentence order before training; single-threaded BPE counts do not depend on that order, so in practice
        every seed gives the same model (the argument lets callers pass one seed to every tiny builder).
        Like llava-hf, ``<image>`` and ``<pad>`` follow at ids ``V`` and ``V+1``; then ``[SEG]``, ``<im_start>``,
        ``<im_end>``.
        """
        sentences = tiny_corpus() + list(extra_sentences)
        random.Random(seed).shuffle(sentences)
        proto = train_llama_style_sentencepiece(sentences, vocab_size)
        v = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
        added = [
            AddedToken(image_token, v, lstrip=False, rstrip=False, special=True),
            AddedToken(LLAVA_HF_PAD_TOKEN, v + 1, lstrip=False, rstrip=False, special=True),
        ]
        return cls(
            proto,
            added,
            seg_token=seg_token,
            rej_token=rej_token,
            image_token=image_token,
            use_im_start_end=use_im_start_end,
            pad_token=pad_token,
        )

    def save_pretrained(self, directory: str | Path) -> list[Path]:
        """Write ``tokenizer.model`` and ``read_tokenizer.json`` (added tokens, ids, strip flags, pad token).

        Returns:
            The written paths. :meth:`from_pretrained` on the directory gives identical ids.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        model_path = out / SP_MODEL_FILE
        model_path.write_bytes(self._proto)
        record = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "sentencepiece_vocab_size": self.sp_vocab_size,
            "control_tokens": [
                {"content": piece, "id": self._sp.piece_to_id(piece), "lstrip": lstrip, "rstrip": rstrip}
                for piece, (lstrip, rstrip) in sorted(self._control_flags.items())
            ],
            "added_tokens": [asdict(t) for t in self._added],
            "pad_token": self._pad_token,
            "seg_token": self._seg_token,
            "rej_token": self._rej_token,
            "image_token": self._image_token,
            "use_im_start_end": self._use_im_start_end,
        }
        read_path = out / READ_TOKENIZER_FILE
        read_path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return [model_path, read_path]

    # ------------------------------------------------------------------------------------------- tokenising

    def _split(self, text: str) -> list[tuple[str, AddedToken | None]]:
        """Cut no-split tokens out of ``text`` and strip whitespace next to them; drop empty chunks."""
        parts: list[tuple[str, AddedToken | None]] = []
        pos = 0
        for m in self._pattern.finditer(text):
            if m.start() > pos:
                parts.append((text[pos : m.start()], None))
            parts.append((m.group(), self._no_split[m.group()]))
            pos = m.end()
        if pos < len(text):
            parts.append((text[pos:], None))
        out: list[tuple[str, AddedToken | None]] = []
        for i, (chunk, tok) in enumerate(parts):
            if tok is None:
                left = parts[i - 1][1] if i > 0 else None
                right = parts[i + 1][1] if i + 1 < len(parts) else None
                if left is not None and left.rstrip:
                    chunk = chunk.lstrip()
                if right is not None and right.lstrip:
                    chunk = chunk.rstrip()
                if not chunk:
                    continue
            out.append((chunk, tok))
        return out

    def _pieces(self, chunk: str) -> list[str]:
        return self._sp.encode(chunk, out_type=str)

    def _piece_id(self, piece: str) -> int:
        added = self._added_by_content.get(piece)
        return added.id if added is not None else int(self._sp.piece_to_id(piece))

    def tokenize(self, text: str) -> list[str]:
        """Pieces and added-token texts of ``text`` (no BOS), like the slow tokenizer's ``tokenize``."""
        pieces: list[str] = []
        for chunk, tok in self._split(text):
            if tok is not None:
                pieces.append(tok.content)
            else:
                pieces.extend(self._pieces(chunk))
        return pieces

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of ``text``; BOS first when ``add_bos`` (official ``tokenizer(text).input_ids``)."""
        ids = [self.bos_id] if add_bos else []
        for chunk, tok in self._split(text):
            if tok is not None:
                ids.append(tok.id)
            else:
                ids.extend(self._piece_id(p) for p in self._pieces(chunk))
        return ids

    def tokenizer_image_token(self, prompt: str, placeholder_id: int = IMAGE_PLACEHOLDER_ID) -> list[int]:
        """The official ``tokenizer_image_token``: one ``placeholder_id`` per literal image-token string.

        The prompt is split on the image-token text; each chunk is tokenised on its own with BOS, only the first
        chunk keeps its BOS. Whitespace stripping therefore never crosses the image placeholder.
        """
        ids = [self.bos_id]
        for k, chunk in enumerate(prompt.split(self._image_token)):
            if k > 0:
                ids.append(placeholder_id)
            ids.extend(self.encode(chunk, add_bos=False))
        return ids

    def encode_with_image(self, prompt: str, num_image_tokens: int) -> list[int]:
        """:meth:`tokenizer_image_token` with each placeholder expanded to ``num_image_tokens`` image ids."""
        if num_image_tokens < 1:
            raise ValueError(f"num_image_tokens must be >= 1, got {num_image_tokens}")
        return expand_image_placeholders(
            self.tokenizer_image_token(prompt), self.image_token_id, num_image_tokens
        )

    def decode(
        self, ids: Iterable[int], skip_special_tokens: bool = False, spaces_between_added_tokens: bool = False
    ) -> str:
        """Text of ``ids``: runs of ordinary pieces go through ``SentencePieceProcessor.decode``.

        Added tokens and the control pieces (``<s>``, ``</s>``, ``<unk>``) appear as their text.
        ``skip_special_tokens`` drops BOS/EOS/UNK/pad and the added tokens flagged special (``<image>``,
        ``<im_start>``, ``<im_end>``, ``<pad>``), not ``[SEG]``. Segments are concatenated, or joined with one
        space when ``spaces_between_added_tokens`` (transformers-4.31 default display).
        """
        skip = {self.bos_id, self.eos_id, self.unk_id, self._pad_id} | {
            t.id for t in self._added if t.special
        }
        segments: list[str] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                segments.append(self._sp.decode(run))
                run.clear()

        for raw in ids:
            idx = int(raw)
            self._check_id(idx)
            if skip_special_tokens and idx in skip:
                continue
            added = self._added_by_id.get(idx)
            if added is not None or self._sp.is_control(idx) or self._sp.is_unknown(idx):
                flush()
                segments.append(self.id_to_token(idx))
            else:
                run.append(idx)
        flush()
        return (" " if spaces_between_added_tokens else "").join(segments)


def expand_image_placeholders(ids: Sequence[int], image_token_id: int, num_image_tokens: int) -> list[int]:
    """Replace every :data:`IMAGE_PLACEHOLDER_ID` in ``ids`` by ``num_image_tokens`` copies of ``image_token_id``."""
    out: list[int] = []
    for idx in ids:
        if idx == IMAGE_PLACEHOLDER_ID:
            out.extend([image_token_id] * num_image_tokens)
        else:
            out.append(idx)
    return out
