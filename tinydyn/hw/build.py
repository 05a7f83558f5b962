"""``build_fpga``: checkpoint → static model (gates folded) → the family's partitions (LC-Net:
backbone segments, exit heads on the PS; S2DNAS: one partition per stage, each reading the image)
as QONNX → finn-plus front end → checks → report + PS controller + Vivado package."""

from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import nn

from tinydyn.data.dataset import VALIDATION_OFFSET
from tinydyn.hw.boards import FpgaBoard, get_board, register_with_finn
from tinydyn.hw.branch_choice import LAYER_SHARE, branch_count, choose_branches
from tinydyn.hw.checks import block_features, check_partition, head_arrays, reference_tensors
from tinydyn.hw.controller import MAX_STAGES, StageHead, write_controller
from tinydyn.hw.export import ExportedPartition, ExportError, export_partition, run_qonnx
from tinydyn.hw.finn_shims import finn_version, load_finn
from tinydyn.hw.flow import StageEstimate, run_front_end
from tinydyn.hw.package import write_package
from tinydyn.hw.report import (
    FIT_KEYS,
    FpgaReport,
    StageRow,
    check_fit,
    early_exit_fps,
    fits_within,
    stage_row,
    totals,
)
from tinydyn.hw.resources import fixed_resources, partition_resources, shell_resources
from tinydyn.hw.rtlsim import check_results as check_rtlsim
from tinydyn.hw.rtlsim import select_partitions, simulate_build
from tinydyn.hw.schedule import Partition, PsCosts, Stage, closed_form, heads_for_policy, schedule_figures
from tinydyn.ir import IRModel
from tinydyn.models.checkpoint import bundled_fpga_checkpoint, load_model
from tinydyn.models.family import ModelFamily
from tinydyn.models.registry import family_names, get_family
from tinydyn.ops import op_kind
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

STATIC_SWEEP = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2)  # static targets tried, relative to early exit
AUTO_START_FPS = 2000.0  # first target of the automatic search (images/s into segment 0)
AUTO_TRIES = 6
STUCK_SHARE = 0.25  # the search stops when a lower rate shrank the over-budget part < 1/4 as much
AUTO_HEADROOM = 0.85  # aim at this share of the part (a place-and-route margin; the total counts everything)
DEFAULT_BATCH = 64  # images per batch of the PS schedule (tinydyn.hw.schedule)
MAX_CLASSES = 32  # TD_FPGA_MAX_CLASSES: logits the PS controller keeps per image


def fpga_families() -> list[str]:
    """The model families with a dataflow partitioning (ModelFamily.fpga_partitions)."""
    base = ModelFamily.fpga_partitions
    return [name for name in family_names() if type(get_family(name)).fpga_partitions is not base]


def check_buildable(family: ModelFamily, model: nn.Module, source: str, config: object = None) -> None:
    """One line for a checkpoint the FPGA path cannot build, before anything is exported.
    ``config``: what the partitions are cut from (a family's branch subset), default the model's."""
    if type(family).fpga_partitions is ModelFamily.fpga_partitions:
        raise ExportError(
            f"{source} is a {family.name} model, which has no FPGA partitioning: tinydyn fpga builds "
            f"{' and '.join(fpga_families())} checkpoints"
        )
    classes = len(family.classes(model.config))
    if classes > MAX_CLASSES:
        raise ExportError(
            f"{source} has {classes} classes: the FPGA PS controller handles at most {MAX_CLASSES}: "
            "train a model with fewer classes"
        )
    # a stage: a partition, or a segment and its RADI branch (DDI)
    specs = family.fpga_partitions(model.config if config is None else config)
    stages = sum(getattr(s, "kind", "") != "branch" for s in specs)
    if stages > MAX_STAGES:
        raise ExportError(
            f"{source} needs {stages} stages: the FPGA PS controller runs at most {MAX_STAGES}: "
            "use fewer exits (stages)"
        )


def dataset_images(
    model: nn.Module, split: str, count: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fashion-MNIST images of ``split`` (train, test, validation) for a 1×28×28 model; random
    images (no labels) for other input shapes."""
    c, h, w = get_family(model.family).input_shape(model.config)
    if (c, h, w) == (1, 28, 28):
        from tinydyn.data import load_dataset

        ds = load_dataset("fashion-mnist", "test" if split == "validation" else split)
        start = VALIDATION_OFFSET if split == "validation" else 0
        return ds.images[start : start + count], np.asarray(ds.labels[start : start + count])
    rng = np.random.default_rng(seed + {"test": 0, "train": 1, "validation": 2}[split])
    return rng.integers(0, 256, (count, c, h, w), dtype=np.uint8), None


def stage_reach(static_ir: IRModel, images: np.ndarray, policy: ExitPolicy, stages: int) -> list[float]:
    """Share of ``images`` reaching each stage of the FPGA model (integer reference executor)."""
    return reach_of(image_exits(static_ir, images, policy), stages)


def image_exits(static_ir: IRModel, images: np.ndarray, policy: ExitPolicy) -> np.ndarray:
    """The stage each image leaves at (integer reference executor)."""
    return np.asarray(execute(static_ir, images, policy).exits, dtype=np.int64)


def reach_of(exits: np.ndarray, stages: int) -> list[float]:
    return [float((exits >= k).mean()) for k in range(stages)]


def exits_for_reach(reach: list[float], images: int = 1000, seed: int = 0) -> np.ndarray:
    """Exits of ``images`` images, in a random order, whose stage reach is ``reach`` (assumed
    reach: what the simulated schedule then runs)."""
    leaving = np.round(-np.diff([*reach, 0.0]) * images).astype(int)
    exits = np.repeat(np.arange(len(reach)), np.maximum(leaving, 0))
    return np.random.default_rng(seed).permutation(exits)


def evaluate(
    model: nn.Module,
    static_ir: IRModel,
    images: np.ndarray,
    labels: np.ndarray | None,
    policy: ExitPolicy,
    dynamic_exits: list[int] | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Accuracies of the FPGA (static) model and of the dynamic model, and per exit the share
    of images leaving there, all from the integer reference executor. ``dynamic_exits``: the
    dynamic model's exit at each FPGA exit, where the FPGA model builds only some of its early
    exits (DDI's RADI branches: the built ones, then the final); default the same index."""
    fpga = execute(static_ir, images, policy)
    n_stages = len(static_ir.exits())
    accuracy: dict[str, float] = {}
    table: list[dict] = []
    if labels is None:
        return accuracy, table
    family = get_family(model.family)
    gated = family.has_gates(model)
    final_only = execute(static_ir, images, ExitPolicy("none"))
    runs = {"fpga": fpga}
    how = " (gates folded)" if gated and family.name == "lcnet" else " (gates not mapped)" if gated else ""
    accuracy[f"FPGA model{how}, early exit"] = float((fpga.predictions == labels).mean())
    accuracy["FPGA model, final exit only"] = float((final_only.predictions == labels).mean())
    if gated:  # the model the gates were folded from, for comparison
        runs["dynamic"] = execute(family.lower(model, "dynamic"), images, policy)
        accuracy["dynamic model (gates, integer reference), early exit"] = float(
            (runs["dynamic"].predictions == labels).mean()
        )
    for k in range(n_stages):
        row = {"exit": k if k < n_stages - 1 else "final"}
        for tag, res in runs.items():
            here = res.exits == (k if tag == "fpga" or dynamic_exits is None else dynamic_exits[k])
            row[f"{tag}_share"] = float(here.mean())
            correct = res.predictions[here] == labels[here]
            row[f"{tag}_accuracy"] = float(correct.mean()) if here.any() else 0.0
        table.append(row)
    return accuracy, table


def build_fpga(
    checkpoint: Path | None,
    board: str,
    out_dir: Path,
    *,
    model: nn.Module | None = None,
    target_fps: float | None = None,
    policy: ExitPolicy | None = None,
    calibration_images: int = 1000,
    eval_images: int = 1000,
    check_images: int = 20,
    codegen: bool = True,
    static_sweep: tuple[float, ...] = STATIC_SWEEP,
    allow_overfit: bool = False,
    assumed_reach: list[float] | None = None,
    batch: int = DEFAULT_BATCH,
    ps_costs: PsCosts | None = None,
    rtlsim: str | None = None,
    branches: tuple[int, ...] | str | None = None,
    progress: Callable[[str], None] = print,
) -> FpgaReport:
    """Build the FPGA front end for a checkpoint (or ``model``); see docs/FPGA.md.

    ``target_fps`` None: automatic search for the fastest design that fits the part.
    ``assumed_reach``: fold for these stage reaches instead of the measured ones (what-if
    estimates, e.g. an untrained model; the report says so). ``batch``: images per batch of the
    PS controller's pipelined schedule; the report's throughput is that schedule's
    (:mod:`tinydyn.hw.schedule`, PS costs ``ps_costs``). ``rtlsim``: a partition name or "all":
    simulate its RTL layers with Verilator, bit for bit against finn-plus (:mod:`tinydyn.hw.rtlsim`).
    ``branches``: the optional early exits to build (DDI's RADI branches, ``fpga_branches``), or
    "all"; None: the default rule of :mod:`tinydyn.hw.branch_choice` (what fits)."""
    fpga = get_board(board)
    policy = policy or ExitPolicy("confidence", 0.9)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.time()
    warnings.filterwarnings("ignore", module="brevitas")
    build_dataflow = load_finn(out_dir)  # fails first, with the fix, when finn-plus is missing
    register_with_finn(fpga)
    folded_from = None
    if model is None:
        model, payload = load_model(checkpoint or bundled_fpga_checkpoint())
        folded_from = payload.get("train", {}).get("folded_from")
    model.eval()
    cfg = model.config
    family = get_family(model.family)
    choosable = family.fpga_branches(cfg)  # optional early exits (DDI's RADI branches)
    if branches is not None:
        if not choosable:
            raise ExportError(
                f"--branches: a {family.name} model has no optional early exits (every exit is built): "
                "leave --branches out"
            )
        if branches == "all":
            branches = tuple(range(len(choosable)))
        cfg = family.fpga_subset(cfg, tuple(branches))
    source = str(checkpoint) if checkpoint is not None else "the model"
    # the default rule chooses the branches later: until then, count the stages without them
    check_buildable(
        family, model, source, family.fpga_subset(cfg, ()) if branches is None and choosable else cfg
    )

    # 1. the static model: gates folded into their mean saliences over calibration images
    gated = family.has_gates(model)
    calib = dataset_images(model, "train", calibration_images)[0] if gated else None
    static = family.static_for_fpga(model, calib, folded_from)
    net, note = static.module, static.note
    progress(f"fpga: {note}")
    ir = family.lower(net, "fpga_static")
    branch_note = None
    if choosable:  # keep only the chosen branches: the FPGA model has exits there and nowhere else
        how = "with --branches"
        if branches is None:
            branches, how = _default_branches(family, model, ir, policy, fpga, target_fps, eval_images)
            cfg = family.fpga_subset(cfg, branches)
            check_buildable(family, model, source, cfg)
        net = family.fpga_keep_branches(net, cfg)
        ir = family.lower(net, "fpga_static")
        branch_note = _branch_note(choosable, branches, how)
        progress(f"fpga: {branch_note}")
    ir.save(out_dir / "ir")  # the integer reference of what the FPGA runs (tinydyn measure --ir)

    # 2. reach on validation images (it decides the folding), accuracy on test images (integer
    # reference of the static and the dynamic model)
    val_images, _ = dataset_images(model, "validation", eval_images)
    val_exits = image_exits(ir, val_images, policy)
    reach = reach_of(val_exits, len(ir.exits()))
    images, labels = dataset_images(model, "test", eval_images)
    dynamic_exits = [*sorted(branches), len(choosable)] if choosable else None  # the gated model's exits
    accuracy, exit_table = evaluate(model, ir, images, labels, policy, dynamic_exits)
    if assumed_reach is not None:
        if len(assumed_reach) != len(reach):
            raise ExportError(f"assumed_reach needs {len(reach)} stage reaches, got {len(assumed_reach)}")
        reach = [float(r) for r in assumed_reach]
        val_exits = exits_for_reach(reach)
    timings["calibration"] = round(time.time() - start, 2)
    progress("fpga: images reaching each stage: " + ", ".join(f"{r:.1%}" for r in reach))
    if accuracy:
        progress("fpga: accuracy: " + ", ".join(f"{k} {v:.2%}" for k, v in accuracy.items()))
    if static.calibration_images and checkpoint is not None:  # something was folded
        progress(
            "fpga: to recover accuracy lost to folding, fine-tune the gate-free model and build that: "
            f"tinydyn train --init-from {checkpoint} --fold-gates --optimizer adamw --lr 1e-3 --epochs 4 "
            "--out fpga.pt"
        )

    # 3. export every partition; the reference tensors at their inputs drive the checks
    probe = images[:check_images]
    ref = reference_tensors(ir, probe)
    parts: list[ExportedPartition] = []
    for spec in family.fpga_partitions(cfg):
        part_dir = out_dir / "stages" / spec.name
        module = family.fpga_module(net, spec)
        part = export_partition(module, spec, ir.tensors[spec.input_tensor].shape, part_dir / "model.onnx")
        x = ref[spec.input_tensor][:1].astype(np.float32)
        np.save(part_dir / "verify_input.npy", x)
        np.save(part_dir / "verify_expected.npy", run_qonnx(part.path, x))
        parts.append(part)
    rtlsim_parts = select_partitions(rtlsim, [p.spec.name for p in parts]) if rtlsim else []

    # 4. finn-plus front end for every partition; automatic search for a design that fits
    t0 = time.time()
    search: list[dict] = []
    fps = float(target_fps) if target_fps else AUTO_START_FPS
    share = 1.0 if target_fps else AUTO_HEADROOM
    budget = {k: float(v) * share for k, v in fpga.resources.items()}
    for _attempt in range(1 if target_fps else AUTO_TRIES):
        progress(f"fpga: finn-plus front end for {len(parts)} partitions, folded for {fps:.0f} img/s")
        ests = [
            _front_end(build_dataflow, fpga, part, fps * reach[part.spec.stage], progress) for part in parts
        ]
        attempt_rows = [_row(e, p, reach, fpga) for e, p in zip(ests, parts, strict=True)]
        shell = shell_resources(len(parts))
        total = totals(attempt_rows, shell)
        fixed = fixed_resources([r.breakdown for r in attempt_rows], shell)
        fits = fits_within(total, budget)
        search.append(
            {
                "target_fps": round(fps, 1),
                "fits": fits,
                **{k: total.get(k, 0.0) for k in FIT_KEYS},
                "fixed": {k: fixed[k] for k in FIT_KEYS},
            }
        )
        if fits or target_fps:
            break
        verdict, fps = next_target(total, fixed, budget, fps, search)
        if verdict:
            search[-1]["verdict"] = verdict
            progress(f"fpga: {verdict}")
            break
    else:
        if not target_fps:
            search[-1]["verdict"] = f"no fitting folding within {AUTO_TRIES} tries"
    timings["front_end"] = round(time.time() - t0, 2)

    # 5. HLS/RTL code generation (resumes at step_hw_codegen), checks, rows, PS heads
    rows: list[StageRow] = []
    checks_json: dict[str, dict] = {}
    steps_run: dict[str, list[str]] = {}
    for part, est in zip(parts, ests, strict=True):
        t1 = time.time()
        spec, part_dir = part.spec, part.path.parent
        if codegen:
            run_front_end(build_dataflow, fpga, part.path, part_dir, est.target_fps, False, codegen_only=True)
            est.step_seconds.update(_steps(part_dir))
        steps_run[spec.name] = list(est.step_seconds)
        hw_graph = part_dir / "intermediate_models" / "step_convert_to_hw.onnx"
        features = block_features(part, ref[spec.input_tensor], part_dir / "check_features.onnx")
        check = check_partition(part, ir, ref, hw_graph, features)
        checks_json[spec.name] = check.to_json()
        rows.append(_row(est, part, reach, fpga, check.to_json()))
        timings[spec.name] = round(time.time() - t1, 2)
    heads = _stage_heads(parts, ir)
    head_of = {p: hd for hd in heads for p in (hd.seg_partition, hd.head_partition) if p is not None}
    for p, (row, part) in enumerate(zip(rows, parts, strict=True)):
        row.macs = stage_macs(heads, head_of[p], part.path.parent, p == head_of[p].head_partition)
    rtlsim_results = []
    if rtlsim_parts:  # the RTL layers of the chosen partitions, on the first check image
        t0 = time.time()
        source = "Fashion-MNIST test image 0" if labels is not None else "random image 0"
        rtlsim_results = simulate_build(
            out_dir, rtlsim_parts, fpga.part, 1000.0 / fpga.clock_mhz, input_source=source, progress=progress
        )
        timings["rtlsim"] = round(time.time() - t0, 2)
    verdict = search[-1].get("verdict", "") if search else ""

    # 6. static baseline: the whole network as one partition, as fast as the same budget allows
    t0 = time.time()
    shell = shell_resources(len(rows))
    total = totals(rows, shell)
    ee_fps = early_exit_fps(rows)
    whole_spec = family.fpga_whole(cfg)
    whole = export_partition(
        family.fpga_module(net, whole_spec),
        whole_spec,
        ir.tensors["input"].shape,
        out_dir / "static" / "model.onnx",
    )
    best, best_dir, best_fps, best_total = None, None, 0.0, {}
    costs = ps_costs or PsCosts()
    stages_sched = schedule_stages(heads, rows)
    heads_run = heads_for_policy(policy.kind, len(heads), int(val_exits[0]) if len(val_exits) else None)
    for factor in static_sweep:
        progress(f"fpga: static baseline at {ee_fps * factor:.0f} img/s")
        static_dir = out_dir / "static" / f"x{factor:g}"
        est = run_front_end(build_dataflow, fpga, whole.path, static_dir, ee_fps * factor, False)
        est.extras = _extras(static_dir, fpga)
        static_total = totals([stage_row(est, 0, "segment", 1.0, fpga.clock_mhz, {})], shell_resources(1))
        # the same controller runs the static design: one stage, batches of ``batch``
        period = closed_form([static_stage(est, heads[0].in_bytes, static_dir)], [batch], batch, costs)
        static_fps = batch / period * fpga.clock_mhz * 1e6
        if fits_within(static_total, total) and (best is None or static_fps > best_fps):
            best, best_dir, best_fps, best_total = est, static_dir, static_fps, static_total
    timings["static_sweep"] = round(time.time() - t0, 2)
    static_sched = static_stage(best, heads[0].in_bytes, best_dir) if best is not None else None
    schedule = schedule_figures(
        stages_sched, static_sched, reach, val_exits, batch, costs, fpga.clock_mhz * 1e6, heads_run
    )
    static_fps = schedule["static"]["fps"] if best is not None else 0.0
    ee_fps = schedule["early_exit"]["fps"]
    util = {k: total.get(k, 0.0) / v for k, v in fpga.resources.items() if k != "FF"}
    report = FpgaReport(
        board=fpga.name,
        part=fpga.part,
        clock_mhz=fpga.clock_mhz,
        policy=policy.kind,
        threshold=policy.threshold,
        calibration_images=static.calibration_images,
        stages=rows,
        total=total,
        available=fpga.resources,
        utilisation=util,
        fits=fits_within(total, {k: float(v) for k, v in fpga.resources.items()}),
        early_exit_fps=ee_fps,
        static_fps=static_fps,
        static_resources=best_total,
        static_target_fps=best.target_fps if best else 0.0,
        speedup=ee_fps / static_fps if static_fps else float("inf"),
        accuracy=accuracy,
        notes=[
            *([f"automatic search: {verdict}"] if verdict else []),
            *(
                [f"reach assumed ({', '.join(f'{r:.0%}' for r in reach)}), not measured on this model"]
                if assumed_reach is not None
                else []
            ),
            note,
            *([branch_note] if branch_note else []),
            *partition_notes(parts, heads, cfg),
            "totals count everything the design instantiates: finn-plus's layer estimates, DWCs and FIFOs "
            "(finn-plus estimates of the nodes the Zynq build inserts; residual-shortcut FIFOs sized for a "
            "whole feature map), per-instance figures for the layers finn-plus does not estimate, IODMAs and "
            "the Zynq shell (docs/FPGA.md); FF is partial (finn-plus's layers have no FF model)",
        ],
        target_fps=fps,
        target_search=search,
        schedule=schedule,
        shell=shell,
        exit_table=exit_table,
        eval_images=len(images),
        out_dir=str(out_dir),
    )
    ps_dir = write_controller(
        out_dir / "ps",
        heads,
        ir.model_id(),  # what tinydyn measure --ir DIR/ir expects the board to report
        fpga.name,
        tuple(int(v) for v in ir.input_spec.shape),
        cpu_hz=667_000_000,
        batch=batch,
    )
    meta = [{"name": r.name, "kind": r.kind, "stage": r.stage, "target_fps": r.target_fps} for r in rows]
    script = write_package(out_dir, fpga, meta)
    timings["total"] = round(time.time() - start, 2)
    (out_dir / "run.json").write_text(
        json.dumps(
            {
                "steps_run": steps_run,
                "checks": checks_json,
                "saliences": static.folded,
                "versions": _versions(),
                "timings_s": timings,
                "ran_here": "finn-plus front end: streamline, HW layers, folding, estimates"
                + (", HLS/RTL code generation" if codegen else ""),
                "needs_vivado": f"{script.name}: IP generation and FIFO sizing per partition, HLS "
                "synthesis and stitching, one Zynq design holding every partition, bitstream, deploy/",
                "ps_controller": str(ps_dir),
                "rtlsim": [r.to_json() for r in rtlsim_results],
            },
            indent=2,
        )
    )
    report.save(out_dir)
    check_rtlsim(rtlsim_results)  # a layer whose RTL differs from finn-plus fails the build
    if not allow_overfit:
        check_fit(report, fpga)
    return report


def _default_branches(
    family: ModelFamily,
    model: nn.Module,
    ir: IRModel,
    policy: ExitPolicy,
    fpga: FpgaBoard,
    target_fps: float | None,
    eval_images: int,
) -> tuple[tuple[int, ...], str]:
    """The branches the default rule builds (tinydyn.hw.branch_choice) and how they were chosen."""
    choosable = family.fpga_branches(model.config)
    share = 1.0 if target_fps else AUTO_HEADROOM
    budget = {k: float(v) * share for k, v in fpga.resources.items()}

    def partitions(b: int) -> int:
        return len(family.fpga_partitions(family.fpga_subset(model.config, tuple(range(b)))))

    count = min(branch_count(len(choosable), partitions, budget, FIT_KEYS), MAX_STAGES - 1)
    images, _ = dataset_images(model, "validation", eval_images)
    chosen = choose_branches(ir, images, policy, count)
    how = (
        f"by the default rule: the most branches ({count}) whose {partitions(count)} partitions' shell and "
        f"IODMAs leave {LAYER_SHARE:.0%} of the {fpga.part}'s budget to the layers, and of those the "
        f"fewest mean MACs per image on {len(images)} validation images under policy {policy.kind}; "
        "choose others with --branches"
    )
    return chosen, how


def _branch_note(choosable: list[str], built: tuple[int, ...], how: str) -> str:
    """Which optional early exits the design holds and which it leaves out, said plainly."""

    def names(ks: list[int]) -> str:
        return ", ".join(f"{k} ({choosable[k]})" for k in ks) or "none"

    left = [k for k in range(len(choosable)) if k not in built]
    return (
        f"RADI branches built: {names(list(built))} of {len(choosable)}; NOT built: {names(left)}: "
        "no partition and no exit there, so the PS decides only at the built branches and the FPGA "
        "model's integer reference (ir/) has only their exits (FPGA exit k = the k-th built branch); "
        f"chosen {how}"
    )


def next_target(
    total: dict[str, float], fixed: dict[str, float], budget: dict[str, float], fps: float, search: list[dict]
) -> tuple[str, float]:
    """The automatic search's next target rate, or why nothing fits.

    Only the folding-dependent part (layers, DWCs, FIFOs, unestimated layers) shrinks with the
    rate: the shell and the IODMAs are the same at any rate. So the room left by the fixed part
    is compared with the variable part, which is scaled (about linearly in the rate, while
    finn-plus can still fold further). Returns (verdict, next rate): a non-empty verdict says
    plainly that no rate fits."""
    room = {k: budget[k] - fixed.get(k, 0.0) for k in FIT_KEYS}
    short = [k for k in FIT_KEYS if room[k] <= 0]
    if short:
        need = ", ".join(f"{k} {fixed[k]:.0f}/{budget[k]:.0f}" for k in short)
        return (f"nothing fits: the shell and IODMAs alone exceed the budget ({need})", fps)
    variable = {k: total.get(k, 0.0) - fixed.get(k, 0.0) for k in FIT_KEYS}
    over = [k for k in FIT_KEYS if variable[k] > room[k]]
    if len(search) > 1:  # lowering the rate must still shrink the limiting resource
        before = search[-2]
        rate_drop = 1.0 - fps / before["target_fps"]
        stuck = [
            k
            for k in over
            if 1.0 - variable[k] / max(before[k] - before["fixed"][k], 1e-9) < STUCK_SHARE * rate_drop
        ]
        if stuck and not before.get("plateau"):  # finn-plus folds in steps: try a much lower rate once
            search[-1]["plateau"] = True
            return "", fps * 0.5
        if stuck:
            k = stuck[0]
            return (
                f"nothing fits: at {fps:.0f} img/s the folding-dependent part still needs {k} "
                f"{variable[k]:.0f} (it hardly shrank from {before['target_fps']:.0f} img/s: finn-plus's "
                f"smallest folding) and the shell and IODMAs leave {room[k]:.0f}",
                fps,
            )
    factor = min(room[k] / variable[k] for k in over)
    return "", fps * min(0.9, factor * 0.95)


def _front_end(
    build_dataflow, fpga: FpgaBoard, part: ExportedPartition, fps: float, progress: Callable[[str], None]
) -> StageEstimate:
    part_dir = part.path.parent
    est = run_front_end(
        build_dataflow,
        fpga,
        part.path,
        part_dir,
        max(fps, 1.0),
        False,
        (part_dir / "verify_input.npy", part_dir / "verify_expected.npy"),
    )
    est.name = part.spec.name
    est.extras = _extras(part_dir, fpga)
    return est


def _extras(part_dir: Path, fpga: FpgaBoard) -> dict[str, dict[str, float]]:
    """What the partition instantiates beyond finn-plus's layer estimates (tinydyn.hw.resources)."""
    model = part_dir / "intermediate_models" / "step_generate_estimate_reports.onnx"
    return partition_resources(model, fpga.part)


def _row(
    est: StageEstimate,
    part: ExportedPartition,
    reach: list[float],
    fpga: FpgaBoard,
    check: dict | None = None,
) -> StageRow:
    return stage_row(
        est, part.spec.stage, part.spec.kind, reach[part.spec.stage], fpga.clock_mhz, check or {}
    )


def partition_notes(parts: list[ExportedPartition], heads: list[StageHead], cfg: object) -> list[str]:
    """What the partitions are and how the PS chains them, for the report."""
    notes = []
    if any(p.spec.kind == "branch" for p in parts):
        notes.append(
            "segment k computes only the units after branch k-1; its uint8 feature map goes through DDR to "
            "RADI branch k, a partition of its own (max pools, 3x3 conv, GAP, FC) ending in exit k's "
            "accumulators; once it is done the PS finishes the logits like the integer reference, decides "
            "and compacts the maps of the images that stay for segment k+1; the last segment holds the final "
            "head; "
            + (
                "dense concatenations join integer UINT8 streams of one grid (finn-plus StreamingConcat); "
                "transitions pool with an exact window sum (finn-plus Pool) and thresholds rounding it "
                "half up, as the integer reference"
                if any(getattr(p.spec, "dense", False) for p in parts)
                else "residual joins run in float32 (finn-plus ElementwiseMul/Add)"
            )
        )
    elif any(p.spec.reads_image for p in parts):
        notes.append(
            "one partition per stage, each reading the image: partition k recomputes the channels of stages "
            "1..k (the masked connections inside too: fabric MACs below) and ends in classifier k's "
            "accumulators; the PS finishes the logits, decides, and gathers the images that stay from the "
            "image array into stage k+1's input (no feature map kept in DDR)"
        )
    else:
        notes.append(
            "segment k computes only the blocks after exit k-1; its uint8 feature map goes through DDR to "
            "the PS, which runs exit head k (GAP + FC, bit for bit the integer reference) and compacts the "
            "maps of the images that stay for segment k+1; the last segment holds the final head"
        )
        notes.append(
            "residual joins are integer: one shared quantiser per join, an integer ElementwiseAdd "
            "(trained with --int-joins)"
            if getattr(cfg, "int_joins", False)
            else "residual joins run in float32 (finn-plus ElementwiseMul/Add): trained branch scales "
            "differ; a checkpoint fine-tuned with --int-joins adds integers"
        )
    own = [hd.confidence_t16 for hd in heads[:-1] if hd.confidence_t16 is not None]
    if own:
        notes.append(
            "the early exits carry their own confidence thresholds from the checkpoint ("
            + " / ".join(f"{t / 65536:.4g}" for t in own)
            + "): under policy confidence they replace --threshold, as in the integer reference"
        )
    return notes


def _stage_heads(parts: list[ExportedPartition], ir: IRModel) -> list[StageHead]:
    """What the PS needs per stage: partition k and its sizes, exit head k (run on the PS: its FC
    weights from the integer IR; or in the fabric: the accumulator layout), the exit's own
    threshold, MACs, the integer requantisation."""
    macs = _op_macs(ir)
    exits = sorted(ir.exits(), key=lambda op: op.attrs["index"])
    heads = []
    for p, seg in enumerate(parts):
        spec = seg.spec
        if spec.kind == "branch":
            continue  # DDI's RADI branch: the head partition of the segment before (below)
        # DDI: a segment followed by its RADI branch, a partition of its own ending in the exit's
        # accumulators (tinydyn.models.ddi_fpga)
        branch = parts[p + 1] if p + 1 < len(parts) and parts[p + 1].spec.kind == "branch" else None
        if branch is not None:
            bias, mult, shift, scale = head_arrays(ir, branch.spec.head)
            feat = ir.tensors[spec.output_tensor].shape  # (C, H, W)
            bits, per_word, word_bits = accumulator_layout(branch.path.parent)
            heads.append(
                StageHead(
                    name=f"stage{spec.stage}",
                    bias=bias,
                    mult=mult,
                    shift=shift,
                    logit_scale=scale,
                    out_bits=bits,
                    out_per_word=per_word,
                    out_word_bits=word_bits,
                    in_bytes=int(np.prod(seg.in_shape)),
                    feat_bytes=int(np.prod(feat)),
                    seg_macs=int(sum(macs.get(prefix, 0) for prefix in spec.mac_prefixes)),
                    head_macs=int(macs.get(branch.spec.head_prefix, 0)),
                    seg_partition=p,
                    feat_c=int(feat[0]),
                    head_partition=p + 1,
                )
            )
            continue
        # an LC-Net segment without a head: the exit after its last block
        head_key = spec.head or str(spec.last_block)
        bias, mult, shift, scale = head_arrays(ir, head_key)
        seg_macs = sum(macs.get(prefix, 0) for prefix in spec.mac_prefixes)
        fabric = spec.output_tensor is None  # the partition ends in the head's accumulators
        weight, feat_c, feat_bytes = None, 0, 0
        if not fabric:
            feat = ir.tensors[spec.output_tensor].shape  # (C, H, W)
            feat_c, feat_bytes = int(feat[0]), int(np.prod(feat))
            fc = next(op for op in exits[spec.stage].then if op.kind == "linear")
            weight = ir.array(fc, "weight").astype(np.int8)
        bits, per_word, word_bits = accumulator_layout(seg.path.parent) if fabric else (32, 1, 32)
        own = exits[spec.stage].attrs.get("confidence_t16")
        heads.append(
            StageHead(
                name=f"stage{spec.stage}",
                bias=bias,
                mult=mult,
                shift=shift,
                logit_scale=scale,
                out_bits=bits,
                out_per_word=per_word,
                out_word_bits=word_bits,
                in_bytes=int(np.prod(seg.in_shape)),
                feat_bytes=feat_bytes,
                seg_macs=int(seg_macs),
                head_macs=int(macs.get(spec.head_prefix, 0)),
                seg_partition=p,
                head_weight=weight,
                feat_c=feat_c,
                reads_image=bool(spec.reads_image),
                confidence_t16=None if own is None else int(own),
            )
        )
    return heads


def stage_macs(
    heads: list[StageHead], head: StageHead, part_dir: Path, branch: bool = False
) -> dict[str, int]:
    """MACs per image of one partition: ``fabric``, what its matrix units compute (finn-plus's own
    count of the final folded model: recomputed channels and masked connections included); in the
    integer reference, ``reference_new`` what this stage adds (segment, and its head where the
    partition holds it) and ``reference_to_exit`` an image leaving here (every head computed)."""
    k = heads.index(head)
    new = head.seg_macs + (head.head_macs if head.fabric_head and not head.branch else 0)
    if branch:  # the partition is the stage's RADI branch (DDI)
        new = head.head_macs
    return {
        "fabric": fabric_macs(part_dir),
        "reference_new": int(new),
        "reference_to_exit": int(sum(hd.seg_macs + hd.head_macs for hd in heads[: k + 1])),
    }


def fabric_macs(part_dir: Path) -> int:
    """finn-plus's MAC count of a partition (``report/op_and_param_counts.json``, every op_mac_*)."""
    path = part_dir / "report" / "op_and_param_counts.json"
    try:
        total = json.loads(path.read_text())["total"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ExportError(
            f"{part_dir.name}: finn-plus wrote no op counts ({path.name}): re-run tinydyn fpga"
        ) from None
    return int(sum(v for k, v in total.items() if k.startswith("op_mac")))


def schedule_stages(heads: list[StageHead], rows: list[StageRow]) -> list[Stage]:
    """The stages as the schedule model sees them: each segment's finn-plus latency and
    initiation interval, the bytes its IODMAs move per image, the MACs of its PS exit head and
    whether it reads the image again (the PS gathers those that stay)."""
    return [
        Stage(
            Partition(rows[hd.seg_partition].name, rows[hd.seg_partition].latency_cycles,
                      rows[hd.seg_partition].max_cycles),
            hd.in_bytes,
            hd.feat_bytes,
            hd.out_bytes,
            0 if hd.fabric_head else hd.head_macs,
            hd.reads_image,
            Partition(rows[hd.head_partition].name, rows[hd.head_partition].latency_cycles,
                      rows[hd.head_partition].max_cycles) if hd.head_partition is not None else None,
        )
        for hd in heads
    ]  # fmt: skip


def static_stage(est: StageEstimate, in_bytes: int, part_dir: Path) -> Stage:
    """The one-partition static design as a one-stage schedule (its final head inside)."""
    _, per_word, word_bits = accumulator_layout(part_dir)
    out_bytes = -(-_classes(part_dir) // per_word) * word_bits // 8
    return Stage(Partition("static", est.critical_path_cycles, est.max_cycles), in_bytes, 0, out_bytes)


def _classes(part_dir: Path) -> int:
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(part_dir / "intermediate_models" / "step_generate_estimate_reports.onnx"))
    return int(np.prod(model.get_tensor_shape(model.graph.output[0].name)[1:]))


def _op_macs(ir: IRModel) -> dict[str, int]:
    """MACs by block ('b3'), 'stem', and exit head ('exit0', 'final')."""
    out: dict[str, int] = {}
    for op in ir.walk():
        macs = op_kind(op.kind).macs(op)
        if macs:
            key = op.name.split(".")[0]
            out[key] = out.get(key, 0) + macs
    return out


def accumulator_layout(part_dir: Path) -> tuple[int, int, int]:
    """How the partition's output IODMA will write the head accumulators: (bits per accumulator,
    accumulators per stream word, word width in bits). finn-plus's InsertIODMA pads each stream
    word of the last layer (PE accumulators) to whole bytes and the ODMA writes the words back to
    back; the widths are those of the final folded, bit-width-minimised model."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    path = part_dir / "intermediate_models" / "step_generate_estimate_reports.onnx"
    try:
        last = getCustomOp(ModelWrapper(str(path)).graph.node[-1])
        return (
            int(last.get_output_datatype().bitwidth()),
            int(last.get_folded_output_shape()[-1]),
            int(last.get_outstream_width_padded()),
        )
    except Exception as exc:  # noqa: BLE001 - finn-plus changed its model: say which partition
        raise ExportError(
            f"{part_dir.name}: cannot read the output stream layout from {path.name} ({exc}): "
            "re-run tinydyn fpga"
        ) from None


def _steps(part_dir: Path) -> dict[str, float]:
    path = part_dir / "report" / "time_per_step.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "finn-plus": finn_version()}
    for pkg in ("torch", "brevitas", "qonnx", "onnx", "onnxruntime", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


__all__ = ["ExportError", "build_fpga"]
