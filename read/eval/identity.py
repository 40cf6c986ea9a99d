"""What an evaluation *is*: the weights, the model settings and the evaluation settings that determine its
numbers. Its digest names the output folder and guards resumption, so records computed with other weights or
settings are never merged into, or reported as, the results of this one.

Included: the digest of every weight tensor (``read.model.fingerprint``), the tokenizer (SentencePiece model,
added tokens, pad), every model setting that changes outputs (SasP values, ``seg_query``, ``seg_prompt``, dtype,
attention kernel, prompt format, lengths, LoRA shape), the evaluation settings (protocol, dataset, split, subset,
batch size, decoding, templates), the data root and the device type. Excluded: file paths of the weights (their
content is in the digest), the preset *name* (its values are in), ``eval.limit`` (the first N items of a split do not
depend on N), overlays, output paths, and training-only settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from read.config import ReadConfig, to_dict

__all__ = ["EVAL_KEY_FILE", "EvalMismatchError", "evaluation_identity", "identity_digest", "prepare_output_dir"]

EVAL_KEY_FILE = "eval_key.json"
_MODEL_EXCLUDE = {"name", "trainable"}
_VLM_EXCLUDE = {"pretrained", "tokenizer", "gradient_checkpointing", "tiny", "tiny_qwen"}
_SAM_EXCLUDE = {"checkpoint", "encoder_batch_size"}
_EVAL_KEEP = ("protocol", "dataset", "split", "subset", "batch_size", "max_new_tokens", "template_seed",
              "multi_seg")


class EvalMismatchError(RuntimeError):
    """An evaluation folder holds records of other weights or settings (the message names what differs)."""


def tokenizer_digest(tokenizer) -> str:  # noqa: ANN001 - ReadTokenizer
    """sha256 of the SentencePiece model, the added tokens (text, id, flags) and the pad token (a tokenizer with its
    own ``digest()``, such as the Qwen2.5-VL one, gives that)."""
    if hasattr(tokenizer, "digest"):
        return tokenizer.digest()
    h = hashlib.sha256(tokenizer.model_proto)
    for t in tokenizer.added_tokens:
        h.update(f"{t.content}|{t.id}|{t.lstrip}|{t.rstrip}|{t.special}\n".encode())
    h.update(f"pad={tokenizer.pad_token}".encode())
    return h.hexdigest()


def evaluation_identity(cfg: ReadConfig, tokenizer, weights_digest: str, device_type: str, data_root: Path) -> dict:  # noqa: ANN001
    """The JSON-able description of an evaluation (see the module docstring)."""
    model = {k: v for k, v in to_dict(cfg.model).items() if k not in _MODEL_EXCLUDE}
    model["vlm"] = {k: v for k, v in model["vlm"].items() if k not in _VLM_EXCLUDE}
    model["sam"] = {k: v for k, v in model["sam"].items() if k not in _SAM_EXCLUDE}
    model["sasp"] = {k: v for k, v in model["sasp"].items() if k != "preset"}
    ev = {k: getattr(cfg.eval, k) for k in _EVAL_KEEP}
    ev["conv_template"] = cfg.eval.conv_template or cfg.model.vlm.conv_template
    return {
        "weights": weights_digest,
        "tokenizer": tokenizer_digest(tokenizer),
        "model": model,
        "eval": ev,
        "data_root": str(Path(data_root).resolve()),
        "device": device_type,
    }


def identity_digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def describe_difference(old: dict, new: dict) -> str:
    """``key: old -> new`` for the first differing settings (``weights``/``tokenizer`` abbreviated)."""
    a, b = _flatten(old), _flatten(new)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
            if k in ("weights", "tokenizer"):
                va, vb = str(va)[:12], str(vb)[:12]
            diffs.append(f"{k}: {va} -> {vb}")
    more = f" (+{len(diffs) - 4} more)" if len(diffs) > 4 else ""
    return "; ".join(diffs[:4]) + more


def prepare_output_dir(out_dir: Path, identity: dict, *, overwrite: bool) -> Literal["new", "resume"]:
    """Make ``out_dir`` hold this evaluation: ``new`` (created, or cleared with ``overwrite``) or ``resume`` (its
    records are of exactly this evaluation). Call on the main rank only.

    Raises:
        EvalMismatchError: ``out_dir`` holds records of another evaluation (what differs is named) and
            ``overwrite`` is off.
    """
    key_file = out_dir / EVAL_KEY_FILE
    has_records = any(out_dir.glob("records.rank*.jsonl")) or (out_dir / "results.json").is_file()
    if has_records:
        old = None
        if key_file.is_file():
            try:
                old = json.loads(key_file.read_text()).get("identity")
            except (OSError, json.JSONDecodeError):
                old = None
        if old == identity:
            return "resume"
        if not overwrite:
            why = describe_difference(old, identity) if isinstance(old, dict) else f"no readable {EVAL_KEY_FILE}"
            raise EvalMismatchError(
                f"{out_dir} holds an evaluation of other weights or settings ({why}); use another eval.output_dir, "
                "leave it unset (folders are then named by the evaluation's digest), or pass --overwrite"
            )
        for p in list(out_dir.glob("records.rank*.jsonl")) + list(out_dir.glob("overlay_*.png")):
            p.unlink()
        for name in ("results.json", EVAL_KEY_FILE):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = key_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"digest": identity_digest(identity), "identity": identity}, indent=1, sort_keys=True))
    tmp.replace(key_file)
    return "new"
