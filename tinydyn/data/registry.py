"""Dataset names, splits and the one entry point, :func:`load_dataset`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tinydyn.data.cifar import load_cifar10
from tinydyn.data.dataset import Dataset, DatasetError
from tinydyn.data.mnist import load_fashion_mnist, load_mnist

Loader = Callable[[str, Path | None], Dataset]

_LOADERS: dict[str, Loader] = {
    "fashion-mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)
SPLITS: tuple[str, ...] = ("train", "test")

# Spellings people type for the same sets (after lower-casing, '_' -> '-').
_ALIASES = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10"}


def canonical_name(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _LOADERS:
        raise DatasetError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    return key


def load_dataset(name: str, split: str = "test", root: str | Path | None = None) -> Dataset:
    """Load ``split`` ("train" or "test") of dataset ``name`` (one of :data:`DATASETS`).

    ``root`` is a directory holding the dataset files; None uses the default location
    (Fashion-MNIST: the Debian package's directory; the others have none).
    """
    key = canonical_name(name)
    split_key = split.strip().lower()
    if split_key not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: use 'train' or 'test'")
    root_path = Path(root).expanduser() if root is not None else None
    return _LOADERS[key](split_key, root_path)
