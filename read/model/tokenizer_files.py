"""Files of a tokenizer: the token records of transformers checkpoints (``tokenizer_config.json``,
``added_tokens.json``), this project's ``read_tokenizer.json``, and fetching them from the Hugging Face Hub.

:class:`AddedToken` is the record every reader produces; :class:`read.model.tokenizer.ReadTokenizer` consumes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece as spm

__all__ = [
    "ADDED_TOKENS_FILE",
    "IM_END_TOKEN",
    "IM_START_TOKEN",
    "LLAVA_HF_PAD_TOKEN",
    "READ_TOKENIZER_FILE",
    "SP_MODEL_FILE",
    "TOKENIZER_CONFIG_FILE",
    "AddedToken",
    "download_from_hub",
    "parse_read_file",
    "resolve_directory",
    "split_base_and_added",
    "tokens_from_hf_files",
]

SP_MODEL_FILE = "tokenizer.model"
READ_TOKENIZER_FILE = "read_tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
ADDED_TOKENS_FILE = "added_tokens.json"
FORMAT = "read-tokenizer"
FORMAT_VERSION = 1

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


def tokens_from_hf_files(directory: Path, special_names: set[str]) -> list[AddedToken]:
    """Added tokens and control-piece flags from ``tokenizer_config.json`` and ``added_tokens.json``.

    ``added_tokens_decoder`` entries win over ``added_tokens.json`` for flags; conflicting ids raise. Tokens of
    the legacy ``added_tokens.json`` strip both sides (they were added as plain strings) and are special when
    their text is in ``special_names``.

    Returns:
        Tokens that may include entries with ids inside the SentencePiece range (llava-hf lists ``<unk>``,
        ``<s>``, ``</s>`` in ``added_tokens_decoder``) and id -1 for the ``bos/eos/unk_token`` dicts of a
        4.31-style config; :func:`split_base_and_added` sorts them out.
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



def resolve_directory(path_or_hub_id: str | Path, revision: str | None) -> Path:
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
    return download_from_hub(name, revision)

def download_from_hub(repo_id: str, revision: str | None) -> Path:
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

def parse_read_file(path: Path) -> tuple[list[AddedToken], dict[str, tuple[bool, bool]], str | None]:
    """Added tokens, control flags and pad token of a ``read_tokenizer.json``."""
    data = _read_json(path)
    if data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (format={data.get('format')!r})")
    if int(data.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path} has version {data['version']}; this code reads up to {FORMAT_VERSION}")
    added = [AddedToken(**t) for t in data.get("added_tokens", [])]
    flags = {c["content"]: (bool(c["lstrip"]), bool(c["rstrip"])) for c in data.get("control_tokens", [])}
    return added, flags, data.get("pad_token")

def split_base_and_added(
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
