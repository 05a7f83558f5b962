"""Hard budgets in MACs, modelled energy and cycles (tinydyn/cost/budget.py): the generated C
decides every exit exactly as the reference executor, on the host and under QEMU, through the
harness and through protocol v2 with per-request budgets; the rule keeps each image within its
budget; the skip/gate report adds up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinydyn.codegen import build_project
from tinydyn.codegen.harness import run_host, run_qemu
from tinydyn.cost.budget import BudgetCosts, budget_costs, layer_ops
from tinydyn.cost.cost_table import CostTable, Fit, LayerCycles
from tinydyn.host.boardproc import BoardProcess
from tinydyn.host.client import BoardClient
from tinydyn.host.firmware import build_firmware
from tinydyn.host.measure import measure, parse_schedule, summarize
from tinydyn.host.skips import skip_summary
from tinydyn.ir import IRModel
from tinydyn.quantize.executor import Results, execute
from tinydyn.quantize.policy import ExitPolicy, PolicyError

from .codegen_support import assert_same
from .codegen_support import gated_ir as gated_model_ir
from .conftest import make_model, require_tool

COSTS = ("energy_cost_nj", "cycles_cost", "gate_macs")


@pytest.fixture(scope="module")
def gated_ir(fashion_test) -> IRModel:
    return gated_model_ir(fashion_test, make_model)


def synthetic_table(ir: IRModel) -> CostTable:
    """A cost table as `tinydyn profile` writes one (deterministic made-up cycles: what is tested
    is that C and the reference add up the same integers, not the figures)."""
    rows = []
    for i, op in enumerate(layer_ops(ir)):
        gate = op.attrs.get("channel_gate")
        channels = int(ir.tensors[gate].size) if gate else int(ir.tensors[op.output].shape[0])
        macs = int(op.attrs.get("macs", 0))
        per_channel = 37.25 + 3 * i if gate else None
        fixed = 900.0 + 71 * i
        full = fixed + (per_channel or 0) * channels + 1.5 * macs
        rows.append(
            LayerCycles(
                op.name,
                op.kind,
                macs,
                channels,
                "output" if gate else None,
                gate,
                fixed,
                per_channel,
                full,
                3,
                Fit("gated" if gate else "constant", 3, 2),
            )  # fmt: skip
        )
    return CostTable(ir.name, ir.model_id(), "qemu-mps2-an386", "cycles", "modelled", {}, 4321.0, tuple(rows))


@pytest.fixture(scope="module")
def costs(gated_ir: IRModel) -> BudgetCosts:
    return budget_costs(gated_ir, "qemu-mps2-an386", synthetic_table(gated_ir))


def budgets_that_split(ir: IRModel, images: np.ndarray, costs: BudgetCosts, unit: str) -> list[int]:
    """Budgets in ``unit`` from 0 to the dearest full run, under which images leave at different
    exits."""
    ref = execute(ir, images, ExitPolicy("none", costs=costs))
    total = {"macs": ref.macs, "energy": ref.extra["energy_cost_nj"], "cycles": ref.extra["cycles_cost"]}[
        unit
    ]
    return sorted({int(q) for q in np.linspace(0, total.max(), 9)})


def check_costs(ref: Results, got) -> None:  # noqa: ANN001 - HarnessResults
    for name in COSTS:
        assert np.array_equal(ref.extra[name], getattr(got, name)), name


def test_cost_model_is_static_and_consistent(gated_ir: IRModel, costs: BudgetCosts) -> None:
    assert costs.units == ("macs", "energy", "cycles") and costs.cycles_init == 4321
    assert budget_costs(gated_ir, "qemu-mps2-an386").units == ("macs", "energy")
    assert budget_costs(gated_ir, "nowhere").units == ("macs",)
    assert budget_costs(gated_ir, "qemu-mps2-an386").cost_model_id != costs.cost_model_id
    # a run in full costs exactly the per-exit maxima chained (no exit taken, every block open)
    images = np.zeros((1, 1, 28, 28), dtype=np.uint8)
    full = execute(gated_ir, images, ExitPolicy("none", gating=False, costs=costs))
    assert full.extra["cycles_cost"][0] > costs.cycles_init
    with pytest.raises(PolicyError, match="a budget in energy needs the cost model"):
        execute(gated_ir, images, ExitPolicy("budget", 5, unit="energy"))
    with pytest.raises(PolicyError, match="no cycles costs: run `tinydyn profile`"):
        execute(
            gated_ir, images, ExitPolicy("budget", 5, unit="cycles", costs=budget_costs(gated_ir, "host"))
        )


@pytest.mark.parametrize("unit", ["macs", "energy", "cycles"])
def test_budget_rule_keeps_images_within_their_budget(gated_ir, costs, fashion_test, unit: str) -> None:
    """DDI's rule: an image that did not have to stop at the first exit never exceeds its budget,
    and a larger budget never sends an image to an earlier exit."""
    images = fashion_test.images[:128]
    key = {"macs": None, "energy": "energy_cost_nj", "cycles": "cycles_cost"}[unit]
    previous = None
    budgets = budgets_that_split(gated_ir, images, costs, unit)
    seen = set()
    for budget in budgets:
        ref = execute(gated_ir, images, ExitPolicy("budget", budget, unit=unit, costs=costs))
        spent = ref.macs if key is None else ref.extra[key]
        late = ref.exits > 0
        assert (spent[late] <= budget).all()
        if previous is not None:
            assert (ref.exits >= previous).all()
        previous = ref.exits
        seen |= set(ref.exits.tolist())
    assert len(seen) == 3  # the budgets really split the images over all three exits


def test_host_c_equals_reference_for_every_unit(gated_ir, costs, fashion_test, tmp_path: Path) -> None:
    require_tool("gcc")
    out = tmp_path / "host"
    build_project(gated_ir, "host", out, compile=True, costs=costs)
    images = fashion_test.images[:160]
    policies = [ExitPolicy("none", costs=costs), ExitPolicy("confidence", 0.6, costs=costs)]
    for unit in ("macs", "energy", "cycles"):
        policies += [
            ExitPolicy("budget", b, unit=unit, costs=costs)
            for b in budgets_that_split(gated_ir, images, costs, unit)
        ]
    policies.append(
        ExitPolicy("budget", budgets_that_split(gated_ir, images, costs, "energy")[2], False, "energy", costs)
    )
    for policy in policies:
        ref = execute(gated_ir, images, policy)
        got = run_host(gated_ir, out / "fw", images, policy)
        assert got.cost_model_id == costs.cost_model_id and got.budget_units == 0b111
        assert_same(ref, got)
        check_costs(ref, got)


def test_qemu_c_equals_reference_for_every_unit(gated_ir, costs, fashion_test, tmp_path: Path) -> None:
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    out = tmp_path / "m4"
    build_project(gated_ir, "qemu-mps2-an386", out, compile=True, costs=costs)
    images = fashion_test.images[:24]
    for unit in ("macs", "energy", "cycles"):
        budget = budgets_that_split(gated_ir, fashion_test.images[:160], costs, unit)[5]
        policy = ExitPolicy("budget", budget, unit=unit, costs=costs)
        ref = execute(gated_ir, images, policy)
        got = run_qemu(gated_ir, out / "fw.elf", images, policy)
        assert_same(ref, got)
        check_costs(ref, got)
        assert len(set(ref.exits.tolist())) > 1


def test_protocol_v2_per_request_budgets_bit_exact(gated_ir, costs, fashion_test, tmp_path: Path) -> None:
    """The serial firmware (host board) under a CONFIG budget and a schedule of per-request
    budgets in all three units: every decision, cost and gate MAC equals the reference."""
    require_tool("gcc")
    fw = build_firmware(gated_ir, "host", tmp_path / "fw", costs=costs)
    images, labels = fashion_test.images[:60], fashion_test.labels[:60]
    split = {
        u: budgets_that_split(gated_ir, fashion_test.images[:160], costs, u)
        for u in ("macs", "energy", "cycles")
    }
    schedule = [("macs", split["macs"][1]), ("energy", split["energy"][2]), ("cycles", split["cycles"][3]),
                ("cycles", 0), ("energy", split["energy"][4])]  # fmt: skip
    with BoardProcess([str(fw)]) as board:
        client = BoardClient(board.port, timeout=5.0, expected_model_id=gated_ir.model_id())
        try:
            outcome = measure(
                client, gated_ir, images, labels, ExitPolicy("confidence", 0.7, costs=costs),
                tmp_path / "sched.jsonl", progress=False, schedule=schedule,
            )  # fmt: skip
            assert client.version == 2 and outcome.info.cost_model_id == costs.cost_model_id
            assert not outcome.mismatches
            recs = outcome.records
            assert all(r["policy"] == "budget" for r in recs)
            assert {(r["budget_unit"], r["budget"]) for r in recs} == set(schedule)
            assert len({r["exit"] for r in recs}) > 1
            s = summarize(outcome, gated_ir)
            assert [b["images"] for b in s["per_budget"]] and sum(b["images"] for b in s["per_budget"]) == 60
            assert s["gate_macs_source"] == "board"
            # the CONFIG's own budget, in each unit, without a schedule
            for unit in ("energy", "cycles"):
                policy = ExitPolicy("budget", split[unit][5], unit=unit, costs=costs)
                outcome = measure(
                    client,
                    gated_ir,
                    images[:30],
                    labels[:30],
                    policy,
                    tmp_path / f"{unit}.jsonl",
                    progress=False,
                )
                assert not outcome.mismatches and len({r["exit"] for r in outcome.records}) > 1
        finally:
            client.close()


def test_skip_summary_adds_up(gated_ir, costs, fashion_test) -> None:
    images = fashion_test.images[:64]
    ref = execute(gated_ir, images, ExitPolicy("none", costs=costs))
    s = skip_summary(ref, cycles_unit=True)
    gates = [op for op in gated_ir.walk() if op.attrs.get("role") == "gate"]
    guards = [op for op in gated_ir.walk() if op.kind == "guard"]
    assert s["blocks_reached_per_image"] == len(guards)  # no exits taken: every block is reached
    assert 0 < s["layer_skip_ratio"] < 1 and 0 < s["channel_skip_ratio"] < 1
    # gates inside a skipped block do not run: at most every gate's MACs, more than the first's
    assert int(gates[0].attrs["macs"]) < s["mean_gate_macs"] < sum(int(op.attrs["macs"]) for op in gates)
    assert s["mean_head_macs"] == 0  # policy none computes no early head (the final one is backbone)
    assert s["mean_backbone_macs"] + s["mean_gate_macs"] == pytest.approx(ref.macs.mean())
    heads = execute(gated_ir, images, ExitPolicy("margin", 1e9, costs=costs))  # every head, no exit
    assert skip_summary(heads)["mean_head_macs"] > 0
    static = execute(gated_ir, images, ExitPolicy("none", gating=False, costs=costs))
    s0 = skip_summary(static)
    assert s0["layer_skip_ratio"] == 0 and s0["channel_skip_ratio"] == 0 and s0["mean_gate_macs"] == 0


def test_schedule_parsing() -> None:
    assert parse_schedule("3M, energy:250k,cycles:1.5G,7", "macs") == [
        ("macs", 3_000_000), ("energy", 250_000), ("cycles", 1_500_000_000), ("macs", 7)
    ]  # fmt: skip
    from tinydyn.host.measure import MeasureError

    with pytest.raises(MeasureError, match="unknown unit 'joule'"):
        parse_schedule("joule:5", "macs")
    with pytest.raises(MeasureError, match="outside 0..4294967295"):
        parse_schedule("5G", "macs")
    with pytest.raises(MeasureError, match="'abc' is not a number"):
        parse_schedule("abc", "macs")
