"""DDI (dual dynamic inference) on Fashion-MNIST: accuracy vs MACs, the paper's Tables I and II,
gate overhead (issue 11, "Shipped and measured").

Per backbone (ResNet, DenseNet) it takes the static backbone trained with the same recipe, DDI
checkpoints at several target skip ratios and static nets of other depths, and reports:

1. accuracy vs mean executed MACs on the integer reference (``--images`` test images): each DDI
   checkpoint under policy none (gating on, no exits: layer- and channel-skip ratios, gate MACs)
   and under confidence exits (one threshold in the table, a sweep on the curve), against the
   static backbone's int8 accuracy and MACs; the aim "at 2x fewer mean MACs, within 1 pt of the
   backbone's int8 accuracy" is checked on the curve's upper envelope, interpolated linearly
   in MACs between its two neighbouring points (said so in the output);
2. Table II: for each branch k of the bundled-target checkpoint, the budget = the MAC cost of
   halting at k (from the IR, as the budget policy decides: the most MACs up to exit k's decision
   plus its head), DDI's accuracy under that per-request budget vs the accuracy of a static
   network of equal cost: the static nets (different depths) interpolated linearly in MACs
   (labelled interpolated, with the two nets that span it; out-of-range budgets are marked,
   never extrapolated);
3. Table I on the QEMU board (mps2-an386, ``--qemu-images``): each DDI checkpoint gated (policy
   none) vs gating off: savings in MACs, in modelled energy (tinydyn.cost: the per-op DDI energy
   model the firmware bakes in, and the board model with the measured instructions as its
   cycles), in retired instructions (measured, QEMU -icount) and in cycles (modelled, the
   Cortex-M4 cycle model); every board result is compared with the reference;
4. gate overhead of the bundled-target checkpoint: LSTM layer gates and channel gates apart, in
   MACs (the IR's op roles) and in instructions (measured) / cycles (modelled) from the per-layer
   profile ``tinydyn profile`` takes, relative to the block they gate (paper: < 1 % and ~12.5 %);
5. a plot (``--plot``): accuracy vs mean MACs, DDI curves and static points, both backbones.

    .venv/bin/python benchmarks/ddi.py \\
        --resnet-static S.pt --resnet-ddi T30.pt T50.pt ... --resnet-depths B1.pt B2.pt \\
        --densenet-static ... --densenet-ddi ... [--bundled-target 0.5] [--images N] [--qemu-images N]
Prints tables and writes benchmarks/results/ddi.json and ddi.png.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tinydyn.codegen import build_project
from tinydyn.codegen.harness import instructions, run_qemu
from tinydyn.cost.budget import budget_costs
from tinydyn.cost.energy import energy_from_macs, traffic_profile
from tinydyn.host.skips import skip_summary
from tinydyn.host.sweep import CONFIDENCE_SWEEP, Probe, probe_from_trace
from tinydyn.ir import IRModel, Op
from tinydyn.ops import op_kind
from tinydyn.quantize.builder import op_max_macs
from tinydyn.quantize.executor import every_head, execute, static_macs, trace
from tinydyn.quantize.policy import ExitPolicy

BOARD = "qemu-mps2-an386"
ICOUNT_SHIFT = 3
FIELDS = ("logits", "predictions", "exits", "macs", "skipped_blocks", "skipped_channels")
AIM_MAC_FACTOR = 2.0  # the aim: 2x fewer mean MACs ...
AIM_ACCURACY_DROP = 0.01  # ... within 1 point of the static backbone's int8 accuracy
PAPER_LSTM_GATE = "< 1 % of a block"
PAPER_CHANNEL_GATE = "about 12.5 % of a block"


# ---------------------------------------------------------------------------- loading
def load(path: Path) -> tuple[IRModel, dict[str, Any]]:
    """The integer IR of a checkpoint (through its family) and the checkpoint's payload."""
    from tinydyn.pipeline import load_ir

    loaded = load_ir(Path(path))
    return loaded.ir, loaded.payload


def target_skip(payload: dict[str, Any]) -> float | None:
    """The --target-skip the checkpoint was trained toward (its recorded recipe), or None."""
    value = payload.get("recipe", {}).get("family_options", {}).get("target_skip")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def channel_gate(payload: dict[str, Any]) -> str:
    """The checkpoint's channel gate kind, as its config reads (older checkpoints: the backbone's)."""
    from tinydyn.models.ddi import DDIConfig

    return DDIConfig.from_json(payload["config"]).channel_gate


# ---------------------------------------------------------------------------- budgets
def halting_budgets(ir: IRModel) -> list[int]:
    """Per exit (by index), the MAC budget of halting there: the most MACs the ops before the
    exit can execute plus its head. The budget policy leaves at exit k when the MACs so far plus
    ``next_cost_max[k]`` exceed the budget, and ``next_cost_max[k]`` is the most the way to exit
    k+1 plus its head costs, so these chain as ``H[k+1] = H[k] - head[k] + next_cost_max[k]``:
    under ``H[k]`` no image can leave before k (H non-decreasing) and one that kept every gate
    open leaves at k (what it saved on gates and skips may carry it further)."""
    exits = sorted(ir.exits(), key=lambda op: op.attrs["index"])
    first = next(i for i, op in enumerate(ir.ops) if op.kind == "exit")
    head = [sum(op_kind(o.kind).macs(o) for o in op.then) for op in exits]
    budgets = [sum(op_max_macs(op) for op in ir.ops[:first]) + head[0]]
    for k, op in enumerate(exits[:-1]):
        budgets.append(budgets[-1] - head[k] + int(op.attrs["next_cost_max"]))
    return budgets


# ---------------------------------------------------------------------------- reference
def reference_point(probe: Probe, ir: IRModel, labels: np.ndarray, policy: ExitPolicy) -> dict[str, Any]:
    pred, exits, macs = probe.outcome(ir, policy)
    return {
        "policy": policy.kind,
        "threshold": policy.threshold,
        "accuracy": float((pred == labels).mean()),
        "mean_macs": float(macs.mean()),
        "max_macs": int(macs.max()),
        "exit_histogram": np.bincount(exits, minlength=probe.num_exits).tolist(),
    }


def evaluate_ddi(
    ir: IRModel, images: np.ndarray, labels: np.ndarray, confidence: float, sweep: tuple[float, ...]
) -> dict[str, Any]:
    """One reference pass with every head computed: policy none (gating on), the confidence
    threshold of the table, the confidence sweep of the curve, and the budget of halting at every
    branch (the probe reproduces execute() for each: tests/test_measure.py)."""
    run = trace(ir, images, every_head(), keep_tensors=False)
    probe = probe_from_trace(ir, run)
    skips = skip_summary(run.results)  # gating does not depend on the exit policy: none's ratios
    none = reference_point(probe, ir, labels, ExitPolicy("none"))
    none |= {
        "mean_gate_macs": skips["mean_gate_macs"],
        "layer_skip_ratio": skips["layer_skip_ratio"],
        "channel_skip_ratio": skips["channel_skip_ratio"],
    }
    budgets = halting_budgets(ir)
    return {
        "model": ir.name,
        "model_id": ir.model_id(),
        "static_backbone_macs": int(ir.meta.get("static_backbone_macs", static_macs(ir))),
        "none": none,
        "confidence": reference_point(probe, ir, labels, ExitPolicy("confidence", confidence)),
        "confidence_sweep": [reference_point(probe, ir, labels, ExitPolicy("confidence", t)) for t in sweep],
        "halting_budgets": [
            {"branch": k, **reference_point(probe, ir, labels, ExitPolicy("budget", float(b)))}
            for k, b in enumerate(budgets)
        ],
    }


def evaluate_static(ir: IRModel, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    ref = execute(ir, images, ExitPolicy("none"))
    return {
        "model": ir.name,
        "model_id": ir.model_id(),
        "accuracy": float((ref.predictions == labels).mean()),
        "mean_macs": float(ref.macs.mean()),
        "blocks": ir.meta.get("model_config", {}).get("blocks"),
    }


# ---------------------------------------------------------------------------- curves
def upper_envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(MACs, accuracy) points no other point beats (fewer or equal MACs, higher accuracy)."""
    front: list[tuple[float, float]] = []
    for macs, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((macs, acc))
    return front


def interpolate(points: list[tuple[float, float]], x: float) -> tuple[float | None, list[int]]:
    """Linear interpolation of y at x over points sorted by x; (None, []) outside their range
    (no extrapolation), else (y, the indices of the two points that span x)."""
    pts = sorted(points)
    if not pts or x < pts[0][0] or x > pts[-1][0]:
        return None, []
    for i in range(len(pts) - 1):
        (x0, y0), (x1, y1) = pts[i], pts[i + 1]
        if x0 <= x <= x1:
            t = 0.0 if x1 == x0 else (x - x0) / (x1 - x0)
            return y0 + t * (y1 - y0), [i, i + 1]
    return pts[-1][1], [len(pts) - 1]  # x equals the single point's x


def aim(ddi: list[dict[str, Any]], static: dict[str, Any]) -> dict[str, Any]:
    """The issue's aim on the accuracy-vs-MACs curve of every DDI point (none and the confidence
    sweep of every checkpoint): its upper envelope interpolated at the target MACs; past the
    envelope's last point, that point itself (a model at fewer MACs than the target, and nothing
    more accurate at more: achieved, not extrapolated); before its first, not reached."""
    points = [(d["none"]["mean_macs"], d["none"]["accuracy"]) for d in ddi]
    points += [(p["mean_macs"], p["accuracy"]) for d in ddi for p in d["confidence_sweep"]]
    front = upper_envelope(points)
    at = static["mean_macs"] / AIM_MAC_FACTOR
    acc, _ = interpolate(front, at)
    how = (
        "linear interpolation in MACs between the two neighbouring points of the upper envelope of "
        "all DDI points (policy none and the confidence sweep of every checkpoint)"
    )
    if acc is None and front and at > front[-1][0]:
        acc = front[-1][1]
        how = (
            f"the envelope's last point ({front[-1][0]:,.0f} MACs, under the target; no DDI point is "
            "more accurate at more MACs)"
        )
    floor = static["accuracy"] - AIM_ACCURACY_DROP
    return {
        "mean_macs_target": at,
        "accuracy_floor": floor,
        "accuracy_at_target": acc,
        "how": how,
        "reached": acc is not None,
        "holds": acc is not None and acc >= floor,
        "envelope": [{"mean_macs": m, "accuracy": a} for m, a in front],
        "note": None
        if acc is not None
        else f"the curve starts at {front[0][0]:,.0f} MACs, above {at:,.0f}: no extrapolation",
    }


def table2(bundled: dict[str, Any], statics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per halting budget: DDI's accuracy under it vs the static nets interpolated at equal cost."""
    pts = sorted((s["mean_macs"], s["accuracy"], s["model"]) for s in statics)
    rows = []
    for b in bundled["halting_budgets"]:
        budget = float(b["threshold"])
        acc, span = interpolate([(m, a) for m, a, _ in pts], budget)
        rows.append(
            {
                "branch": b["branch"],
                "budget_macs": int(budget),
                "ddi_accuracy": b["accuracy"],
                "ddi_mean_macs": b["mean_macs"],
                "ddi_exit_histogram": b["exit_histogram"],
                "static_accuracy_interpolated": acc,
                "static_spanned_by": [pts[i][2] for i in span],
                "static_range_macs": [pts[0][0], pts[-1][0]] if pts else None,
                "out_of_range": acc is None,
            }
        )
    return rows


# ---------------------------------------------------------------------------- Table I (QEMU)
def table1(ir: IRModel, images: np.ndarray, work: Path) -> dict[str, Any]:
    """Gated (policy none) vs gating off on the QEMU board; each run checked against the
    reference (FIELDS, the baked cost model's energy and the gate MACs)."""
    report = build_project(ir, BOARD, work, compile=True)
    costs = budget_costs(ir, BOARD)  # what build_project bakes in by default (energy, no cycles)
    board_profile = traffic_profile(ir, BOARD)
    modes: dict[str, dict[str, Any]] = {}
    for mode, gating in (("gated", True), ("gating off", False)):
        policy = ExitPolicy("none", gating=gating, costs=costs)
        got = run_qemu(ir, work / "fw.elf", images, policy, icount_shift=ICOUNT_SHIFT, cycle_model=True)
        ref = execute(ir, images, policy)
        bad = [f for f in FIELDS if not np.array_equal(getattr(ref, f), getattr(got, f))]
        bad += [
            name
            for name, board in (("energy_cost_nj", got.energy_cost_nj), ("gate_macs", got.gate_macs))
            if not np.array_equal(ref.extra[name], board)
        ]
        if got.cost_model_id != costs.cost_model_id:
            bad.append("cost_model_id")
        instr = instructions(got.counter, ICOUNT_SHIFT)
        board_nj = [
            energy_from_macs(BOARD, board_profile, int(m), int(c)).energy_nj
            for m, c in zip(ref.macs, instr, strict=True)
        ]
        modes[mode] = {
            "images": len(images),
            "board_equals_reference": not bad,
            "mismatching_fields": bad,
            "mean_macs": float(ref.macs.mean()),
            "mean_gate_macs": float(ref.extra["gate_macs"].mean()),
            "mean_energy_nj_per_op_modelled": float(ref.extra["energy_cost_nj"].mean()),
            "mean_energy_nj_board_modelled": float(np.mean(board_nj)),
            "mean_instructions_measured": float(instr.mean()),
            "mean_cycles_modelled": float(got.cycles_modelled.mean()),
        }
    on, off = modes["gated"], modes["gating off"]

    def saving(key: str) -> float:
        return 1.0 - on[key] / off[key] if off[key] else 0.0

    savings = {
        "macs": saving("mean_macs"),
        "energy_per_op_modelled": saving("mean_energy_nj_per_op_modelled"),
        "energy_board_modelled": saving("mean_energy_nj_board_modelled"),
        "instructions_measured": saving("mean_instructions_measured"),
        "cycles_modelled": saving("mean_cycles_modelled"),
    }
    return {
        "model": ir.name,
        "flash_bytes": report.flash_bytes,
        "arena_bytes": report.arena_bytes,
        "modes": modes,
        "savings": savings,
    }


# ---------------------------------------------------------------------------- gate overhead
UNIT = re.compile(r"^(u\d+)\.")


def gate_groups(ir: IRModel) -> dict[str, dict[str, list[str]]]:
    """Per unit: its LSTM layer-gate layers (the ``lstm_gate`` op and the pooling that feeds only
    it), its channel-gate layers (the other ops with role gate and the pooling between them) and
    its block (the backbone convs its gates control: ``channel_gate`` / ``input_mask``)."""
    ops = list(ir.walk())
    consumers: dict[str, list[Op]] = {}
    for op in ops:
        for tensor in op.inputs.values():
            consumers.setdefault(tensor, []).append(op)

    def unit_of(op: Op) -> str | None:
        m = UNIT.match(op.name)
        return m.group(1) if m else None

    groups: dict[str, dict[str, list[str]]] = {}

    def add(unit: str | None, what: str, name: str) -> None:
        if unit is not None:
            groups.setdefault(unit, {"layer_gate": [], "channel_gate": [], "block": []})[what].append(name)

    for op in ops:
        if op.output is None:
            continue
        role = op.attrs.get("role")
        if op.kind == "lstm_gate":
            add(unit_of(op), "layer_gate", op.name)
        elif role == "gate":
            add(unit_of(op), "channel_gate", op.name)
        elif role == "backbone" and (op.attrs.get("channel_gate") or op.attrs.get("input_mask")):
            add(unit_of(op), "block", op.name)
        elif role is None and op_kind(op.kind).macs(op) == 0:
            users = consumers.get(op.output, [])
            if users and all(u.kind == "lstm_gate" for u in users):
                add(unit_of(users[0]), "layer_gate", op.name)
            elif users and all(u.attrs.get("role") == "gate" for u in users):
                add(unit_of(users[0]), "channel_gate", op.name)
    return groups


def gate_overhead(ir: IRModel, images: np.ndarray, work: Path) -> dict[str, Any]:
    """Gate cost relative to its block: MACs from the IR, instructions (measured) and cycles
    (modelled) from the per-layer profile (tinydyn.host.profile.take_profile, as `tinydyn
    profile`): a gate's figures are means over the images where it ran (gated mode), a block's
    over the static mode (gating off, every block computed)."""
    from tinydyn.host.profile import take_profile

    profile = take_profile(ir, images, work, compare_default=False, dataset="fashion-mnist")
    index = {s.name: j for j, s in enumerate(profile.specs)}
    macs = {s.name: s.macs for s in profile.specs}
    modes = profile.summary["modes"]
    per_image = {
        (mode, key): np.asarray(modes[mode]["per_image"][f"layer_{key}"], dtype=np.float64)
        for mode in ("static", "gated")
        for key in ("instructions", "cycles_modelled")
    }
    units = []
    for unit, g in sorted(gate_groups(ir).items(), key=lambda kv: int(kv[0][1:])):
        if not g["block"]:
            continue
        row: dict[str, Any] = {"unit": unit, "layers": g, "block_macs": sum(macs[n] for n in g["block"])}
        for key in ("instructions", "cycles_modelled"):
            block = per_image["static", key][:, [index[n] for n in g["block"]]].sum(axis=1)
            row[f"block_{key}"] = float(block.mean())
        for gate in ("layer_gate", "channel_gate"):
            names = [n for n in g[gate] if n in index]
            row[f"{gate}_macs"] = sum(macs[n] for n in names) if names else None
            for key in ("instructions", "cycles_modelled"):
                cols = per_image["gated", key][:, [index[n] for n in names]].sum(axis=1) if names else None
                ran = cols is not None and (cols > 0).any()
                row[f"{gate}_{key}"] = float(cols[cols > 0].mean()) if ran else None
        units.append(row)

    def share(gate: str, key: str) -> float | None:
        rows = [u for u in units if u[f"{gate}_{key}"] is not None]
        total = sum(u[f"block_{key}"] for u in rows)
        return sum(u[f"{gate}_{key}"] for u in rows) / total if rows and total else None

    return {
        "model": ir.name,
        "images": len(images),
        "bit_exact": all(m["bit_exact"] for m in modes.values()),
        "units": units,
        "share_of_block": {
            gate: {key: share(gate, key) for key in ("macs", "instructions", "cycles_modelled")}
            for gate in ("layer_gate", "channel_gate")
        },
        "paper": {"layer_gate": PAPER_LSTM_GATE, "channel_gate": PAPER_CHANNEL_GATE},
        "labels": {
            "macs": "IR op roles (every MAC the gate executes when it runs)",
            "instructions": "measured: retired instructions per layer, counted by the cycle-model plugin",
            "cycles_modelled": "modelled: Cortex-M4 cycle model (docs/CYCLES.md)",
        },
    }


# ---------------------------------------------------------------------------- plot
def plot(result: dict[str, Any], path: Path) -> Path:
    from tinydyn.host.report import _pyplot

    plt = _pyplot()
    backbones = list(result["backbones"])
    fig, axes = plt.subplots(1, len(backbones), figsize=(6.5 * len(backbones), 5), squeeze=False)
    for ax, name in zip(axes[0], backbones, strict=True):
        b = result["backbones"][name]
        for d in b["ddi"]:
            label = f"t={d['target_skip']:g}" if d["target_skip"] is not None else d["model"]
            paper_gate = "full" if name == "resnet" else "light"  # Fig. 2(b) / Fig. 4
            label += f" ({d['channel_gate']} G^C)" if d.get("channel_gate", paper_gate) != paper_gate else ""
            sweep = sorted((p["mean_macs"], p["accuracy"]) for p in d["confidence_sweep"])
            (line,) = ax.plot(
                [m / 1e6 for m, _ in sweep],
                [100 * a for _, a in sweep],
                ".-",
                alpha=0.6,
                label=f"{label} conf.",
            )
            ax.plot(
                d["none"]["mean_macs"] / 1e6, 100 * d["none"]["accuracy"], "o", color=line.get_color(), ms=8
            )
        for i, s in enumerate(b["static_depths"]):  # the first is the static backbone itself
            ax.plot(s["mean_macs"] / 1e6, 100 * s["accuracy"], "*" if i == 0 else "s", color="k", ms=9)
            text = f"static blocks {s['blocks']}" + (" (backbone)" if i == 0 else "")
            ax.annotate(text, (s["mean_macs"] / 1e6, 100 * s["accuracy"]), fontsize=7)
        st = b["static"]
        ax.axhline(100 * (st["accuracy"] - AIM_ACCURACY_DROP), color="grey", ls=":", lw=1)
        ax.axvline(st["mean_macs"] / AIM_MAC_FACTOR / 1e6, color="grey", ls=":", lw=1)
        ax.set_title(f"{name}: DDI (o: policy none, .: confidence sweep) vs static (*, s)")
        ax.set_xlabel("mean executed MACs (M, integer reference)")
        ax.set_ylabel(f"accuracy % ({result['images']} Fashion-MNIST test images)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- printing
def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def print_backbone(name: str, b: dict[str, Any]) -> None:
    st = b["static"]
    print(f"\n== {name}: static backbone {st['model']}: int8 accuracy {pct(st['accuracy'])}, "
          f"{st['mean_macs'] / 1e6:.3f} M MACs")  # fmt: skip
    print(f"{'checkpoint':<28}{'target':>7}{'policy':>12}{'acc':>9}{'MACs M':>9}{'xMACs':>7}"
          f"{'gate MACs':>11}{'layer skip':>11}{'chan skip':>10}")  # fmt: skip
    for d in b["ddi"]:
        for pol in ("none", "confidence"):
            p = d[pol]
            tag = "none" if pol == "none" else f"conf {p['threshold']:g}"
            target = "" if d["target_skip"] is None else f"{d['target_skip']:g}"
            print(
                f"{d['model'][:27]:<28}{target:>7}"
                f"{tag:>12}{pct(p['accuracy']):>9}{p['mean_macs'] / 1e6:>9.3f}"
                f"{st['mean_macs'] / p['mean_macs']:>7.2f}"
                + (
                    f"{p['mean_gate_macs']:>11,.0f}{pct(p['layer_skip_ratio']):>11}"
                    f"{pct(p['channel_skip_ratio']):>10}"
                    if pol == "none"
                    else ""
                )
            )
    a = b["aim"]
    verdict = "HOLDS" if a["holds"] else ("does NOT hold" if a["reached"] else "not reached")
    print(
        f"aim (at {AIM_MAC_FACTOR:g}x fewer mean MACs = {a['mean_macs_target'] / 1e6:.3f} M, accuracy >= "
        f"{pct(a['accuracy_floor'])}): {verdict}; accuracy there {pct(a['accuracy_at_target'])} "
        f"(interpolated: {a['how']})" + (f"; {a['note']}" if a["note"] else "")
    )
    if b["table2"]:
        print(f"Table II ({b['bundled']}): budget = MAC cost of halting at each branch")
        print(
            f"{'branch':>7}{'budget M':>10}{'DDI acc':>9}{'DDI MACs M':>11}"
            f"{'static acc (interp.)':>22}  spanned by"
        )
        for r in b["table2"]:
            static_acc = "out of range" if r["out_of_range"] else pct(r["static_accuracy_interpolated"])
            print(
                f"{r['branch']:>7}{r['budget_macs'] / 1e6:>10.3f}{pct(r['ddi_accuracy']):>9}"
                f"{r['ddi_mean_macs'] / 1e6:>11.3f}{static_acc:>22}  {', '.join(r['static_spanned_by'])}"
            )
    if b["table1"]:
        print("Table I (QEMU mps2-an386, gated vs gating off, policy none): savings")
        print(
            f"{'checkpoint':<28}{'MACs':>8}{'E op*':>8}{'E board*':>9}{'instr':>8}{'cycles*':>8}  board = ref"
        )
        for t in b["table1"]:
            s = t["savings"]
            exact = all(m["board_equals_reference"] for m in t["modes"].values())
            print(
                f"{t['model'][:27]:<28}{pct(s['macs']):>8}{pct(s['energy_per_op_modelled']):>8}"
                f"{pct(s['energy_board_modelled']):>9}{pct(s['instructions_measured']):>8}"
                f"{pct(s['cycles_modelled']):>8}  {exact}"
                + ("" if exact else f" MISMATCH {[m['mismatching_fields'] for m in t['modes'].values()]}")
            )
        print(
            "  instructions measured (QEMU -icount); * modelled (energy: tinydyn.cost; cycles: cycle model)"
        )
    g = b.get("gate_overhead")
    if g:
        sh = g["share_of_block"]
        print(f"gate overhead ({g['model']}, {g['images']} images, profile bit-exact {g['bit_exact']}), "
              "share of the block they gate:")  # fmt: skip
        for gate, paper in (("layer_gate", PAPER_LSTM_GATE), ("channel_gate", PAPER_CHANNEL_GATE)):
            print(
                f"  {gate:<13} MACs {pct(sh[gate]['macs'])}, instructions {pct(sh[gate]['instructions'])} "
                f"(measured), cycles {pct(sh[gate]['cycles_modelled'])} (modelled); paper {paper}"
            )


# ---------------------------------------------------------------------------- main
def run_backbone(
    name: str, args: argparse.Namespace, images: np.ndarray, labels: np.ndarray, tmp: Path
) -> dict[str, Any] | None:
    static_path = getattr(args, f"{name}_static")
    ddi_paths = getattr(args, f"{name}_ddi") or []
    if static_path is None or not ddi_paths:
        print(f"{name}: no --{name}-static / --{name}-ddi given: left out")
        return None
    static_ir, _ = load(static_path)
    static = evaluate_static(static_ir, images, labels)
    depths = [static] + [evaluate_static(load(p)[0], images, labels) for p in getattr(args, f"{name}_depths")]
    ddi, irs = [], []
    sweep = tuple(sorted(set(CONFIDENCE_SWEEP) | {args.confidence}))
    for path in ddi_paths:
        ir, payload = load(path)
        d = evaluate_ddi(ir, images, labels, args.confidence, sweep)
        d |= {"checkpoint": str(path), "target_skip": target_skip(payload)}
        d["channel_gate"] = channel_gate(payload)
        ddi.append(d)
        irs.append(ir)
    # the bundled target's checkpoint: Table II and the gate profile
    bundled = min(range(len(ddi)), key=lambda i: abs((ddi[i]["target_skip"] or 0.0) - args.bundled_target))
    qimages = images[: args.qemu_images]
    t1 = [table1(ir, qimages, tmp / f"{name}_t1_{i}") for i, ir in enumerate(irs)] if args.qemu_images else []
    overhead = (
        gate_overhead(irs[bundled], images[: args.profile_images], tmp / f"{name}_profile")
        if args.profile_images
        else None
    )
    return {
        "static": static,
        "static_depths": depths,
        "ddi": ddi,
        "aim": aim(ddi, static),
        "bundled": ddi[bundled]["model"],
        "table2": table2(ddi[bundled], depths),
        "table1": t1,
        "gate_overhead": overhead,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name in ("resnet", "densenet"):
        parser.add_argument(f"--{name}-static", type=Path, help=f"static {name} backbone (--no-gates)")
        parser.add_argument(f"--{name}-ddi", type=Path, nargs="+", help=f"{name} DDI checkpoints")
        parser.add_argument(
            f"--{name}-depths", type=Path, nargs="*", default=[],
            help=f"static {name}s of other depths, same recipe (Table II's equal-cost comparison)",
        )  # fmt: skip
    parser.add_argument("--bundled-target", type=float, default=0.5, help="target skip of Table II's model")
    parser.add_argument(
        "--confidence", type=float, default=0.9, help="confidence exit threshold of the table"
    )
    parser.add_argument("--images", type=int, default=10_000, help="test images on the integer reference")
    parser.add_argument(
        "--qemu-images", type=int, default=100, help="test images on the QEMU board (0: skip)"
    )
    parser.add_argument(
        "--profile-images", type=int, default=20, help="images of the gate-overhead profile (0: skip)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ddi.json")
    parser.add_argument("--plot", type=Path, default=Path(__file__).parent / "results" / "ddi.png")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from tinydyn.data import load_dataset

    data = load_dataset("fashion-mnist", "test")
    images, labels = data.images[: args.images], data.labels[: args.images]
    result: dict[str, Any] = {
        "dataset": "fashion-mnist test",
        "images": len(images),
        "qemu_images": min(args.qemu_images, len(images)),
        "board": BOARD,
        "labels": {
            "accuracy, MACs": "integer reference (= the board, checked bit for bit on the QEMU images)",
            "instructions": "measured: retired instructions under QEMU -icount",
            "energy": "modelled (tinydyn.cost): per op = the DDI energy model the firmware bakes in; "
            "board = energy_from_macs with the measured instructions as cycles",
            "cycles": "modelled (Cortex-M4 cycle model)",
            "static accuracy in Table II": "interpolated linearly in MACs between static nets of other "
            "depths",
        },
        "backbones": {},
    }
    with tempfile.TemporaryDirectory(prefix="td_ddi_bench_") as tmp:
        for name in ("resnet", "densenet"):
            b = run_backbone(name, args, images, labels, Path(tmp))
            if b is not None:
                result["backbones"][name] = b
                print_backbone(name, b)
    if not result["backbones"]:
        raise SystemExit("error: give at least one backbone's --<backbone>-static and --<backbone>-ddi")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {args.out} and {plot(result, args.plot)}")


if __name__ == "__main__":
    main()
