"""Loading untrusted pickles (the REFER ``refs(<splitBy>).p`` downloads) without running code from them.

A pickle can only run code through a *global* it names: the ``GLOBAL``/``STACK_GLOBAL``/``INST``/``OBJ``
opcodes and the copyreg extension opcodes (``EXT1/2/4``) all resolve a ``(module, name)`` pair with
:meth:`pickle.Unpickler.find_class`, and ``REDUCE``/``BUILD``/``NEWOBJ`` can only call what such a lookup put on
the stack. The unpickler below resolves only the globals of :data:`ALLOWED_GLOBALS`, each to a checking stand-in
of our own, and refuses every other one with a :class:`DataError` naming the file and the global (``os.system``,
``builtins.eval``, ``subprocess.*``, ``numpy.load``, ``numpy.testing.*``, any class, ...). Everything else is
built by the pickle opcodes natively: ``dict``, ``list``, ``tuple``, ``str``, ``bytes``, ``int``, ``float``,
``bool``, ``None`` (and, with protocol 4+, ``set``/``frozenset``/``bytearray``).

numpy scalars and arrays (FP-RefCOCO / R-RefCOCO pickles may hold ``numpy.int64`` ids or arrays) are accepted in
the forms numpy itself writes, in both module spellings (``numpy.core`` = numpy 1.x, ``numpy._core`` = 2.x):

* ``numpy.dtype(code, align, copy)`` + ``BUILD(state)``: a dtype of kind bool, int, uint, float, complex, str or
  bytes only (no object, structured, void or datetime dtype), byte order taken from the state;
* ``numpy.{_,}core.multiarray.scalar(dtype, data)``: ``data`` must be exactly ``dtype.itemsize`` bytes;
* ``numpy.{_,}core.multiarray._reconstruct(numpy.ndarray, (0,), b"b")`` + ``BUILD((version, shape, dtype,
  is_fortran, data))``: the array is made with ``np.frombuffer`` from exactly ``prod(shape) * itemsize`` bytes;
* ``numpy.{_,}core.numeric._frombuffer(buf, dtype, shape, order[, axis_order])`` (protocol 5), likewise;
* ``_codecs.encode(text, "latin1")`` -> bytes and ``builtins.bytes()`` -> ``b""``: how Python 3 writes
  ``bytes`` in protocols 0-2.

The real ``numpy.ndarray`` and ``numpy.dtype`` are never handed to the pickle: ``numpy.ndarray(shape, "O",
buffer)`` builds an *object* array over raw bytes, i.e. forged pointers, and a dtype's ``__setstate__`` can lay
object fields anywhere. ``numpy.ndarray`` resolves to an inert marker that only ``_reconstruct`` accepts, and
``numpy.dtype`` / ``_reconstruct`` return stand-ins whose ``__setstate__`` validates the state; after loading,
the stand-ins in the result are replaced by the real dtypes and arrays (a bare marker left in the data is an
error).

Python 2 ``str`` objects are bytes; they are decoded with ASCII first (Python 3's default, which is what every
REFER pickle loads with), then, only if that fails, UTF-8, then Latin-1 (which never fails). The encoding that
worked is not guessed per string: the whole file is re-read with the next encoding. numpy data inside a Python-2
pickle is such a string; it is turned back into bytes with Latin-1 (numpy's own rule) and its size checked, so a
string that UTF-8 decoding changed fails the check and the next encoding is tried: a wrong decode never yields
wrong numbers.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from read.data.base import DataError

# Tried in order for Python-2 8-bit strings (see the module docstring).
PY2_ENCODINGS: tuple[str, ...] = ("ASCII", "utf-8", "latin1")
# Decodings after which str.encode("latin1") gives back the original bytes.
_BYTE_PRESERVING = ("ascii", "latin1", "latin-1", "iso-8859-1")

_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_BUILTINS = ("builtins", "__builtin__")
_DTYPE_KINDS = frozenset("biufcUS")  # bool, int, uint, float, complex, str, bytes

#: ``(module, name)`` pairs the unpickler resolves (module docstring); every other global is refused.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
    + [(m, "scalar") for m in _MULTIARRAY]
    + [(m, "_reconstruct") for m in _MULTIARRAY]
    + [(m, "_frombuffer") for m in _NUMERIC]
    + [(m, "bytes") for m in _BUILTINS]
)


class _NumpyDataError(ValueError):
    """A Python-2 data string that this pass's decoding changed (retry with the next encoding)."""


class _NdarrayMarker:
    """What ``numpy.ndarray`` resolves to: not callable, only accepted as ``_reconstruct``'s class."""

    __slots__ = ()


_NDARRAY = _NdarrayMarker()


class _DtypeStandIn:
    """``numpy.dtype(code, align, copy)`` as pickled; ``__setstate__`` takes the byte order (BUILD)."""

    def __init__(self, refuse: Callable[[str], DataError], code: Any, align: Any = False, copy: Any = False):
        self._refuse = refuse
        if not isinstance(code, str):
            raise refuse(f"dtype code must be a string, got {type(code).__name__}")
        try:
            dt = np.dtype(code)
        except TypeError as e:
            raise refuse(f"unknown dtype code {code!r}") from e
        if dt.kind not in _DTYPE_KINDS or dt.fields is not None or dt.subdtype is not None:
            raise refuse(f"dtype {code!r} (only bool/int/uint/float/complex/str/bytes dtypes are allowed)")
        self.dtype = dt

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) >= 5 and all(x is None for x in state[2:5])):
            raise self._refuse(f"dtype state {state!r} (no sub-array, field names or fields allowed)")
        order = state[1]
        if order not in ("<", ">", "|", "="):
            raise self._refuse(f"dtype byte order {order!r}")
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


class _ArrayStandIn:
    """What ``_reconstruct`` returns; ``__setstate__`` (BUILD) makes the real array in ``self.array``."""

    def __init__(self, owner: _SafeUnpickler, glob: str):
        self._owner = owner
        self._glob = glob
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            _, shape, dtype, fortran, data = state
        elif isinstance(state, tuple) and len(state) == 4:  # numpy's oldest format: no version
            shape, dtype, fortran, data = state
        else:
            raise self._owner.refuse(self._glob, f"array state must be a 4- or 5-tuple, got {type(state).__name__}")
        if not isinstance(dtype, _DtypeStandIn):
            raise self._owner.refuse(self._glob, f"array dtype must be a pickled numpy.dtype, got {dtype!r}")
        if fortran not in (True, False, 0, 1):
            raise self._owner.refuse(self._glob, f"is_fortran {fortran!r}")
        self.array = self._owner.make_array(self._glob, data, dtype.dtype, shape, "F" if fortran else "C")


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`, to checking stand-ins (module docstring)."""

    def __init__(self, file, *, path: Path, encoding: str) -> None:
        super().__init__(file, encoding=encoding, errors="strict")
        self._path = path
        self.numpy_seen = False  # a numpy stand-in was handed out: the result must be finalised

    # -- pickle API ---------------------------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(
                f"{self._path}: refused to unpickle global '{module}.{name}' "
                "(REFER pickles may contain only dicts, lists, tuples, str, bytes, numbers, bools, None and numpy "
                "scalars/arrays; a pickle that names any other global can run arbitrary code)"
            )
        glob = f"{module}.{name}"
        if module.startswith("numpy"):
            self.numpy_seen = True
        if name == "ndarray":
            return _NDARRAY
        if name == "dtype":
            return lambda *args: _DtypeStandIn(lambda why: self.refuse(glob, why), *args)
        if name == "scalar":
            return lambda *args: self._scalar(glob, *args)
        if name == "_reconstruct":
            return lambda *args: self._reconstruct(glob, *args)
        if name == "_frombuffer":
            return lambda *args: self._frombuffer(glob, *args)
        if name == "encode":
            return self._codecs_encode
        return self._empty_bytes

    def persistent_load(self, pid: Any) -> Any:  # noqa: D401 - pickle API
        raise DataError(f"{self._path}: refused persistent id {pid!r} in pickle")

    # -- helpers ------------------------------------------------------------------------------------------
    def refuse(self, glob: str, why: str) -> DataError:
        return DataError(f"{self._path}: refused call of global '{glob}': {why}")

    def _raw(self, glob: str, data: Any, size: int) -> bytes:
        """``data`` as exactly ``size`` bytes. A ``str`` is a Python-2 string decoded by this pass: back to bytes
        with Latin-1 (numpy's rule); a mismatch then means this pass's decoding changed it."""
        if isinstance(data, (bytes, bytearray)):
            if len(data) != size:
                raise self.refuse(glob, f"{len(data)} data bytes where {size} are needed")
            return bytes(data)
        if isinstance(data, str):
            try:
                raw = data.encode("latin1")
            except UnicodeEncodeError as e:
                raise _NumpyDataError(f"{glob}: data string is not Latin-1 ({e})") from e
            if len(raw) != size:
                raise _NumpyDataError(f"{glob}: {len(raw)} data bytes where {size} are needed")
            return raw
        raise self.refuse(glob, f"data must be bytes, got {type(data).__name__}")

    def make_array(self, glob: str, data: Any, dtype: np.dtype, shape: Any, order: str) -> np.ndarray:
        """A new, writable array ``shape`` of ``dtype`` from exactly the right number of data bytes."""
        if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise self.refuse(glob, f"shape must be a tuple of non-negative ints, got {shape!r}")
        raw = self._raw(glob, data, math.prod(shape) * dtype.itemsize)
        return np.frombuffer(raw, dtype=dtype).reshape(shape, order=order).copy(order="A")

    # -- stand-ins for the allowed globals ----------------------------------------------------------------
    def _scalar(self, glob: str, dtype: Any, data: Any = None) -> Any:
        if not isinstance(dtype, _DtypeStandIn):
            raise self.refuse(glob, f"first argument must be a pickled numpy.dtype, got {type(dtype).__name__}")
        raw = self._raw(glob, data, dtype.dtype.itemsize)
        return np.frombuffer(raw, dtype=dtype.dtype, count=1)[0].copy()

    def _reconstruct(self, glob: str, cls: Any, shape: Any, typecode: Any) -> _ArrayStandIn:
        if cls is not _NDARRAY:
            raise self.refuse(glob, f"class {cls!r} is not numpy.ndarray")
        if not (isinstance(shape, tuple) and shape == (0,)):
            raise self.refuse(glob, f"shape {shape!r} (numpy writes (0,))")
        if typecode not in (b"b", "b"):
            raise self.refuse(glob, f"typecode {typecode!r} (numpy writes b'b')")
        return _ArrayStandIn(self, glob)

    def _frombuffer(self, glob: str, buf: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None):
        if not isinstance(dtype, _DtypeStandIn):
            raise self.refuse(glob, f"dtype must be a pickled numpy.dtype, got {dtype!r}")
        if not isinstance(buf, (bytes, bytearray)):
            raise self.refuse(glob, f"buffer must be bytes, got {type(buf).__name__}")
        if order not in ("C", "F", "K", "A"):
            raise self.refuse(glob, f"order {order!r}")
        if order == "K" and axis_order is not None:
            if not (isinstance(axis_order, (list, tuple)) and sorted(axis_order) == list(range(len(shape)))):
                raise self.refuse(glob, f"axis_order {axis_order!r}")
            return self.make_array(glob, buf, dtype.dtype, shape, "C").transpose(tuple(axis_order))
        return self.make_array(glob, buf, dtype.dtype, shape, "F" if order == "F" else "C")

    def _codecs_encode(self, text: Any, encoding: Any = None, *rest: Any) -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or rest:
            raise self.refuse("_codecs.encode", "only encode(str, 'latin1') is allowed (Python 3 bytes)")
        return text.encode("latin1")

    def _empty_bytes(self, *args: Any) -> bytes:
        if args:
            raise self.refuse("builtins.bytes", "only bytes() without arguments is allowed (Python 3 b'')")
        return b""

    # -- after loading ------------------------------------------------------------------------------------
    def finalise(self, obj: Any) -> Any:
        """``obj`` with every stand-in replaced by its real dtype or array (containers updated in place)."""
        done: dict[int, Any] = {}

        def real(x: Any) -> Any:
            key = id(x)
            if key in done:
                return done[key]
            if isinstance(x, _ArrayStandIn):
                if x.array is None:
                    raise DataError(f"{self._path}: numpy array without its state (no BUILD) in pickle")
                done[key] = x.array
            elif isinstance(x, _DtypeStandIn):
                done[key] = x.dtype
            elif isinstance(x, _NdarrayMarker) or callable(x):
                raise DataError(f"{self._path}: a bare numpy.ndarray / numpy.dtype reference in pickle data")
            elif isinstance(x, list):
                done[key] = x
                x[:] = [real(v) for v in x]
            elif isinstance(x, dict):
                done[key] = x
                items = [(real(k), real(v)) for k, v in x.items()]
                x.clear()
                x.update(items)
            elif isinstance(x, (tuple, set, frozenset)):
                done[key] = type(x)(real(v) for v in x)
            else:
                done[key] = x
            return done[key]

        return real(obj)


def load_pickle(path: str | os.PathLike, *, encoding: str | None = None) -> Any:
    """Load a pickle that may only contain plain containers, scalars and numpy scalars/arrays.

    Args:
        path: the pickle file.
        encoding: decoding of Python-2 8-bit strings; ``None`` tries :data:`PY2_ENCODINGS` in order.

    Raises:
        DataError: missing/empty/truncated/corrupt file, a forbidden global or a refused use of an allowed one
            (named in the message), or undecodable Python-2 strings.
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
        unpickler = _SafeUnpickler(io.BytesIO(raw), path=p, encoding=enc)
        try:
            obj = unpickler.load()
            return unpickler.finalise(obj) if unpickler.numpy_seen else obj
        except DataError:
            raise
        except (UnicodeDecodeError, _NumpyDataError) as e:  # this str decoding does not fit: try the next one
            if isinstance(e, _NumpyDataError) and enc.lower() in _BYTE_PRESERVING:
                raise DataError(f"{p}: corrupt numpy data in pickle: {e}") from e
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
            RecursionError,
        ) as e:
            raise DataError(f"{p}: corrupt or unsupported pickle: {type(e).__name__}: {e}") from e
    raise DataError(f"{p}: cannot decode Python-2 strings with {', '.join(encodings)}: {last}") from last
