"""Which dataset a model belongs to: recorded in the checkpoint, or inferred from its classes.

A model answers in the classes and takes the image shape it was trained with; evaluating or
measuring it on another dataset gives a meaningless accuracy (an MNIST model scored on
Fashion-MNIST reads ~10 %). So commands default to the model's own dataset and refuse another
one. No torch here: ``tinydyn measure --ir`` resolves the dataset of an IR the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from tinydyn.data import Dataset, canonical_name
from tinydyn.data.cifar import CIFAR10_CLASSES
from tinydyn.data.mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES
from tinydyn.errors import TinydynError

Shape = tuple[int, int, int]

# (classes, C×H×W) of every dataset tinydyn loads, known without reading a file
SIGNATURES: dict[str, tuple[tuple[str, ...], Shape]] = {
    "fashion-mnist": (FASHION_MNIST_CLASSES, (1, 28, 28)),
    "mnist": (MNIST_CLASSES, (1, 28, 28)),
    "cifar10": (CIFAR10_CLASSES, (3, 32, 32)),
}


class DatasetMismatchError(TinydynError):
    """A dataset whose classes or image shape are not the model's."""


def infer_dataset(classes: Sequence[str], shape: Shape) -> str | None:
    """The dataset whose class names and image shape are exactly the model's (None if none is)."""
    for name, signature in SIGNATURES.items():
        if signature == (tuple(classes), tuple(shape)):
            return name
    return None


def _classes_text(classes: Sequence[str]) -> str:
    # names are whole words in messages: first..last, never cut (an odd name is just counted)
    if len(classes) >= 2 and all(isinstance(c, str) and 0 < len(c) <= 32 for c in classes):
        return f"{len(classes)} classes {classes[0]}..{classes[-1]}"
    return f"{len(classes)} classes"


def model_dataset(
    requested: str | None, classes: Sequence[str], shape: Shape, recorded: str | None, what: str
) -> tuple[str, str]:
    """The dataset to use for a model, and where that choice came from (for the summary).

    ``requested``: the --dataset given (None: the model's own). ``recorded``: the name its
    checkpoint stores (None for old checkpoints and IRs: inferred from classes and shape).
    ``what`` names the model in messages ("checkpoint runs/m.pt")."""
    classes, shape = tuple(classes), tuple(shape)
    own = None
    if recorded is not None:
        if recorded not in SIGNATURES or SIGNATURES[recorded] != (classes, shape):
            said = repr(recorded) if len(recorded) <= 40 and recorded.isprintable() else "an unknown dataset"
            raise DatasetMismatchError(
                f"{what} says it was trained on {said}, but its {_classes_text(classes)} of "
                f"{shape} images are not that dataset's: it was edited; retrain it or pass --dataset"
            )
        own = recorded
    else:
        own = infer_dataset(classes, shape)
    if requested is None:
        if own is None:
            raise DatasetMismatchError(
                f"{what} takes {shape} images of {_classes_text(classes)}, which match none of "
                f"{', '.join(SIGNATURES)}: pass --dataset"
            )
        return own, "recorded in the checkpoint" if recorded is not None else "inferred from its class names"
    name = canonical_name(requested)
    if SIGNATURES[name] != (classes, shape):
        want_classes, want_shape = SIGNATURES[name]
        trained = f"on {own} " if own is not None else ""
        raise DatasetMismatchError(
            f"--dataset {name} has {want_shape} images of {_classes_text(want_classes)}, but {what} was "
            f"trained {trained}with {shape} images of {_classes_text(classes)}: "
            + (f"drop --dataset to use {own}" if own is not None else "give the dataset it was trained on")
        )
    return name, "given with --dataset"


def check_loaded(data: Dataset, classes: Sequence[str], shape: Shape, what: str) -> None:
    """The files under --data-root can still hold other images than the name promises (IDX files
    of any size): compare what was loaded with the model."""
    if tuple(data.input_shape) != tuple(shape):
        raise DatasetMismatchError(
            f"{data.name} images loaded are {data.input_shape} but {what} takes {tuple(shape)}: "
            "check the files under --data-root"
        )
    if tuple(data.classes) != tuple(classes):
        raise DatasetMismatchError(
            f"{data.name} as loaded has {_classes_text(data.classes)}, but {what} answers in "
            f"{_classes_text(classes)}: check the files under --data-root"
        )
