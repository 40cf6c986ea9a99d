"""ReadTokenizer against hand-built expectations computed with the ``sentencepiece`` library directly.

The SentencePiece model is trained here (LLaMA-style: BPE, byte fallback, identity normalisation, dummy prefix),
written to ``tmp/tokenizer.model`` and loaded through :meth:`ReadTokenizer.from_pretrained`. Every expected id
list is a hand-written chunk list: strings are encoded with ``SentencePieceProcessor.encode`` (never through
ReadTokenizer), ints are ids; the chunks encode the transformers-4.31 slow-tokenizer rules (split out added
tokens, strip whitespace around plain-string added tokens, encode each chunk with its own dummy prefix).
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest
import sentencepiece as spm
from conftest import train_llama_sp_model

from read.model.tokenizer import IMAGE_PLACEHOLDER_ID, ReadTokenizer

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = json.loads((ROOT / "read" / "data" / "qa_templates.json").read_text(encoding="utf-8"))[
    "templates"
]

SYS = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
VSYS = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
N = 7  # image tokens per image in these tests (576 in LLaVA-1.5)
IMG_PREFIX = "<image>\n"


def _corpus() -> list[str]:
    lines = [
        SYS,
        VSYS,
        "USER: ASSISTANT: Sure, the segmentation result is.",
        "What is the cat in this image?",
    ]
    lines += ["red green blue circle square triangle dog cat tree water child paper draw object"]
    for group in TEMPLATES.values():
        lines += [
            s.replace("<image>\n", "")
            .replace("[SEG]", "")
            .replace("{class_name}", "")
            .replace("{sent}", "")
            .replace("{gt_name}", "")
            for s in group
        ]
    return lines


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only a LLaMA-style tokenizer.model (trained here, no ReadTokenizer involved)."""
    d = tmp_path_factory.mktemp("spmodel")
    model_bytes = train_llama_sp_model(_corpus(), 520)
    (d / "tokenizer.model").write_bytes(model_bytes)
    return d


@pytest.fixture(scope="module")
def sp(sp_dir: Path) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(sp_dir / "tokenizer.model"))


@pytest.fixture(scope="module")
def V(sp: spm.SentencePieceProcessor) -> int:
    return sp.get_piece_size()


def _copy_model(sp_dir: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "tokenizer.model").write_bytes((sp_dir / "tokenizer.model").read_bytes())
    return dst


def _added_token_dict(content: str, special: bool = True) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


@pytest.fixture(scope="module")
def official_dir(sp_dir: Path, V: int, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Official READ release layout: 4.31 tokenizer_config.json + added_tokens.json ([SEG], <im_start>, <im_end>)."""
    d = _copy_model(sp_dir, tmp_path_factory.mktemp("official"))
    cfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "model_max_length": 2048,
        "tokenizer_class": "LlamaTokenizer",
        "pad_token": None,
        "bos_token": {"__type": "AddedToken", **_added_token_dict("<s>")},
        "eos_token": {"__type": "AddedToken", **_added_token_dict("</s>")},
        "unk_token": {"__type": "AddedToken", **_added_token_dict("<unk>")},
    }
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "added_tokens.json").write_text(json.dumps({"<im_end>": V + 2, "<im_start>": V + 1, "[SEG]": V}))
    return d


@pytest.fixture(scope="module")
def llava_hf_dir(sp_dir: Path, V: int, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """llava-hf layout: added_tokens_decoder with <unk>/<s>/</s> (0..2), <image>=V, <pad>=V+1."""
    d = _copy_model(sp_dir, tmp_path_factory.mktemp("llava_hf"))
    dec = {
        "0": _added_token_dict("<unk>"),
        "1": _added_token_dict("<s>"),
        "2": _added_token_dict("</s>"),
        str(V): _added_token_dict("<image>"),
        str(V + 1): _added_token_dict("<pad>"),
    }
    cfg = {
        "added_tokens_decoder": dec,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "legacy": False,
        "tokenizer_class": "LlamaTokenizer",
    }
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def tok(official_dir: Path) -> ReadTokenizer:
    return ReadTokenizer.from_pretrained(official_dir)


def chunks(sp: spm.SentencePieceProcessor, *parts: str | int | list[int]) -> list[int]:
    """Hand-built expectation: strings -> sentencepiece ids (own dummy prefix), ints/lists -> literal ids."""
    out: list[int] = []
    for p in parts:
        if isinstance(p, str):
            out += sp.encode(p)
        elif isinstance(p, int):
            out.append(p)
        else:
            out += p
    return out


def _q(template: str, **kw: str) -> str:
    assert template.startswith(IMG_PREFIX)
    return template[len(IMG_PREFIX) :].format(**kw)


# ------------------------------------------------------------------------------------------------ id layout


def test_official_layout_ids(tok: ReadTokenizer, V: int) -> None:
    assert (tok.seg_token_id, tok.im_start_id, tok.im_end_id, tok.image_token_id) == (V, V + 1, V + 2, V + 3)
    assert len(tok) == V + 4
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 0)
    assert tok.token_to_id("[SEG]") == V and tok.token_to_id("<s>") == 1


def test_llava_hf_layout_ids(llava_hf_dir: Path, V: int) -> None:
    t = ReadTokenizer.from_pretrained(llava_hf_dir)
    assert t.image_token_id == V and t.token_to_id("<pad>") == V + 1
    assert (t.seg_token_id, t.im_start_id, t.im_end_id) == (V + 2, V + 3, V + 4)
    assert len(t) == V + 5 and t.pad_id == 0
    assert ReadTokenizer.from_pretrained(llava_hf_dir, pad_token="<pad>").pad_id == V + 1
    no_wrap = ReadTokenizer.from_pretrained(llava_hf_dir, use_im_start_end=False)
    assert no_wrap.seg_token_id == V + 2 and len(no_wrap) == V + 3
    assert no_wrap.im_start_id is None and no_wrap.im_end_id is None


def test_build_tiny_layout_and_determinism() -> None:
    t0 = time.perf_counter()
    a = ReadTokenizer.build_tiny(600)
    assert time.perf_counter() - t0 < 2.0
    b = ReadTokenizer.build_tiny(600)
    v = a.sp_vocab_size
    assert v == 600
    assert (a.image_token_id, a.token_to_id("<pad>"), a.seg_token_id, a.im_start_id, a.im_end_id) == (
        600,
        601,
        602,
        603,
        604,
    )
    assert len(a) == 605 and a.pad_id == 0
    text = "A chat between a curious human. USER: <im_start><image><im_end>\nWhat is it? ASSISTANT: It is [SEG].</s>"
    assert a.encode(text) == b.encode(text)
    # The in-memory model is LLaMA-like: dummy prefix on, so the first word gets "▁".
    assert a.tokenize("A chat")[0] == "▁A"


def test_gap_in_added_ids_is_rejected(sp_dir: Path, V: int, tmp_path: Path) -> None:
    d = _copy_model(sp_dir, tmp_path / "gap")
    (d / "added_tokens.json").write_text(json.dumps({"[SEG]": V + 1}))
    with pytest.raises(ValueError, match="next free id"):
        ReadTokenizer.from_pretrained(d)


def test_declared_base_id_must_match_piece(sp_dir: Path, tmp_path: Path) -> None:
    d = _copy_model(sp_dir, tmp_path / "bad")
    (d / "tokenizer_config.json").write_text(
        json.dumps({"added_tokens_decoder": {"5": _added_token_dict("<image>")}})
    )
    with pytest.raises(ValueError, match="SentencePiece piece"):
        ReadTokenizer.from_pretrained(d)


def test_single_id_checks(official_dir: Path, sp: spm.SentencePieceProcessor) -> None:
    with pytest.raises(ValueError, match="pad token"):
        ReadTokenizer.from_pretrained(official_dir, pad_token="<pad>")  # not in the official vocabulary
    with pytest.raises(ValueError, match="pad token"):
        ReadTokenizer.from_pretrained(official_dir, pad_token="the cat")
    piece = next(
        sp.id_to_piece(i) for i in range(3, sp.get_piece_size()) if sp.id_to_piece(i).startswith("▁t")
    )
    with pytest.raises(ValueError, match="SentencePiece piece"):
        ReadTokenizer.from_pretrained(official_dir, image_token=piece)


def test_missing_model_names_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ReadTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ReadTokenizer.from_pretrained(tmp_path / "nope" / "deeper")


def test_hub_failure_names_id(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def fail(repo_id: str, filename: str, **kw: object) -> str:
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    with pytest.raises(OSError, match=r"some-org/some-model.*local") as e:
        ReadTokenizer.from_pretrained("some-org/some-model")
    assert "tokenizer.model" in str(e.value)


def test_hub_download_path(official_dir: Path, monkeypatch: pytest.MonkeyPatch, V: int) -> None:
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    calls: list[str] = []

    def fake(repo_id: str, filename: str, **kw: object) -> str:
        assert repo_id == "rui-qian/READ-fake"
        calls.append(filename)
        if not (official_dir / filename).is_file():
            raise EntryNotFoundError(f"{filename} not in repo")
        return str(official_dir / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    t = ReadTokenizer.from_pretrained("rui-qian/READ-fake")
    assert calls[0] == "tokenizer.model" and "added_tokens.json" in calls
    assert (t.seg_token_id, t.image_token_id) == (V, V + 3)

    def offline(repo_id: str, filename: str, **kw: object) -> str:
        if filename == "tokenizer.model":
            return str(official_dir / filename)
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(OSError, match="rui-qian/READ-fake"):
        ReadTokenizer.from_pretrained("rui-qian/READ-fake")


# ------------------------------------------------------------------------------------------ faithful ids


def test_first_word_has_dummy_prefix(tok: ReadTokenizer, sp: spm.SentencePieceProcessor) -> None:
    """The transformers-5 trap: right after BOS the first word must be '▁A', not 'A'."""
    ids = tok.encode(SYS)
    assert sp.piece_to_id("▁A") != sp.unk_id() and sp.piece_to_id("▁A") != sp.piece_to_id("A")
    assert ids[:2] == [1, sp.piece_to_id("▁A")]
    assert tok.tokenize("A chat")[0] == "▁A"


def test_seg_is_one_id(tok: ReadTokenizer, V: int) -> None:
    assert tok.encode("[SEG]", add_bos=False) == [V]
    assert tok.encode("[SEG][SEG]", add_bos=False) == [V, V]


def test_plain_added_token_strips_both_sides(
    tok: ReadTokenizer, sp: spm.SentencePieceProcessor, V: int
) -> None:
    expected = chunks(sp, "a", V, "b")  # no '▁' piece from the spaces around [SEG]
    assert tok.encode("a [SEG] b", add_bos=False) == expected
    assert tok.encode("a  \t[SEG]\n b", add_bos=False) == expected
    assert tok.tokenize("a [SEG] b") == sp.encode("a", out_type=str) + ["[SEG]"] + sp.encode(
        "b", out_type=str
    )
    assert "▁" not in tok.tokenize("a [SEG] b")
    # Whitespace only between two plain tokens disappears entirely.
    assert tok.encode("x <im_start> <im_end> y", add_bos=False) == chunks(sp, "x", V + 1, V + 2, "y")


def test_control_tokens_do_not_strip(tok: ReadTokenizer, sp: spm.SentencePieceProcessor) -> None:
    # <s>, </s>, <unk> are AddedToken(lstrip=False, rstrip=False): the chunks keep their spaces.
    assert tok.encode("a </s> b", add_bos=False) == chunks(sp, "a ", 2, " b")
    assert tok.encode("x<s>y<unk>", add_bos=False) == chunks(sp, "x", 1, "y", 0)
    assert sp.encode("a ") != sp.encode("a")  # the check above is meaningful


def test_llava_hf_image_token_does_not_strip(
    llava_hf_dir: Path, sp: spm.SentencePieceProcessor, V: int
) -> None:
    t = ReadTokenizer.from_pretrained(llava_hf_dir)
    assert t.encode("x <image> y", add_bos=False) == chunks(sp, "x ", V, " y")
    assert t.encode("x [SEG] y", add_bos=False) == chunks(sp, "x", V + 2, "y")


def _reason_short(sp, V):  # noqa: ANN001, ANN202 - case builders
    q = "What is the red circle in this image? Please output segmentation mask."
    prompt = (
        f"{SYS} USER: <im_start><image><im_end>\n{q} ASSISTANT: Sure, the segmentation result is [SEG].</s>"
    )
    exp = chunks(
        sp,
        1,
        SYS + " USER:",
        V + 1,
        [V + 3] * N,
        V + 2,
        "What is the red circle in this image? Please output segmentation mask. ASSISTANT: "
        "Sure, the segmentation result is",
        V,
        ".",
        2,
    )
    return prompt, exp


def _reason_long(sp, V):  # noqa: ANN001, ANN202
    sent = "Which object could hold water for a thirsty dog?"
    prompt = (
        f"{SYS} USER: <im_start><image><im_end>\n{sent} Please output segmentation mask. "
        "ASSISTANT: Sure, the segmentation result is [SEG].</s>"
    )
    exp = chunks(
        sp,
        1,
        SYS + " USER:",
        V + 1,
        [V + 3] * N,
        V + 2,
        "Which object could hold water for a thirsty dog? Please output segmentation mask. ASSISTANT: "
        "Sure, the segmentation result is",
        V,
        ".",
        2,
    )
    return prompt, exp


def _short_template(sp, V):  # noqa: ANN001, ANN202
    q = _q(TEMPLATES["SHORT_QUESTION_TEMPLATE"][0], class_name="blue square")
    a = TEMPLATES["SHORT_ANSWER_TEMPLATE"][1].format(class_name="blue square")
    assert a == "Yes, blue square is detected: [SEG]."
    prompt = f"{SYS} USER: <im_start><image><im_end>\n{q} ASSISTANT: {a}</s>"
    exp = chunks(
        sp,
        1,
        SYS + " USER:",
        V + 1,
        [V + 3] * N,
        V + 2,
        q + " ASSISTANT: Yes, blue square is detected:",
        V,
        ".",
        2,
    )
    return prompt, exp


def _long_template(sp, V):  # noqa: ANN001, ANN202
    sent = "The thing a child would use to draw on paper."
    q = _q(TEMPLATES["LONG_QUESTION_TEMPLATE"][3], sent=sent)
    a = TEMPLATES["LONG_ANSWER_TEMPLATE"][0]
    assert a == "Confirmed, here's the segmentation: [SEG]."
    prompt = f"{SYS} USER: <im_start><image><im_end>\n{q} ASSISTANT: {a}</s>"
    exp = chunks(
        sp,
        1,
        SYS + " USER:",
        V + 1,
        [V + 3] * N,
        V + 2,
        q + " ASSISTANT: Confirmed, here's the segmentation:",
        V,
        ".",
        2,
    )
    return prompt, exp


def _negative(sp, V):  # noqa: ANN001, ANN202
    q = _q(TEMPLATES["SHORT_QUESTION_TEMPLATE"][1], class_name="green triangle")
    a = TEMPLATES["NEG_ANSWER_TEMPLATE"][2].format(class_name="green triangle")
    prompt = f"{SYS} USER: <im_start><image><im_end>\n{q} ASSISTANT: {a}</s>"
    exp = chunks(
        sp,
        1,
        SYS + " USER:",
        V + 1,
        [V + 3] * N,
        V + 2,
        q + " ASSISTANT: Sorry, green triangle is not found in this image.",
        2,
    )
    return prompt, exp


def _vicuna_generation(sp, V):  # noqa: ANN001, ANN202
    q = "What is the cat in this image? Please output segmentation mask."
    prompt = f"{VSYS} USER: <im_start><image><im_end>\n{q} ASSISTANT:"
    exp = chunks(sp, 1, VSYS + " USER:", V + 1, [V + 3] * N, V + 2, q + " ASSISTANT:")
    return prompt, exp


def _two_rounds(sp, V):  # noqa: ANN001, ANN202
    prompt = (
        f"{SYS} USER: <im_start><image><im_end>\nWhat is the dog? ASSISTANT: It is [SEG].</s>"
        "USER: And the tree? ASSISTANT: Sure, the segmentation result is [SEG].</s>"
    )
    exp = chunks(
        sp,
        1,
        SYS + " USER:",
        V + 1,
        [V + 3] * N,
        V + 2,
        "What is the dog? ASSISTANT: It is",
        V,
        ".",
        2,
        "USER: And the tree? ASSISTANT: Sure, the segmentation result is",
        V,
        ".",
        2,
    )
    return prompt, exp


CASES = [
    _reason_short,
    _reason_long,
    _short_template,
    _long_template,
    _negative,
    _vicuna_generation,
    _two_rounds,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_official_prompts(case, tok: ReadTokenizer, sp: spm.SentencePieceProcessor, V: int) -> None:  # noqa: ANN001
    prompt, expected = case(sp, V)
    assert tok.encode_with_image(prompt, N) == expected
    # The official single-placeholder form: the N image ids collapse to one -200.
    collapsed = [i for i in expected if i != V + 3]
    collapsed.insert(collapsed.index(V + 1) + 1, IMAGE_PLACEHOLDER_ID)
    assert tok.tokenizer_image_token(prompt) == collapsed


def test_without_im_start_end_keeps_whitespace(
    official_dir: Path, sp: spm.SentencePieceProcessor, V: int
) -> None:
    """No <im_start>/<im_end>: nothing strips, so 'USER: ' keeps its space and '\\n' stays (byte fallback)."""
    t = ReadTokenizer.from_pretrained(official_dir, use_im_start_end=False)
    prompt = f"{SYS} USER: <image>\nWhat is the cat? ASSISTANT: It is [SEG].</s>"
    expected = chunks(sp, 1, SYS + " USER: ", [V + 3] * N, "\nWhat is the cat? ASSISTANT: It is", V, ".", 2)
    assert sp.encode("\nWhat")[:2] == [sp.piece_to_id("▁"), sp.piece_to_id("<0x0A>")]
    assert t.encode_with_image(prompt, N) == expected
    # The image token id is still V+3 (added after the official <im_start>/<im_end>).
    assert t.image_token_id == V + 3 and t.im_start_id is None


def test_image_split_happens_before_stripping(
    tok: ReadTokenizer, sp: spm.SentencePieceProcessor, V: int
) -> None:
    # tokenizer_image_token splits on '<image>' first: '<im_start> <image>' keeps no space in the first chunk
    # (<im_start> strips its right side inside its own chunk) and ' x' after the image keeps its space.
    assert tok.tokenizer_image_token("a <image> x") == chunks(sp, 1, "a ", IMAGE_PLACEHOLDER_ID, " x")
    assert tok.tokenizer_image_token("<image>\nhi") == chunks(sp, 1, IMAGE_PLACEHOLDER_ID, "\nhi")
    with pytest.raises(ValueError):
        tok.encode_with_image("<image>", 0)


# ------------------------------------------------------------------------------------ save / load / decode


def test_save_load_round_trip(tmp_path: Path, llava_hf_dir: Path) -> None:
    prompts = [
        f"{SYS} USER: <im_start><image><im_end>\nWhat is the cat? ASSISTANT: It is [SEG].</s>",
        "x <image> y [SEG] z </s> <unk> <pad>",
    ]
    for src in (ReadTokenizer.build_tiny(), ReadTokenizer.from_pretrained(llava_hf_dir, pad_token="<pad>")):
        out = tmp_path / f"saved_{len(src)}"
        paths = src.save_pretrained(out)
        assert {p.name for p in paths} == {"tokenizer.model", "read_tokenizer.json"}
        back = ReadTokenizer.from_pretrained(out)
        assert len(back) == len(src) and back.added_tokens == src.added_tokens
        assert (back.pad_id, back.seg_token_id, back.image_token_id, back.im_start_id, back.im_end_id) == (
            src.pad_id,
            src.seg_token_id,
            src.image_token_id,
            src.im_start_id,
            src.im_end_id,
        )
        for p in prompts:
            assert back.encode(p) == src.encode(p)
            assert back.encode_with_image(p, 3) == src.encode_with_image(p, 3)
        clone = pickle.loads(pickle.dumps(src))
        assert clone.encode(prompts[0]) == src.encode(prompts[0])


def test_decode(tok: ReadTokenizer, sp: spm.SentencePieceProcessor, V: int) -> None:
    ids = chunks(sp, 1, "It is", V, ".", 2)
    assert tok.decode(ids) == "<s>It is[SEG].</s>"
    assert tok.decode(ids, skip_special_tokens=True) == "It is[SEG]."
    assert tok.decode(ids, spaces_between_added_tokens=True) == "<s> It is [SEG] . </s>"
    img = chunks(sp, V + 1, [V + 3] * 2, V + 2, "Hi there")
    assert tok.decode(img) == "<im_start><image><image><im_end>Hi there"
    assert tok.decode(img, skip_special_tokens=True) == "Hi there"
    assert tok.decode(sp.encode("A chat between\nfriends")) == "A chat between\nfriends"  # byte pieces
    with pytest.raises(ValueError):
        tok.decode([-100])
    with pytest.raises(ValueError):
        tok.decode([len(tok)])
