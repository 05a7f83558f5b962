"""Per-layer profile of a model on the QEMU Cortex-M4 board (``tinydyn profile``; docs/CYCLES.md,
"Profiling").

The firmware is built with ``-DTD_PROFILE``, which keeps every layer function of ``model.c``
out of line (``TD_NOINLINE``; the default build is unchanged). The cycle-model plugin is given
the layer functions' code ranges from the ELF symbol table (:func:`write_syms`) and charges every
executed instruction to a layer: the layer's own code and every kernel it calls; what td_infer
does itself (gate checks, exit decisions, the gating-off memsets) is "control". Per td_infer
call it reports instructions (MEASURED: counted exactly, one by one, as QEMU executes them) and
Cortex-M4 cycles (MODELLED) per layer, summing exactly to the call's totals.

Each run is checked bit for bit against the integer reference (logits, class, exit, MACs,
skipped blocks and channels), which also gives each layer's executed MACs per image and the
executed channels of each channel-gated layer. From the gated runs :func:`cost_table` fits, per
layer, ``cycles ≈ fixed + per_channel × executed channels`` (least squares over images) and,
per guarded block, the cycles of the block when it runs and when it is skipped.

torch-free: it takes an :class:`~tinydyn.ir.IRModel`.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinydyn.cost.cost_table import BlockCycles, CostTable, Fit, LayerCycles
from tinydyn.errors import TinydynError
from tinydyn.host.cycles import (
    LABEL,
    CycleModel,
    CycleModelError,
    CycleRecord,
    function_symbols,
    qemu_plugin_args,
    read_records,
    symbol_address,
)
from tinydyn.ir import IRModel, Op
from tinydyn.quantize.executor import Results, Run, check_images, top1
from tinydyn.quantize.policy import ExitPolicy

BOARD = "qemu-mps2-an386"
# TD_NOINLINE: layer functions out of line (templates/model.c.j2); no identical code folding, which
# would merge two layers with the same code (e.g. two equal pools) into one address range
PROFILE_CFLAGS = "-DTD_PROFILE -fno-ipa-icf"
CONTROL = "control"
MODEL_SOURCE = "model.c"  # the layer functions' source file (its STT_FILE symbol)
FIELDS = ("logits", "predictions", "exits", "macs", "skipped_blocks", "skipped_channels")
MEASURED = "measured"  # instructions: counted exactly by the plugin as QEMU executes them


def modes(threshold: float = 0.9) -> dict[str, ExitPolicy]:
    """The three runs of a profile: every block and channel computed; gating on without exits;
    gating on with the confidence exit policy."""
    return {
        "static": ExitPolicy("none", gating=False),
        "gated": ExitPolicy("none"),
        "gated+exit": ExitPolicy("confidence", threshold),
    }


class ProfileError(TinydynError):
    """The profile cannot be taken (build, symbols, plugin) or a run is not bit-exact."""


# ---------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class LayerSpec:
    """One layer function of the generated model.c."""

    name: str  # IR op name
    cname: str  # its C function
    kind: str
    macs: int  # MACs when it runs in full
    channels: int  # channels of its gated dimension (output channels when not gated)
    gate: str | None  # the salience tensor gating those channels
    channel_dim: str | None  # "output" (channel_gate) or "input" (input_mask)
    block: str | None  # the guard it sits in
    branch: str | None  # "run" (the guard's then) or "skip" (its orelse)


@dataclass(frozen=True)
class BlockSpec:
    name: str  # the guard op
    gate: str  # its salience tensor
    gate_layer: str | None  # the op writing that tensor
    run: tuple[str, ...]  # layers of the then-branch
    skip: tuple[str, ...]  # layers of the else-branch


def _is_block(ir: IRModel, op: Op) -> bool:
    exits = {e.name for e in ir.exits()}
    return op.output is None and op.name not in exits and (bool(op.then) or bool(op.orelse))


def layer_specs(ir: IRModel) -> tuple[list[LayerSpec], list[BlockSpec]]:
    """The layer functions in schedule order (as ``codegen.layers.describe`` names them) and the
    guarded blocks."""
    from tinydyn.codegen.layers import describe  # torch-free; only to name the C functions
    from tinydyn.ops import op_kind

    desc = describe(ir)
    where: dict[str, tuple[str | None, str | None]] = {}
    blocks: list[BlockSpec] = []
    writer = {op.output: op.name for op in ir.walk() if op.output is not None}

    def visit(ops: list[Op], block: str | None, branch: str | None) -> None:
        for op in ops:
            where[op.name] = (block, branch)
            if _is_block(ir, op):
                gate = str(op.attrs.get("gate", ""))
                blocks.append(
                    BlockSpec(
                        op.name,
                        gate,
                        writer.get(gate),
                        tuple(o.name for o in ir.walk(op.then) if o.name in desc.layers),
                        tuple(o.name for o in ir.walk(op.orelse) if o.name in desc.layers),
                    )
                )
                visit(op.then, op.name, "run")
                visit(op.orelse, op.name, "skip")
            else:
                visit(op.then, block, branch)
                visit(op.orelse, block, branch)

    visit(ir.ops, None, None)
    ops = {op.name: op for op in ir.walk()}
    specs = []
    for name, layer in desc.layers.items():
        op = ops[name]
        out_channels = int(ir.tensors[op.output].shape[0]) if op.output in ir.tensors else 1
        gate, dim, channels = None, None, out_channels
        if op.attrs.get("channel_gate"):
            gate, dim = str(op.attrs["channel_gate"]), "output"
        elif op.attrs.get("input_mask"):
            gate, dim = str(op.attrs["input_mask"]), "input"
        if gate is not None:
            channels = int(ir.tensors[gate].size)
        block, branch = where.get(name, (None, None))
        specs.append(
            LayerSpec(
                name,
                str(layer["cname"]),
                op.kind,
                int(op_kind(op.kind).macs(op)),
                max(channels, 1),
                gate,
                dim,
                block,
                branch,
            )
        )
    return specs, blocks


# ---------------------------------------------------------------------------- symbols
def write_syms(elf: Path, specs: list[LayerSpec], path: Path) -> list[tuple[int, int, int, str]]:
    """The plugin's code-range file: for each layer (bucket = its index in ``specs``) the
    address range of its function in ``elf`` (and of any part GCC split off it, ``name.part.N``).
    Only local symbols of model.c count, so a kernel's static function of the same name cannot
    be taken for a layer. Returns the ranges written."""
    try:
        syms = function_symbols(elf)
    except CycleModelError as e:
        raise ProfileError(str(e)) from None
    has_files = any(s.file for s in syms)
    ranges: list[tuple[int, int, int, str]] = []
    for i, spec in enumerate(specs):
        found = [
            s
            for s in syms
            if (s.name == spec.cname or s.name.startswith(spec.cname + "."))
            and s.size > 0
            and (s.file == MODEL_SOURCE if has_files else True)
        ]
        if not any(s.name == spec.cname for s in found):
            raise ProfileError(
                f"{elf} has no function for layer {spec.name} ({spec.cname}): it was inlined; "
                f"build the firmware with EXTRA_CFLAGS={PROFILE_CFLAGS} (TD_NOINLINE)"
            )
        for s in found:
            ranges.append((i, s.address, s.address + s.size, s.name))
    ordered = sorted(ranges, key=lambda r: r[1])
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b[1] < a[2]:
            raise ProfileError(
                f"layer functions {a[3]} and {b[3]} share code in {elf} (identical code folding?)"
            )
    Path(path).write_text("".join(f"{b} {lo:#x} {hi:#x} {n}\n" for b, lo, hi, n in ranges))
    return ranges


# ---------------------------------------------------------------------------- reference
class _LayerRun(Run):
    """The executor's run, recording each layer's executed MACs per image."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.layer_macs: dict[str, np.ndarray] = {}

    def run_ops(self, ops: list[Op], live: np.ndarray) -> None:
        for op in ops:
            before = self.macs.copy()
            super().run_ops([op], live)
            if not op.then and not op.orelse:
                prev = self.layer_macs.get(op.name, 0)
                self.layer_macs[op.name] = prev + (self.macs - before)


@dataclass
class Reference:
    results: Results
    layer_macs: np.ndarray  # (N, layers) executed MACs per layer
    active: np.ndarray  # (N, layers) executed channels of each layer's gated dimension


def reference(ir: IRModel, images: np.ndarray, policy: ExitPolicy, specs: list[LayerSpec]) -> Reference:
    """The integer reference with per-layer MACs and executed channels per image."""
    images = check_images(ir, images)
    run = _LayerRun(ir, images, policy.to_integer(ir))
    run.run_ops(ir.ops, np.ones(len(images), dtype=bool))
    n = len(images)
    results = Results(
        run.logits, top1(run.logits), run.exits, run.macs, run.skipped_blocks, run.skipped_channels
    )
    macs = np.zeros((n, len(specs)), dtype=np.int64)
    active = np.zeros((n, len(specs)), dtype=np.int64)
    for j, spec in enumerate(specs):
        macs[:, j] = run.layer_macs.get(spec.name, 0)
        if spec.gate is not None and spec.gate in run.env:
            active[:, j] = np.count_nonzero(run.env[spec.gate].reshape(n, -1), axis=1)
        else:
            active[:, j] = spec.channels
    if not np.array_equal(macs.sum(axis=1), results.macs):
        raise ProfileError(
            "per-layer MACs do not add up to the executor's MACs (an op kind counts MACs itself)"
        )
    return Reference(results, macs, active)


# ---------------------------------------------------------------------------- runs
@dataclass
class ModeRun:
    """One mode's run: per image and layer (the last column is control)."""

    mode: str
    policy: ExitPolicy
    insns: np.ndarray  # (N, layers + 1) instructions, measured
    cycles: np.ndarray  # (N, layers + 1) cycles, modelled
    total_insns: np.ndarray  # (N,) the plugin's per-call totals
    total_cycles: np.ndarray  # (N,)
    ref: Reference
    bit_exact: bool
    mismatches: list[str] = field(default_factory=list)
    default_insns: np.ndarray | None = None  # the default (inlined) build's totals, same images
    default_cycles: np.ndarray | None = None


def run_attributed(
    ir: IRModel,
    elf: Path,
    syms: Path,
    images: np.ndarray,
    policy: ExitPolicy,
    model: CycleModel | None = None,
    timeout: float = 600,
) -> tuple[Any, list[CycleRecord]]:
    """The semihosting harness (``fw.elf``) under QEMU with the plugin attributing per layer;
    returns the harness results and one plugin record per image."""
    from tinydyn.codegen.errors import CodegenError
    from tinydyn.codegen.harness import decode_output, encode_input, qemu_command

    with tempfile.TemporaryDirectory(prefix="td_profile_") as tmp:
        work = Path(tmp)
        log = work / "cycles.jsonl"
        try:
            plugin = qemu_plugin_args(log, symbol_address(elf), model or CycleModel(), syms=syms)
            cmd = qemu_command(elf, None, plugin)
        except (CycleModelError, CodegenError) as e:
            raise ProfileError(str(e)) from None
        (work / "td_in.bin").write_bytes(encode_input(ir, images, policy))
        try:
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProfileError(f"QEMU ran past {timeout:.0f} s on {len(images)} images") from None
        if proc.returncode != 0:
            detail = " ".join((proc.stderr or proc.stdout).split())[-500:]
            raise ProfileError(
                f"the profiled firmware failed under QEMU (status {proc.returncode}): {detail}"
            )
        try:
            got = decode_output((work / "td_out.bin").read_bytes())
        except (OSError, CodegenError) as e:
            raise ProfileError(f"the profiled firmware wrote no results: {e}") from None
        try:
            recs = read_records(log)
        except CycleModelError as e:
            raise ProfileError(str(e)) from None
    if len(recs) != len(images):
        raise ProfileError(f"the cycle model saw {len(recs)} td_infer calls for {len(images)} images")
    return got, recs


def _compare(ref: Results, got: Any) -> list[str]:
    bad = []
    for name in FIELDS:
        a, b = getattr(ref, name), getattr(got, name)
        if a.shape != b.shape:
            bad.append(f"{name}: shape {b.shape} vs reference {a.shape}")
            continue
        rows = np.nonzero((a != b).reshape(len(a), -1).any(axis=1))[0]
        if rows.size:
            bad.append(f"{name} differs on images {rows[:10].tolist()}")
    return bad


def profile_mode(
    ir: IRModel,
    elf: Path,
    syms: Path,
    specs: list[LayerSpec],
    images: np.ndarray,
    mode: str,
    policy: ExitPolicy,
    model: CycleModel | None = None,
) -> ModeRun:
    got, recs = run_attributed(ir, elf, syms, images, policy, model)
    n, layers = len(images), len(specs)
    insns = np.zeros((n, layers + 1), dtype=np.int64)
    cycles = np.zeros((n, layers + 1), dtype=np.int64)
    for i, r in enumerate(recs):
        if r.layers is None or r.control is None or len(r.layers) != layers:
            raise ProfileError(f"the cycle model wrote no per-layer figures for image {i}")
        if r.stack_overflow:
            raise ProfileError(f"image {i}: the plugin's call stack overflowed ({r.stack_overflow} calls)")
        for j, (ins, cyc) in enumerate(r.layers):
            insns[i, j], cycles[i, j] = ins, cyc
        insns[i, layers], cycles[i, layers] = r.control
    total_insns = np.array([r.insns for r in recs], dtype=np.int64)
    total_cycles = np.array([r.cycles for r in recs], dtype=np.int64)
    if not (
        np.array_equal(insns.sum(axis=1), total_insns) and np.array_equal(cycles.sum(axis=1), total_cycles)
    ):
        raise ProfileError("the per-layer figures do not add up to the plugin's totals")
    ref = reference(ir, images, policy, specs)
    bad = _compare(ref.results, got)
    return ModeRun(mode, policy, insns, cycles, total_insns, total_cycles, ref, not bad, bad)


# ---------------------------------------------------------------------------- summaries
def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def mode_summary(specs: list[LayerSpec], run: ModeRun) -> dict[str, Any]:
    """Means over the images of one mode, per layer and in total."""
    n = len(run.total_insns)
    total_cycles = float(run.total_cycles.mean())
    rows = []
    names = [s.name for s in specs] + [CONTROL]
    kinds = [s.kind for s in specs] + [CONTROL]
    for j, name in enumerate(names):
        macs = float(run.ref.layer_macs[:, j].mean()) if j < len(specs) else 0.0
        ins = float(run.insns[:, j].mean())
        cyc = float(run.cycles[:, j].mean())
        rows.append(
            {
                "layer": name,
                "kind": kinds[j],
                "runs": int(np.count_nonzero(run.insns[:, j])),
                "macs": macs,
                "instructions": ins,
                "cycles_modelled": cyc,
                "instructions_per_mac": _ratio(ins, macs),
                "cycles_modelled_per_mac": _ratio(cyc, macs),
                "share_cycles": _ratio(cyc, total_cycles),
            }
        )
    out: dict[str, Any] = {
        "policy": run.policy.kind,
        "threshold": run.policy.threshold if run.policy.kind != "none" else None,
        "gating": run.policy.gating,
        "images": n,
        "bit_exact": run.bit_exact,
        "mismatches": run.mismatches,
        "macs": float(run.ref.results.macs.mean()),
        "instructions": float(run.total_insns.mean()),
        "cycles_modelled": total_cycles,
        "instructions_per_mac": _ratio(float(run.total_insns.sum()), float(run.ref.results.macs.sum())),
        "cycles_modelled_per_mac": _ratio(float(run.total_cycles.sum()), float(run.ref.results.macs.sum())),
        "exits": np.bincount(run.ref.results.exits, minlength=1).tolist(),
        "layers": rows,
        "per_image": {
            "macs": run.ref.results.macs.tolist(),
            "instructions": run.total_insns.tolist(),
            "cycles_modelled": run.total_cycles.tolist(),
            "layer_macs": run.ref.layer_macs.tolist(),
            "layer_instructions": run.insns.tolist(),
            "layer_cycles_modelled": run.cycles.tolist(),
            "active_channels": run.ref.active.tolist(),
        },
    }
    if run.default_insns is not None and run.default_cycles is not None:
        d_ins, d_cyc = float(run.default_insns.mean()), float(run.default_cycles.mean())
        out["default_build"] = {
            "instructions": d_ins,
            "cycles_modelled": d_cyc,
            "profile_build_overhead_instructions": _ratio(float(run.total_insns.mean()) - d_ins, d_ins),
            "profile_build_overhead_cycles": _ratio(total_cycles - d_cyc, d_cyc),
        }
    return out


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, Fit]:
    """Least squares y ≈ a + b·x; (a, b, goodness)."""
    design = np.stack([np.ones_like(x, dtype=np.float64), x.astype(np.float64)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    resid = y - (a + b * x)
    ss_res = float((resid**2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    fit = Fit(
        "gated",
        len(x),
        len(np.unique(x)),
        r2,
        float(np.sqrt(ss_res / len(x))),
        float(np.abs(resid).max()),
    )
    return float(a), float(b), fit


def cost_table(
    ir: IRModel,
    specs: list[LayerSpec],
    blocks: list[BlockSpec],
    runs: dict[str, ModeRun],
    model: CycleModel,
) -> CostTable:
    """The per-layer cost table (modelled cycles) from a profile's runs: ``full`` from the
    static run, ``fixed``/``per_channel`` fit over the gated runs (images where the layer ran),
    block costs from the gated runs."""
    static = runs.get("static")
    gated = [r for m, r in runs.items() if m != "static"]
    rows = []
    for j, spec in enumerate(specs):
        xs, ys = [], []
        for r in gated:
            ran = r.insns[:, j] > 0
            xs.append(r.ref.active[ran, j])
            ys.append(r.cycles[ran, j])
        x = np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64)
        y = np.concatenate(ys) if ys else np.zeros(0, dtype=np.int64)
        full_runs = static.insns[:, j] > 0 if static is not None else np.zeros(0, dtype=bool)
        full = (
            float(static.cycles[full_runs, j].mean())
            if full_runs.any()
            else (float(y.mean()) if len(y) else 0.0)
        )
        runs_count = len(x) + int(full_runs.sum())
        per_channel: float | None = None
        if spec.gate is not None:
            source = "gated"
            if len(np.unique(x)) < 2 and static is not None and full_runs.any():
                x = np.concatenate([x, static.ref.active[full_runs, j]])
                y = np.concatenate([y, static.cycles[full_runs, j]])
                source = "gated+static"
            if len(np.unique(x)) >= 2:
                fixed, per_channel, fit = _fit(x, y)
                fit = Fit(source, fit.images, fit.distinct_counts, fit.r2, fit.rmse, fit.max_abs_error)
            else:
                fixed = float(y.mean()) if len(y) else full
                fit = Fit("none", len(x), len(np.unique(x)))
        else:
            every = np.concatenate([y, static.cycles[full_runs, j]]) if static is not None else y
            fixed = float(every.mean()) if len(every) else 0.0
            fit = Fit(
                "constant",
                len(every),
                1 if len(every) else 0,
                None,
                float(every.std()) if len(every) else None,
                float(np.abs(every - fixed).max()) if len(every) else None,
            )
        rows.append(
            LayerCycles(
                spec.name,
                spec.kind,
                spec.macs,
                spec.channels,
                spec.channel_dim,
                spec.gate,
                fixed,
                per_channel,
                max(full, 0.0),
                runs_count,
                fit,
            )
        )
    index = {s.name: j for j, s in enumerate(specs)}
    brows = []
    for b in blocks:
        run_cols = [index[n] for n in b.run]
        skip_cols = [index[n] for n in b.skip]
        ran, skipped, gate = [], [], []
        for r in gated:
            # the block ran where any of its run-branch layers executed; skipped where its
            # else-branch did (images that left at an earlier exit did neither)
            did_run = (r.insns[:, run_cols] > 0).any(axis=1) if run_cols else np.zeros(len(r.insns), bool)
            did_skip = (r.insns[:, skip_cols] > 0).any(axis=1) if skip_cols else np.zeros(len(r.insns), bool)
            ran.append(r.cycles[did_run][:, run_cols].sum(axis=1))
            skipped.append(r.cycles[did_skip][:, skip_cols].sum(axis=1))
            if b.gate_layer in index:
                g = index[b.gate_layer]
                gate.append(r.cycles[r.insns[:, g] > 0, g])
        ran_a = np.concatenate(ran) if ran else np.zeros(0)
        skip_a = np.concatenate(skipped) if skipped else np.zeros(0)
        gate_a = np.concatenate(gate) if gate else np.zeros(0)
        full_block = 0.0
        if static is not None and run_cols:
            did = (static.insns[:, run_cols] > 0).any(axis=1)
            if did.any():
                full_block = float(static.cycles[did][:, run_cols].sum(axis=1).mean())
        brows.append(
            BlockCycles(
                b.name,
                b.gate,
                b.gate_layer,
                float(gate_a.mean()) if len(gate_a) else None,
                float(ran_a.mean()) if len(ran_a) else None,
                float(skip_a.mean()) if len(skip_a) else None,
                full_block,
                len(ran_a),
                len(skip_a),
                b.run,
                b.skip,
            )
        )
    control = static if static is not None else next(iter(runs.values()))
    n_images = len(next(iter(runs.values())).total_insns)
    return CostTable(
        ir.name[:200],
        ir.model_id(),
        BOARD,
        "cycles",
        LABEL,
        model.to_json(),
        float(control.cycles[:, -1].mean()),
        tuple(rows),
        tuple(brows),
        {
            "tool": "tinydyn profile",
            "images": n_images,
            "modes": list(runs),
            "fit": "least squares over the gated runs' images where the layer ran: cycles = fixed + "
            "per_channel * executed channels of its gated dimension",
        },
    )


# ---------------------------------------------------------------------------- table and plot
def format_table(summary: dict[str, Any]) -> str:
    """The printed table: per mode, per layer MACs, instructions (measured), cycles (modelled),
    instructions per MAC and the layer's share of the modelled cycles."""
    lines = []
    for mode, m in summary["modes"].items():
        exact = "bit-exact" if m["bit_exact"] else "NOT bit-exact: " + "; ".join(m["mismatches"])
        lines.append(
            f"{mode}: {m['images']} images, gating {'on' if m['gating'] else 'off'}, policy {m['policy']}"
            + (f" {m['threshold']}" if m.get("threshold") is not None else "")
            + f", {exact}"
        )
        head = (
            f"  {'layer':<16}{'MACs':>11}{'instructions':>14}{'cycles':>14}{'instr/MAC':>10}"
            f"{'share':>8}{'runs':>6}"
        )
        lines.append(head)
        lines.append(
            f"  {'':<16}{'(reference)':>11}{'(measured)':>14}{'(modelled)':>14}{'':>10}{'cycles':>8}"
        )
        for r in m["layers"]:
            ipm = r["instructions_per_mac"]
            lines.append(
                f"  {r['layer'][:15]:<16}{r['macs']:>11,.0f}{r['instructions']:>14,.0f}"
                f"{r['cycles_modelled']:>14,.0f}{'' if ipm is None else f'{ipm:.2f}':>10}"
                f"{(r['share_cycles'] or 0):>8.1%}{r['runs']:>6}"
            )
        ipm = m["instructions_per_mac"]
        lines.append(
            f"  {'total':<16}{m['macs']:>11,.0f}{m['instructions']:>14,.0f}{m['cycles_modelled']:>14,.0f}"
            f"{'' if ipm is None else f'{ipm:.2f}':>10}{1:>8.1%}"
        )
        d = m.get("default_build")
        if d:
            lines.append(
                f"  default build (layers inlined): {d['instructions']:,.0f} instructions (measured), "
                f"{d['cycles_modelled']:,.0f} cycles (modelled); the profile build costs "
                f"{d['profile_build_overhead_instructions']:+.2%} instructions"
            )
        lines.append("")
    lines.append(
        "MACs: integer reference; instructions: measured (counted exactly by the cycle-model plugin "
        "under QEMU); cycles: modelled (Cortex-M4 cycle model, docs/CYCLES.md); means per image."
    )
    return "\n".join(lines)


def plot_profile(summary: dict[str, Any], path: Path) -> Path:
    """Bars per layer, the modes side by side: instructions (measured) and cycles (modelled)."""
    from tinydyn.host.report import _pyplot

    plt = _pyplot()
    modes_ = list(summary["modes"])
    layers = [r["layer"] for r in next(iter(summary["modes"].values()))["layers"]]
    x = np.arange(len(layers))
    width = 0.8 / max(len(modes_), 1)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.45 * len(layers) + 2), 8), sharex=True)
    for ax, key, label in (
        (axes[0], "instructions", "instructions per inference (measured)"),
        (axes[1], "cycles_modelled", "cycles per inference (modelled)"),
    ):
        for k, mode in enumerate(modes_):
            vals = [r[key] / 1e6 for r in summary["modes"][mode]["layers"]]
            ax.bar(x + (k - (len(modes_) - 1) / 2) * width, vals, width, label=mode)
        ax.set_ylabel(f"M {label.split(' per')[0]}")
        ax.set_title(f"{summary['model']}: {label}, mean of {summary['images']} images")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(layers, rotation=60, ha="right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- the whole profile
@dataclass
class Profile:
    summary: dict[str, Any]
    table: CostTable
    runs: dict[str, ModeRun]
    specs: list[LayerSpec]


def build_profile_firmware(ir: IRModel, out_dir: Path) -> tuple[Path, Path]:
    """The harness firmware twice: the profile build (``-DTD_PROFILE``, layer functions out of
    line) and the default build (for its totals); returns (profile ELF, default ELF)."""
    from tinydyn.codegen.errors import CodegenError
    from tinydyn.codegen.project import build_project

    try:
        build_project(ir, BOARD, out_dir / "profile_build", compile=True, extra_cflags=PROFILE_CFLAGS)
        build_project(ir, BOARD, out_dir / "default_build", compile=True)
    except CodegenError as e:
        raise ProfileError(f"building the firmware failed: {e}") from None
    return out_dir / "profile_build" / "fw.elf", out_dir / "default_build" / "fw.elf"


# an early-exit margin no logits reach (top-1 minus top-2, in logit units): every stage and every
# exit head runs, so that each layer of the table is measured
UNREACHABLE_MARGIN = 1000.0


def measured_cost_table(ir: IRModel, images: np.ndarray, model: CycleModel | None = None) -> CostTable:
    """The per-layer cost table of ``ir`` alone, for a cost it charges per exit (S2DNAS's COST in
    cycles, tinydyn.models.s2dnas_thresholds): the profile build runs ``images`` under QEMU once,
    every exit head computed and none taken (policy margin UNREACHABLE_MARGIN), checked bit for bit
    against the reference; no files are kept."""
    from tinydyn.codegen.errors import CodegenError
    from tinydyn.codegen.project import build_project

    model = model or CycleModel()
    specs, blocks = layer_specs(ir)
    with tempfile.TemporaryDirectory(prefix="td_costs_") as tmp:
        build = Path(tmp) / "profile_build"
        try:
            build_project(ir, BOARD, build, compile=True, extra_cflags=PROFILE_CFLAGS)
        except CodegenError as e:
            raise ProfileError(f"building the firmware failed: {e}") from None
        syms = build / "layers.syms"
        write_syms(build / "fw.elf", specs, syms)
        policy = ExitPolicy("margin", UNREACHABLE_MARGIN)
        run = profile_mode(ir, build / "fw.elf", syms, specs, images, "static", policy, model)
    if not run.bit_exact:
        raise ProfileError(f"the firmware is not bit-exact with the reference: {run.mismatches[0]}")
    return cost_table(ir, specs, blocks, {"static": run}, model)


def take_profile(
    ir: IRModel,
    images: np.ndarray,
    out_dir: Path,
    threshold: float = 0.9,
    model: CycleModel | None = None,
    compare_default: bool = True,
    dataset: str | None = None,
) -> Profile:
    """Build, run every mode on ``images`` with per-layer attribution, check each run against
    the reference, and write profile.json, profile.txt, profile.png and cost_table.json into
    ``out_dir``. A run that is not bit-exact is reported (and raises after the files are
    written)."""
    from tinydyn.codegen.harness import run_qemu
    from tinydyn.cost.cost_table import write_cost_table
    from tinydyn.host.report import write_json

    model = model or CycleModel()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs, blocks = layer_specs(ir)
    elf, default_elf = build_profile_firmware(ir, out_dir)
    syms = out_dir / "profile_build" / "layers.syms"
    write_syms(elf, specs, syms)
    runs: dict[str, ModeRun] = {}
    for mode, policy in modes(threshold).items():
        run = profile_mode(ir, elf, syms, specs, images, mode, policy, model)
        if compare_default:
            got = run_qemu(ir, default_elf, images, policy, cycle_model=model)
            run.default_insns, run.default_cycles = got.cycle_model_insns, got.cycles_modelled
            bad = _compare(run.ref.results, got)
            run.mismatches += [f"default build: {b}" for b in bad]
            run.bit_exact = run.bit_exact and not bad
        runs[mode] = run
    n_exits = len(ir.exits())
    summary: dict[str, Any] = {
        "kind": "tinydyn-profile",
        "model": ir.name,
        "model_id": ir.model_id(),
        "board": BOARD,
        "dataset": dataset,
        "images": len(images),
        "labels": {
            "macs": "executed multiply-accumulates per the integer reference",
            "instructions": f"{MEASURED}: retired instructions, counted exactly by the cycle-model "
            "plugin under QEMU",
            "cycles_modelled": f"{LABEL}: Cortex-M4 cycle model (docs/CYCLES.md)",
        },
        "cycle_model": model.to_json(),
        "attribution": "a layer owns its function's instructions and everything it calls (kernels); "
        "control is td_infer's own code and what it calls outside a layer",
        "build": {
            "profile_cflags": PROFILE_CFLAGS,
            "note": "layer functions kept out of line (TD_NOINLINE); default_build gives the "
            "same images' totals with the default build",
        },
        "layers": [
            {
                "layer": s.name,
                "function": s.cname,
                "kind": s.kind,
                "macs_full": s.macs,
                "channels": s.channels,
                "gate": s.gate,
                "channel_dim": s.channel_dim,
                "block": s.block,
                "branch": s.branch,
            }
            for s in specs
        ],
        "modes": {},
    }
    for mode, run in runs.items():
        s = mode_summary(specs, run)
        s["exits"] = np.bincount(run.ref.results.exits, minlength=n_exits).tolist()
        summary["modes"][mode] = s
    table = cost_table(ir, specs, blocks, runs, model)
    write_json(out_dir / "profile.json", summary)
    text = format_table(summary)
    (out_dir / "profile.txt").write_text(text + "\n")
    plot_profile(summary, out_dir / "profile.png")
    write_cost_table(table, out_dir / "cost_table.json")
    return Profile(summary, table, runs, specs)
