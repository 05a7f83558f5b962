"""benchmarks/ddi.py's core on a small DDI network: the MAC budget of halting at branch k makes a
network whose gates are all open leave exactly at k, one MAC less at k-1; the one-pass reference
(probe) equals the executor under every policy the benchmark reports; gate overhead groups the
right layers; interpolation never extrapolates."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tinydyn.ir import IRModel
from tinydyn.models.ddi import DDINet
from tinydyn.models.ddi_lower import lower
from tinydyn.models.registry import get_family
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy
from tinydyn.train.loop import to_float

from .test_ddi_models import make_ddi, small_config

_spec = importlib.util.spec_from_file_location(
    "ddi_bench", Path(__file__).parent.parent / "benchmarks" / "ddi.py"
)
ddi_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ddi_bench)


@pytest.fixture(scope="module")
def open_ir(fashion_test) -> IRModel:
    """A ResNet-DDI whose every gate is open for every input (the family's warm-start hook)."""
    warnings.filterwarnings("ignore", module="brevitas")
    torch.manual_seed(0)
    model = DDINet(small_config("resnet"))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(to_float(fashion_test.images[:64]), with_branches=True)
    model.eval()
    get_family("ddi").open_gates(model)
    return lower(model, "ddi_open")


@pytest.fixture(scope="module")
def gated_ir(fashion_test) -> IRModel:
    return lower(make_ddi(small_config("resnet"), fashion_test.images, seed=3), "ddi_gated")


def test_halting_budget_of_branch_k_stops_an_open_network_exactly_there(open_ir, fashion_test):
    images = fashion_test.images[:16]
    none = execute(open_ir, images, ExitPolicy("none"))
    assert not none.skipped_blocks.any() and not none.skipped_channels.any()  # every gate open
    budgets = ddi_bench.halting_budgets(open_ir)
    assert len(budgets) == len(open_ir.exits()) and budgets == sorted(budgets)
    assert budgets[-1] == none.macs.max()  # halting at the final classifier: the full run
    for k, budget in enumerate(budgets[:-1]):
        at = execute(open_ir, images, ExitPolicy("budget", budget))
        assert (at.exits == k).all() and (at.macs == budget).all()
        if k:
            below = execute(open_ir, images, ExitPolicy("budget", budget - 1))
            assert (below.exits == k - 1).all()


def test_one_pass_reference_equals_the_executor(gated_ir, fashion_test):
    images, labels = fashion_test.images[:96], fashion_test.labels[:96]
    d = ddi_bench.evaluate_ddi(gated_ir, images, labels, 0.6, (0.5, 0.6))
    for point, policy in [
        (d["none"], ExitPolicy("none")),
        (d["confidence"], ExitPolicy("confidence", 0.6)),
    ] + [(b, ExitPolicy("budget", b["threshold"])) for b in d["halting_budgets"]]:
        ref = execute(gated_ir, images, policy)
        assert point["accuracy"] == float((ref.predictions == labels).mean())
        assert point["mean_macs"] == float(ref.macs.mean())
        assert point["exit_histogram"] == np.bincount(ref.exits, minlength=len(gated_ir.exits())).tolist()
    ref = execute(gated_ir, images, ExitPolicy("none"))
    assert d["none"]["layer_skip_ratio"] == ref.skipped_blocks.sum() / ref.extra["blocks_reached"].sum()
    assert 0 < d["none"]["layer_skip_ratio"] < 1 and d["none"]["mean_gate_macs"] > 0
    # under its own budget an image that did not stop at branch 0 never spends more
    for b in d["halting_budgets"]:
        assert b["max_macs"] <= b["threshold"] or b["exit_histogram"][0] > 0


def test_gate_groups_split_layer_gates_channel_gates_and_blocks(gated_ir):
    groups = ddi_bench.gate_groups(gated_ir)
    assert sorted(groups, key=lambda u: int(u[1:])) == [f"u{i}" for i in range(6)]
    ops = {op.name: op for op in gated_ir.walk()}
    for unit, g in groups.items():
        assert sorted(ops[n].kind for n in g["layer_gate"]) == ["gap", "lstm_gate"]
        assert [n for n in g["layer_gate"] if ops[n].kind == "lstm_gate"] == [f"{unit}.lgate"]
        assert g["channel_gate"] == [f"{unit}.cg.a", f"{unit}.cg.a.pool", f"{unit}.cg.fc"]
        assert g["block"] == [f"{unit}.conv1", f"{unit}.conv2"]
    # the paper's channel gate: a 3x3 stride-2 conv c->c is 1/8 of a block of two 3x3 c->c convs
    u0 = groups["u0"]
    conv, block = ops["u0.cg.a"].attrs["macs"], sum(ops[n].attrs["macs"] for n in u0["block"])
    assert conv * 8 == block


def test_interpolation_is_linear_and_never_extrapolates():
    pts = [(3.0, 0.9), (1.0, 0.8), (5.0, 0.94)]
    assert ddi_bench.interpolate(pts, 2.0) == (pytest.approx(0.85), [0, 1])
    assert ddi_bench.interpolate(pts, 4.0) == (pytest.approx(0.92), [1, 2])
    assert ddi_bench.interpolate(pts, 0.5) == (None, []) and ddi_bench.interpolate(pts, 5.5) == (None, [])
    assert ddi_bench.upper_envelope([(1, 0.8), (2, 0.7), (3, 0.9), (3, 0.85)]) == [(1, 0.8), (3, 0.9)]
    rows = ddi_bench.table2(
        {"halting_budgets": [{"branch": 0, "threshold": 0.5, "accuracy": 0.7, "mean_macs": 0.4,
                              "exit_histogram": [1]},
                             {"branch": 1, "threshold": 2.0, "accuracy": 0.9, "mean_macs": 1.5,
                              "exit_histogram": [1]}]},
        [{"model": "b1", "mean_macs": 1.0, "accuracy": 0.8},
         {"model": "b3", "mean_macs": 3.0, "accuracy": 0.9}],
    )  # fmt: skip
    assert rows[0]["out_of_range"] and rows[0]["static_accuracy_interpolated"] is None
    assert rows[1]["static_accuracy_interpolated"] == pytest.approx(0.85)
    assert rows[1]["static_spanned_by"] == ["b1", "b3"]


def test_aim_counts_a_model_under_the_target_and_never_extrapolates_below_the_curve():
    static = {"mean_macs": 10.0, "accuracy": 0.9}  # target 5 MACs, floor 0.89

    def ddi(*points):
        return [{"none": {"mean_macs": m, "accuracy": a}, "confidence_sweep": []} for m, a in points]

    spanned = ddi_bench.aim(ddi((4.0, 0.88), (6.0, 0.9)), static)
    assert spanned["accuracy_at_target"] == pytest.approx(0.89) and spanned["holds"]
    under = ddi_bench.aim(ddi((4.8, 0.895), (3.0, 0.8)), static)  # the best point needs fewer MACs
    assert under["accuracy_at_target"] == 0.895 and under["holds"] and "last point" in under["how"]
    assert not ddi_bench.aim(ddi((4.8, 0.85)), static)["holds"]
    above = ddi_bench.aim(ddi((6.0, 0.9), (7.0, 0.91)), static)  # every point dearer than the target
    assert (
        above["accuracy_at_target"] is None and not above["reached"] and "no extrapolation" in above["note"]
    )
