"""S2DNAS with COST in cycles on the QEMU board (beyond the paper): each model is built and
profiled under QEMU on a few held-out images, its per-layer cycles charged up to each exit's
decision. Checked against the board itself: the cycles the probe charges an image that leaves at
exit k are the cycles the default firmware build takes for it (cycle model, measured instruction
stream); `tinydyn train --cost profile` reaches it (`tinydyn search --cost cycles`:
tests/test_s2dnas_energy.py, tests/test_search.py)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from tinydyn.cli import cli
from tinydyn.codegen import build_project
from tinydyn.codegen.harness import run_qemu
from tinydyn.host.cycles import CycleModel
from tinydyn.models.checkpoint import load_model, save_checkpoint
from tinydyn.models.s2dnas import S2DNASNet
from tinydyn.models.s2dnas_lower import lower
from tinydyn.models.s2dnas_thresholds import (
    PROFILE_IMAGES,
    cycles_probe,
    static_cycles,
    tune_thresholds,
)
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

from .conftest import require_tool
from .s2dnas_support import split_exits, tiny_config, tiny_model
from .test_s2dnas_energy import held_out

# the probe's per-layer cycles are the profile build's means on a few images; the default build
# inlines the layers (a fraction of a percent apart) and the exit decisions' own work varies a little
REL = 0.01


def require_qemu() -> None:
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")


def test_cycles_charged_per_exit_are_the_boards(fashion_test, tmp_path):
    require_qemu()
    images = fashion_test.images[:48]
    model = tiny_model(tiny_config(fashion_test.classes), fashion_test.images[:32])
    ir = split_exits(lower(model, "cycles"), images)
    probe, spent = cycles_probe(ir, images, images[:PROFILE_IMAGES])
    assert len(spent) == len(ir.exits()) and all(s.shape == (len(images),) for s in spent)
    assert all(np.all(a < b) for a, b in zip(spent, spent[1:], strict=False))  # later exits cost more
    build_project(ir, "qemu-mps2-an386", tmp_path, compile=True)
    policy = ExitPolicy("confidence", 0.9)  # the exits' own thresholds
    got = run_qemu(ir, tmp_path / "fw.elf", images, policy, cycle_model=CycleModel())
    ref = execute(ir, images, policy)
    assert np.array_equal(got.exits, ref.exits)
    assert len(set(ref.exits.tolist())) == len(ir.exits())  # every exit ends some images
    charged = np.array([spent[k][i] for i, k in enumerate(ref.exits)], dtype=np.float64)
    np.testing.assert_allclose(charged, got.cycles_modelled, rtol=REL)


def test_cycle_thresholds_report_cycles_relative_to_the_static_model(fashion_test):
    require_qemu()
    cfg = tiny_config(fashion_test.classes)
    model = tiny_model(cfg, fashion_test.images[:32])
    held = held_out(fashion_test, 200)
    choice = tune_thresholds(model, held, unit="cycles")
    assert choice.unit == "cycles" and model.config.thresholds == choice.thresholds
    ir = lower(model, "check")
    _, spent = cycles_probe(ir, held.images, held.images[:PROFILE_IMAGES])
    exits = execute(ir, held.images, ExitPolicy("confidence", 0.9)).exits
    mean = float(np.mean([spent[k][i] for i, k in enumerate(exits)]))
    assert choice.mean_cost == pytest.approx(mean, rel=1e-9)
    assert choice.cost == pytest.approx(mean / static_cycles(model, held.images[:PROFILE_IMAGES]), rel=1e-9)


def test_train_cost_profile_tunes_in_cycles_of_the_static_model(tmp_path, fashion_test):
    require_qemu()
    static = tiny_model(
        tiny_config(fashion_test.classes, "vgg", stages=1, splits=(), concat=()), fashion_test.images[:32]
    )
    source = save_checkpoint(tmp_path / "static.pt", static, {})
    out = tmp_path / "cycles.pt"
    args = [
        "train",
        "--model",
        "s2dnas",
        "--backbone-from",
        str(source),
        "--groups",
        "4",
        "--stages",
        "2",
        "--held-out",
        "300",
        "--limit",
        "128",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--eval-limit",
        "0",
        "--cost",
        "profile",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    model, payload = load_model(out)
    assert isinstance(model, S2DNASNet)
    tuned = payload["train"]["tuned"]
    assert tuned["unit"] == "cycles" and tuned["mean_cost"] > 0 and 0 < tuned["cost"] < 1
    # COST's base is the static model the S2DNAS one was transformed from, as the board runs it
    static_ir = lower(static, "static")
    build_project(static_ir, "qemu-mps2-an386", tmp_path / "static", compile=True)
    images = fashion_test.images[:4]
    board = run_qemu(
        static_ir, tmp_path / "static" / "fw.elf", images, ExitPolicy("none"), cycle_model=CycleModel()
    )
    assert tuned["mean_cost"] / tuned["cost"] == pytest.approx(board.cycles_modelled.mean(), rel=REL)
