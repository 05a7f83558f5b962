"""``tinydyn emulate``, ``tinydyn measure`` and the body of ``tinydyn run`` (the main job)."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from tinydyn.codegen.boards import boards_that_boot_here, boards_with_firmware
from tinydyn.data import Dataset
from tinydyn.errors import TinydynError
from tinydyn.ir import IRModel
from tinydyn.options import (
    Threshold,
    budget_options,
    budget_policy,
    dataset_options,
    default_threshold,
    load_costs,
    policy_options,
    schedule_option,
    validation_images,
)
from tinydyn.pipeline import load_ir
from tinydyn.quantize.executor import Results
from tinydyn.quantize.policy import ExitPolicy


def load_reference(checkpoint: Path | None, ir_dir: Path | None) -> IRModel:
    """The integer reference: an IR directory, or a checkpoint lowered here (the bundled one by default)."""
    return load_ir(checkpoint, ir_dir).ir


def load_test_set(ir: IRModel, dataset: str, data_root: Path | None, what: str) -> Dataset:
    """The test split of ``dataset``, checked against the model before anything is built."""
    from tinydyn.data import load_dataset
    from tinydyn.models.provenance import check_loaded

    data = load_dataset(dataset, "test", data_root)
    c, h, w = (int(v) for v in ir.input_spec.shape)
    check_loaded(data, ir.classes, (c, h, w), what)
    return data


def artifact_paths(results: Path) -> dict[str, Path]:
    stem = results.with_suffix("")
    return {
        "summary": Path(f"{stem}.summary.json"),
        "exits_png": Path(f"{stem}.exits.png"),
        "accuracy_png": Path(f"{stem}.accuracy_vs_macs.png"),
        "cost_png": Path(f"{stem}.cost_vs_macs.png"),
    }


@dataclass
class MeasureRequest:
    port: str
    ir: IRModel
    dataset: str
    data_root: Path | None
    limit: int
    policy: ExitPolicy
    out: Path
    resume: bool = False
    overwrite: bool = False
    baudrate: int = 115200
    timeout: float = 5.0
    retries: int = 3
    logits: bool = True
    plots: bool = True
    expected_model_id: str | None = None
    progress: bool = True
    data: Dataset | None = None  # the test split, when the caller loaded (and checked) it already
    threshold_note: str = ""  # what the threshold means and where it came from, for the summary
    dataset_note: str = ""  # why this dataset (--dataset, or the model's own)
    cycles: Any = None  # tinydyn.host.cycles.CycleLog of a QEMU board: modelled cycles per image
    schedule: list[tuple[str, int]] | None = None  # per-request budgets (tinydyn.host.measure)
    cost_table: Any = None  # tinydyn.cost.cost_table.CostTable the firmware was built with


def measure_and_report(
    req: MeasureRequest, echo: Callable[[str], None] = click.echo
) -> tuple[dict[str, Any], Results, TinydynError | None]:
    """Measure, summarise, plot. Returns the summary, the reference results and, when board results
    differ from the reference, a ReferenceMismatchError for the caller to raise (everything is
    written by then)."""
    from tinydyn.data import load_dataset
    from tinydyn.host.client import BoardClient
    from tinydyn.host.measure import (
        ReferenceMismatchError,
        measure,
        reference_under_schedule,
        summarize,
        summary_lines,
    )
    from tinydyn.host.report import plot_accuracy_vs_macs, plot_cost_vs_macs, plot_exit_histogram, write_json
    from tinydyn.host.sweep import probe, sweep, sweep_policies
    from tinydyn.quantize.executor import execute

    data = req.data if req.data is not None else load_dataset(req.dataset, "test", req.data_root)
    if req.limit and req.limit < len(data):
        data = data.subset(req.limit)
    ir = req.ir
    t0 = time.perf_counter()
    # the spec: what every board answer must equal (measure() redoes it if the board's cost model
    # turns out to be needed)
    reference = (
        reference_under_schedule(ir, data.images, req.policy, req.schedule)
        if req.schedule
        else execute(ir, data.images, req.policy)
    )
    pr = probe(ir, data.images)  # every head of every image: the threshold sweep from one pass
    echo(
        f"  integer reference for {len(data)} images and the threshold sweep "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    client = BoardClient(
        req.port,
        baudrate=req.baudrate,
        timeout=req.timeout,
        retries=req.retries,
        expected_model_id=req.expected_model_id or ir.model_id(),
    )
    try:
        outcome = measure(
            client,
            ir,
            data.images,
            data.labels,
            req.policy,
            req.out,
            dataset=req.dataset,
            resume=req.resume,
            overwrite=req.overwrite,
            logits=req.logits,
            progress=req.progress,
            reference=reference,
            log=echo,
            cycles=req.cycles,
            schedule=req.schedule,
            cost_table=req.cost_table,
        )
    finally:
        client.close()
    summary = summarize(outcome, ir)
    if req.dataset_note:
        summary["dataset_note"] = req.dataset_note
    if req.threshold_note:
        summary["threshold_note"] = req.threshold_note
    paths = artifact_paths(req.out)
    points = sweep(
        ir, data.images, data.labels, sweep_policies(req.policy.kind, ir.meta["static_backbone_macs"]), pr
    )
    summary["sweep"] = points
    summary["results_file"] = str(req.out)
    if req.plots:
        summary["plots"] = [
            str(plot_exit_histogram(summary, paths["exits_png"])),
            str(plot_accuracy_vs_macs(summary, points, paths["accuracy_png"])),
        ]
        if summary.get("counter_kind") in ("cycles", "instructions") or "mean_cycles_modelled" in summary:
            summary["plots"].append(str(plot_cost_vs_macs(summary, outcome.records, paths["cost_png"])))
    write_json(paths["summary"], summary)
    for line in summary_lines(summary):
        echo("  " + line)
    echo(
        f"  results {req.out}, summary {paths['summary']}"
        + (", plots " + ", ".join(summary["plots"]) if req.plots else "")
    )
    mismatch = None
    if summary["mismatches"]:
        first = next(r for r in outcome.records if not r.get("match", False))
        mismatch = ReferenceMismatchError(
            f"{summary['mismatches']} of {summary['images']} board results differ from the integer reference "
            f"(first: image {first['seq']}, fields {', '.join(first['diff'])}); "
            f"the records in {req.out} hold "
            "both values: rebuild the firmware from the same model and report a bug if it persists"
        )
    return summary, reference, mismatch


def policy_from(
    policy: str,
    threshold: float | None,
    ir: IRModel,
    gating: bool = True,
    data: Dataset | None = None,
    data_root: Path | None = None,
    unit: str = "macs",
    costs: Any = None,
) -> tuple[ExitPolicy, Threshold]:
    """The exit policy to measure with; a default budget is tuned on validation images of ``data``
    (in MACs: a budget in energy or cycles needs --budget)."""
    if policy == "budget" and threshold is None and unit != "macs":
        raise click.UsageError(f"a budget in {unit} needs --budget (e.g. --budget 900 for 900 nJ)")

    def validation() -> tuple[Any, str]:
        from tinydyn.data import load_dataset

        assert data is not None
        return validation_images(data, lambda: load_dataset(data.name, "train", data_root))

    chosen = default_threshold(policy, threshold, ir, validation if data is not None else None)
    if policy == "budget" and unit != "macs":
        label = {"energy": "nJ (modelled)", "cycles": "cycles"}[unit]
        chosen = Threshold(chosen.value, chosen.note.replace(" MACs", f" {label}", 1))
    return ExitPolicy(policy, chosen.value, gating=gating, unit=unit, costs=costs), chosen


# ---------------------------------------------------------------------------- commands
@click.command(name="firmware")
@click.argument("checkpoint", type=click.Path(path_type=Path), required=False)
@click.option(
    "--ir", "ir_dir", type=click.Path(path_type=Path), default=None, help="Build from an IR directory."
)
@click.option(
    "--board",
    type=click.Choice(boards_with_firmware()),
    default="qemu-mps2-an386",
    show_default=True,
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/firmware"), show_default=True)
@click.option(
    "--icount-shift", type=int, default=6, show_default=True, help="QEMU -icount shift (QEMU board)."
)
@click.option(
    "--cflags", default="", help="Extra compiler flags, e.g. -DTD_NUCLEO_INA219=0 (docs/BOARDS.md)."
)
def firmware_cmd(
    checkpoint: Path | None, ir_dir: Path | None, board: str, out: Path, icount_shift: int, cflags: str
) -> None:
    """Build the serial firmware (protocol server + model + energy model) of a board."""
    from tinydyn.host.firmware import build_firmware

    ir = load_reference(checkpoint, ir_dir)
    fw = build_firmware(ir, board, out, icount_shift=icount_shift, extra_cflags=cflags)
    click.echo(f"{fw}  (model {ir.name} {ir.model_id()})")
    if board == "qemu-mps2-an386":
        click.echo(f"boot it:   tinydyn emulate {fw}")
    elif board == "nucleo-l4r5zi":
        click.echo(f"flash it:  st-flash write {out / 'firmware.bin'} 0x08000000   (see docs/BOARDS.md)")
    else:
        click.echo(f"start it:  {fw}   (prints its pty)")
    click.echo("measure:   tinydyn measure --port PORT" + (f" --ir {ir_dir}" if ir_dir else ""))


@click.command()
@click.argument("firmware", type=click.Path(path_type=Path))
@click.option(
    "--duration", type=float, default=None, help="Stop QEMU after this many seconds (default: Ctrl-C)."
)
@click.option(
    "--no-cycle-model", is_flag=True, help="Do not load the Cortex-M4 cycle-model plugin (docs/CYCLES.md)."
)
def emulate(firmware: Path, duration: float | None, no_cycle_model: bool) -> None:
    """Boot a qemu-mps2-an386 serial FIRMWARE (.elf) under QEMU with UART0 on a pty; print the port."""
    from tinydyn.host.emulate import QemuBoard

    _sigterm_as_interrupt()
    with QemuBoard(firmware, cycle_model=not no_cycle_model) as board:
        click.echo(board.port)  # first line: the port, for scripts
        cycle_opt = f" --cycle-log {board.cycle_log}" if board.cycle_log else ""
        click.echo(
            f"serving {firmware} on {board.port} (QEMU pid {board.pid}, -icount shift={board.icount_shift}); "
            f"measure with `tinydyn measure --port {board.port}{cycle_opt}`; Ctrl-C stops QEMU",
            err=True,
        )
        sys.stdout.flush()
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while board.alive() and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        if not board.alive():
            raise TinydynError(
                f"QEMU exited by itself (status {board.wait()}): {board.output.strip()[-300:]}"
            )
    click.echo("QEMU stopped", err=True)


def _sigterm_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so context managers stop QEMU instead of orphaning it."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    # Ctrl-C must stop QEMU even when the parent started us with SIGINT ignored (a non-interactive
    # shell's background job, some test runners): Python then installs no KeyboardInterrupt handler
    signal.signal(signal.SIGINT, signal.default_int_handler)


@click.command(name="measure")
@click.option(
    "--port", required=True, help="Serial port of the board (a pty from `tinydyn emulate`, /dev/ttyACM0)."
)
@dataset_options
@policy_options
@budget_options
@schedule_option
@click.option("--limit", type=int, default=200, show_default=True, help="Measure the first N test images.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("runs/measure/results.jsonl"),
    show_default=True,
    help="Results file (JSON lines); the summary and plots go beside it.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out (measures only the missing images).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out instead of refusing.")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint the firmware was built from (default: the bundled one).",
)
@click.option(
    "--ir",
    "ir_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="IR directory the firmware was built from (instead of --checkpoint).",
)
@click.option("--baud", type=int, default=115200, show_default=True)
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for each reply.")
@click.option("--retries", type=int, default=3, show_default=True)
@click.option(
    "--no-logits", is_flag=True, help="Do not ask for logits (shorter replies; logits not checked)."
)
@click.option("--no-plots", is_flag=True)
@click.option(
    "--no-gating", is_flag=True, help="Run the static network: gates not computed, nothing skipped."
)
@click.option("--model-id", default=None, help="Model id the board must report (default: the reference's).")
@click.option(
    "--cycle-log",
    type=click.Path(path_type=Path),
    default=None,
    help="The cycle-model file `tinydyn emulate` prints: adds modelled cycles (QEMU board).",
)
def measure_cmd(
    port: str,
    dataset: str | None,
    data_root: Path | None,
    policy: str,
    threshold: float | None,
    limit: int,
    out: Path,
    resume: bool,
    overwrite: bool,
    checkpoint: Path | None,
    ir_dir: Path | None,
    baud: int,
    timeout: float,
    retries: int,
    no_logits: bool,
    no_plots: bool,
    no_gating: bool,
    model_id: str | None,
    cycle_log: Path | None,
    budget: str | None = None,
    budget_unit: str = "macs",
    cost_table: Path | None = None,
    budget_schedule: str | None = None,
) -> None:
    """Stream test images to a board, check every answer against the integer reference, report."""
    from tinydyn.cost.cost_table import read_cost_table
    from tinydyn.host.measure import parse_schedule

    if resume and overwrite:
        raise click.UsageError("give --resume or --overwrite, not both")
    loaded = load_ir(checkpoint, ir_dir)
    ir = loaded.ir
    name, source = loaded.dataset(dataset)
    data = load_test_set(ir, name, data_root, loaded.what)
    policy, threshold = budget_policy(policy, threshold, budget, budget_unit)
    exit_policy, chosen = policy_from(
        policy, threshold, ir, gating=not no_gating, data=data, data_root=data_root, unit=budget_unit
    )
    req = MeasureRequest(
        port=port,
        ir=ir,
        dataset=name,
        data_root=data_root,
        limit=limit,
        policy=exit_policy,
        out=out,
        resume=resume,
        overwrite=overwrite,
        baudrate=baud,
        timeout=timeout,
        retries=retries,
        logits=not no_logits,
        plots=not no_plots,
        expected_model_id=model_id,
        progress=sys.stderr.isatty(),
        data=data,
        threshold_note=chosen.note,
        dataset_note=f"{name} test split ({source})",
        schedule=parse_schedule(budget_schedule, budget_unit) if budget_schedule else None,
        cost_table=read_cost_table(cost_table) if cost_table else None,
    )
    if cycle_log is not None:
        from tinydyn.host.cycles import CycleLog, CycleModel

        if not cycle_log.exists():
            raise click.BadParameter(f"{cycle_log} does not exist: give the path `tinydyn emulate` printed")
        req.cycles = CycleLog(cycle_log, CycleModel())
    _sigterm_as_interrupt()
    try:
        _, _, mismatch = measure_and_report(req)
    except KeyboardInterrupt:
        from tinydyn.host.results import done_seqs

        click.echo(
            f"interrupted: {len(done_seqs(out))} results are in {out}; continue with --resume", err=True
        )
        sys.exit(130)
    if mismatch is not None:
        raise mismatch


# ---------------------------------------------------------------------------- the main job
def run_main(
    checkpoint: Path | None,
    dataset: str | None,
    data_root: Path | None,
    policy: str,
    threshold: float | None,
    limit: int,
    out: Path,
    board: str = "qemu-mps2-an386",
    icount_shift: int = 6,
    resume: bool = False,
    echo: Callable[[str], None] = click.echo,
    budget_unit: str = "macs",
    cost_table: Path | None = None,
    schedule: list[tuple[str, int]] | None = None,
) -> dict[str, Any]:
    """checkpoint → quantize → IR → C → firmware → boot (QEMU or host pty) → measure → summary + plots."""
    from tinydyn.host.boardproc import BoardProcess
    from tinydyn.host.emulate import QemuBoard
    from tinydyn.host.firmware import build_firmware
    from tinydyn.host.report import write_json
    from tinydyn.models.checkpoint import bundled_checkpoint
    from tinydyn.train.evaluate import brevitas_predictions

    if board not in boards_that_boot_here():
        raise TinydynError(
            f"tinydyn run boots {' or '.join(boards_that_boot_here())}, not '{board}': for a real board use "
            "`tinydyn build` + `tinydyn measure --port` (docs/BOARDS.md)"
        )
    _sigterm_as_interrupt()  # `kill` unwinds too: QEMU is stopped, results stay resumable
    started = time.perf_counter()
    stages: dict[str, float] = {}

    def stage(name: str, t: float) -> None:
        stages[name] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    path = checkpoint or bundled_checkpoint()
    echo(f"[1/6] loading {path} and quantizing (Brevitas) ...")
    loaded = load_ir(path)
    ir, model = loaded.ir, loaded.module
    # the dataset is settled and loaded before anything is built or written: a wrong
    # --dataset or missing files fail in seconds, not after the firmware build
    data_name, source = loaded.dataset(dataset)
    data = load_test_set(ir, data_name, data_root, loaded.what)
    echo(f"      dataset {data_name} ({source})")
    costs = load_costs(ir, board, cost_table)  # baked into the firmware: budgets in every unit it has
    exit_policy, chosen = policy_from(
        policy, threshold, ir, data=data, data_root=data_root, unit=budget_unit, costs=costs
    )
    echo(f"      exit rule: {chosen.note}")
    stage("quantize", t)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    ir_dir = ir.save(out / "ir")
    echo(
        f"[2/6] integer IR {ir.model_id()} written to {ir_dir} "
        f"({ir.meta['static_backbone_macs']:,} static MACs)"
    )
    stage("ir", t)
    t = time.perf_counter()
    echo(f"[3/6] generating C and building the serial firmware for {board} ...")
    fw = build_firmware(ir, board, out / "firmware", icount_shift=icount_shift, costs=costs)
    build = json.loads((out / "firmware" / "build.json").read_text())
    echo(f"      {fw} (arena {build['arena_bytes']:,} B, weights {build['weight_bytes']:,} B)")
    stage("build", t)
    t = time.perf_counter()
    echo(f"[4/6] booting {board} ...")
    proc: Any = QemuBoard(fw) if board == "qemu-mps2-an386" else BoardProcess([str(fw)])
    try:
        echo(
            f"      serving on {proc.port}"
            + (f" (QEMU -icount shift={icount_shift})" if board != "host" else "")
        )
        stage("boot", t)
        t = time.perf_counter()
        results = out / "results.jsonl"
        echo(f"[5/6] measuring {limit} test images over {proc.port} ...")
        req = MeasureRequest(
            port=proc.port,
            ir=ir,
            dataset=data_name,
            data_root=data_root,
            limit=limit,
            policy=exit_policy,
            out=results,
            resume=resume,
            overwrite=not resume,
            progress=sys.stderr.isatty(),
            data=data,
            threshold_note=chosen.note,
            dataset_note=f"{data_name} test split ({source})",
            cycles=getattr(proc, "cycles", None),  # QEMU: the Cortex-M4 cycle model (modelled)
            schedule=schedule,
        )
        summary, reference, mismatch = measure_and_report(req, echo=echo)
        stage("measure", t)
    finally:
        proc.stop()
    t = time.perf_counter()
    echo("[6/6] comparing with the Brevitas model and writing the run summary ...")
    data = data.subset(limit)
    preds = brevitas_predictions(model, data, req.policy, reference)
    brevitas = {
        "brevitas_accuracy": float((preds == data.labels).mean()),
        "brevitas_agreement_with_reference": float((preds == reference.predictions).mean()),
    }
    stage("report", t)
    run_summary = {
        "stages_s": stages,
        "wall_s": round(time.perf_counter() - started, 2),
        "board": board,
        "firmware": str(fw),
        "build": build,
        **brevitas,
        "measurement": summary,
    }
    write_json(out / "summary.json", run_summary)
    echo(f"  accuracy brevitas      {100 * brevitas['brevitas_accuracy']:.2f}%")
    echo(
        f"run summary {out / 'summary.json'} ({run_summary['wall_s']:.1f} s: "
        + ", ".join(f"{k} {v:g} s" for k, v in stages.items())
        + ")"
    )
    if mismatch is not None:
        raise mismatch
    return run_summary
