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

import io
import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sentencepiece as spm

__all__ = ["IMAGE_PLACEHOLDER_ID", "AddedToken", "ReadTokenizer"]

IMAGE_PLACEHOLDER_ID = -200
"""The official ``IMAGE_TOKEN_INDEX``: one placeholder per image in :meth:`ReadTokenizer.tokenizer_image_token`."""

SP_MODEL_FILE = "tokenizer.model"
READ_TOKENIZER_FILE = "read_tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
ADDED_TOKENS_FILE = "added_tokens.json"
_FORMAT = "read-tokenizer"
_FORMAT_VERSION = 1

IM_START_TOKEN = "<im_start>"
IM_END_TOKEN = "<im_end>"
LLAVA_HF_PAD_TOKEN = "<pad>"


@dataclass(frozen=True)
class AddedToken:
    """A token outside the SentencePiece vocabulary (or the strip flags of a SentencePiece control piece).

    Attributes:
        content: the token's text, matched literally in the input.
        id: its id.
        lstrip: strip whitespace on the token's left (the chunk before it is ``rstrip()``-ed).
        rstrip: strip whitespace on the token's right (the chunk after it is ``lstrip()``-ed).
        special: skipped by ``decode(skip_special_tokens=True)``.

    A token added with transformers-4.31 ``add_tokens("...")`` (a plain string) behaves as
    ``lstrip=rstrip=True``; an ``AddedToken`` object (``<s>``, llava-hf's ``<image>``) uses its own flags.
    """

    content: str
    id: int
    lstrip: bool = True
    rstrip: bool = True
    special: bool = False


# --------------------------------------------------------------------------------------------------------------
# Built-in corpus of the tiny tokenizer
# --------------------------------------------------------------------------------------------------------------

_TINY_EXTRA_WORDS = (
    "red green blue yellow orange purple pink brown black white gray grey cyan magenta dark light bright pale "
    "circle square rectangle triangle ellipse oval disc disk ring star cross diamond polygon shape shapes "
    "object objects thing things left right top bottom middle centre center upper lower small large big tiny "
    "the a an of on in at to and or with without near next behind above below one two three four five six "
    "cat dog person man woman car bus tree sky road building table chair bottle cup bird horse sheep cow "
    "segment segmentation mask masks region area image picture photo please output result Sure Yes No not "
    "0 1 2 3 4 5 6 7 8 9 10 100 2025"
)


def _tiny_corpus() -> list[str]:
    """System prompts, question/answer templates (placeholders removed) and a few shape/colour words."""
    # Local import: read.data.conversation does not depend on this module, so there is no import cycle.
    from read.data.conversation import SYSTEM_LLAVA_V1, SYSTEM_VICUNA_V1

    path = Path(__file__).resolve().parents[1] / "data" / "qa_templates.json"
    data = json.loads(path.read_text(encoding="utf-8"))
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


# --------------------------------------------------------------------------------------------------------------
# Reading a checkpoint's added tokens
# --------------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def _flags_of(entry: Any) -> tuple[bool, bool] | None:
    """(lstrip, rstrip) of a serialized ``AddedToken`` dict; None for a plain string or a missing entry."""
    if isinstance(entry, Mapping) and "content" in entry:
        return bool(entry.get("lstrip", False)), bool(entry.get("rstrip", False))
    return None


def _tokens_from_hf_files(directory: Path, special_names: set[str]) -> list[AddedToken]:
    """Added tokens and control-piece flags from ``tokenizer_config.json`` and ``added_tokens.json``.

    ``added_tokens_decoder`` entries win over ``added_tokens.json`` for flags; conflicting ids raise. Tokens of
    the legacy ``added_tokens.json`` strip both sides (they were added as plain strings) and are special when
    their text is in ``special_names``.

    Returns:
        Tokens that may include entries with ids inside the SentencePiece range (llava-hf lists ``<unk>``,
        ``<s>``, ``</s>`` in ``added_tokens_decoder``) and id -1 for the ``bos/eos/unk_token`` dicts of a
        4.31-style config; :meth:`ReadTokenizer._split_base_and_added` sorts them out.
    """
    by_content: dict[str, AddedToken] = {}

    def put(tok: AddedToken, source: Path) -> None:
        old = by_content.get(tok.content)
        if old is not None and old.id != tok.id:
            raise ValueError(
                f"token {tok.content!r} has id {tok.id} in {source} but id {old.id} in another tokenizer file"
            )
        if old is None:
            by_content[tok.content] = tok

    config_path = directory / TOKENIZER_CONFIG_FILE
    if config_path.is_file():
        config = _read_json(config_path)
        for key, entry in (config.get("added_tokens_decoder") or {}).items():
            flags = _flags_of(entry)
            if flags is None:
                raise ValueError(
                    f"{config_path}: added_tokens_decoder[{key!r}] is not a token dict: {entry!r}"
                )
            put(
                AddedToken(entry["content"], int(key), flags[0], flags[1], bool(entry.get("special", False))),
                config_path,
            )
        # Special-token entries (4.31 layout: {"__type": "AddedToken", "content": "<s>", "lstrip": false, ...}).
        for name in ("bos_token", "eos_token", "unk_token"):
            flags = _flags_of(config.get(name))
            if flags is not None and config[name]["content"] not in by_content:
                by_content[config[name]["content"]] = AddedToken(
                    config[name]["content"], -1, flags[0], flags[1], True
                )

    added_path = directory / ADDED_TOKENS_FILE
    if added_path.is_file():
        for content, idx in _read_json(added_path).items():
            # Legacy file: the official code added these with add_tokens(str), i.e. plain strings (strip both).
            put(AddedToken(content, int(idx), True, True, content in special_names), added_path)
    return list(by_content.values())


# --------------------------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------------------------


class ReadTokenizer:
    """Slow-``LlamaTokenizer`` (transformers 4.31, ``legacy=True``) semantics on a SentencePiece model.

    Build it with :meth:`from_pretrained` (a checkpoint directory or hub id) or :meth:`build_tiny` (tests).
    """

    def __init__(
        self,
        model_proto: bytes,
        added_tokens: Sequence[AddedToken] = (),
        *,
        seg_token: str = "[SEG]",
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
            ValueError: inconsistent ids, a required token that is not a single id, or a model without BOS/EOS.
        """
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        self._seg_token = seg_token
        self._image_token = image_token
        self._use_im_start_end = bool(use_im_start_end)
        self._pad_token = pad_token
        self._control_flags = dict(control_flags or {})
        self._check_control_pieces()
        self._added: list[AddedToken] = []
        for tok in sorted(added_tokens, key=lambda t: t.id):
            self._append_added(tok)
        self._ensure_added(seg_token, special=False, strip=True)
        if self._use_im_start_end:
            self._ensure_added(IM_START_TOKEN, special=True, strip=True)
            self._ensure_added(IM_END_TOKEN, special=True, strip=True)
        self._ensure_added(image_token, special=True, strip=False)
        self._rebuild_index()
        self._pad_id = self._single_id(pad_token, "pad token")
        for role, tok in self._required_tokens().items():
            self._single_id(tok, role)

    # ---------------------------------------------------------------------------------------------- construction

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        *,
        seg_token: str = "[SEG]",
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
        directory = cls._resolve_directory(path_or_hub_id, revision)
        model_path = directory / SP_MODEL_FILE
        if not model_path.is_file():
            raise FileNotFoundError(
                f"no {SP_MODEL_FILE} in {directory}: ReadTokenizer needs the SentencePiece model of the checkpoint"
            )
        proto = model_path.read_bytes()
        read_path = directory / READ_TOKENIZER_FILE
        if read_path.is_file():
            added, flags, saved_pad = cls._parse_read_file(read_path)
        else:
            special_names = {IM_START_TOKEN, IM_END_TOKEN, image_token, LLAVA_HF_PAD_TOKEN}
            tokens = _tokens_from_hf_files(directory, special_names)
            added, flags = cls._split_base_and_added(proto, tokens, directory)
            saved_pad = None
        return cls(
            proto,
            added,
            seg_token=seg_token,
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
        sentences = _tiny_corpus() + list(extra_sentences)
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
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "sentencepiece_vocab_size": self.sp_vocab_size,
            "control_tokens": [
                {"content": piece, "id": self._sp.piece_to_id(piece), "lstrip": lstrip, "rstrip": rstrip}
                for piece, (lstrip, rstrip) in sorted(self._control_flags.items())
            ],
            "added_tokens": [asdict(t) for t in self._added],
            "pad_token": self._pad_token,
            "seg_token": self._seg_token,
            "image_token": self._image_token,
            "use_im_start_end": self._use_im_start_end,
        }
        read_path = out / READ_TOKENIZER_FILE
        read_path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return [model_path, read_path]

    @staticmethod
    def _resolve_directory(path_or_hub_id: str | Path, revision: str | None) -> Path:
        """A local directory for ``path_or_hub_id``, downloading the tokenizer files for a hub id."""
        path = Path(path_or_hub_id).expanduser()
        if path.is_dir():
            return path
        if path.is_file():
            return path.parent
        name = str(path_or_hub_id)
        looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
        if looks_local:
            raise FileNotFoundError(f"tokenizer directory {name!r} does not exist")
        return ReadTokenizer._download_from_hub(name, revision)

    @staticmethod
    def _download_from_hub(repo_id: str, revision: str | None) -> Path:
        """Fetch ``tokenizer.model`` and the optional token files of a hub repo; return their folder."""
        try:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
        except ImportError as e:  # pragma: no cover - huggingface_hub comes with transformers
            raise OSError(
                f"{repo_id!r} is not a local directory and huggingface_hub is not installed; "
                "pass a local directory containing tokenizer.model"
            ) from e
        try:
            model_file = Path(hf_hub_download(repo_id, SP_MODEL_FILE, revision=revision))
        except Exception as e:  # noqa: BLE001 - any failure means the same thing to the user
            raise OSError(
                f"could not fetch {SP_MODEL_FILE} of {repo_id!r} from the Hugging Face Hub ({type(e).__name__}: {e}). "
                f"If you have the checkpoint locally, pass its directory (the folder containing {SP_MODEL_FILE})."
            ) from e
        for filename in (READ_TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, ADDED_TOKENS_FILE):
            try:
                hf_hub_download(repo_id, filename, revision=revision)
            except EntryNotFoundError as e:
                if isinstance(e, LocalEntryNotFoundError):
                    # Offline and not cached: we cannot tell whether the file exists, and guessing would give
                    # wrong ids, so refuse.
                    raise OSError(
                        f"{filename} of {repo_id!r} is not in the local cache and the hub is unreachable; "
                        f"pass a local directory containing {SP_MODEL_FILE} and the tokenizer files"
                    ) from e
        return model_file.parent

    @staticmethod
    def _parse_read_file(path: Path) -> tuple[list[AddedToken], dict[str, tuple[bool, bool]], str | None]:
        """Added tokens, control flags and pad token of a ``read_tokenizer.json``."""
        data = _read_json(path)
        if data.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a {_FORMAT} file (format={data.get('format')!r})")
        if int(data.get("version", 0)) > _FORMAT_VERSION:
            raise ValueError(f"{path} has version {data['version']}; this code reads up to {_FORMAT_VERSION}")
        added = [AddedToken(**t) for t in data.get("added_tokens", [])]
        flags = {c["content"]: (bool(c["lstrip"]), bool(c["rstrip"])) for c in data.get("control_tokens", [])}
        return added, flags, data.get("pad_token")

    @staticmethod
    def _split_base_and_added(
        proto: bytes, tokens: list[AddedToken], directory: Path
    ) -> tuple[list[AddedToken], dict[str, tuple[bool, bool]]]:
        """Separate true added tokens (id >= V) from entries that describe SentencePiece pieces (id < V)."""
        sp = spm.SentencePieceProcessor(model_proto=proto)
        v = sp.get_piece_size()
        added: list[AddedToken] = []
        flags: dict[str, tuple[bool, bool]] = {}
        for tok in tokens:
            if tok.id < 0:  # bos/eos/unk entry of tokenizer_config.json without an id
                flags[tok.content] = (tok.lstrip, tok.rstrip)
            elif tok.id < v:
                piece = sp.id_to_piece(tok.id)
                if piece != tok.content:
                    raise ValueError(
                        f"{directory}: token {tok.content!r} is declared with id {tok.id}, but that id is the "
                        f"SentencePiece piece {piece!r} in {SP_MODEL_FILE}"
                    )
                flags[tok.content] = (tok.lstrip, tok.rstrip)
            else:
                added.append(tok)
        return added, flags

    # -------------------------------------------------------------------------------------------- vocabulary

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
        if self._use_im_start_end:
            tokens.update({"<im_start> token": IM_START_TOKEN, "<im_end> token": IM_END_TOKEN})
        return tokens

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
