"""Unpickling that cannot run code: only the globals a numpy array needs are resolved.

A pickle can call any importable function (``os.system`` ...) through ``find_class``; the
CIFAR-10 python batches hold only dicts, lists, bytes, ints and uint8 numpy arrays, so
everything else is refused before it is imported.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

from tinydyn.data.dataset import DatasetError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What protocol <= 2 pickles written by Python 3 call (``_codecs.encode(s, 'latin1')``)
    to rebuild bytes; restricted to latin-1 so no other codec can be looked up."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


# (module, name) as written in the pickle -> the object to hand back. Python 2 pickles
# (the official CIFAR-10 files) name numpy.core; numpy 2 writes numpy._core.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Protocol 5 pickles of contiguous arrays rebuild them with _frombuffer.
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
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


def safe_load(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; errors name the file."""
    try:
        with path.open("rb") as f:
            return RestrictedUnpickler(f, path).load()
    except DatasetError:
        raise
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}; check the path") from exc
    except Exception as exc:  # any failure inside the unpickler means a bad file
        raise DatasetError(
            f"{path}: not a readable pickle ({type(exc).__name__}: {exc}); re-download it"
        ) from exc
