"""MNIST and Fashion-MNIST from a directory of IDX files (gzipped or not)."""

from __future__ import annotations

from pathlib import Path

from tinydyn.data.dataset import Dataset, DatasetError
from tinydyn.data.idx import load_idx_pair

# Where the Debian package 'dataset-fashion-mnist' installs the four gzipped IDX files.
FASHION_MNIST_DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

# (images, labels) file stems per split, as distributed.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_FILES = ", ".join(f"{stem}.gz" for pair in IDX_FILES.values() for stem in pair)


def _find(dirs: list[Path], stem: str) -> Path | None:
    """First existing spelling of an IDX file: gz or plain, and the common
    ``t10k-images.idx3-ubyte`` variant some mirrors use."""
    dotted = stem.replace("-idx", ".idx")
    for d in dirs:
        for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
            if (d / name).is_file():
                return d / name
    return None


def _search_dirs(root: Path, torchvision_name: str) -> list[Path]:
    # The directory itself, or torchvision's download layout below it.
    return [root, root / "raw", root / torchvision_name / "raw"]


def _load(
    name: str,
    title: str,
    torchvision_name: str,
    classes: tuple[str, ...],
    split: str,
    root: Path,
    fix: str,
) -> Dataset:
    dirs = _search_dirs(root, torchvision_name)
    paths = []
    for stem in IDX_FILES[split]:
        path = _find(dirs, stem)
        if path is None:
            raise DatasetError(f"{title} not found in {root} (no {stem}[.gz]): {fix}")
        paths.append(path)
    images, labels = load_idx_pair(paths[0], paths[1], len(classes))
    return Dataset(images, labels, classes, name, split)


def load_fashion_mnist(split: str, root: Path | None) -> Dataset:
    if root is None:
        root = FASHION_MNIST_DEBIAN_ROOT
        fix = (
            "install the Debian package 'dataset-fashion-mnist' (apt-get install "
            "dataset-fashion-mnist) or pass --data-root DIR with the IDX files"
        )
    else:
        fix = (
            f"pass --data-root DIR with the IDX files ({_ALL_FILES}), or leave it out to use "
            "the Debian package 'dataset-fashion-mnist'"
        )
    return _load("fashion-mnist", "Fashion-MNIST", "FashionMNIST", FASHION_MNIST_CLASSES, split, root, fix)


def load_mnist(split: str, root: Path | None) -> Dataset:
    fix = f"download the IDX files ({_ALL_FILES}) into a directory and pass --data-root DIR"
    if root is None:
        raise DatasetError(f"MNIST has no default location: {fix}")
    return _load("mnist", "MNIST", "MNIST", MNIST_CLASSES, split, root, fix)
