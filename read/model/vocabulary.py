"""The token vocabulary of a READ tokenizer: SentencePiece pieces plus added tokens, their ids and roles.

:class:`Vocabulary` owns ids and lookups (which token is ``[SEG]``, which ids are new to the checkpoint, which ids
are outside the official output vocabulary); :class:`read.model.tokenizer.ReadTokenizer` adds text processing
(encode/decode with the official slow-tokenizer semantics) and the constructors from checkpoint files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import sentencepiece as spm

from read.model.tokenizer_files import IM_END_TOKEN, IM_START_TOKEN, LLAVA_HF_PAD_TOKEN, AddedToken

__all__ = ["Vocabulary"]


class Vocabulary:
    """SentencePiece ids ``0..V-1`` followed by consecutive added tokens (see ``read.model.tokenizer``)."""

    def __init__(
        self,
        model_proto: bytes,
        added_tokens: Sequence[AddedToken] = (),
        *,
        seg_token: str = "[SEG]",
        rej_token: str | None = None,
        image_token: str = "<image>",
        use_im_start_end: bool = True,
        pad_token: str = "<unk>",
        control_flags: Mapping[str, tuple[bool, bool]] | None = None,
    ) -> None:
        """Wrap a serialized SentencePiece model plus the checkpoint's added tokens.

        Args:
            model_proto: bytes of ``tokenizer.model``.
            added_tokens: tokens with ids ``V, V+1, ...`` (``V`` = SentencePiece size), consecutive.
            seg_token, image_token: added (plain string / no-strip special respectively) when missing.
            use_im_start_end: add ``<im_start>``/``<im_end>`` when missing and expose their ids.
            pad_token: a single token of the vocabulary (official: ``<unk>``, id 0).
            control_flags: ``{piece: (lstrip, rstrip)}`` for ``<unk>``, ``<s>``, ``</s>`` (default: no strip).

        Raises:
            ValueError: inconsistent ids, a pad token outside the vocabulary, or a model without BOS/EOS.
        """
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        self._seg_token = seg_token
        self._rej_token = rej_token
        self._image_token = image_token
        self._use_im_start_end = bool(use_im_start_end)
        self._pad_token = pad_token
        self._control_flags = dict(control_flags or {})
        self._check_control_pieces()
        self._added: list[AddedToken] = []
        self._new_ids: list[int] = []
        for tok in sorted(added_tokens, key=lambda t: t.id):
            self._append_added(tok)
        self._ensure_added(seg_token, special=False, strip=True)
        if rej_token is not None:  # GSVA's add_task_tokens: [SEG], then [REJ], both plain strings
            self._ensure_added(rej_token, special=False, strip=True)
        if self._use_im_start_end:
            self._ensure_added(IM_START_TOKEN, special=True, strip=True)
            self._ensure_added(IM_END_TOKEN, special=True, strip=True)
        self._ensure_added(image_token, special=True, strip=False)
        self._rebuild_index()
        try:
            self._pad_id = self.token_to_id(pad_token)
        except ValueError as e:
            raise ValueError(f"pad token {pad_token!r} is not a single token of this vocabulary") from e
        self._validate()

    def _validate(self) -> None:
        """Further checks of a subclass (the tokenizer checks that required tokens encode to one id)."""

    # ---------------------------------------------------------------------------------------------- construction

    def _check_control_pieces(self) -> None:
        for name, idx in (("unk", self._sp.unk_id()), ("bos", self._sp.bos_id()), ("eos", self._sp.eos_id())):
            if idx < 0:
                raise ValueError(
                    f"the SentencePiece model has no {name} piece; a LLaMA-style model is required"
                )

    def _append_added(self, tok: AddedToken) -> None:
        """Append one added token, checking that ids stay consecutive from ``V`` and contents unique."""
        expected = self.sp_vocab_size + len(self._added)
        if tok.id != expected:
            raise ValueError(
                f"added token {tok.content!r} has id {tok.id} but the next free id is {expected} "
                f"(added-token ids must follow the SentencePiece vocabulary of size {self.sp_vocab_size} without gaps)"
            )
        if any(t.content == tok.content for t in self._added):
            raise ValueError(f"added token {tok.content!r} is declared twice")
        if self._is_sp_piece(tok.content):
            raise ValueError(
                f"added token {tok.content!r} is already the SentencePiece piece {self._sp.piece_to_id(tok.content)}"
            )
        if not tok.content:
            raise ValueError("an added token cannot be the empty string")
        self._added.append(tok)

    def _ensure_added(self, content: str, *, special: bool, strip: bool) -> None:
        """Add ``content`` at the next free id unless it is already an added token."""
        if any(t.content == content for t in self._added):
            return
        next_id = self.sp_vocab_size + len(self._added)
        self._append_added(AddedToken(content, next_id, lstrip=strip, rstrip=strip, special=special))
        self._new_ids.append(next_id)

    def _is_sp_piece(self, text: str) -> bool:
        return self._sp.piece_to_id(text) != self._sp.unk_id() or text == self._sp.id_to_piece(
            self._sp.unk_id()
        )

    def _rebuild_index(self) -> None:
        """Lookup tables and the no-split regex (alternatives longest first: leftmost-longest matching)."""
        self._added_by_content = {t.content: t for t in self._added}
        self._added_by_id = {t.id: t for t in self._added}
        no_split: dict[str, AddedToken] = {}
        for idx in (self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id()):
            piece = self._sp.id_to_piece(idx)
            lstrip, rstrip = self._control_flags.get(piece, (False, False))
            no_split[piece] = AddedToken(piece, idx, lstrip, rstrip, special=True)
        no_split.update(self._added_by_content)
        self._no_split = no_split
        alternatives = sorted(no_split, key=lambda s: (-len(s), s))
        self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))

    def _required_tokens(self) -> dict[str, str]:
        tokens = {"seg token": self._seg_token, "image token": self._image_token}
        if self._rej_token is not None:
            tokens["rej token"] = self._rej_token
        if self._use_im_start_end:
            tokens.update({"<im_start> token": IM_START_TOKEN, "<im_end> token": IM_END_TOKEN})
        return tokens

    def token_to_id(self, token: str) -> int:
        """Id of an added token, a control piece or any SentencePiece piece.

        Raises:
            ValueError: ``token`` is not one token of this vocabulary.
        """
        added = self._added_by_content.get(token)
        if added is not None:
            return added.id
        if self._is_sp_piece(token):
            return int(self._sp.piece_to_id(token))
        raise ValueError(
            f"{token!r} is not a token of this vocabulary (neither added nor a SentencePiece piece)"
        )

    def id_to_token(self, idx: int) -> str:
        """The piece or added-token text of ``idx``."""
        self._check_id(idx)
        added = self._added_by_id.get(idx)
        return added.content if added is not None else self._sp.id_to_piece(idx)

    def _check_id(self, idx: int) -> None:
        if not 0 <= idx < len(self):
            raise ValueError(f"token id {idx} is outside the vocabulary [0, {len(self)})")

    def __len__(self) -> int:
        """Total vocabulary: SentencePiece pieces plus added tokens."""
        return self.sp_vocab_size + len(self._added)

    def __repr__(self) -> str:
        added = ", ".join(f"{t.content}={t.id}" for t in self._added)
        return f"ReadTokenizer(sp_vocab={self.sp_vocab_size}, added=[{added}], pad={self._pad_token}={self._pad_id})"

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (DataLoader workers): the SentencePiece processor is rebuilt from the proto bytes."""
        state = self.__dict__.copy()
        del state["_sp"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)

    # -------------------------------------------------------------------------------------------- properties

    @property
    def sp_vocab_size(self) -> int:
        """Size ``V`` of the SentencePiece vocabulary (ids ``0..V-1``)."""
        return int(self._sp.get_piece_size())

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model (bytes of ``tokenizer.model``)."""
        return self._proto

    @property
    def added_tokens(self) -> tuple[AddedToken, ...]:
        """Added tokens in id order."""
        return tuple(self._added)

    @property
    def bos_id(self) -> int:
        return int(self._sp.bos_id())

    @property
    def eos_id(self) -> int:
        return int(self._sp.eos_id())

    @property
    def unk_id(self) -> int:
        return int(self._sp.unk_id())

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def pad_token(self) -> str:
        return self._pad_token

    @property
    def seg_token(self) -> str:
        return self._seg_token

    @property
    def image_token(self) -> str:
        return self._image_token

    @property
    def use_im_start_end(self) -> bool:
        return self._use_im_start_end

    @property
    def seg_token_id(self) -> int:
        return self._added_by_content[self._seg_token].id

    @property
    def rej_token(self) -> str | None:
        return self._rej_token

    @property
    def rej_token_id(self) -> int | None:
        """GSVA's ``[REJ]`` id, or ``None`` when the vocabulary has no rejection token."""
        return self._added_by_content[self._rej_token].id if self._rej_token is not None else None

    @property
    def image_token_id(self) -> int:
        return self._added_by_content[self._image_token].id

    @property
    def im_start_id(self) -> int | None:
        """``<im_start>`` id, or None when ``use_im_start_end`` is off."""
        return self._added_by_content[IM_START_TOKEN].id if self._use_im_start_end else None

    @property
    def im_end_id(self) -> int | None:
        """``<im_end>`` id, or None when ``use_im_start_end`` is off."""
        return self._added_by_content[IM_END_TOKEN].id if self._use_im_start_end else None

    @property
    def new_token_ids(self) -> tuple[int, ...]:
        """Ids this vocabulary appended itself because the checkpoint's files lacked them (``[SEG]``,
        ``<im_start>``, ``<im_end>`` on a llava-hf base; ``<image>`` on an official release). Their embedding and
        ``lm_head`` rows hold no trained values: :func:`read.model.llava_backbone.init_new_token_rows` initialises
        them as the official ``resize_token_embeddings`` does."""
        return tuple(self._new_ids)

    @property
    def non_output_ids(self) -> tuple[int, ...]:
        """Ids outside the official output vocabulary: the image token (the official code has no ``<image>``
        entry, only the ``-200`` placeholder) and llava-hf's ``<pad>`` (official LLaVA-1.5 pads with ``<unk>``).
        The language loss and greedy decoding never give them probability (see ``ReadModel.output_vocab``)."""
        ids = [self.image_token_id]
        pad = self._added_by_content.get(LLAVA_HF_PAD_TOKEN)
        if pad is not None:
            ids.append(pad.id)
        return tuple(sorted(ids))
