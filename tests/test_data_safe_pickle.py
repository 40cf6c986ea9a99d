"""The restricted unpickler: numpy scalars and arrays load (both numpy module spellings, protocols 0-5, a
hand-built Python-2 pickle); every other global, and the allowed ones misused, is refused without running."""

from __future__ import annotations

import pickle
import pickletools

import numpy as np
import pytest

from read.data.base import DataError
from read.data.safe_pickle import load_pickle


def _respell(data: bytes, new_module: str) -> bytes:
    """Rewrite every ``numpy._core.*`` module name of a pickle as ``new_module`` spelling (e.g. the numpy 1.x
    ``numpy.core``), op by op, dropping FRAME opcodes (optional) so lengths stay valid."""
    ops = list(pickletools.genops(data))
    out = bytearray()
    for n, (op, arg, pos) in enumerate(ops):
        end = ops[n + 1][2] if n + 1 < len(ops) else len(data)
        if op.name == "FRAME":
            continue
        if op.name == "SHORT_BINUNICODE" and arg.startswith("numpy._core"):
            text = arg.replace("numpy._core", new_module).encode()
            out += b"\x8c" + bytes([len(text)]) + text
        elif op.name == "GLOBAL" and arg.startswith("numpy._core"):
            out += b"c" + arg.replace("numpy._core", new_module).replace(" ", "\n").encode() + b"\n"
        else:
            out += data[pos:end]
    return bytes(out)


REFS = [
    {
        "ref_id": np.int64(7),
        "ann_id": np.int64(-3),
        "score": np.float32(0.25),
        "exist": np.bool_(True),
        "sentences": [{"sent": "left dog", "sent_id": 1}],
        "ids": np.array([3, -1, 2**40], dtype=np.int64),
        "box": np.array([[0.5, 1.25], [2.0, -3.5]], dtype=np.float32),
        "flags": np.array([True, False, True]),
        "empty": np.array([], dtype=np.int8),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
    }
]


def _check_refs(got: list) -> None:
    (r,) = got
    assert type(r["ref_id"]) is np.int64 and r["ref_id"] == 7
    assert type(r["ann_id"]) is np.int64 and r["ann_id"] == -3
    assert type(r["score"]) is np.float32 and r["score"] == 0.25
    assert type(r["exist"]) is np.bool_ and r["exist"]
    assert r["sentences"] == [{"sent": "left dog", "sent_id": 1}]
    assert r["ids"].dtype == np.int64 and r["ids"].tolist() == [3, -1, 1099511627776]
    assert r["box"].dtype == np.float32 and r["box"].tolist() == [[0.5, 1.25], [2.0, -3.5]]
    assert r["flags"].dtype == np.bool_ and r["flags"].tolist() == [True, False, True]
    assert r["empty"].dtype == np.int8 and r["empty"].shape == (0,)
    assert r["fortran"].tolist() == [[0, 1, 2], [3, 4, 5]] and r["fortran"].dtype == np.int16


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("module", ["numpy._core", "numpy.core"])
def test_numpy_scalars_and_arrays_load(tmp_path, protocol, module):
    data = pickle.dumps(REFS, protocol=protocol)
    if module != "numpy._core":
        data = _respell(data, module)
        assert b"numpy.core.multiarray" in data or b"numpy.core.numeric" in data
        assert b"numpy._core" not in data
    p = tmp_path / "refs(unc).p"
    p.write_bytes(data)
    _check_refs(load_pickle(p))


def test_python2_numpy_pickle_bytes_survive_the_string_decoding(tmp_path):
    # Python 2, protocol 2: numpy data are 8-bit strings (SHORT_BINSTRING). The int16 data bytes C3 A9 00 01
    # are not ASCII, and are valid UTF-8 ('é' + 2 bytes): the UTF-8 pass must not give wrong numbers.
    dtype_i2 = b"cnumpy\ndtype\nU\x02i2\x89\x88\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    arr = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        b"(K\x01K\x02\x85" + dtype_i2 + b"\x89U\x04\xc3\xa9\x00\x01tb"
    )
    py2 = b"\x80\x02}(U\x04sentU\x03dogU\x03arr" + arr + b"u."
    p = tmp_path / "py2.p"
    p.write_bytes(py2)
    got = load_pickle(p)
    # little-endian int16: 0xA9C3 = 43459 -> 43459 - 65536 = -22077; 0x0100 = 256
    assert got["sent"] == "dog" and got["arr"].dtype == np.int16 and got["arr"].tolist() == [-22077, 256]
    # scalar: numpy.core.multiarray.scalar(dtype('i2'), '\x05\x00') -> 5
    sc = b"\x80\x02cnumpy.core.multiarray\nscalar\n" + dtype_i2 + b"U\x02\x05\x00\x86R."
    p.write_bytes(sc)
    got = load_pickle(p)
    assert type(got) is np.int16 and got == 5


def _assert_refused(p, payload: bytes, *names: str) -> None:
    p.write_bytes(payload)
    with pytest.raises(DataError) as e:
        load_pickle(p)
    msg = str(e.value)
    assert str(p) in msg and all(n in msg for n in names), msg


def test_other_globals_are_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.p"
    cmd = f"touch {marker}".encode()
    payloads = [
        (b"cos\nsystem\n(U" + bytes([len(cmd)]) + cmd + b"tR.", "os.system"),
        (b"cposix\nsystem\n(U" + bytes([len(cmd)]) + cmd + b"tR.", "posix.system"),
        (b"csubprocess\ncall\n(U\x05touch]tR.", "subprocess.call"),
        (b"cbuiltins\neval\n(U\x041+1tR.", "builtins.eval"),
        (b"cbuiltins\ngetattr\n(cbuiltins\nopen\nU\x04readtR.", "builtins.getattr"),
        (b"cnumpy\nload\n(U\x03x.ptR.", "numpy.load"),
        (b"cnumpy.testing._private.utils\nrunstring\n(U\x04passU\x00}tR.", "numpy.testing._private.utils.runstring"),
        (b"cnumpy.lib.npyio\nload\n(U\x03x.ptR.", "numpy.lib.npyio.load"),
        (b"cnumpy.core.multiarray\nfromfile\n(U\x03x.ptR.", "numpy.core.multiarray.fromfile"),
        (b"cnumpy\nfrombuffer\n(U\x01xtR.", "numpy.frombuffer"),
        (b"cnumpy.core.multiarray\n_reconstruct_evil\n.", "numpy.core.multiarray._reconstruct_evil"),
    ]
    for payload, name in payloads:
        _assert_refused(p, payload, name, "refused to unpickle global")
        assert not marker.exists()


def test_allowed_globals_misused_are_refused(tmp_path):
    p = tmp_path / "misuse.p"
    recon = b"\x80\x02cnumpy._core.multiarray\n_reconstruct\n"
    # _reconstruct of a class that is not numpy.ndarray (numpy.dtype is itself allowed)
    _assert_refused(p, recon + b"cnumpy\ndtype\nK\x00\x85C\x01b\x87R.", "_reconstruct", "not numpy.ndarray")
    # ... of ndarray with a huge shape or another typecode
    _assert_refused(p, recon + b"cnumpy\nndarray\nJ\x00\x00\x00\x10\x85C\x01b\x87R.", "_reconstruct", "shape")
    _assert_refused(p, recon + b"cnumpy\nndarray\nK\x00\x85C\x01O\x87R.", "_reconstruct", "typecode")
    # scalar with a non-dtype first argument, or bytes that do not fit the dtype
    _assert_refused(p, b"\x80\x02cnumpy._core.multiarray\nscalar\nU\x02i8C\x01\x00\x86R.", "scalar", "dtype")
    dt = b"cnumpy\ndtype\nU\x02i8\x89\x88\x87R"
    _assert_refused(p, b"\x80\x02cnumpy._core.multiarray\nscalar\n" + dt + b"C\x02\x00\x00\x86R.", "scalar")
    # _codecs.encode other than (str, 'latin1'); bytes(n)
    _assert_refused(p, b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.", "_codecs.encode")
    _assert_refused(p, b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00@\x85R.", "bytes")
    # object, structured and void dtypes are refused (an object array over raw bytes would forge pointers)
    for code in (b"O8", b"V8"):
        odt = b"cnumpy\ndtype\nU\x02" + code + b"\x89\x88\x87R"
        _assert_refused(p, b"\x80\x02" + odt + b".", "numpy.dtype", "only bool/int/uint/float/complex/str/bytes")
    odt = b"cnumpy\ndtype\nU\x02O8\x89\x88\x87R"
    fb = b"\x80\x04cnumpy._core.numeric\n_frombuffer\n(C\x08\x00\x00\x00\x00\x00\x00\x00\x00" + odt
    _assert_refused(p, fb + b"K\x01\x85X\x01\x00\x00\x00Ct\x94R.", "numpy.dtype", "O8")
    # a dtype state that adds fields (object fields could be laid anywhere)
    state = b"(K\x03U\x01|NU\x01a\x85}U\x01a(cnumpy\ndtype\nU\x02i8\x89\x88\x87RK\x00tsK\x08K\x01K\x10tb"
    _assert_refused(p, b"\x80\x02cnumpy\ndtype\nU\x02i8\x89\x88\x87R" + state + b".", "numpy.dtype", "fields")
    # numpy.ndarray itself is never callable (numpy's constructor accepts a raw buffer)
    i8 = b"cnumpy\ndtype\nU\x02i8\x89\x88\x87R"
    _assert_refused(p, b"\x80\x02cnumpy\nndarray\nK\x01\x85" + i8 + b"C\x08AAAAAAAA\x87R.", "not callable")
    # array state whose data size does not match its shape and dtype
    recon_ok = recon + b"cnumpy\nndarray\nK\x00\x85C\x01b\x87R"
    bad = recon_ok + b"(K\x01K\x03\x85" + i8 + b"\x89C\x08AAAAAAAAtb."
    _assert_refused(p, bad, "_reconstruct", "8 data bytes where 24 are needed")
    # a bare reference to numpy.ndarray left in the data
    _assert_refused(p, b"\x80\x02]cnumpy\nndarray\na.", "bare numpy.ndarray")


def test_truncated_numpy_pickle_is_an_error(tmp_path):
    p = tmp_path / "t.p"
    p.write_bytes(pickle.dumps(REFS, protocol=4)[:-20])
    with pytest.raises(DataError, match="t.p"):
        load_pickle(p)
