"""Bit-exactness of the generated C on the whole Fashion-MNIST test set (10,000 images).

The host build (native gcc, portable kernels; with --dsp the DSP kernels' C emulation) of a
checkpoint of any family (default: the bundled LC-Net; a DDI checkpoint works the same) runs
every test image under each policy and every per-image field is compared with the integer
executor: logits, class, exit, MACs, skipped blocks and channels, and the baked cost model's
modelled energy and cycles and the gates' MACs. Policies: none (gating on and off), confidence
0.9, margin 4.0, and hard budgets in MACs, modelled energy (nJ) and cycles (the last needs a
per-layer cost table: --cost-table FILE from `tinydyn profile`, or --profile N to take one on N
images here). With --per-request (default) the host board's serial firmware (protocol v2) also
runs every image under a per-request budget, cycling through a schedule in all three units
(DDI's time-varying resource limit), checked by `tinydyn measure`'s comparison. With --qemu N
the Cortex-M4 build (SMLAD path) also runs the first N images under every harness policy.

    .venv/bin/python benchmarks/bitexact_fashion.py [CHECKPOINT] [--dsp] [--qemu N]
                     [--cost-table FILE | --profile N] [--no-per-request] [--images N] [--out FILE]
Prints a table and writes benchmarks/results/bitexact_fashion.json (--out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tinydyn.codegen import build_project
from tinydyn.codegen.harness import run_host, run_qemu
from tinydyn.cost.budget import BudgetCosts, budget_costs
from tinydyn.cost.cost_table import read_cost_table
from tinydyn.data import load_dataset
from tinydyn.ir import IRModel
from tinydyn.pipeline import load_ir
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

FIELDS = ("logits", "predictions", "exits", "macs", "skipped_blocks", "skipped_channels")
COSTS = ("energy_cost_nj", "cycles_cost", "gate_macs")  # the baked cost model's, per image
BOARD = "qemu-mps2-an386"  # whose energy coefficients both builds bake in (one cost model for both)
BUDGET_FRACTIONS = (0.5,)  # harness budgets: this share of a full static run's cost in each unit
SCHEDULE_FRACTIONS = {"macs": (0.3, 0.6), "energy": (0.45,), "cycles": (0.4, 0.75)}


def compare(ref, got) -> dict[str, int]:  # noqa: ANN001 - Results / HarnessResults
    """Mismatching images per field (the cost fields where the board reports them)."""
    out = {
        f: int((getattr(ref, f) != getattr(got, f)).reshape(len(ref), -1).any(axis=1).sum()) for f in FIELDS
    }
    for name in COSTS:
        board = getattr(got, name, None)
        if board is not None and name in ref.extra:
            out[name] = int((ref.extra[name] != board).sum())
    return out


def full_costs(ir: IRModel, images: np.ndarray, costs: BudgetCosts) -> dict[str, float]:
    """Per unit, the most a run with every gate open costs on ``images`` (the budgets' scale)."""
    ref = execute(ir, images, ExitPolicy("none", gating=False, costs=costs))
    return {
        "macs": float(ref.macs.max()),
        "energy": float(ref.extra["energy_cost_nj"].max()),
        "cycles": float(ref.extra["cycles_cost"].max()),
    }


def policies(costs: BudgetCosts, full: dict[str, float]) -> list[ExitPolicy]:
    out = [
        ExitPolicy("none", costs=costs),
        ExitPolicy("none", gating=False, costs=costs),
        ExitPolicy("confidence", 0.9, costs=costs),
        ExitPolicy("margin", 4.0, costs=costs),
    ]
    for unit in costs.units:
        out += [ExitPolicy("budget", float(int(f * full[unit])), True, unit, costs) for f in BUDGET_FRACTIONS]
    return out


def label(policy: ExitPolicy) -> str:
    if policy.kind == "budget":
        return f"budget {policy.threshold:.4g} {policy.unit}"
    text = policy.kind + ("" if policy.kind == "none" else f" {policy.threshold:g}")
    return text + ("" if policy.gating else " (gating off)")


def per_request(
    ir: IRModel,
    costs: BudgetCosts,
    full: dict[str, float],
    images: np.ndarray,
    labels: np.ndarray,
    work: Path,
) -> dict:
    """The serial firmware (host board, protocol v2) with image i under budget schedule[i % len]."""
    from tinydyn.host.boardproc import BoardProcess
    from tinydyn.host.client import BoardClient
    from tinydyn.host.firmware import build_firmware
    from tinydyn.host.measure import measure, summarize

    schedule = [(u, int(f * full[u])) for u in costs.units for f in SCHEDULE_FRACTIONS[u]]
    fw = build_firmware(ir, "host", work / "serial", costs=costs)
    t0 = time.perf_counter()
    with BoardProcess([str(fw)]) as board:
        client = BoardClient(board.port, timeout=10.0, expected_model_id=ir.model_id())
        try:
            outcome = measure(
                client,
                ir,
                images,
                labels,
                ExitPolicy("confidence", 0.9, costs=costs),
                work / "per_request.jsonl",
                progress=False,
                schedule=schedule,
                max_reported=3,
            )
        finally:
            client.close()
    summary = summarize(outcome, ir)
    return {
        "policy": "per-request budgets",
        "label": "per-request budgets " + ", ".join(f"{u}:{b}" for u, b in schedule),
        "schedule": schedule,
        "target": "host-serial-protocol-v2",
        "images": len(images),
        "mismatches": {"any_field": len(outcome.mismatches)},
        "accuracy": summary.get("accuracy"),
        "per_budget": summary.get("per_budget"),
        "executor_s": 0.0,
        "firmware_s": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", nargs="?", type=Path, default=None)
    parser.add_argument("--dsp", action="store_true", help="host build of the DSP path (C emulation)")
    parser.add_argument("--qemu", type=int, default=0, help="also run the first N images on the M4 build")
    parser.add_argument("--images", type=int, default=10_000, help="test images on the host build")
    parser.add_argument("--cost-table", type=Path, default=None, help="`tinydyn profile`'s cost_table.json")
    parser.add_argument(
        "--profile", type=int, default=0, help="take the cycles cost table here on N images (tinydyn profile)"
    )
    parser.add_argument("--no-per-request", action="store_true", help="skip the serial per-request run")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "bitexact_fashion.json"
    )
    args = parser.parse_args()
    loaded = load_ir(args.checkpoint)
    ir = loaded.ir
    data = load_dataset("fashion-mnist", "test")
    images, labels = data.images[: args.images], data.labels[: args.images]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        table = read_cost_table(args.cost_table) if args.cost_table else None
        if table is None and args.profile:
            from tinydyn.host.profile import take_profile

            table = take_profile(
                ir, images[: args.profile], Path(tmp) / "profile", compare_default=False
            ).table
        if table is None:
            print("no --cost-table or --profile N: budgets in cycles are left out")
        costs = budget_costs(ir, BOARD, table)
        full = full_costs(ir, images[:256], costs)
        build_project(
            ir,
            "host",
            Path(tmp) / "host",
            compile=True,
            extra_cflags="-DTD_EMULATE_DSP" if args.dsp else "",
            costs=costs,
        )
        if args.qemu:
            build_project(ir, "qemu-mps2-an386", Path(tmp) / "m4", compile=True, costs=costs)
        for policy in policies(costs, full):
            t0 = time.perf_counter()
            ref = execute(ir, images, policy)
            t1 = time.perf_counter()
            got = run_host(ir, Path(tmp) / "host" / "fw", images, policy)
            t2 = time.perf_counter()
            row = {
                "policy": policy.kind,
                "label": label(policy),
                "threshold": policy.threshold,
                "unit": policy.unit if policy.kind == "budget" else None,
                "gating": policy.gating,
                "target": "host-dsp-emulated" if args.dsp else "host",
                "images": len(images),
                "mismatches": compare(ref, got),
                "accuracy": float((ref.predictions == labels).mean()),
                "exits": np.bincount(ref.exits, minlength=len(ir.exits())).tolist(),
                "executor_s": t1 - t0,
                "firmware_s": t2 - t1,
            }
            rows.append(row)
            if args.qemu:
                sub = images[: args.qemu]
                t3 = time.perf_counter()
                got = run_qemu(ir, Path(tmp) / "m4" / "fw.elf", sub, policy)
                rows.append(
                    {
                        **row,
                        "target": "qemu-mps2-an386",
                        "images": len(sub),
                        "mismatches": compare(execute(ir, sub, policy), got),
                        "firmware_s": time.perf_counter() - t3,
                    }
                )
        if not args.no_per_request:
            rows.append(per_request(ir, costs, full, images, labels, Path(tmp)))
    print(f"{'target':<26}{'policy':<34}{'images':>7}{'mismatching images':>20}{'exec s':>8}{'C s':>8}")
    for row in rows:
        bad = max(row["mismatches"].values())
        print(
            f"{row['target']:<26}{row['label'][:33]:<34}{row['images']:>7}{bad:>20}"
            f"{row['executor_s']:>8.1f}{row['firmware_s']:>8.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "model": ir.name,
                "model_id": ir.model_id(),
                "checkpoint": str(loaded.path),
                "cost_model_id": costs.cost_model_id,
                "cycles_source": costs.cycles_source or None,
                "runs": rows,
            },
            indent=2,
        )
    )
    print(f"written to {args.out}")
    if any(max(r["mismatches"].values()) for r in rows):
        raise SystemExit("the firmware differs from the executor")


if __name__ == "__main__":
    main()
