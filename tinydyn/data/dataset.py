"""The in-memory dataset every loader returns, and the error they raise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinydyn.errors import TinydynError

# Fashion-MNIST (and MNIST) have no validation split: test images from here on tune what is
# decided from data (default budgets, FPGA folding), the images before it report accuracy, so
# no decision sees the reported images.
VALIDATION_OFFSET = 5000


class DatasetError(TinydynError):
    """A dataset is missing, unknown or corrupt; the message names the file and the fix."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays field-wise is ambiguous
class Dataset:
    """Images as uint8 (N, C, H, W), channels first, with int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    name: str
    split: str
    # One line the caller should show the user when the data is not the complete set the
    # name suggests (e.g. CIFAR-10 train from only some of its batches); "" otherwise.
    note: str = ""

    def __post_init__(self) -> None:
        # Loaders validate their files; this catches a loader (or caller) handing over
        # arrays of the wrong kind before they reach training or code generation.
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DatasetError(
                f"{self.name}/{self.split}: images must be uint8 (N, C, H, W), got "
                f"{self.images.dtype} {self.images.shape}; fix the loader"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != (self.images.shape[0],):
            raise DatasetError(
                f"{self.name}/{self.split}: labels must be int64 ({self.images.shape[0]},), got "
                f"{self.labels.dtype} {self.labels.shape}; fix the loader"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, c, h, w = self.images.shape
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, n: int) -> Dataset:
        """The first ``n`` samples (all of them if there are fewer); views, no copy."""
        if n < 0:
            raise DatasetError(f"subset size must be >= 0, got {n}; pass a non-negative count")
        return Dataset(self.images[:n], self.labels[:n], self.classes, self.name, self.split, self.note)

    def __repr__(self) -> str:
        # The default repr would dump the pixel arrays.
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )
