"""CIFAR-10 (https://www.cs.toronto.edu/~kriz/cifar.html), python-pickle or binary version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinydyn.data.dataset import Dataset, DatasetError
from tinydyn.data.safe_pickle import safe_load

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


def _locate(root: Path) -> tuple[Path, str] | None:
    """(directory, "py" | "bin") for root being the extracted folder or its parent."""
    for d in (root, root / PY_DIR, root / BIN_DIR):
        if (d / "test_batch").is_file() or (d / "data_batch_1").is_file():
            return d, "py"
        if (d / "test_batch.bin").is_file() or (d / "data_batch_1.bin").is_file():
            return d, "bin"
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


def _check_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= len(CIFAR10_CLASSES)):
        raise DatasetError(
            f"{path}: labels outside 0..9 (min {int(labels.min())}, max {int(labels.max())}); "
            "the file is corrupt or not CIFAR-10, re-download it"
        )
    return labels


def _read_py_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_load(path)
    if not isinstance(batch, dict):
        raise DatasetError(
            f"{path}: holds a {type(batch).__name__}, not a CIFAR-10 batch dict; re-download it"
        )
    data = _get(batch, "data", path)
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == _PIXELS
    ):
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise DatasetError(f"{path}: 'data' is {desc}, expected uint8 (N, {_PIXELS}); re-download it")
    try:
        labels = np.asarray(_get(batch, "labels", path), dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DatasetError(f"{path}: 'labels' are not integers ({exc}); re-download it") from exc
    if labels.shape != (data.shape[0],):
        raise DatasetError(
            f"{path}: {data.shape[0]} images but labels of shape {labels.shape}; re-download it"
        )
    # Rows are row-major CHW (1024 red, 1024 green, 1024 blue), so a reshape is exact.
    return data.reshape(-1, 3, 32, 32), _check_labels(labels, path)


def _read_bin_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}; check the path") from exc
    if not raw or len(raw) % _RECORD:
        raise DatasetError(
            f"{path}: size {len(raw)} is not a positive multiple of the {_RECORD}-byte CIFAR-10 "
            "record (1 label byte + 3072 pixel bytes); the file is truncated, re-download it"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    return records[:, 1:].reshape(-1, 3, 32, 32), _check_labels(labels, path)


def _class_names(directory: Path, fmt: str) -> tuple[str, ...]:
    """Names from the batch meta file when present; CIFAR-10's fixed names otherwise."""
    if fmt == "py":
        path = directory / "batches.meta"
        if not path.is_file():
            return CIFAR10_CLASSES
        meta = safe_load(path)
        raw = _get(meta, "label_names", path) if isinstance(meta, dict) else None
        if not isinstance(raw, list):
            raise DatasetError(f"{path}: no 'label_names' list; re-download it")
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in raw]
    else:
        path = directory / "batches.meta.txt"
        if not path.is_file():
            return CIFAR10_CLASSES
        text = path.read_text(encoding="utf-8", errors="replace")
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != len(CIFAR10_CLASSES):
        raise DatasetError(f"{path}: lists {len(names)} class names, CIFAR-10 has 10; re-download it")
    return tuple(names)


def load_cifar10(split: str, root: Path | None) -> Dataset:
    if root is None:
        raise DatasetError(f"CIFAR-10 has no default location: {_FIX}")
    found = _locate(root)
    if found is None:
        raise _not_found(root)
    directory, fmt = found
    read = _read_py_batch if fmt == "py" else _read_bin_batch
    images, labels = [], []
    for stem in _BATCHES[split]:
        path = directory / (stem if fmt == "py" else f"{stem}.bin")
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
    )
