"""Data-parallel training for real: two processes under torchrun (gloo on the CPU).

Each process normalises its batch norm over the images it sees, so two processes on a global
batch of 16 compute what one process computes with the batch split into two micro-batches of 8
(``--micro-batches 2``, the same interleaved split: process r takes positions r, r+2, ...).
That run is the exact single-process reference; parameters must agree to float tolerance.

Both start from one checkpoint whose activation scales are set: in its first 300 forward passes
Brevitas sets each scale from a running average of batch statistics (a buffer, which DDP takes
from process 0 at every step), so during that phase the two computations differ slightly by
construction. Running statistics (BN's) are not compared: under DDP they follow process 0's
images only.
"""

from __future__ import annotations

import re
import subprocess
import sys

import torch

from tests.test_cli import tinydyn

RUN = [
    "--widths", "4,8", "--blocks", "1,1", "--exits", "0", "--limit", "64", "--batch-size", "16",
    "--epochs", "1", "--seed", "3", "--eval-limit", "0", "--threads", "1", "--device", "cpu",
]  # fmt: skip


def statistics(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def same_parameters(a: dict, b: dict) -> int:
    """Every float tensor but running statistics equal to float tolerance; how many compared."""
    compared = 0
    for key, value in b["state_dict"].items():
        if statistics(key) or not value.is_floating_point():
            continue
        assert torch.allclose(a["state_dict"][key], value, rtol=1e-4, atol=1e-5), key
        compared += 1
    return compared


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, fashion_test):
    base = tmp_path / "base.pt"
    proc = tinydyn("train", "--out", str(base), *RUN)
    assert proc.returncode == 0, proc.stderr
    start = ["--init-from", str(base), *RUN]
    ddp_dir = tmp_path / "ddp"
    ddp_dir.mkdir()
    ddp = ddp_dir / "model.pt"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*launch, "-m", "tinydyn", "train", "--out", str(ddp), *start],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = tmp_path / "one.pt"
    single = tinydyn("train", "--out", str(one), "--micro-batches", "2", *start)
    assert single.returncode == 0, single.stderr

    # process 0 alone writes: one report line, the checkpoint and its optimizer state, nothing else
    assert proc.stdout.count("checkpoint ") == 1, proc.stdout
    assert sorted(p.name for p in ddp_dir.iterdir()) == ["model.pt", "model.pt.resume"]
    a = torch.load(ddp, weights_only=True)
    b = torch.load(one, weights_only=True)
    assert a["train"]["processes"] == 2 and b["train"]["processes"] == 1
    assert a["train"]["history"][0]["images_per_second"] > 0
    assert same_parameters(a, b) >= 20
    # and the training really moved the parameters (not two copies of the starting point)
    c = torch.load(base, weights_only=True)["state_dict"]
    assert not torch.allclose(c["blocks.0.conv1.weight"], b["state_dict"]["blocks.0.conv1.weight"], atol=1e-3)


DDI_RUN = [
    "--model", "ddi", "--backbone", "resnet", "--widths", "4,8,8", "--blocks", "2,2,2", "--limit", "128",
    "--batch-size", "16", "--epochs", "2", "--branch-epochs", "1", "--gate-open-epochs", "0.25",
    "--target-skip", "0.1", "--alpha", "20", "--gate-lr", "1", "--eval-limit", "0", "--threads", "1",
    "--device", "cpu", "--seed", "3",
]  # fmt: skip


def test_ddi_two_processes_match_one_with_the_same_global_batch(tmp_path, fashion_test):
    """DDI's phases under torchrun (gates trained with the backbone frozen, then jointly with α's
    sign flipping, then the branches): process r computes its share of each batch, α's sign set
    from that share's cost, exactly as --micro-batches 2 does in one process."""
    base = tmp_path / "base.pt"
    # the starting point: a short run at the default α, its gates still skipping nothing
    start = list(DDI_RUN)
    for option in ("--target-skip", "--alpha", "--gate-lr"):
        del start[start.index(option) : start.index(option) + 2]
    start[start.index("--epochs") + 1] = "1"
    proc = tinydyn("train", "--out", str(base), *start)
    assert proc.returncode == 0, proc.stderr
    run = ["--init-from", str(base), *DDI_RUN]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ddp = tmp_path / "ddp.pt"
    proc = subprocess.run(
        [*launch, "-m", "tinydyn", "train", "--out", str(ddp), *run],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = tmp_path / "one.pt"
    single = tinydyn("train", "--out", str(one), "--micro-batches", "2", *run)
    assert single.returncode == 0, single.stderr
    # the cost term changed sign during the run: the gates went from skipping nothing to past 0.1
    shown = [float(s) for s in re.findall(r"(?<!layer_)skip=(-?[0-9.]+)", single.stderr)]
    assert min(shown) < 0.1 < max(shown)
    a = torch.load(ddp, weights_only=True)
    b = torch.load(one, weights_only=True)
    assert a["family"] == b["family"] == "ddi" and a["train"]["processes"] == 2
    assert same_parameters(a, b) >= 100 and any("lstm" in k for k in b["state_dict"])
    c = torch.load(base, weights_only=True)["state_dict"]
    moved = [
        k
        for k, v in c.items()
        if v.is_floating_point() and not torch.allclose(v, b["state_dict"][k], atol=1e-6)
    ]
    assert any("gate" in k for k in moved) and any("branch" in k or "exit" in k for k in moved), moved[:5]
