"""Hostile dataset files: bombs, huge headers, crafted pickles, truncation, trailing data.

Every file a user hands tinydyn is untrusted. Each attack is loaded in a child process
under an address-space limit of 1.5 GiB above what the child needs after importing numpy
and tinydyn, and must end in a one-line DatasetError while the child's peak resident
memory grows by less than PEAK_GROWTH_BOUND. The property tests then mutate small valid
files at random: the loaders either return arrays that agree with the file or raise a
one-line DatasetError, never another exception.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tinydyn.data import DatasetError, load_dataset

from .test_data import BATCH_SIZES, CIFAR_CLASSES, idx_bytes, make_cifar, make_idx_set

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_AS and /proc")

REPO = Path(__file__).resolve().parents[1]
HEADROOM = 3 << 29  # 1.5 GiB of address space above the child's own after its imports
# The largest legitimate read here is the 60000 x 28 x 28 IDX data the bomb's header
# allows (45 MiB) plus 1 MiB read pieces; everything else is refused before any large read.
PEAK_GROWTH_BOUND = 128 << 20
MIB = 1 << 20

# Loads one dataset and reports, as JSON on stdout, how it ended and the peak resident
# memory before and after the load. The peak is VmHWM from /proc: ru_maxrss (also
# reported) survives fork + exec, so in a child of a big pytest process it starts at the
# parent's size and hides the child's own growth. The address-space limit is set after
# the imports, relative to their size.
_CHILD = r"""
import json, resource, sys
import numpy
from tinydyn.data import DatasetError, load_dataset

def status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

limit = status_kib("VmSize") * 1024 + int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
before = status_kib("VmHWM")
try:
    ds = load_dataset(sys.argv[1], sys.argv[2], sys.argv[3])
    out = {"outcome": "loaded", "message": f"{len(ds)} samples"}
except DatasetError as exc:
    out = {"outcome": "DatasetError", "message": str(exc)}
except BaseException as exc:
    out = {"outcome": type(exc).__name__, "message": str(exc)[:300]}
out.update(
    hwm_before_kib=before,
    hwm_peak_kib=status_kib("VmHWM"),
    ru_maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    limit_bytes=limit,
)
print(json.dumps(out))
"""


def load_in_child(name: str, root: Path, split: str = "test") -> dict[str, object]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, name, split, str(root), str(HEADROOM)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    # A crash (numpy segfault, OOM kill) leaves no JSON: report the exit status instead.
    assert proc.returncode == 0 and proc.stdout.strip(), (proc.returncode, proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_refused(result: dict[str, object], *words: str) -> str:
    if os.environ.get("TINYDYN_HOSTILE_LOG"):  # measurements for a report, one JSON a line
        with open(os.environ["TINYDYN_HOSTILE_LOG"], "a") as log:
            print(json.dumps(dict(result, test=os.environ.get("PYTEST_CURRENT_TEST", ""))), file=log)
    assert result["outcome"] == "DatasetError", result
    msg = str(result["message"])
    assert msg and "\n" not in msg and msg == msg.strip(), msg
    assert all(w in msg for w in words), (words, msg)
    growth = (int(result["hwm_peak_kib"]) - int(result["hwm_before_kib"])) * 1024
    assert growth < PEAK_GROWTH_BOUND, f"peak RSS grew {growth / MIB:.0f} MiB: {result}"
    return msg


# --- IDX ---------------------------------------------------------------------------------

FMNIST_TRAIN_HEADER = bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 28, 28)


def gzip_of_zeros(prefix: bytes, zeros: int) -> bytes:
    """A valid gzip file of ``prefix`` + ``zeros`` zero bytes, built in ~1 s for gigabytes:
    after a full flush deflate restarts, so one compressed MiB of zeros can be repeated."""
    assert zeros % MIB == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    mib = comp.compress(bytes(MIB)) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    for _ in range(zeros // MIB):
        crc = zlib.crc32(bytes(MIB), crc)
    body = head + mib * (zeros // MIB) + tail
    size = (len(prefix) + zeros) & 0xFFFFFFFF
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + struct.pack("<II", crc, size)


def idx_root(tmp_path: Path, which: str, data: bytes, name: str | None = None) -> Path:
    """A valid MNIST test set whose images or labels file is replaced by ``data`` (written
    as is; ``name`` picks the spelling, e.g. with .gz)."""
    make_idx_set(tmp_path, gz=False)
    stem = f"t10k-{which}-idx{3 if which == 'images' else 1}-ubyte"
    (tmp_path / stem).unlink()
    (tmp_path / (name or stem)).write_bytes(data)
    return tmp_path


def sparse(path: Path, head: bytes, size: int) -> None:
    """A file of ``size`` bytes starting with ``head``, the rest a hole (no disk used)."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def test_idx_gzip_bomb(tmp_path: Path) -> None:
    # 3 MiB on disk, 3 GiB decompressed: a 60000x28x28 header, then far more zeros.
    bomb = gzip_of_zeros(FMNIST_TRAIN_HEADER, 3 << 30)
    assert len(bomb) < 4 * MIB
    root = idx_root(tmp_path, "images", bomb, "t10k-images-idx3-ubyte.gz")
    assert_refused(load_in_child("mnist", root), "more data beyond the 60000x28x28", "re-download")


@pytest.mark.parametrize(
    ("which", "head", "gz"),
    [  # 4 billion bytes claimed three ways
        ("images", bytes([0, 0, 8, 3]) + struct.pack(">3I", 61036, 256, 256), True),
        ("images", bytes([0, 0, 8, 3]) + struct.pack(">3I", 1, 65536, 65536), False),
        ("labels", bytes([0, 0, 8, 1]) + struct.pack(">I", 4_000_000_000), False),
    ],
    ids=["images-gz", "images-plain-sparse", "labels-plain-sparse"],
)
def test_idx_huge_header(tmp_path: Path, which: str, head: bytes, gz: bool) -> None:
    stem = f"t10k-{which}-idx{3 if which == 'images' else 1}-ubyte"
    if gz:  # the header and 16 MiB of the zeros it claims
        root = idx_root(tmp_path, which, gzip_of_zeros(head, 16 * MIB), f"{stem}.gz")
    else:  # a plain file exactly as large as the header says (sparse, so disk-free)
        root = idx_root(tmp_path, which, b"")
        sparse(root / stem, head, len(head) + 4_000_000_000 + (which == "images") * 294_967_296)
    assert_refused(load_in_child("mnist", root), "more than any MNIST-format set", "re-download")


def test_idx_plain_file_larger_than_header(tmp_path: Path) -> None:
    # A valid 60000x28x28 header on a 4 GB (sparse) file: refused by size, before reading.
    root = idx_root(tmp_path, "images", b"")
    sparse(root / "t10k-images-idx3-ubyte", FMNIST_TRAIN_HEADER, 4_000_000_000)
    assert_refused(load_in_child("mnist", root), "bytes beyond the 60000x28x28", "re-download")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_truncated(tmp_path: Path, gz: bool) -> None:
    data = FMNIST_TRAIN_HEADER + bytes(1000)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    root = idx_root(tmp_path, "images", gzip.compress(data) if gz else data, name)
    assert_refused(load_in_child("mnist", root), "needs 47040000 data bytes but only 1000", "re-download")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_trailing_data(tmp_path: Path, gz: bool) -> None:
    data = idx_bytes(np.zeros(5, np.uint8)) + b"\x00" * 7
    name = "t10k-labels-idx1-ubyte" + (".gz" if gz else "")
    root = idx_root(tmp_path, "labels", gzip.compress(data) if gz else data, name)
    words = "more data beyond" if gz else "7 bytes beyond"
    assert_refused(load_in_child("mnist", root), words, "re-download")


def test_idx_gzip_with_garbage_after_the_stream(tmp_path: Path) -> None:
    data = gzip.compress(idx_bytes(np.zeros(5, np.uint8))) + b"garbage!"
    root = idx_root(tmp_path, "labels", data, "t10k-labels-idx1-ubyte.gz")
    assert_refused(load_in_child("mnist", root), "corrupt or truncated gzip", "re-download")


# --- CIFAR-10 python batches -------------------------------------------------------------


class Reduce:
    """Pickles as ``func(*args)``, then ``BUILD state`` when a state is given: how a
    hostile file calls the globals the restricted unpickler allows, in any way it likes."""

    def __init__(self, func: Callable[..., object], args: tuple[object, ...], state: object = None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple[object, ...]:
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def nested_shared(levels: int, width: int) -> list[object]:
    """A list of ``width`` references to one list of ``width`` references ... to [0]*width:
    ~2 bytes per reference in the pickle, width**levels ints for np.asarray."""
    inner: list[object] = [0] * width
    for _ in range(levels - 1):
        inner = [inner] * width
    return inner


def zeros_rows(n: int) -> np.ndarray:
    return np.zeros((n, 3072), np.uint8)


def py_batch(**entries: object) -> dict[bytes, object]:
    batch: dict[bytes, object] = {b"batch_label": b"test batch", b"data": zeros_rows(2), b"labels": [0, 1]}
    batch.update({k.encode(): v for k, v in entries.items()})
    return batch


def cifar_root(tmp_path: Path, target: str, payload: bytes) -> Path:
    make_cifar(tmp_path, "py")
    (tmp_path / "cifar-10-batches-py" / target).write_bytes(payload)
    return tmp_path


BIG_ROWS = 400_000  # 1.2 GB of pixels: inside the address-space headroom, so only a
# bound on the shape (not the limit) keeps the child from allocating and touching it

SHARED_REFERENCE_BOMBS = {
    # 2 x 150**4 ints = 8 GB for np.asarray, ~1.5 KB of references in the pickle
    "labels-nested": py_batch(labels=[nested_shared(4, 150)] * 2),
    "labels-list-of-lists": py_batch(labels=[[0] * 2000] * 2),
    "data-as-shared-lists": py_batch(data=[nested_shared(1, 3072)] * 2),
    "labels-huge-int": py_batch(labels=[0, 10**5000]),
}


@pytest.mark.parametrize("batch", SHARED_REFERENCE_BOMBS.values(), ids=SHARED_REFERENCE_BOMBS)
def test_cifar_shared_reference_pickle_bomb(tmp_path: Path, batch: dict[bytes, object]) -> None:
    payload = pickle.dumps(batch, protocol=2)
    assert len(payload) < 12_000  # a few KB on disk
    root = cifar_root(tmp_path, "test_batch", payload)
    assert_refused(load_in_child("cifar10", root), "test_batch", "re-download")


def test_cifar_meta_shared_reference_bomb(tmp_path: Path) -> None:
    meta = {b"label_names": [nested_shared(4, 150)] * 10, b"num_vis": 3072}
    root = cifar_root(tmp_path, "batches.meta", pickle.dumps(meta, protocol=2))
    assert_refused(load_in_child("cifar10", root), "batches.meta", "re-download")


U1 = np.dtype("u1")
HUGE_ARRAYS = {
    # numpy.ndarray called directly, or _reconstruct asked for the big array itself:
    # both allocate before any check on the result could run.
    "ndarray-call": Reduce(np.ndarray, ((BIG_ROWS, 3072), "u1")),
    "reconstruct-shape": Reduce(_reconstruct, (np.ndarray, (BIG_ROWS, 3072), b"B")),
    # BUILD claiming a shape its data does not have
    "setstate-shape": Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (BIG_ROWS, 3072), U1, False, b"x")),
    # An object array whose list is shorter than its shape crashes numpy (segfault).
    "setstate-object": Reduce(
        _reconstruct, (np.ndarray, (0,), b"b"), (1, (10**6,), np.dtype("O"), False, [1, 2])
    ),
    # A void dtype whose BUILD claims a terabyte per element
    "void-dtype": Reduce(
        _reconstruct,
        (np.ndarray, (0,), b"b"),
        (
            1,
            (2,),
            Reduce(np.dtype, ("V8", False, True), (3, "|", None, None, None, 1 << 40, 1, 0)),
            False,
            b"x" * 16,
        ),
    ),
    # Protocol 5's _frombuffer told a shape its buffer does not have
    "frombuffer-shape": Reduce(_frombuffer, (bytes(6144), U1, (BIG_ROWS, 3072), "C")),
}


@pytest.mark.parametrize("array", HUGE_ARRAYS.values(), ids=HUGE_ARRAYS)
def test_cifar_huge_claimed_ndarray(tmp_path: Path, array: Reduce) -> None:
    payload = pickle.dumps(py_batch(data=array, labels=[0] * BIG_ROWS), protocol=2)
    root = cifar_root(tmp_path, "test_batch", payload)
    assert_refused(load_in_child("cifar10", root), "test_batch", "re-download")


PICKLE_MACHINERY_BOMBS = {
    # LONG_BINPUT 0x03ffffff: CPython grows its memo table to twice the index (1 GiB)
    "memo-index": b"\x80\x02}r" + struct.pack("<I", 0x03FFFFFF) + b".",
    # 40 million empty lists in 40 MB: ~2.5 GB of list objects
    "many-objects": b"\x80\x02](" + b"]" * 40_000_000 + b"e.",
    # BINBYTES8 claiming 8 GiB
    "length-field": b"\x80\x04\x8e" + struct.pack("<Q", 1 << 33) + b"xx.",
}


@pytest.mark.parametrize("payload", PICKLE_MACHINERY_BOMBS.values(), ids=PICKLE_MACHINERY_BOMBS)
def test_cifar_pickle_machinery_bomb(tmp_path: Path, payload: bytes) -> None:
    root = cifar_root(tmp_path, "test_batch", payload)
    assert_refused(load_in_child("cifar10", root), "test_batch", "re-download")


@pytest.mark.parametrize("fmt", ["py", "bin"])
def test_cifar_oversized_file_refused_before_reading(tmp_path: Path, fmt: str) -> None:
    make_cifar(tmp_path, fmt)
    name = "test_batch" if fmt == "py" else "test_batch.bin"
    path = tmp_path / f"cifar-10-batches-{fmt}" / name
    size = 300_000 * 3073  # 922 MB, a whole number of binary records
    sparse(path, path.read_bytes()[:64], size)
    msg = assert_refused(load_in_child("cifar10", tmp_path), str(path), "re-download")
    assert ("64.0 MiB" in msg) if fmt == "py" else ("300000 records" in msg)


@pytest.mark.parametrize(
    ("fmt", "cut"),
    [("py", lambda b: b[:-3000]), ("bin", lambda b: b[:-1]), ("bin", lambda b: b + b"\0")],
    ids=["py-truncated", "bin-truncated", "bin-trailing"],
)
def test_cifar_truncated_or_trailing(tmp_path: Path, fmt: str, cut: Callable[[bytes], bytes]) -> None:
    make_cifar(tmp_path, fmt)
    path = tmp_path / f"cifar-10-batches-{fmt}" / ("test_batch" if fmt == "py" else "test_batch.bin")
    path.write_bytes(cut(path.read_bytes()))
    assert_refused(load_in_child("cifar10", tmp_path), str(path), "re-download")


# --- property tests: random mutations of small valid files ---------------------------------

FIX_ENDINGS = ("re-download it", "re-download both", "check the path", "binary version", "MNIST-format file")


def assert_clean_error(exc: DatasetError) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg and msg == msg.strip(), msg
    # Ends with the whole fix: nothing was cut off.
    assert msg.endswith(FIX_ENDINGS), msg


def mutate(data: bytes, draw: st.DrawFn, header_len: int) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "append", "header-field", "none"]))
    if kind == "flip" and data:
        pos = draw(st.integers(0, len(data) - 1))
        return data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1 :]
    if kind == "truncate":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=40))
    if kind == "header-field" and len(data) >= header_len >= 4:
        field = draw(st.integers(0, header_len // 4 - 1))
        value = draw(st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2, 3, 255, 256])))
        return data[: 4 * field] + struct.pack(">I", value) + data[4 * field + 4 :]
    return data


IDX_DIR_COUNTER = iter(range(10**9))


@st.composite
def mutated_idx(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    which = draw(st.sampled_from(["images", "labels"]))
    n = draw(st.integers(1, 4))
    arr = (
        np.arange(n * 4 * 5, dtype=np.uint8).reshape(n, 4, 5)
        if which == "images"
        else np.arange(n, dtype=np.uint8) % 10
    )
    raw = idx_bytes(arr)
    gz = draw(st.booleans())
    raw = mutate(raw, draw, 4 + 4 * arr.ndim)
    data = gzip.compress(raw, mtime=0) if gz else raw
    if gz and draw(st.booleans()):  # mutate the compressed stream instead / as well
        data = mutate(data, draw, 0)
    return which, data, gz


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated_idx())
def test_idx_mutations_property(tmp_path: Path, case: tuple[str, bytes, bool]) -> None:
    which, data, gz = case
    root = tmp_path / f"idx{next(IDX_DIR_COUNTER)}"
    root.mkdir()
    make_idx_set(root, n_train=1, n_test=3, gz=False, hw=(4, 5))
    stem = f"t10k-{which}-idx{3 if which == 'images' else 1}-ubyte"
    (root / stem).unlink()
    (root / (f"{stem}.gz" if gz else stem)).write_bytes(data)
    try:
        ds = load_dataset("mnist", "test", root)
    except DatasetError as exc:
        assert_clean_error(exc)
        event("refused")
        return
    # Loaded: it must be exactly what the (possibly mutated) file says.
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data  # tinydyn goes by magic too
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
    assert ds.images.shape[0] == ds.labels.shape[0] == dims[0]
    assert ds.labels.min() >= 0 and ds.labels.max() <= 9
    if which == "images":
        assert ds.images.shape == (dims[0], 1, dims[1], dims[2])
        np.testing.assert_array_equal(ds.images.reshape(-1), body)
    else:
        np.testing.assert_array_equal(ds.labels, body)


def substitutions() -> st.SearchStrategy[object]:
    """Values a hostile batch might put in place of 'data' or 'labels'."""
    shared = [0] * 50
    return st.sampled_from(
        [
            None,
            7,
            "text",
            b"bytes",
            [],
            [0, 1],
            [True, False],
            [0.0, 1.0],
            [b"0", b"1"],
            [shared, shared],
            [[shared] * 20] * 2,
            [0, 10**40],
            [-1, 3],
            np.array([0, 1], np.int64),
            np.array([0, 1], np.float32),
            np.array([0, 300], np.uint16),
            np.zeros((2, 3072), np.uint8),
            np.zeros((2, 3072), np.int16),
            np.zeros((2, 3, 32, 32), np.uint8),
            np.zeros((0, 3072), np.uint8),
            np.zeros((2, 3071), np.uint8),
            np.zeros(3072 * 2, np.uint8),
            np.asfortranarray(np.zeros((2, 3072), np.uint8)),
            {b"nested": [1]},
            (0, 1),
        ]
    )


@st.composite
def mutated_py_batch(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 3))
    rng = np.random.default_rng(n)
    batch: dict[object, object] = {
        b"batch_label": b"testing batch 1 of 1",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"labels": [int(x) for x in rng.integers(0, 10, n)],
        b"filenames": [b"f.png"] * n,
    }
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from([b"data", b"labels", "data", "labels", b"filenames"]))
        if draw(st.booleans()):
            batch.pop(key, None)
        else:
            batch[key] = draw(substitutions())
    if draw(st.integers(0, 9)) == 0:
        batch = draw(st.sampled_from([[batch], None, (batch,)]))  # type: ignore[arg-type]
    payload = pickle.dumps(batch, protocol=draw(st.sampled_from([0, 2, 4, 5])))
    return mutate(payload, draw, 0)


def check_cifar_result(ds: object) -> None:
    assert ds.images.dtype == np.uint8 and ds.images.ndim == 4  # type: ignore[attr-defined]
    assert ds.images.shape[1:] == (3, 32, 32)  # type: ignore[attr-defined]
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (ds.images.shape[0],)  # type: ignore[attr-defined]
    assert ds.labels.min() >= 0 and ds.labels.max() <= 9  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def cifar_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    roots = {}
    for fmt in ("py", "bin"):
        root = tmp_path_factory.mktemp(f"cifar-{fmt}")
        make_cifar(root, fmt)
        roots[fmt] = root
    return roots


@settings(max_examples=150, deadline=None)
@given(payload=mutated_py_batch())
def test_cifar_pickle_mutations_property(cifar_dirs: dict[str, Path], payload: bytes) -> None:
    (cifar_dirs["py"] / "cifar-10-batches-py" / "test_batch").write_bytes(payload)
    try:
        ds = load_dataset("cifar10", "test", cifar_dirs["py"])
    except DatasetError as exc:
        assert_clean_error(exc)
        event("refused")
        return
    check_cifar_result(ds)
    assert ds.classes == tuple(CIFAR_CLASSES)


@st.composite
def mutated_meta(draw: st.DrawFn) -> bytes:
    names: object = [n.encode() for n in CIFAR_CLASSES]
    if draw(st.booleans()):
        names = draw(
            st.sampled_from(
                [[b"x" * 65] * 10, ["a\nb"] * 10, [1] * 10, [b"a"] * 9, [[b"a"]] * 10, "names", [""] * 10]
            )
        )
    payload = pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=draw(st.sampled_from([2, 5])))
    return mutate(payload, draw, 0)


@settings(max_examples=100, deadline=None)
@given(payload=mutated_meta())
def test_cifar_meta_mutations_property(cifar_dirs: dict[str, Path], payload: bytes) -> None:
    meta = cifar_dirs["py"] / "cifar-10-batches-py" / "batches.meta"
    original = meta.read_bytes()
    meta.write_bytes(payload)
    try:
        ds = load_dataset("cifar10", "train", cifar_dirs["py"])
    except DatasetError as exc:
        assert_clean_error(exc)
        event("refused")
        return
    finally:
        meta.write_bytes(original)
    check_cifar_result(ds)
    assert len(ds.classes) == 10 and all(c.isprintable() and 0 < len(c) <= 64 for c in ds.classes)


@st.composite
def mutated_bin_batch(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 3))
    records = np.random.default_rng(n).integers(0, 256, (n, 3073), dtype=np.uint8)
    records[:, 0] %= 10
    return mutate(records.tobytes(), draw, 0)


@settings(max_examples=100, deadline=None)
@given(payload=mutated_bin_batch())
def test_cifar_binary_mutations_property(cifar_dirs: dict[str, Path], payload: bytes) -> None:
    (cifar_dirs["bin"] / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(payload)
    try:
        ds = load_dataset("cifar10", "test", cifar_dirs["bin"])
    except DatasetError as exc:
        assert_clean_error(exc)
        event("refused")
        return
    check_cifar_result(ds)
    assert len(ds) == len(payload) // 3073
    np.testing.assert_array_equal(ds.labels, np.frombuffer(payload, np.uint8)[::3073])


def test_cifar_train_split_sizes_unchanged(cifar_dirs: dict[str, Path]) -> None:
    # The property tests rewrite test_batch only; train must still be the five batches.
    ds = load_dataset("cifar10", "train", cifar_dirs["bin"])
    assert len(ds) == sum(v for k, v in BATCH_SIZES.items() if k != "test_batch") and ds.note == ""


def test_unpickler_never_hands_out_shared_dtypes() -> None:
    # dtype('<i8', False, False) is numpy's process-wide singleton, which the pickle's BUILD
    # (dtype.__setstate__) would then modify; the unpickler always makes a copy.
    payload = pickle.dumps(Reduce(np.dtype, ("<i8", False, False), (3, ">", None, None, None, -1, -1, 0)), 2)
    from tinydyn.data.safe_pickle import RestrictedUnpickler

    got = RestrictedUnpickler(io.BytesIO(payload), Path("x")).load()
    assert got is not np.dtype("<i8") and np.dtype("<i8").str == "<i8"


def test_quoted_exception_text_is_one_line_of_whole_words() -> None:
    from tinydyn.data.untrusted import reason

    assert reason(ValueError("bad\nthing\t here ")) == "ValueError: bad thing here"
    long = reason(ValueError("word " * 100))
    assert long.endswith("word ...") and len(long) <= 170 and "\n" not in long
    assert reason(ValueError("x" * 500)) == "ValueError: ..."  # one long word: left out whole
    assert reason(EOFError()) == "EOFError"
