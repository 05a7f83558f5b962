"""Checkpoints are untrusted files: every field is checked before it is used, and each problem
is one line on stderr (exit 2). Commands default to the dataset the checkpoint was trained on,
refuse another one, and `tinydyn run` settles that before it builds anything."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import make_model
from tinydyn.models.checkpoint import load_model, save_checkpoint
from tinydyn.models.lcnet import LCNetConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = {"widths": (4, 8), "blocks": (1, 1), "stem_width": 4, "exits": (0,)}


def tinydyn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tinydyn", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """tinydyn's main() in this process (no interpreter start): exit code, stdout, stderr."""
    from tinydyn.cli import main

    argv = sys.argv
    sys.argv = ["tinydyn", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def mnist_model() -> Any:
    return make_model(LCNetConfig(**TINY), seed=2)  # classes '0'..'9', 1x28x28: MNIST's


@pytest.fixture(scope="module")
def old_mnist_ckpt(mnist_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written like checkpoints before the dataset record (the bundled ones are such)."""
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "mnist_old.pt", mnist_model, {})


def edited(source: Path, tmp_path: Path, edit: Any) -> Path:
    payload = torch.load(source, weights_only=True)
    edit(payload)
    out = tmp_path / "edited.pt"
    torch.save(payload, out)
    return out


def set_config(key: str, value: Any) -> Any:
    return lambda p: p["config"].__setitem__(key, value)


def idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def fake_mnist(root: Path, n_test: int = 24, n_train: int = 16, hw: tuple[int, int] = (28, 28)) -> Path:
    """A tiny MNIST in IDX files (MNIST has no default location)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("t10k", n_test), ("train", n_train)):
        images = rng.integers(0, 256, (n, *hw), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(images)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(labels)))
    return root


# ---------------------------------------------------------------------------- config and tensors
@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (set_config("widths", [4.5, 8]), ("widths[0] must be a whole number, got 4.5", "retrain it")),
        (set_config("widths", ["4", "8"]), ("widths[0] must be a whole number, got a str",)),
        (set_config("widths", "4,8"), ("widths must be a list of whole numbers, got a str",)),
        (set_config("blocks", [True, 1]), ("blocks[0] must be a whole number, got a bool",)),
        (set_config("stem_width", 10**40), ("stem_width a number with more than 12 digits is outside",)),
        (set_config("in_channels", 7), ("in_channels 7 is outside 1..4",)),
        (set_config("input_size", 4096), ("input_size 4096 is outside 8..256",)),
        (set_config("num_classes", 1000), ("num_classes 1000 is outside 2..100",)),
        (set_config("leak", float("nan")), ("leak must be a number in 0..1",)),
        (set_config("gates", "yes"), ("gates must be true or false",)),
        (set_config("classes", ["x" * 500] * 10), ("class name 0 must be 1..64 printable characters",)),
        (set_config("exits", [0, 0]), ("repeat or are out of order",)),
        (lambda p: p["config"].pop("classes"), ("model config lacks ['classes']",)),
        (lambda p: p.__setitem__("config", [1, 2]), ("the model config is a list, not a mapping",)),
        (lambda p: p.__setitem__("state_dict", [1, 2]), ("does not match", "the tensor table is a list")),
        (
            lambda p: p["state_dict"].__setitem__("stem.weight", p["state_dict"]["stem.weight"].double()),
            ("'stem.weight' is torch.float64, not torch.float32",),
        ),
        (
            lambda p: p["state_dict"].__setitem__("head.fc.bias", torch.full((10,), float("inf"))),
            ("'head.fc.bias' holds NaN or infinite values",),
        ),
        (lambda p: p["state_dict"].__setitem__("stem.weight", "weights"), ("'stem.weight' is a str",)),
        (lambda p: p["state_dict"].pop("head.fc.weight"), ("'head.fc.weight' is missing",)),
        (lambda p: p.__setitem__("metrics", [1]), ("'metrics' entry of type list",)),
        (lambda p: p.__setitem__("version", torch.ones(3)), ("has version another",)),
        (lambda p: p.__setitem__("dataset", 7), ("'dataset' entry of type int",)),
    ],
)
def test_bad_checkpoints_are_one_line_errors(
    old_mnist_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, fragments: tuple
) -> None:
    bad = edited(old_mnist_ckpt, tmp_path, edit)
    one_line_error(*cli(capsys, "eval", str(bad), "--dataset", "mnist")[::2], str(bad), *fragments)


def test_width_100000_fails_before_building_anything(
    old_mnist_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to ask torch for ~360 GB. Now: no module is built, and the command fails fast."""
    import tinydyn.models.checkpoint as checkpoint
    from tinydyn.models.lcnet_family import LCNET

    bad = edited(old_mnist_ckpt, tmp_path, lambda p: p["config"].update(widths=[8, 100000]))

    def no_build(config: Any) -> None:
        raise AssertionError("a module was built from an invalid config")

    monkeypatch.setattr(LCNET, "build", no_build)
    with pytest.raises(checkpoint.CheckpointError, match="widths\\[1\\] 100000 is outside 1..1024"):
        checkpoint.load_model(bad)
    # within every per-field bound, far beyond the parameter cap
    huge = edited(
        old_mnist_ckpt,
        tmp_path,
        lambda p: p["config"].update(widths=[1024] * 6, blocks=[16] * 6, stem_width=1024, input_size=256),
    )
    with pytest.raises(checkpoint.CheckpointError, match="parameters, more than tinydyn's cap"):
        checkpoint.load_model(huge)
    # and through the CLI: one line, seconds, no memory to speak of (measured by a parent of its own)
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.monotonic()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'rc': p.returncode, 'err': p.stderr, 's': time.monotonic() - t,\n"
        "    'rss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-m", "tinydyn", "eval", str(bad), "--dataset",
         "mnist"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    child = json.loads(proc.stdout)
    one_line_error(child["rc"], child["err"], "100000")
    assert child["s"] < 60  # interpreter + torch import on a busy 2-core machine; nothing allocated
    assert child["rss_kib"] < 2 * 1024 * 1024  # well under 2 GiB (the model wanted ~360 GB)


def test_corrupt_file_message_is_short_and_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.pt"
    torch.save({"format": "tinydyn-checkpoint", "version": 1, "x": torch.zeros(1000)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:700])
    line = one_line_error(*cli(capsys, "eval", str(cut))[::2], "corrupt", "torch cannot read it")
    assert line.endswith("re-run 'tinydyn train'") and len(line) < 200 + len(str(cut))


def test_pickled_code_is_refused_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = tmp_path / "evil.pt"
    marker = tmp_path / "ran"
    torch.save({"format": "tinydyn-checkpoint", "hook": Path(marker)}, evil)  # an arbitrary object
    one_line_error(*cli(capsys, "eval", str(evil))[::2], "Python objects other than tensors")
    assert not marker.exists()


def test_valid_checkpoint_loads_and_records_nothing_it_should_not(old_mnist_ckpt: Path) -> None:
    model, payload = load_model(old_mnist_ckpt)
    assert model.config.widths == (4, 8) and "dataset" not in payload


# ---------------------------------------------------------------------------- the model's dataset
def test_eval_defaults_to_the_checkpoints_dataset(
    old_mnist_ckpt: Path, mnist_model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # no --dataset: MNIST (inferred from '0'..'9' on 1x28x28), whose files have no default home
    code, _, err = cli(capsys, "eval", str(old_mnist_ckpt))
    one_line_error(code, err, "MNIST has no default location", "--data-root")
    root = fake_mnist(tmp_path / "mnist")
    out = tmp_path / "s.json"
    code, stdout, err = cli(
        capsys, "eval", str(old_mnist_ckpt), "--data-root", str(root), "--json-out", str(out)
    )
    assert code == 0, err
    assert "dataset                mnist test split (inferred from its class names)" in stdout
    assert json.loads(out.read_text())["images"] == 24
    # a checkpoint that records its dataset says so
    recorded = save_checkpoint(tmp_path / "rec.pt", mnist_model, {}, {"dataset": "mnist"})
    code, stdout, err = cli(capsys, "eval", str(recorded), "--data-root", str(root))
    assert code == 0 and "mnist test split (recorded in the checkpoint)" in stdout, err


def test_dataset_mismatch_names_both(old_mnist_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(
        *cli(capsys, "eval", str(old_mnist_ckpt), "--dataset", "fashion-mnist")[::2],
        "--dataset fashion-mnist",
        "T-shirt/top..Ankle boot",
        "trained on mnist",
        "classes 0..9",
        "drop --dataset",
    )
    one_line_error(
        *cli(capsys, "eval", str(old_mnist_ckpt), "--dataset", "cifar10")[::2], "(3, 32, 32)", "(1, 28, 28)"
    )


def test_files_that_are_not_what_the_name_promises(
    old_mnist_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_mnist(tmp_path / "small", hw=(16, 16))
    one_line_error(
        *cli(capsys, "eval", str(old_mnist_ckpt), "--data-root", str(root))[::2], "(1, 16, 16)", "(1, 28, 28)"
    )


def test_a_dataset_record_that_contradicts_the_config(
    mnist_model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lying = save_checkpoint(tmp_path / "lying.pt", mnist_model, {}, {"dataset": "cifar10"})
    one_line_error(*cli(capsys, "eval", str(lying))[::2], "says it was trained on 'cifar10'")


def test_unknown_classes_need_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = LCNetConfig(**TINY, num_classes=3, classes=("a", "b", "c"))
    path = save_checkpoint(tmp_path / "abc.pt", make_model(config), {})
    one_line_error(*cli(capsys, "eval", str(path))[::2], "match none of", "pass --dataset")


def test_run_checks_the_dataset_before_building(old_mnist_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    started = time.monotonic()
    proc = tinydyn(
        "run", str(old_mnist_ckpt), "--dataset", "fashion-mnist", "--board", "host", "--out", str(out)
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "trained on mnist" in lines[0], proc.stderr
    assert not out.exists()  # no IR, no firmware, not even the directory
    proc = tinydyn("run", str(old_mnist_ckpt), "--board", "host", "--out", str(out))  # MNIST: no files
    assert proc.returncode == 2 and "MNIST has no default location" in proc.stderr, proc.stderr
    assert not out.exists()
    assert "[3/6]" not in proc.stdout and time.monotonic() - started < 120


def test_measure_refuses_a_mismatched_dataset_before_opening_the_port(
    old_mnist_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.jsonl"
    args = ["measure", "--port", "/dev/null", "--checkpoint", str(old_mnist_ckpt), "--out", str(out)]
    one_line_error(*cli(capsys, *args, "--dataset", "fashion-mnist")[::2], "trained on mnist")
    assert not (tmp_path / "r.jsonl").exists()


# ---------------------------------------------------------------------------- the budget default
def test_default_budget_is_explained(
    old_mnist_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_mnist(tmp_path / "mnist")
    code, stdout, err = cli(
        capsys, "eval", str(old_mnist_ckpt), "--data-root", str(root), "--policy", "budget"
    )
    assert code == 0, err
    rule = next(line for line in stdout.splitlines() if line.startswith("exit rule"))
    # 24 test images (< 5000): tuned on the train split, and said so
    assert "budget" in rule and "16 validation images" in rule and "mnist train images 0..15" in rule
    assert "spends there" in rule and "exit histogram" in stdout


def test_default_budget_on_the_bundled_model_uses_validation_images(fashion_test: Any) -> None:
    """Half the static MACs sent every image to exit 0; the default now spends on average at most
    what confidence 0.9 spends, on test images 5000.. (never the reported ones), and is never
    below exit 0's cost (a budget of 0 chosen for a model whose worst case past exit 0 is dear
    was reported as the budget while every image spent exit 0's 3.7 M MACs)."""
    from tinydyn.commands.board import load_reference, policy_from
    from tinydyn.quantize.executor import execute
    from tinydyn.quantize.executor import static_macs as ir_static_macs

    ir = load_reference(None, None)
    pol, chosen = policy_from("budget", None, ir, data=fashion_test)
    assert "fashion-mnist test images 5000..5999" in chosen.note
    images = fashion_test.images[:300]
    budget = execute(ir, images, pol)
    confidence = execute(ir, images, policy_from("confidence", None, ir)[0])
    # a hard cap: no image spends more than the budget (with the shipped model's worst case from
    # exit 0 to exit 1, that sends these images to exit 0: docs say the budget is per image)
    assert (budget.macs <= pol.threshold).all() and pol.threshold < ir_static_macs(ir)
    assert budget.macs.mean() <= 1.1 * confidence.macs.mean()
