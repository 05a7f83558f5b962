"""Reader for the IDX format of MNIST / Fashion-MNIST (http://yann.lecun.com/exdb/mnist/).

Layout: magic ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32 sizes, then
the data row-major. Only unsigned bytes (code 0x08) occur in the image/label sets.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from tinydyn.data.dataset import DatasetError

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


def read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip (detected by magic, not by name)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}; check the path") from exc
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # EOFError is what a truncated gzip stream raises.
        raise DatasetError(f"{path}: corrupt or truncated gzip file ({exc}); re-download it") from exc


def parse_idx(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """Validate an IDX header against the data and return the uint8 array it describes."""
    fix = "re-download it"
    if len(data) < 4:
        raise DatasetError(f"{path}: truncated IDX file ({len(data)} bytes, no header); {fix}")
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPE_NAMES:
        raise DatasetError(
            f"{path}: not an IDX file (bad magic {data[:4].hex()}, expected 0000{_UBYTE:02x}xx); {fix}"
        )
    code, got_ndim = data[2], data[3]
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
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes); {fix}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if 0 in dims:
        raise DatasetError(f"{path}: IDX header has an empty dimension {dims}; {fix}")
    expected = math.prod(dims)
    present = len(data) - header
    if present < expected:
        raise DatasetError(
            f"{path}: truncated IDX file: header {'x'.join(map(str, dims))} needs {expected} "
            f"data bytes but only {present} are present; {fix}"
        )
    if present > expected:
        raise DatasetError(
            f"{path}: IDX file has {present - expected} bytes beyond the "
            f"{'x'.join(map(str, dims))} data its header describes; {fix}"
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a plain or gzipped IDX file of ``ndim`` dimensions (read-only uint8 array)."""
    return parse_idx(read_maybe_gzip(path), path, ndim)


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
    # Copies make the arrays writable (np.frombuffer over bytes is read-only), which
    # torch.from_numpy and in-place augmentation expect.
    return images[:, None, :, :].copy(), labels.astype(np.int64)
