"""Unpickling that cannot run code or blow up memory.

A pickle can call any importable function (``os.system`` ...) through ``find_class``; the
CIFAR-10 python batches hold only dicts, lists, bytes, ints and uint8 numpy arrays, so
everything else is refused before it is imported. What remains is still hostile-capable,
so it is bounded too:

* the file size is capped before it is read (the caller states the cap);
* a pre-scan counts the opcodes: one byte of pickle can make a new list or dict (~60
  bytes) or a reference, so a 64 MiB file of them would be gigabytes; the scan also refuses
  a memo index far beyond the opcode count (CPython grows its memo table to the index,
  so ``LONG_BINPUT 0x0fffffff`` alone is a 2 GiB allocation);
* numpy arrays are rebuilt only with plain numeric dtypes from a ``bytes`` buffer of the
  exact size: ``numpy.ndarray`` cannot be called directly (``ndarray((10**10,))`` is an
  allocation of any size), ``_reconstruct`` only makes the empty placeholder numpy's own
  pickles use, and an object-dtype ``__setstate__`` with a list shorter than its shape
  crashes the interpreter (numpy 2.4), so object dtypes never reach numpy.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
from pathlib import Path
from typing import IO, Any

import numpy as np

from tinydyn.data.dataset import DatasetError
from tinydyn.data.untrusted import read_bounded, reason

try:  # numpy >= 2
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

# An official batch is ~90,000 opcodes when re-pickled by Python 3 at protocol 2 (every
# label and file name memoised), ~30,000 at protocol 4/5; ten times the largest allowed
# batch (20,000 images) still fits. Bounds what the opcodes can build to ~100 MB.
MAX_PICKLE_OPS = 1_000_000
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
# Numeric dtypes as numpy spells them in pickles ('u1', b'u1', '<i8'): no objects, no
# structured or void types.
_NUMERIC_DTYPE = re.compile(r"[<>|=]?[biuf][1248]")
_MAX_NDIM = 8


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: accepted as ``_reconstruct``'s class
    argument, but not callable, so a pickle cannot allocate an array of any size."""


_NDARRAY = _NdarrayToken()


def _refuse(what: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"refusing {what}")


def _shown(value: object) -> str:
    """repr of a small value from the file, else only its type: messages quote whole
    values, never a cut-off excerpt of a hostile one."""
    small_int = type(value) is int and abs(value) < 10**12
    if small_int or value is None or (isinstance(value, (str, bytes)) and len(value) <= 40):
        return repr(value)
    if (
        type(value) is tuple
        and len(value) <= _MAX_NDIM
        and all(type(v) is int and abs(v) < 10**12 for v in value)
    ):
        return repr(value)
    return f"a {type(value).__name__}"


def _numeric_dtype(dtype: object) -> np.dtype:
    """A fresh, plain numeric dtype equal to ``dtype``, or refuse. Rebuilding it from its
    type string drops anything a pickled ``__setstate__`` may have altered (flags, size)."""
    spec = dtype.str if isinstance(dtype, np.dtype) else dtype
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if not isinstance(spec, str) or not _NUMERIC_DTYPE.fullmatch(spec):
        raise _refuse(f"numpy dtype {_shown(spec)} (only plain numeric dtypes occur in CIFAR-10)")
    return np.dtype(spec)


def _array_shape(shape: object, itemsize: int, available: int) -> tuple[int, ...]:
    """``shape`` if it is a short tuple of sizes whose array is exactly ``available`` bytes."""
    if (
        not isinstance(shape, tuple)
        or len(shape) > _MAX_NDIM
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise _refuse(f"numpy array shape {_shown(shape)}")
    if math.prod(shape) * itemsize != available:
        raise _refuse(f"numpy array of shape {shape} over {available} bytes of data")
    return shape


class _GuardedArray(np.ndarray):
    """The array ``_reconstruct`` hands the unpickler; its ``__setstate__`` (pickle BUILD)
    checks the state before numpy sees it. Callers convert with ``np.asarray``."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _refuse("numpy array state that is not numpy's own tuple")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(raw, (bytes, bytearray)):
            raise _refuse(f"numpy array data of type {type(raw).__name__} (expected bytes)")
        dt = _numeric_dtype(dtype)
        shape = _array_shape(shape, dt.itemsize, len(raw))
        super().__setstate__((1, shape, dt, bool(fortran), raw))


def _safe_reconstruct(cls: object, shape: object, typecode: object) -> _GuardedArray:
    # numpy's pickles always call _reconstruct(ndarray, (0,), b'b') and fill the array
    # with BUILD; any other call would allocate an array of the size the file claims.
    if cls is not _NDARRAY or type(shape) is not tuple or shape != (0,) or typecode not in (b"b", "b"):
        raise _refuse("numpy _reconstruct call other than numpy's own empty placeholder")
    return np.ndarray.__new__(_GuardedArray, (0,), np.uint8)


def _safe_frombuffer(buf: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """Protocol 5 arrays: numpy's ``_frombuffer`` after the same checks as BUILD."""
    if not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F"):
        raise _refuse("numpy _frombuffer call other than numpy's own")
    dt = _numeric_dtype(dtype)
    return _frombuffer(buf, dt, _array_shape(shape, dt.itemsize, len(buf)), order)


def _safe_dtype(spec: object, align: object = False, copy: object = True) -> np.dtype:
    # Always a copy, whatever the pickle asks: np.dtype("u1") is a shared singleton that
    # the pickle's BUILD (dtype.__setstate__) would then modify for the whole process.
    return np.dtype(_numeric_dtype(spec), align=False, copy=True)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What protocol <= 2 pickles written by Python 3 call (``_codecs.encode(s, 'latin1')``)
    to rebuild bytes; restricted to latin-1 so no other codec can be looked up."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _refuse(f"_codecs.encode with encoding {_shown(encoding)}")
    return text.encode("latin-1")


# (module, name) as written in the pickle -> the object to hand back. Python 2 pickles
# (the official CIFAR-10 files) name numpy.core; numpy 2 writes numpy._core.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _safe_dtype,
    # Protocol 5 pickles of contiguous arrays rebuild them with _frombuffer.
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy-array globals; any other reference raises DatasetError."""

    def __init__(self, file: IO[bytes], path: Path) -> None:
        # encoding="bytes": Python 2 str (keys, pixel buffers) stay bytes, as CIFAR expects.
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DatasetError(
                f"{self._path}: refusing to unpickle {module}.{name} (a CIFAR-10 batch holds "
                "only numpy arrays and lists, this file could run code); use the official "
                "cifar-10-python.tar.gz or the binary version"
            ) from None


def _check_opcodes(raw: bytes, path: Path) -> None:
    """Refuse pickles with more opcodes, or a higher memo index, than a CIFAR-10 batch."""
    for count, (opcode, arg, _pos) in enumerate(pickletools.genops(io.BytesIO(raw)), 1):
        if count > MAX_PICKLE_OPS or (opcode.name in _MEMO_PUTS and arg >= MAX_PICKLE_OPS):
            raise DatasetError(
                f"{path}: pickle holds more objects than any CIFAR-10 batch (over "
                f"{MAX_PICKLE_OPS} opcodes or memo entries); the file is corrupt or hostile, "
                "re-download it"
            )


def safe_load(path: Path, max_bytes: int, what: str) -> Any:
    """Unpickle ``path`` (at most ``max_bytes``, a ``what``) safely; errors name the file.

    Numpy arrays in the result may be a private ndarray subclass: use ``np.asarray``."""
    raw = read_bounded(path, max_bytes, what)
    try:
        _check_opcodes(raw, path)
        # From memory, not the file: a length field claiming gigabytes then fails as
        # truncated instead of making the reader allocate that much first.
        return RestrictedUnpickler(io.BytesIO(raw), path).load()
    except DatasetError:
        raise
    except Exception as exc:  # any failure inside the scan or the unpickler: a bad file
        raise DatasetError(f"{path}: not a readable pickle ({reason(exc)}); re-download it") from exc
