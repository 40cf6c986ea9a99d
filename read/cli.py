"""Command-line plumbing shared by ``train.py``, ``evaluate.py`` and ``scripts/``: a user mistake (bad config key,
missing file, weights that do not fit, another evaluation in the output folder, ...) ends the program with one
line on stderr naming the key, file or value, and exit status 2; ``--debug`` shows the traceback instead.

Top layer: imports from every other layer, and nothing in ``read`` imports it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main_with_errors", "one_line", "user_error_types"]


def one_line(e: BaseException) -> str:
    """The message of ``e`` on one line."""
    return " ".join(str(e).split()) or type(e).__name__


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that report a user mistake (as opposed to a bug, which keeps its traceback)."""
    from read.config import ConfigError
    from read.data.base import DataError
    from read.eval.identity import EvalMismatchError
    from read.model.fingerprint import BaseMismatchError
    from read.train.safe_load import UnsafeCheckpointError
    from read.utils.weights import CheckpointKeyError

    return (ConfigError, DataError, EvalMismatchError, BaseMismatchError, UnsafeCheckpointError,
            CheckpointKeyError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError, ValueError,
            ImportError)


def main_with_errors(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> Any:
    """Run ``main(argv)``; a user error prints ``error: <one line>`` and exits with status 2 unless ``--debug``."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        return main(args)
    except user_error_types() as e:
        if debug:
            raise
        print(f"error: {one_line(e)}  (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None
