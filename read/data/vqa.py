"""LLaVA-Instruct-150k visual question answering (spec 4.2 "VQA").

Files: ``<root>/llava_dataset/llava_instruct_150k.json`` (a list of ``{"id", "image", "conversations": [{"from":
"human"|"gpt", "value": ...}, ...]}``) and the images ``<root>/coco/train2017/<image>``.

Each item becomes ONE conversation row whose rounds are the (human, gpt) turn pairs. As the official
``preprocess_multimodal``, ``<image>`` is removed from a turn and put back at its front followed by ``"\\n"``;
a leading non-human turn is dropped. There is no mask supervision: masks ``[0, H, W]``, ``exists = [False]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from read.data.base import DataError, Sample, check_index
from read.data.io import load_image, load_json

__all__ = ["IMAGE_TOKEN", "VQADataset", "preprocess_multimodal", "required_paths", "turns_to_rounds"]

IMAGE_TOKEN = "<image>"
JSON_FILE = "llava_dataset/llava_instruct_150k.json"
IMAGE_DIR = "coco/train2017"
_ROLES = {"human": "human", "gpt": "gpt"}


def preprocess_multimodal(value: str) -> str:
    """Move ``<image>`` to the front of a turn, followed by a newline (official ``preprocess_multimodal``)."""
    if IMAGE_TOKEN not in value:
        return value
    rest = value.replace(IMAGE_TOKEN, "").strip()
    return (IMAGE_TOKEN + "\n" + rest).strip()


def turns_to_rounds(turns: list[dict], where: str) -> list[tuple[str, str]]:
    """``[{"from", "value"}, ...]`` -> ``[(question, answer), ...]`` after dropping a leading non-human turn.

    Args:
        turns: the item's ``conversations``.
        where: file and item named in errors.

    Raises:
        DataError: a turn without ``from``/``value``, an unknown role, turns that do not alternate
            human/gpt, a trailing unanswered question, or no round at all.
    """
    if not isinstance(turns, list):
        raise DataError(f"{where}: 'conversations' must be a list")
    parsed: list[tuple[str, str]] = []
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise DataError(f"{where}: turn {t} needs 'from' and 'value'")
        role, value = turn["from"], turn["value"]
        if role not in _ROLES or not isinstance(value, str):
            raise DataError(
                f"{where}: turn {t} has role {role!r} (expected 'human' or 'gpt') or a non-string value"
            )
        parsed.append((role, preprocess_multimodal(value)))
    if parsed and parsed[0][0] != "human":
        parsed = parsed[1:]
    if not parsed:
        raise DataError(f"{where}: no human/gpt round")
    expected = ("human", "gpt")
    for t, (role, _) in enumerate(parsed):
        if role != expected[t % 2]:
            raise DataError(
                f"{where}: turns do not alternate human/gpt (turn {t} after dropping a leading non-human turn "
                f"is {role!r}; roles {[r for r, _ in parsed]})"
            )
    if len(parsed) % 2:
        raise DataError(f"{where}: the last human turn has no gpt answer")
    return [(parsed[i][1], parsed[i + 1][1]) for i in range(0, len(parsed), 2)]


def required_paths(root: str | os.PathLike) -> list[Path]:
    """The instruction JSON and the image folder :class:`VQADataset` opens (no reading, no listing)."""
    return [Path(root) / JSON_FILE, Path(root) / IMAGE_DIR]


class VQADataset:
    """LLaVA-Instruct-150k as a training source.

    Args:
        root: data root (official ``--dataset_dir``).
        json_file: path of the instruction JSON relative to ``root``.
        image_dir: image folder relative to ``root``.
    """

    name = "vqa"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        json_file: str = JSON_FILE,
        image_dir: str = IMAGE_DIR,
    ):
        self.root = Path(root)
        self.json_path = self.root / json_file
        self.image_dir = self.root / image_dir
        data = load_json(self.json_path)
        if not isinstance(data, list):
            raise DataError(f"{self.json_path}: expected a JSON list of items, got {type(data).__name__}")
        if not data:
            raise DataError(f"{self.json_path}: no items")
        self.items: list = data

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        return self._build(check_index(index, len(self.items), "vqa"))

    def sample(self, rng: np.random.Generator) -> Sample:
        """A random item (the official loader ignores the index)."""
        return self._build(int(rng.integers(len(self.items))))

    def _build(self, index: int) -> Sample:
        item = self.items[index]
        where = f"{self.json_path}: item {index}"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected an object, got {type(item).__name__}")
        if "id" in item:
            where += f" (id {item['id']})"
        for key in ("image", "conversations"):
            if key not in item:
                raise DataError(f"{where}: missing key {key!r}")
        if not isinstance(item["image"], str):
            raise DataError(f"{where}: 'image' must be a file name")
        rounds = turns_to_rounds(item["conversations"], where)
        n_img = sum(q.count(IMAGE_TOKEN) + a.count(IMAGE_TOKEN) for q, a in rounds)
        if n_img != 1 or IMAGE_TOKEN not in rounds[0][0]:
            raise DataError(
                f"{where}: expected exactly one {IMAGE_TOKEN} and in the first question, found {n_img}"
            )
        path = self.image_dir / item["image"]
        image = load_image(path)
        h, w = image.shape[:2]
        return Sample(
            image=image,
            conversations=[rounds],
            masks=np.zeros((0, h, w), dtype=np.uint8),
            exists=[False],
            name=str(path),
            meta={"dataset": self.name, "index": index, "id": item.get("id"), "image_path": str(path)},
        )
