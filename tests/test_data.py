"""Dataset loaders: real Fashion-MNIST, IDX files, both CIFAR-10 formats, safe unpickling."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from tinydyn.data import DATASETS, Dataset, DatasetError, load_dataset
from tinydyn.errors import TinydynError

from .conftest import IN_CI

FMNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
# skipped only outside CI: under CI the dataset must be installed, so the tests run (and fail)
needs_fmnist = pytest.mark.skipif(
    not (FMNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file() and not IN_CI,
    reason="Debian package dataset-fashion-mnist not installed",
)
FMNIST_CLASSES = (
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
CIFAR_CLASSES = [
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
]


def one_line(exc: pytest.ExceptionInfo[DatasetError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    assert isinstance(exc.value, TinydynError)
    return msg


# --- real Fashion-MNIST (Debian package) -------------------------------------------------


def raw_idx_item(path: Path, index: int) -> tuple[tuple[int, ...], bytes]:
    """Dims and the bytes of item ``index``, parsed independently of tinydyn."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    item = int(np.prod(dims[1:])) if ndim > 1 else 1
    start = 4 + 4 * ndim + index * item
    return dims, data[start : start + item]


@needs_fmnist
def test_fashion_mnist_test_split() -> None:
    ds = load_dataset("fashion-mnist")  # split defaults to test
    assert ds.name == "fashion-mnist" and ds.split == "test"
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (10000,) and ds.labels.dtype == np.int64
    assert len(ds) == 10000 and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.classes == FMNIST_CLASSES
    assert np.bincount(ds.labels, minlength=10).tolist() == [1000] * 10
    for i in (0, 1234, 9999):
        dims, pixels = raw_idx_item(FMNIST_ROOT / "t10k-images-idx3-ubyte.gz", i)
        assert dims == (10000, 28, 28)
        assert ds.images[i, 0].tobytes() == pixels
        _, label = raw_idx_item(FMNIST_ROOT / "t10k-labels-idx1-ubyte.gz", i)
        assert ds.labels[i] == label[0]
    assert ds.classes[ds.labels[0]] == "Ankle boot"  # the well-known first test image


@needs_fmnist
def test_fashion_mnist_train_split_is_fast() -> None:
    start = time.perf_counter()
    ds = load_dataset("fashion-mnist", "train")
    assert time.perf_counter() - start < 5.0  # vectorised: ~0.5 s on a laptop
    assert ds.images.shape == (60000, 1, 28, 28)
    assert np.bincount(ds.labels, minlength=10).tolist() == [6000] * 10
    _, pixels = raw_idx_item(FMNIST_ROOT / "train-images-idx3-ubyte.gz", 59999)
    assert ds.images[59999, 0].tobytes() == pixels
    assert ds.images.flags.writeable  # torch.from_numpy warns on read-only arrays


# --- IDX files ---------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray) -> bytes:
    """The exact IDX encoding: 00 00 08 ndim, big-endian uint32 dims, raw bytes."""
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_idx_set(
    root: Path, n_train: int = 7, n_test: int = 5, gz: bool = True, hw: tuple[int, int] = (28, 28)
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, *hw), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write(root / f"{prefix}-images-idx3-ubyte", idx_bytes(images), gz)
        write(root / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels), gz)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_idx_roundtrip(tmp_path: Path, gz: bool, split: str) -> None:
    expected = make_idx_set(tmp_path, gz=gz)
    ds = load_dataset("mnist", split, root=str(tmp_path))
    images, labels = expected[split]
    assert ds.images.shape == (len(images), 1, 28, 28) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images[:, 0], images)
    np.testing.assert_array_equal(ds.labels, labels.astype(np.int64))
    assert ds.labels.dtype == np.int64
    assert ds.classes == tuple("0123456789") and ds.name == "mnist" and ds.split == split


def test_idx_non_square_and_mixed_compression(tmp_path: Path) -> None:
    images = np.arange(3 * 4 * 6, dtype=np.uint8).reshape(3, 4, 6)
    labels = np.array([2, 0, 9], dtype=np.uint8)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(images), gz=True)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(labels), gz=False)
    ds = load_dataset("MNIST", "test", tmp_path)  # name is case-insensitive
    assert ds.input_shape == (1, 4, 6)
    np.testing.assert_array_equal(ds.images[:, 0], images)
    assert ds.labels.tolist() == [2, 0, 9]


def test_user_root_overrides_fashion_mnist_default(tmp_path: Path) -> None:
    expected = make_idx_set(tmp_path, n_test=3)
    ds = load_dataset("fashion_mnist", "test", tmp_path)
    assert len(ds) == 3 and ds.classes == FMNIST_CLASSES and ds.name == "fashion-mnist"
    np.testing.assert_array_equal(ds.images[:, 0], expected["test"][0])


def test_torchvision_layout(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    expected = make_idx_set(raw, gz=False)
    ds = load_dataset("mnist", "train", tmp_path)
    np.testing.assert_array_equal(ds.images[:, 0], expected["train"][0])


def corrupt(tmp_path: Path, which: str, data: bytes, gz: bool = False) -> Path:
    """A valid test set whose ``which`` file ("images"/"labels") is replaced by ``data``."""
    make_idx_set(tmp_path, gz=False)
    path = tmp_path / f"t10k-{which}-idx{3 if which == 'images' else 1}-ubyte"
    path.unlink()
    return write(path, data, gz)


GOOD_IMAGES = idx_bytes(np.zeros((5, 28, 28), np.uint8))


@pytest.mark.parametrize(
    ("which", "data", "gz", "words"),
    [
        ("images", GOOD_IMAGES[:-1], False, "truncated"),
        ("images", GOOD_IMAGES[:-1], True, "truncated"),
        ("images", GOOD_IMAGES[:10], False, "truncated"),
        ("images", GOOD_IMAGES[:2], False, "truncated"),
        ("images", gzip.compress(GOOD_IMAGES)[:-20], False, "gzip"),
        ("images", GOOD_IMAGES + b"\0", False, "beyond"),
        ("images", b"\x12\x34" + GOOD_IMAGES[2:], False, "magic"),
        ("images", b"PK\x03\x04" + GOOD_IMAGES[4:], True, "magic"),
        ("images", bytes([0, 0, 0x0D]) + GOOD_IMAGES[3:], False, "float32"),
        ("images", idx_bytes(np.zeros((5, 784), np.uint8)), False, "dimensions"),
        ("labels", idx_bytes(np.zeros((5, 1), np.uint8)), False, "dimensions"),
        ("labels", idx_bytes(np.array([0, 1, 2, 3, 10], np.uint8)), False, "out of range"),
    ],
)
def test_corrupt_idx_names_file(tmp_path: Path, which: str, data: bytes, gz: bool, words: str) -> None:
    path = corrupt(tmp_path, which, data, gz)
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", "test", tmp_path)
    msg = one_line(exc)
    assert str(path) in msg and words in msg and "re-download" in msg


def test_idx_count_mismatch(tmp_path: Path) -> None:
    corrupt(tmp_path, "labels", idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", "test", tmp_path)
    msg = one_line(exc)
    assert "5 images" in msg and "4 labels" in msg and "t10k-labels-idx1-ubyte" in msg


# --- CIFAR-10 ----------------------------------------------------------------------------


def cifar_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 10, size=n).astype(np.int64),
    )


def flat_rows(images: np.ndarray) -> np.ndarray:
    """CIFAR rows built pixel by pixel: 1024 red (row-major), 1024 green, 1024 blue."""
    n = images.shape[0]
    rows = np.empty((n, 3072), np.uint8)
    for c in range(3):
        for y in range(32):
            rows[:, c * 1024 + y * 32 : c * 1024 + y * 32 + 32] = images[:, c, y, :]
    return rows


BATCH_SIZES = {
    "data_batch_1": 3,
    "data_batch_2": 2,
    "data_batch_3": 4,
    "data_batch_4": 1,
    "data_batch_5": 2,
    "test_batch": 3,
}


def make_cifar(
    parent: Path, fmt: str, protocol: int = 2, meta: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the extracted folder of cifar-10-python.tar.gz / cifar-10-binary.tar.gz."""
    d = parent / ("cifar-10-batches-py" if fmt == "py" else "cifar-10-batches-bin")
    d.mkdir(parents=True)
    batches = {}
    for i, (stem, n) in enumerate(BATCH_SIZES.items()):
        images, labels = cifar_images(n, seed=i)
        batches[stem] = (images, labels)
        rows = flat_rows(images)
        if fmt == "py":
            batch = {  # as in the official files: bytes keys, list labels, uint8 array
                b"batch_label": f"{stem} of 6".encode(),
                b"labels": [int(x) for x in labels],
                b"data": rows,
                b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)],
            }
            with open(d / stem, "wb") as f:
                pickle.dump(batch, f, protocol=protocol)
        else:
            records = np.concatenate([labels.astype(np.uint8)[:, None], rows], axis=1)
            (d / f"{stem}.bin").write_bytes(records.tobytes())
    if meta and fmt == "py":
        with open(d / "batches.meta", "wb") as f:
            pickle.dump(
                {
                    b"num_cases_per_batch": 10000,
                    b"num_vis": 3072,
                    b"label_names": [n.encode() for n in CIFAR_CLASSES],
                },
                f,
                protocol=protocol,
            )
    elif meta:
        (d / "batches.meta.txt").write_text("\n".join(CIFAR_CLASSES) + "\n\n")
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    return {
        "test": batches["test_batch"],
        "train": (np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])),
    }


@pytest.mark.parametrize("fmt", ["py", "bin"])
@pytest.mark.parametrize("root_is_folder", [False, True], ids=["parent", "folder"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_formats_and_roots(tmp_path: Path, fmt: str, root_is_folder: bool, split: str) -> None:
    expected = make_cifar(tmp_path, fmt)
    root = tmp_path / f"cifar-10-batches-{fmt}" if root_is_folder else tmp_path
    ds = load_dataset("cifar10", split, root)
    images, labels = expected[split]
    assert ds.images.dtype == np.uint8 and ds.images.shape == (len(images), 3, 32, 32)
    assert ds.input_shape == (3, 32, 32)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int64
    assert ds.classes == tuple(CIFAR_CLASSES) and ds.name == "cifar10" and ds.split == split
    # Spot-check CHW against the flat row directly: pixel (c, y, x) is byte c*1024+y*32+x.
    row = flat_rows(images[:1])[0]
    assert ds.images[0, 2, 5, 7] == row[2 * 1024 + 5 * 32 + 7]
    assert ds.images[0, 1, 31, 0] == row[1024 + 31 * 32]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_pickle_protocols(tmp_path: Path, protocol: int) -> None:
    expected = make_cifar(tmp_path, "py", protocol=protocol)
    ds = load_dataset("cifar-10", "test", tmp_path)
    np.testing.assert_array_equal(ds.images, expected["test"][0])


def python2_batch_pickle(rows: np.ndarray, labels: list[int]) -> bytes:
    """A batch as the official files are written (Python 2 cPickle, protocol 2): str as
    BINSTRING, numpy.core names, dtype('u1', 0, 1), the pixels one BINSTRING."""

    def string(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b

    def int_(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    dtype = (
        b"cnumpy\ndtype\n" + string(b"u1") + int_(0) + int_(1) + b"\x87R"
        b"(" + int_(3) + string(b"|") + b"NNN" + int_(-1) + int_(-1) + int_(0) + b"tb"
    )
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + int_(0) + b"\x85" + string(b"b")
        + b"\x87R(" + int_(1) + int_(rows.shape[0]) + int_(rows.shape[1]) + b"\x86" + dtype
        + b"\x89" + string(rows.tobytes()) + b"tb"
    )  # fmt: skip
    items = string(b"data") + array + string(b"labels") + b"](" + b"".join(map(int_, labels)) + b"e"
    return b"\x80\x02}(" + items + b"u."


def test_cifar10_python2_official_layout(tmp_path: Path) -> None:
    make_cifar(tmp_path, "py")
    images, labels = cifar_images(4, seed=9)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(python2_batch_pickle(flat_rows(images), labels.tolist()))
    ds = load_dataset("cifar10", "test", tmp_path)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_cifar10_without_meta_uses_standard_names(tmp_path: Path) -> None:
    make_cifar(tmp_path, "bin", meta=False)
    assert load_dataset("cifar10", "test", tmp_path).classes == tuple(CIFAR_CLASSES)


class Evil:
    """Unpickling this runs ``touch MARKER`` unless find_class refuses os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("target", ["test_batch", "batches.meta"])
def test_malicious_pickle_refused(tmp_path: Path, target: str) -> None:
    make_cifar(tmp_path, "py")
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / target
    with open(path, "wb") as f:
        pickle.dump({b"data": Evil(marker), b"labels": []}, f)
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "test", tmp_path)
    msg = one_line(exc)
    assert str(path) in msg and "system" in msg and "refus" in msg
    assert not marker.exists()


def test_pickle_with_builtin_eval_refused(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    marker = tmp_path / "pwned"
    # Hand-written protocol-0 pickle: builtins.exec("open(MARKER, 'w')").
    payload = f"cbuiltins\nexec\n(Vopen({str(marker)!r}, 'w')\ntR.".encode()
    (d / "test_batch").write_bytes(payload)
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "test", tmp_path)
    assert "builtins.exec" in one_line(exc)
    assert not marker.exists()


def test_cifar10_truncated_binary(tmp_path: Path) -> None:
    make_cifar(tmp_path, "bin")
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "test", tmp_path)
    msg = one_line(exc)
    assert str(path) in msg and "3073" in msg and "re-download" in msg


def test_cifar10_bad_python_batches(tmp_path: Path) -> None:
    make_cifar(tmp_path, "py")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:200])  # truncated pickle
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "test", tmp_path)
    assert str(path) in one_line(exc)
    with open(path, "wb") as f:  # wrong label range
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 12]}, f)
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "test", tmp_path)
    assert str(path) in one_line(exc) and "0..9" in str(exc.value)


@pytest.mark.parametrize("fmt", ["py", "bin"])
def test_cifar10_train_uses_the_batches_present(tmp_path: Path, fmt: str) -> None:
    make_cifar(tmp_path, fmt)
    d = tmp_path / f"cifar-10-batches-{fmt}"
    ext = "" if fmt == "py" else ".bin"
    assert load_dataset("cifar10", "train", tmp_path).note == ""  # complete: nothing to say
    for i in (1, 4):
        (d / f"data_batch_{i}{ext}").unlink()
    ds = load_dataset("cifar10", "train", tmp_path)
    sizes = [BATCH_SIZES[f"data_batch_{i}"] for i in (2, 3, 5)]
    assert len(ds) == sum(sizes) and len(ds.subset(2).labels) == 2
    expected = make_cifar(tmp_path / "again", fmt)["train"][0]  # same seeds, all five
    start = BATCH_SIZES["data_batch_1"]
    np.testing.assert_array_equal(ds.images[: sizes[0]], expected[start : start + sizes[0]])
    assert ds.note == (
        f"CIFAR-10 train: using 3 of 5 batches (data_batch_2{ext}, data_batch_3{ext}, "
        f"data_batch_5{ext}); data_batch_1{ext}, data_batch_4{ext} are missing from {d}"
    )
    assert ds.subset(1).note == ds.note  # the caller may print it after subsetting
    for i in (2, 3, 5):
        (d / f"data_batch_{i}{ext}").unlink()
    with pytest.raises(DatasetError) as exc:  # test_batch alone: no training data
        load_dataset("cifar10", "train", tmp_path)
    msg = one_line(exc)
    assert f"no training batch (data_batch_1{ext} .. data_batch_5{ext})" in msg and "--data-root" in msg


def test_cifar10_missing_test_batch(tmp_path: Path) -> None:
    make_cifar(tmp_path, "py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "test", tmp_path)
    assert "no test_batch" in one_line(exc)


# --- missing / unknown -------------------------------------------------------------------


def test_missing_cifar10(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "test", tmp_path)
    msg = one_line(exc)
    assert msg == (
        f"CIFAR-10 not found in {tmp_path}: download cifar-10-python.tar.gz or "
        "cifar-10-binary.tar.gz, extract it and pass --data-root DIR"
    )
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "test")
    assert "--data-root" in one_line(exc)


def test_unextracted_cifar_tarball(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "test", tmp_path)
    assert "tar xzf" in one_line(exc)


def test_missing_fashion_mnist_user_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset("fashion-mnist", "train", tmp_path / "nowhere")
    msg = one_line(exc)
    assert msg.startswith(f"Fashion-MNIST not found in {tmp_path / 'nowhere'}")
    assert "train-images-idx3-ubyte" in msg and "--data-root" in msg
    assert "dataset-fashion-mnist" in msg


def test_missing_fashion_mnist_default_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tinydyn.data.mnist as mnist

    monkeypatch.setattr(mnist, "FASHION_MNIST_DEBIAN_ROOT", tmp_path)
    with pytest.raises(DatasetError) as exc:
        load_dataset("fashion-mnist")
    msg = one_line(exc)
    assert msg.startswith(f"Fashion-MNIST not found in {tmp_path}")
    assert msg.endswith(
        "install the Debian package 'dataset-fashion-mnist' (apt-get install "
        "dataset-fashion-mnist) or pass --data-root DIR with the IDX files"
    )


def test_missing_mnist(tmp_path: Path) -> None:
    for root in (None, tmp_path):
        with pytest.raises(DatasetError) as exc:
            load_dataset("mnist", "test", root)
        msg = one_line(exc)
        assert "--data-root DIR" in msg and "t10k-images-idx3-ubyte" in msg


def test_unknown_name_and_split() -> None:
    with pytest.raises(DatasetError) as exc:
        load_dataset("imagenet")
    msg = one_line(exc)
    assert "'imagenet'" in msg and all(name in msg for name in DATASETS)
    with pytest.raises(DatasetError) as exc:
        load_dataset("mnist", "validation")
    msg = one_line(exc)
    assert "'validation'" in msg and "'train'" in msg and "'test'" in msg


def test_datasets_names() -> None:
    assert set(DATASETS) == {"fashion-mnist", "mnist", "cifar10"}


# --- Dataset -----------------------------------------------------------------------------


def test_dataset_subset_and_frozen() -> None:
    images = np.arange(4 * 1 * 2 * 2, dtype=np.uint8).reshape(4, 1, 2, 2)
    ds = Dataset(images, np.array([0, 1, 1, 0], np.int64), ("a", "b"), "toy", "test")
    sub = ds.subset(3)
    assert len(sub) == 3 and sub.labels.tolist() == [0, 1, 1] and sub.classes == ("a", "b")
    np.testing.assert_array_equal(sub.images, images[:3])
    assert len(ds.subset(10)) == 4 and len(ds.subset(0)) == 0
    with pytest.raises(DatasetError):
        ds.subset(-1)
    with pytest.raises(AttributeError):
        ds.name = "other"  # type: ignore[misc]
    assert "n=4" in repr(ds) and "input_shape=(1, 2, 2)" in repr(ds)
    with pytest.raises(DatasetError):
        Dataset(images.astype(np.float32), ds.labels, ds.classes, "toy", "test")
    with pytest.raises(DatasetError):
        Dataset(images, ds.labels[:3], ds.classes, "toy", "test")
