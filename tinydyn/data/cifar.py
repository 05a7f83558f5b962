"""CIFAR-10 (https://www.cs.toronto.edu/~kriz/cifar.html), python-pickle or binary version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinydyn.data.dataset import Dataset, DatasetError
from tinydyn.data.safe_pickle import safe_load
from tinydyn.data.untrusted import MIB, file_size, human_size, read_bounded

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
PY_DIR = "cifar-10-batches-py"
BIN_DIR = "cifar-10-batches-bin"
_PIXELS = 3 * 32 * 32
_RECORD = 1 + _PIXELS  # binary version: one label byte, then the 3072 CHW pixel bytes
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_FIX = "download cifar-10-python.tar.gz or cifar-10-binary.tar.gz, extract it and pass --data-root DIR"

# Caps on untrusted batch files, checked before they are read. An official batch holds
# 10,000 images; twice that leaves room for re-packed batches while bounding one batch's
# pixels to 61 MB. The official python batch is ~31 MB; a 10,000-image batch re-pickled by
# Python 3 at protocol 2 stores its pixels as latin-1 text, up to 2 bytes each (~62 MB), so
# 64 MiB admits both. The binary batch size follows from the image cap exactly.
_MAX_BATCH_IMAGES = 20_000
_MAX_PICKLE_BYTES = 64 * MIB
_MAX_BIN_BYTES = _MAX_BATCH_IMAGES * _RECORD
# batches.meta is 158 bytes: 10 class names and two ints.
_MAX_META_BYTES = 64 * 1024
_MAX_NAME_CHARS = 64


def _file_name(stem: str, fmt: str) -> str:
    return stem if fmt == "py" else f"{stem}.bin"


def _locate(root: Path) -> tuple[Path, str] | None:
    """(directory, "py" | "bin") for root being the extracted folder or its parent."""
    stems = _BATCHES["test"] + _BATCHES["train"]
    for d in (root, root / PY_DIR, root / BIN_DIR):
        for fmt in ("py", "bin"):
            if any((d / _file_name(stem, fmt)).is_file() for stem in stems):
                return d, fmt
    return None


def _not_found(root: Path) -> DatasetError:
    for tarball in ("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"):
        if (root / tarball).is_file():
            return DatasetError(
                f"CIFAR-10 not found in {root}: {tarball} is there but not extracted; run "
                f"'tar xzf {root / tarball} -C {root}' and pass --data-root {root}"
            )
    return DatasetError(f"CIFAR-10 not found in {root}: {_FIX}")


def _get(batch: dict[Any, Any], key: str, path: Path) -> Any:
    # Official files have bytes keys (Python 2 str read with encoding="bytes"); accept str
    # keys too for batches re-pickled under Python 3.
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DatasetError(f"{path}: no {key!r} entry, not a CIFAR-10 python batch (CIFAR-100?); re-download it")


def _bad(path: Path, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}; the file is corrupt or not CIFAR-10, re-download it")


def _check_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= len(CIFAR10_CLASSES)):
        raise _bad(path, f"labels outside 0..9 (min {int(labels.min())}, max {int(labels.max())})")
    return labels


def _labels(raw: Any, n: int, path: Path) -> np.ndarray:
    """'labels' as int64 (n,), checked element by element before an array is built: a
    list of n references to one nested list would otherwise become gigabytes."""
    if isinstance(raw, np.ndarray):
        raw = np.asarray(raw)
        if raw.dtype.kind not in "iu" or raw.shape != (n,):
            raise _bad(path, f"'labels' is a {raw.dtype} array of shape {raw.shape}, expected {n} ints")
        if raw.size and (int(raw.min()) < 0 or int(raw.max()) >= len(CIFAR10_CLASSES)):
            raise _bad(path, f"labels outside 0..9 (min {int(raw.min())}, max {int(raw.max())})")
        return raw.astype(np.int64)
    if type(raw) is not list:
        raise _bad(path, f"'labels' is a {type(raw).__name__}, expected a list of {n} ints")
    if len(raw) != n:
        raise _bad(path, f"{n} images but {len(raw)} labels")
    for x in raw:
        if type(x) is not int:  # not bool either: official labels are plain ints
            raise _bad(path, f"'labels' holds a {type(x).__name__}, expected ints 0..9")
    if raw and (min(raw) < 0 or max(raw) >= len(CIFAR10_CLASSES)):
        # Python ints can be huge (str() of one can even fail): show only small values.
        shown = [v if -(10**9) < v < 10**9 else "huge" for v in (min(raw), max(raw))]
        raise _bad(path, f"labels outside 0..9 (min {shown[0]}, max {shown[1]})")
    return np.array(raw, dtype=np.int64)


def _read_py_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_load(path, _MAX_PICKLE_BYTES, "CIFAR-10 python batch")
    if type(batch) is not dict:
        raise DatasetError(
            f"{path}: holds a {type(batch).__name__}, not a CIFAR-10 batch dict; re-download it"
        )
    data = _get(batch, "data", path)
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and 0 < data.shape[0] <= _MAX_BATCH_IMAGES
        and data.shape[1] == _PIXELS
    ):
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(
            f"{path}: 'data' is {desc}, expected uint8 (N, {_PIXELS}) with N from 1 to "
            f"{_MAX_BATCH_IMAGES}; re-download it"
        )
    data = np.asarray(data)  # a plain ndarray, not the unpickler's checked subclass
    labels = _labels(_get(batch, "labels", path), data.shape[0], path)
    # Rows are row-major CHW (1024 red, 1024 green, 1024 blue), so a reshape is exact.
    return data.reshape(-1, 3, 32, 32), labels


def _read_bin_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    size = file_size(path)
    if not size or size % _RECORD:
        raise DatasetError(
            f"{path}: size {size} is not a positive multiple of the {_RECORD}-byte CIFAR-10 "
            "record (1 label byte + 3072 pixel bytes); the file is truncated, re-download it"
        )
    if size > _MAX_BIN_BYTES:
        raise DatasetError(
            f"{path}: {size // _RECORD} records ({human_size(size)}), more than any CIFAR-10 "
            f"batch (at most {_MAX_BATCH_IMAGES}); the file is corrupt, re-download it"
        )
    raw = read_bounded(path, size, "CIFAR-10 binary batch")
    if len(raw) != size:  # shrank since the size check
        raise DatasetError(f"{path}: file changed while being read; re-download it")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    return records[:, 1:].reshape(-1, 3, 32, 32), _check_labels(labels, path)


def _class_names(directory: Path, fmt: str) -> tuple[str, ...]:
    """Names from the batch meta file when present; CIFAR-10's fixed names otherwise."""
    if fmt == "py":
        path = directory / "batches.meta"
        if not path.is_file():
            return CIFAR10_CLASSES
        meta = safe_load(path, _MAX_META_BYTES, "CIFAR-10 batches.meta file")
        raw = _get(meta, "label_names", path) if type(meta) is dict else None
        if type(raw) is not list or not all(type(n) in (str, bytes) for n in raw[:100]):
            raise DatasetError(f"{path}: no 'label_names' list of names; re-download it")
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in raw[:100]]
        count = len(raw)
    else:
        path = directory / "batches.meta.txt"
        if not path.is_file():
            return CIFAR10_CLASSES
        text = read_bounded(path, _MAX_META_BYTES, "CIFAR-10 batches.meta.txt file")
        names = [line.strip() for line in text.decode("utf-8", "replace").splitlines() if line.strip()]
        count = len(names)
    if count != len(CIFAR10_CLASSES):
        raise DatasetError(f"{path}: lists {count} class names, CIFAR-10 has 10; re-download it")
    # The names end up in reports and generated firmware: short, printable text only.
    if not all(0 < len(n) <= _MAX_NAME_CHARS and n.isprintable() for n in names):
        raise DatasetError(
            f"{path}: class names must be printable and 1 to {_MAX_NAME_CHARS} characters "
            "long; re-download it"
        )
    return tuple(names)


def _train_batches(directory: Path, fmt: str) -> tuple[list[str], str]:
    """The data_batch_* stems present (at least one) and a note when some are missing."""
    stems = _BATCHES["train"]
    present = [s for s in stems if (directory / _file_name(s, fmt)).is_file()]
    if not present:
        names = f"{_file_name(stems[0], fmt)} .. {_file_name(stems[-1], fmt)}"
        raise DatasetError(f"CIFAR-10 in {directory} has no training batch ({names}): {_FIX}")
    missing = [_file_name(s, fmt) for s in stems if s not in present]
    note = ""
    if missing:
        note = (
            f"CIFAR-10 train: using {len(present)} of {len(stems)} batches "
            f"({', '.join(_file_name(s, fmt) for s in present)}); {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing from {directory}"
        )
    return present, note


def load_cifar10(split: str, root: Path | None) -> Dataset:
    if root is None:
        raise DatasetError(f"CIFAR-10 has no default location: {_FIX}")
    found = _locate(root)
    if found is None:
        raise _not_found(root)
    directory, fmt = found
    read = _read_py_batch if fmt == "py" else _read_bin_batch
    if split == "train":
        stems, note = _train_batches(directory, fmt)
    else:
        stems, note = _BATCHES[split], ""
    images, labels = [], []
    for stem in stems:
        path = directory / _file_name(stem, fmt)
        if not path.is_file():
            raise DatasetError(f"CIFAR-10 in {directory} is incomplete (no {path.name}): {_FIX}")
        x, y = read(path)
        images.append(x)
        labels.append(y)
    # concatenate copies, so the arrays are writable and own their memory.
    return Dataset(
        np.concatenate(images),
        np.concatenate(labels),
        _class_names(directory, fmt),
        "cifar10",
        split,
        note,
    )
