"""The tinydyn command as a user runs it: train, resume, eval, lower, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TINY = ["--widths", "8,16", "--blocks", "1,1", "--exits", "0", "--limit", "256", "--batch-size", "64"]


def tinydyn(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tinydyn", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fashion_test) -> Path:
    out = tmp_path_factory.mktemp("train") / "tiny.pt"
    proc = tinydyn("train", "--out", str(out), "--epochs", "1", *TINY)
    assert proc.returncode == 0, proc.stderr
    return out


def test_help_lists_subcommands():
    proc = tinydyn("--help")
    assert proc.returncode == 0
    for command in ("train", "eval", "lower", "run"):
        assert command in proc.stdout


def test_train_resume_continues_where_it_stopped(trained, tmp_path):
    copy = tmp_path / "resumed.pt"
    copy.write_bytes(trained.read_bytes())
    proc = tinydyn("train", "--out", str(copy), "--epochs", "2", "--resume", *TINY)
    assert proc.returncode == 0, proc.stderr
    payload = torch.load(copy, weights_only=True)
    assert [h["epoch"] for h in payload["train"]["history"]] == [1, 2]
    assert payload["dataset"] == "fashion-mnist"  # eval, run and measure default to it


def test_eval_reports_accuracy_macs_and_exits(trained, tmp_path):
    out = tmp_path / "summary.json"
    proc = tinydyn(
        "eval",
        str(trained),
        "--limit",
        "300",
        "--policy",
        "confidence",
        "--threshold",
        "0.6",
        "--json-out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    assert summary["images"] == 300 and sum(summary["exit_histogram"]) == 300
    assert 0 < summary["mean_macs"] and summary["static_backbone_macs"] > 0
    assert summary["agreement"] >= 0.95
    assert "exit histogram" in proc.stdout and "static backbone MACs" in proc.stdout
    assert "fashion-mnist test split (recorded in the checkpoint)" in proc.stdout
    assert "confidence 0.6 (--threshold)" in proc.stdout and summary["dataset"].startswith("fashion-mnist")


def test_lower_writes_a_loadable_ir(trained, tmp_path):
    proc = tinydyn("lower", str(trained), "--out", str(tmp_path / "ir"))
    assert proc.returncode == 0, proc.stderr
    from tinydyn.ir import IRModel

    ir = IRModel.load(tmp_path / "ir")
    assert ir.model_id() in proc.stdout


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    assert_one_line_error(tinydyn("eval", str(bad)), "bad.pt", "corrupt", "tinydyn train")


def test_mismatched_checkpoint(trained, tmp_path):
    payload = torch.load(trained, weights_only=True)
    payload["config"]["widths"] = [8, 32]  # the weights no longer fit the architecture
    edited = tmp_path / "edited.pt"
    torch.save(payload, edited)
    assert_one_line_error(tinydyn("eval", str(edited)), "does not match its architecture")


def test_missing_checkpoint(tmp_path):
    assert_one_line_error(tinydyn("eval", str(tmp_path / "nope.pt")), "not found", "tinydyn train")


def test_unknown_dataset(trained):
    assert_one_line_error(tinydyn("eval", str(trained), "--dataset", "imagenet"), "imagenet")


def test_wrong_input_shape(trained, tmp_path):
    # a real CIFAR-10 binary batch: 32x32x3 images for a 28x28x1 model
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    records = np.zeros((4, 3073), np.uint8)
    records[:, 0] = [0, 1, 2, 3]
    (folder / "test_batch.bin").write_bytes(records.tobytes())
    proc = tinydyn("eval", str(trained), "--dataset", "cifar10", "--data-root", str(tmp_path))
    assert_one_line_error(proc, "(3, 32, 32)", "(1, 28, 28)")


def test_l1_penalty_trades_macs(trained, tmp_path):
    """Fine-tuning with a strong salience penalty closes gates: fewer executed MACs."""
    sparse = tmp_path / "sparse.pt"
    proc = tinydyn(
        "train",
        "--init-from",
        str(trained),
        "--out",
        str(sparse),
        "--epochs",
        "1",
        "--l1",
        "30",
        "--lr",
        "1e-3",
        "--gate-lr",
        "0.2",
        *TINY,
        "--batch-size",
        "16",
    )
    assert proc.returncode == 0, proc.stderr
    macs = {}
    for name, path in (("dense", trained), ("sparse", sparse)):
        out = tmp_path / f"{name}.json"
        proc = tinydyn("eval", str(path), "--limit", "200", "--policy", "none", "--json-out", str(out))
        assert proc.returncode == 0, proc.stderr
        macs[name] = json.loads(out.read_text())["mean_macs"]
    assert macs["sparse"] < 0.9 * macs["dense"]


def test_static_backbone_trains_and_evaluates(tmp_path, fashion_test):
    """--no-gates --exits '' is the plain ResNet the dynamic model is compared with."""
    out = tmp_path / "static.pt"
    proc = tinydyn(
        "train",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--no-gates",
        *TINY[:4],
        "--exits",
        "",
        "--limit",
        "128",
        "--batch-size",
        "64",
    )
    assert proc.returncode == 0, proc.stderr
    summary = tmp_path / "static.json"
    proc = tinydyn("eval", str(out), "--limit", "50", "--json-out", str(summary))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(summary.read_text())
    # every image runs the whole backbone: executed MACs equal the static figure exactly
    assert data["mean_macs"] == data["static_backbone_macs"]
    assert data["exit_histogram"] == [50] and data["mean_skipped_channels"] == 0


def test_backbone_from_a_static_checkpoint(tmp_path, fashion_test):
    """A dynamic model warm-started from a static backbone keeps its conv weights."""
    static, dynamic = tmp_path / "static.pt", tmp_path / "dynamic.pt"
    base = ["--epochs", "1", *TINY[:4], "--limit", "128", "--batch-size", "64"]
    proc = tinydyn("train", "--out", str(static), "--no-gates", "--exits", "", *base)
    assert proc.returncode == 0, proc.stderr
    proc = tinydyn(
        "train",
        "--out",
        str(dynamic),
        "--backbone-from",
        str(static),
        "--exits",
        "0",
        "--lr",
        "0",
        "--gate-lr",
        "0",
        *base,
    )
    assert proc.returncode == 0, proc.stderr
    a = torch.load(static, weights_only=True)["state_dict"]
    b = torch.load(dynamic, weights_only=True)["state_dict"]
    for key in ("stem.weight", "blocks.0.conv1.weight", "blocks.1.conv2.weight", "head.fc.weight"):
        assert torch.equal(a[key], b[key]), key
    assert "blocks.0.lnet.fc.weight" in b and "exit_heads.0.fc.weight" in b
    wrong = tinydyn(
        "train",
        "--out",
        str(tmp_path / "w.pt"),
        "--backbone-from",
        str(static),
        "--widths",
        "4,8",
        "--blocks",
        "1,1",
        "--exits",
        "0",
        "--limit",
        "64",
        "--epochs",
        "1",
    )
    assert_one_line_error(wrong, "shares no weights")


def test_fold_gates_fine_tunes_the_gate_free_model(trained, tmp_path):
    """--fold-gates starts from the gated model's saliences folded into its BNs (lr 0 keeps them),
    and writes a gate-free checkpoint with the exits, the model 'tinydyn fpga' builds as is."""
    from tinydyn.data import load_dataset
    from tinydyn.models.checkpoint import load_model
    from tinydyn.models.lcnet_fpga import mean_saliences, static_model

    out = tmp_path / "fpga.pt"
    proc = tinydyn(
        "train", "--out", str(out), "--init-from", str(trained), "--fold-gates", "--lr", "0", "--epochs", "1",
        "--limit", "128", "--batch-size", "64",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    payload = torch.load(out, weights_only=True)
    assert payload["config"]["gates"] is False and payload["config"]["exits"] == [0]
    assert not any(".lnet." in k or ".cnet." in k for k in payload["state_dict"])
    assert payload["train"]["folded_from"] == str(trained)
    gated, _ = load_model(trained)
    train_images = load_dataset("fashion-mnist", "train").images[:128]
    folded = static_model(gated, mean_saliences(gated, train_images)).state_dict()
    for key in ("blocks.0.bn1.weight", "blocks.0.bn2.bias", "blocks.1.bn1.bias", "exit_heads.0.fc.weight"):
        assert torch.allclose(payload["state_dict"][key], folded[key], atol=1e-6), key
    assert not torch.allclose(
        payload["state_dict"]["blocks.0.bn1.weight"], gated.state_dict()["blocks.0.bn1.weight"]
    )
    again = tinydyn("train", "--out", str(tmp_path / "x.pt"), "--init-from", str(out), "--fold-gates", *TINY)
    assert_one_line_error(again, "has no gates to fold", "--init-from alone")
    alone = tinydyn("train", "--out", str(tmp_path / "y.pt"), "--fold-gates", *TINY)
    assert_one_line_error(alone, "--fold-gates", "--init-from")
