"""``build_project``: IR → a standalone firmware project (sources, Makefile, build.json)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tinydyn.codegen.boards import Board, get_board
from tinydyn.codegen.budget_tables import budget_context
from tinydyn.codegen.errors import CodegenError
from tinydyn.codegen.layers import C_TYPES, ModelDesc, c_name, describe, hwc
from tinydyn.codegen.planner import MemoryPlan, plan_memory
from tinydyn.codegen.render import c_array_text, render, trusted_fields
from tinydyn.cost.budget import BudgetCosts, budget_costs
from tinydyn.ir import IRModel, Op, validate
from tinydyn.ops import op_kind
from tinydyn.quantize.executor import static_macs as ir_static_macs
from tinydyn.quantize.policy import exp_lut


@dataclass
class BuildReport:
    model: str
    model_id: str
    board: str
    out_dir: str
    arena_bytes: int  # the static arena: activations + scratch
    arena_lower_bound: int  # most bytes live at one schedule point (scratch included)
    activation_lower_bound: int  # the same without scratch
    weight_bytes: int  # constant arrays emitted (weights, biases, multipliers, shifts, LUT)
    flash_bytes: int  # text+data of the linked firmware when compiled, else weight_bytes
    flash_measured: bool
    static_macs: int  # backbone, every gate open, no early exit
    max_macs: int  # worst case: every gate, every head
    layers: int
    files: list[str] = field(default_factory=list)
    size: dict[str, int] = field(default_factory=dict)  # text/data/bss when compiled

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def firmware_dir() -> Path:
    return Path(str(resources.files("tinydyn") / "firmware"))


def plan(ir: IRModel, desc: ModelDesc) -> MemoryPlan:
    """Plan the arena; then let each op that can use more scratch (a masked conv compacting
    weight rows) take what fits under the peak already needed elsewhere: no larger arena. Where
    the grants leave the placement unable to pack the arena to that peak, they shrink (a
    quarter of the spare at a time) until it packs, or to their minimum."""
    exclude = set() if desc.input_in_arena else {ir.input}
    first = plan_memory(ir, desc.tensor_bytes, desc.scratch, exclude)
    base = dict(desc.scratch)
    best: tuple[MemoryPlan, dict[str, int], dict[str, Any]] | None = None
    for quarters in (4, 3, 2, 1, 0):
        scratch, groups = dict(base), {}
        for name, layer in desc.layers.items():
            live = first.live_bytes(first.positions[name], exclude=f"{name}#scratch")
            spare = (first.lower_bound - live) * quarters // 4
            size = op_kind(layer["kind"]).plan_scratch(layer, spare)
            if size is not None:
                # what plan_scratch chose with this size (a masked conv's row group, a ring)
                scratch[name] = size
                groups[name] = {key: layer[key] for key in ("row_group", "ring") if key in layer}
        mem = plan_memory(ir, desc.tensor_bytes, scratch, exclude)
        if best is None or mem.arena_bytes < best[0].arena_bytes:
            best = (mem, scratch, groups)
        if mem.arena_bytes <= first.lower_bound:
            break
    mem, scratch, groups = best
    desc.scratch.update(scratch)
    for name, fields in groups.items():
        desc.layers[name].update(fields)
    return mem


def schedule_nodes(ops: list[Op], desc: ModelDesc) -> list[dict[str, Any]]:
    """td_infer's body: each op kind gives its node (a call, a gate, a guard, an exit)."""
    return [op_kind(op.kind).node(op, desc, lambda block: schedule_nodes(block, desc)) for op in ops]


def max_macs(ir: IRModel) -> int:
    """Worst case: every gate, every head, both branches of every guard."""
    return sum(op_kind(op.kind).macs(op) for op in ir.walk())


def build_project(
    ir: IRModel,
    board: str,
    out_dir: Path,
    compile: bool = False,
    extra_cflags: str = "",
    costs: BudgetCosts | None = None,
) -> BuildReport:
    """Render a firmware project for ``board`` into ``out_dir`` (and build it if asked). ``costs``:
    the per-op budget cost model to bake in (default: ``board``'s energy model, no cycles)."""
    target = get_board(board)
    out_dir = Path(out_dir)
    validate(ir)  # an IR built in memory gets the same schema check as one loaded from a file
    desc = describe(ir)
    worst = max_macs(ir)
    if worst >= 2**32:
        raise CodegenError(f"model can execute {worst} MACs, more than the firmware's uint32 counter holds")
    mem = plan(ir, desc)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "board").mkdir(exist_ok=True)

    tensors = []
    for name, spec in ir.tensors.items():
        buf = mem.buffers.get(name)
        if buf is None and name != ir.input:
            continue  # declared but never used
        tensors.append(
            {
                "name": name,
                "macro": f"t_{c_name(name)}",
                "ctype": C_TYPES[spec.dtype],
                "dtype": spec.dtype,
                "shape": "x".join(str(s) for s in hwc(spec)) if len(spec.shape) == 3 else f"{spec.size}",
                "bytes": desc.tensor_bytes[name],
                "offset": buf.offset if buf is not None else None,
            }
        )
    layers = []
    for name, layer in desc.layers.items():
        key = f"{name}#scratch"
        layers.append({**layer, "scratch_offset": mem.buffers[key].offset if key in mem.buffers else 0})
    for array in desc.arrays:
        array.text = c_array_text(array.values)  # type: ignore[attr-defined]
    weight_bytes = sum(a.nbytes for a in desc.arrays) + 2 * 256 + 8 * len(desc.exits)
    c, h, w = ir.input_spec.shape
    static = ir_static_macs(ir)
    activation_bound = max(
        (
            sum(b.size for k, b in mem.buffers.items() if "#" not in k and b.start <= p <= b.end)
            for p in range(len(mem.positions))
        ),
        default=0,
    )
    context = {
        "name": ir.name,
        "model_id": ir.model_id(),
        "num_classes": ir.num_classes,
        "exits": desc.exits,
        "arena_bytes": mem.arena_bytes,
        "lower_bound": mem.lower_bound,
        "static_macs": static,
        "in_c": c,
        "in_h": h,
        "in_w": w,
        "tensors": tensors,
        "layers": layers,
        "schedule": schedule_nodes(ir.ops, desc),
        "input_in_arena": desc.input_in_arena,
        "input_macro": f"t_{c_name(ir.input)}",
        "exp_lut": c_array_text(exp_lut(), per_line=16),
        "arrays": desc.arrays,
        "weight_bytes": weight_bytes,
        "board": trusted_fields(target),
        **budget_context(ir, desc, costs if costs is not None else budget_costs(ir, board)),
    }
    files = [
        render("model.c.j2", out_dir / "model.c", **context),
        render("model_weights.h.j2", out_dir / "model_weights.h", **context),
        render("model_weights.c.j2", out_dir / "model_weights.c", **context),
        render("Makefile.j2", out_dir / "Makefile", **context),
    ]
    fw = firmware_dir()
    for name in sorted(p.name for p in fw.iterdir() if p.suffix in (".c", ".h")):
        files.append(Path(shutil.copy(fw / name, out_dir / name)))
    (out_dir / "kernels").mkdir(exist_ok=True)  # one source per op kind (Makefile: kernels/*.c)
    for name in sorted(p.name for p in (fw / "kernels").iterdir() if p.suffix in (".c", ".h")):
        files.append(Path(shutil.copy(fw / "kernels" / name, out_dir / "kernels" / name)))
    for rel in target.files:
        files.append(Path(shutil.copy(fw / "boards" / rel, out_dir / "board" / Path(rel).name)))
    report = BuildReport(
        model=ir.name,
        model_id=ir.model_id(),
        board=board,
        out_dir=str(out_dir),
        arena_bytes=mem.arena_bytes,
        arena_lower_bound=mem.lower_bound,
        activation_lower_bound=activation_bound,
        weight_bytes=weight_bytes,
        flash_bytes=weight_bytes,
        flash_measured=False,
        static_macs=static,
        max_macs=worst,
        layers=len(desc.layers),
        files=sorted(str(f.relative_to(out_dir)) for f in files),
    )
    if compile:
        sizes = compile_project(out_dir, target, extra_cflags)
        report.size = sizes
        if "text" in sizes:
            report.flash_bytes = sizes["text"] + sizes["data"]
            report.flash_measured = True
    (out_dir / "build.json").write_text(json.dumps(report.to_json(), indent=2))
    return report


def compile_project(out_dir: Path, board: Board, extra_cflags: str = "", jobs: int = 1) -> dict[str, int]:
    """Run make; returns text/data/bss of the firmware where the board has a size tool."""
    if shutil.which(board.cc) is None:
        raise CodegenError(f"compiler {board.cc} not found: install it (see notes/mcu-emulation.md)")
    cmd = ["make", "-s", "-C", str(out_dir), f"-j{jobs}", f"EXTRA_CFLAGS={extra_cflags}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CodegenError(
            f"building {out_dir} for {board.name} failed: {(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    match = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+\d+", proc.stdout, re.MULTILINE)
    if board.size and match:
        text, data, bss = (int(v) for v in match.groups())
        return {"text": text, "data": data, "bss": bss}
    return {}


def array_bytes(values: np.ndarray) -> int:
    return int(values.nbytes)
