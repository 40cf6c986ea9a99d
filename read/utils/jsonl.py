"""Append-only JSON-lines record files that survive a crash: a cut last line is dropped before appending, and a
line that does not parse is skipped on reading (its item is simply redone)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

__all__ = ["drop_partial_line", "read_records"]


def drop_partial_line(path: Path) -> None:
    """Cut a last line without its newline (a crash mid-write), so appended records start on their own line."""
    path = Path(path)
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def read_records(paths: Iterable[Path], key: str = "index") -> dict[int, dict]:
    """Every parseable record of ``paths`` by its integer ``key`` (a later file or line wins)."""
    out: dict[int, dict] = {}
    for path in paths:
        if not Path(path).is_file():
            continue
        for line in Path(path).read_text().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            out[int(rec[key])] = rec
    return out
