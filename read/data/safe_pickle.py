"""Loading untrusted pickles (the REFER ``refs(<splitBy>).p`` downloads) without running code from them.

A pickle can only run code through a *global* it names: the ``GLOBAL``/``STACK_GLOBAL``/``INST``/``OBJ``
opcodes and the copyreg extension opcodes (``EXT1/2/4``) all resolve a ``(module, name)`` pair with
:meth:`pickle.Unpickler.find_class`, and ``REDUCE``/``BUILD``/``NEWOBJ`` can only call what such a lookup put on
the stack. The unpickler below resolves **no global at all**, so the only objects it can build are the ones the
pickle opcodes create natively: ``dict``, ``list``, ``tuple``, ``str``, ``bytes``, ``int``, ``float``, ``bool``,
``None`` (and, with protocol 4+, ``set``/``frozenset``/``bytearray``).

Why no global is admitted: the REFER pickles are a list of ref dicts whose values are str, int, lists of str/int
and lists of sentence dicts. Python 2 (protocol 0-2) writes those with native opcodes too: ``str`` as
``STRING``/``BINSTRING``/``SHORT_BINSTRING``, ``unicode`` as ``UNICODE``/``BINUNICODE``, ``long`` as
``LONG``/``LONG1``, ``bool`` as ``NEWTRUE``/``NEWFALSE`` (or ``INT 01/00`` in protocol 0). Only other types
(``set`` in protocol <= 3, numpy scalars, class instances) would need ``__builtin__.set``,
``copy_reg._reconstructor`` or ``numpy...`` globals, and none of them belongs in a REFER file. A file that needs
one is refused with a :class:`DataError` naming the file and the global, so it can be inspected (or converted to
JSON) instead of being trusted.

Python 2 ``str`` objects are bytes; they are decoded with ASCII first (Python 3's default, which is what every
REFER pickle loads with), then, only if that fails, UTF-8, then Latin-1 (which never fails). The encoding that
worked is not guessed per string: the whole file is re-read with the next encoding.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from read.data.base import DataError

# Tried in order for Python-2 8-bit strings (see the module docstring).
PY2_ENCODINGS: tuple[str, ...] = ("ASCII", "utf-8", "latin1")


class _NoGlobalsUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global (hence every class, function and reducer)."""

    def __init__(self, file, *, path: Path, encoding: str) -> None:
        super().__init__(file, encoding=encoding, errors="strict")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        raise DataError(
            f"{self._path}: refused to unpickle global '{module}.{name}' "
            "(REFER pickles must contain only dicts, lists, tuples, str, bytes, numbers, bools and None; "
            "a pickle that names a global can run arbitrary code)"
        )

    def persistent_load(self, pid: Any) -> Any:  # noqa: D401 - pickle API
        raise DataError(f"{self._path}: refused persistent id {pid!r} in pickle")


def load_pickle(path: str | os.PathLike, *, encoding: str | None = None) -> Any:
    """Load a pickle that may only contain plain containers and scalars.

    Args:
        path: the pickle file.
        encoding: decoding of Python-2 8-bit strings; ``None`` tries :data:`PY2_ENCODINGS` in order.

    Raises:
        DataError: missing/empty/truncated/corrupt file, a forbidden global (named in the message), or
            undecodable Python-2 strings.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: pickle file not found")
    raw = p.read_bytes()
    if not raw:
        raise DataError(f"{p}: pickle file is empty")
    encodings = (encoding,) if encoding is not None else PY2_ENCODINGS
    last: Exception | None = None
    for enc in encodings:
        try:
            return _NoGlobalsUnpickler(io.BytesIO(raw), path=p, encoding=enc).load()
        except DataError:
            raise
        except UnicodeDecodeError as e:  # a Python-2 str that is not valid in `enc`: try the next one
            last = e
            continue
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            MemoryError,
            OverflowError,
        ) as e:
            raise DataError(f"{p}: corrupt or unsupported pickle: {type(e).__name__}: {e}") from e
    raise DataError(f"{p}: cannot decode Python-2 strings with {', '.join(encodings)}: {last}") from last
