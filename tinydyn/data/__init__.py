"""Dataset loaders: Fashion-MNIST, MNIST (IDX files) and CIFAR-10 (python or binary).

from tinydyn.data import load_dataset
ds = load_dataset("fashion-mnist", "test")   # ds.images uint8 (N, 1, 28, 28)
"""

from tinydyn.data.dataset import VALIDATION_OFFSET, Dataset, DatasetError
from tinydyn.data.registry import DATASETS, SPLITS, canonical_name, load_dataset

__all__ = [
    "DATASETS",
    "SPLITS",
    "VALIDATION_OFFSET",
    "Dataset",
    "DatasetError",
    "canonical_name",
    "load_dataset",
]
