"""Reading every tensor of a Hugging Face model folder (single file or sharded, safetensors or ``.bin`` read with
``weights_only=True``), with errors that name the folder, the shard and the keys."""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from read.utils.weights import load_torch_file

__all__ = ["read_hf_state_dict"]

_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _load_index(index_path: Path) -> dict[str, str]:
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{index_path}: cannot read the shard index ({type(e).__name__}: {e})") from e
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path}: no 'weight_map' mapping keys to shard files")
    for k, v in weight_map.items():
        if not isinstance(v, str) or not v or "/" in v or "\\" in v:
            raise ValueError(f"{index_path}: weight_map[{k!r}] = {v!r} is not a shard file name")
    return weight_map


def _load_sharded(directory: Path, index_path: Path) -> dict[str, Tensor]:
    weight_map = _load_index(index_path)
    by_shard: dict[str, set[str]] = {}
    for key, shard in weight_map.items():
        by_shard.setdefault(shard, set()).add(key)
    out: dict[str, Tensor] = {}
    for shard, expected in sorted(by_shard.items()):
        path = directory / shard
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard listed in {index_path.name} is missing")
        try:
            sd = load_torch_file(path)
        except RuntimeError as e:
            raise RuntimeError(f"{e} [shard of {directory}, listed in {index_path.name}]") from e
        absent = sorted(expected - set(sd))
        extra = sorted(set(sd) - expected)
        if absent or extra:
            raise ValueError(
                f"{path} does not match {index_path.name}: "
                f"{len(absent)} listed keys absent ({', '.join(absent[:5])}), "
                f"{len(extra)} keys not listed for this shard ({', '.join(extra[:5])})"
            )
        out.update(sd)
    return out


def read_hf_state_dict(directory: str | Path) -> dict[str, Tensor]:
    """All tensors of a Hugging Face model folder, or of one state-dict file (on the CPU, stored dtype).

    A folder: looks for, in this order, ``model.safetensors``, ``model.safetensors.index.json`` (sharded),
    ``pytorch_model.bin``, ``pytorch_model.bin.index.json`` (sharded). A file (``.bin``/``.pth``/``.safetensors``):
    that file, e.g. a ``zero_to_fp32.py`` dump such as GSVA's released ``gsva-7b-ft-gres.bin``. ``.bin`` files are
    read with ``torch.load(weights_only=True)``; every file is memory-mapped (``read.utils.weights``).

    Raises:
        FileNotFoundError: the folder or a listed shard does not exist, or the folder has no weights file
            (the message names the folder and the file names looked for).
        RuntimeError: a weights file that cannot be read (named in the message).
        ValueError: a malformed index, or a shard whose keys differ from the index.
    """
    d = Path(directory)
    if d.is_file():
        return load_torch_file(d)
    if not d.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {d}")
    for single, index in zip(_SINGLE_FILES, _INDEX_FILES, strict=True):
        if (d / single).is_file():
            return load_torch_file(d / single)
        if (d / index).is_file():
            return _load_sharded(d, d / index)
    looked = [name for pair in zip(_SINGLE_FILES, _INDEX_FILES, strict=True) for name in pair]
    raise FileNotFoundError(f"{d}: no weights found (looked for {', '.join(looked)})")
