"""Reader for the IDX format of MNIST / Fashion-MNIST (http://yann.lecun.com/exdb/mnist/).

Layout: magic ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32 sizes, then
the data row-major. Only unsigned bytes (code 0x08) occur in the image/label sets.

The files are untrusted: the header is read and checked first, then exactly the bytes it
describes are read (gzip is decompressed as a stream), so a small gzip bomb or a header
claiming gigabytes is refused instead of being expanded into memory.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tinydyn.data.dataset import DatasetError
from tinydyn.data.untrusted import file_size, human_size, reason

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
_DTYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_FIX = "re-download it"

# The largest header tinydyn believes. The biggest real MNIST-format set, EMNIST ByClass
# train, is 697,932 images of 28x28 (547 MB); MNIST / Fashion-MNIST train is 60,000 x 28 x 28
# (47 MB). So: at most a million items of at most 256 x 256, and at most 560 MiB of data in
# all, which admits every one of them and bounds a hostile file to one array of that size.
MAX_IDX_ITEMS = 1_000_000
MAX_IDX_SIDE = 256
MAX_IDX_DATA_BYTES = 560 * (1 << 20)
# Decompress / read in pieces of this size: the only buffer besides the result array.
_CHUNK = 1 << 20


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at the end of the stream."""
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _fill(stream: BinaryIO, out: memoryview) -> int:
    """Read into ``out`` until it is full or the stream ends; the count read."""
    got = 0
    while got < len(out):
        # Bounded pieces: GzipFile has no readinto, and read(len(out)) would allocate a
        # second buffer as large as the whole array.
        part = stream.read(min(_CHUNK, len(out) - got))
        if not part:
            break
        out[got : got + len(part)] = part
        got += len(part)
    return got


def _check_header(head: bytes, path: Path, ndim: int) -> tuple[int, ...]:
    """Dims of a valid header (``head`` holds up to 4 + 4 * ndim bytes)."""
    if len(head) < 4:
        raise DatasetError(f"{path}: truncated IDX file ({len(head)} bytes, no header); {_FIX}")
    if head[0] != 0 or head[1] != 0 or head[2] not in _DTYPE_NAMES:
        raise DatasetError(
            f"{path}: not an IDX file (bad magic {head[:4].hex()}, expected 0000{_UBYTE:02x}xx); {_FIX}"
        )
    code, got_ndim = head[2], head[3]
    if code != _UBYTE:
        raise DatasetError(
            f"{path}: IDX data type is {_DTYPE_NAMES[code]} (0x{code:02x}), only unsigned byte "
            f"(0x08) images/labels are supported; re-download the original MNIST-format file"
        )
    if got_ndim != ndim:
        raise DatasetError(
            f"{path}: IDX header has {got_ndim} dimensions, expected {ndim} "
            f"({'images N x H x W' if ndim == 3 else 'labels N'}); wrong file, re-download it"
        )
    if len(head) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header ({len(head)} bytes); {_FIX}")
    dims = struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])
    shape = "x".join(map(str, dims))
    if 0 in dims:
        raise DatasetError(f"{path}: IDX header has an empty dimension {dims}; {_FIX}")
    if (
        dims[0] > MAX_IDX_ITEMS
        or any(side > MAX_IDX_SIDE for side in dims[1:])
        or math.prod(dims) > MAX_IDX_DATA_BYTES
    ):
        raise DatasetError(
            f"{path}: IDX header claims {shape} ({human_size(math.prod(dims))}), more than any "
            f"MNIST-format set (at most {MAX_IDX_ITEMS} items of at most {MAX_IDX_SIDE}x"
            f"{MAX_IDX_SIDE}, {human_size(MAX_IDX_DATA_BYTES)}); the file is corrupt, {_FIX}"
        )
    return dims


def _truncated(path: Path, dims: tuple[int, ...], present: int) -> DatasetError:
    return DatasetError(
        f"{path}: truncated IDX file: header {'x'.join(map(str, dims))} needs {math.prod(dims)} "
        f"data bytes but only {present} are present; {_FIX}"
    )


def _trailing(path: Path, dims: tuple[int, ...], extra: int | None) -> DatasetError:
    # extra is None for gzip: the stream is only read one byte past the data.
    amount = "more data" if extra is None else f"{extra} bytes"
    return DatasetError(
        f"{path}: IDX file has {amount} beyond the {'x'.join(map(str, dims))} data its "
        f"header describes; {_FIX}"
    )


def _read_stream(stream: BinaryIO, path: Path, ndim: int, data_size: int | None) -> np.ndarray:
    """Header, then exactly the data it describes. ``data_size``: bytes after the header
    when known up front (plain file), None for gzip (known only by reading)."""
    dims = _check_header(_read_up_to(stream, 4 + 4 * ndim), path, ndim)
    expected = math.prod(dims)
    if data_size is not None:
        # Plain file: compare the size before reading anything large.
        if data_size < expected:
            raise _truncated(path, dims, data_size)
        if data_size > expected:
            raise _trailing(path, dims, data_size - expected)
    # Writable and owned, so no copy is needed for torch.from_numpy / in-place augmentation.
    out = np.empty(dims, dtype=np.uint8)
    got = _fill(stream, memoryview(out).cast("B"))
    if got < expected:
        raise _truncated(path, dims, got)
    if stream.read(1):  # one byte past the data is enough to see trailing data
        raise _trailing(path, dims, None)
    return out


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a plain or gzipped IDX file of ``ndim`` dimensions (gzip detected by magic)."""
    size = file_size(path)
    try:
        with path.open("rb") as f:
            if f.read(2) != _GZIP_MAGIC:
                f.seek(0)
                return _read_stream(f, path, ndim, max(size - 4 - 4 * ndim, 0))
            f.seek(0)
            try:
                with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                    return _read_stream(gz, path, ndim, None)  # type: ignore[arg-type]
            except (OSError, EOFError, zlib.error) as exc:
                # EOFError is what a truncated gzip stream raises; BadGzipFile is an OSError.
                raise DatasetError(
                    f"{path}: corrupt or truncated gzip file ({reason(exc)}); re-download it"
                ) from exc
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}; check the path") from exc


def load_idx_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 from an IDX image/label file pair."""
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels; the files come from different sets, re-download both"
        )
    if int(labels.max()) >= num_classes:
        raise DatasetError(
            f"{labels_path}: label {int(labels.max())} is out of range 0..{num_classes - 1}; "
            f"the file is corrupt or not this dataset, re-download it"
        )
    # read_idx's arrays are writable and own their memory: a view adds the channel axis
    # without a second copy of the images.
    return images[:, None, :, :], labels.astype(np.int64)
