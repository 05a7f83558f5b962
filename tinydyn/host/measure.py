"""Measure a model on a board over the serial protocol and check every answer against the reference.

``measure()`` streams test images to a board (any port pyserial opens: a QEMU or host-board pty,
the NUCLEO's ST-LINK VCP), writes each RESULT to a JSON-lines file as it arrives (fsync'd, see
results.py), and compares it with the integer reference executor: class, exit, MACs, skipped
blocks/channels and logits. A difference is a *mismatch*: printed, counted, stored in the record
(``diff``), and it makes the run fail at the end; it is never dropped.

The results file starts with one ``{"kind": "run", ...}`` record naming the model, board, dataset
and policy; every other record is one image, keyed by ``seq`` = its index in the test set. A
resumed run checks that header, skips the seqs already recorded and appends the rest, so a host
killed at any moment loses and duplicates nothing.

Budgets (protocol v2): a budget in MACs, modelled energy (nJ) or cycles, set in CONFIG, and a
*schedule* of per-request budgets (``schedule``: image i runs under ``schedule[i % len]``, DDI's
time-varying resource limit) sent with each INFER. The reference runs each image under its own
budget, so every exit decision is checked; so are the board's modelled energy and cycles of what
ran and the gates' own MACs (RESULT v2), against the cost model the firmware was built with
(tinydyn/cost/budget.py; INFO v2 reports its id, which must match the host's).

On the QEMU board with the cycle model (``cycles=board.cycles``, tinydyn/host/cycles.py) each image
record also gets ``cycles_modelled`` (Cortex-M4 cycles of td_infer, MODELLED by the plugin) and
``cycle_model_insns`` (the instructions the plugin counted in the same region); the run header
records the model's parameters under ``cycle_model``. ``counter`` stays what the board measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinydyn.errors import TinydynError
from tinydyn.host import protocol as P
from tinydyn.host.client import BoardClient
from tinydyn.host.cycles import CycleLog
from tinydyn.host.results import ResultsWriter, load_records
from tinydyn.host.skips import skip_lines, skip_summary

if TYPE_CHECKING:
    from tinydyn.cost.cost_table import CostTable
from tinydyn.ir import IRModel
from tinydyn.quantize.executor import Results, execute
from tinydyn.quantize.policy import ExitPolicy

RUN_KEYS = (
    "model_id",
    "board",
    "dataset",
    "policy",
    "threshold",
    "gating",
    "logits",
    "budget_unit",
    "schedule",
)
CHECKED = ("class", "exit", "macs", "skipped_blocks", "skipped_channels", "logits")
COST_CHECKED = ("energy_cost_nj", "cycles_cost", "gate_macs")  # RESULT v2, against the cost model
Schedule = list[tuple[str, int]]  # per-request budgets: (unit, budget), cycled over the images


class MeasureError(TinydynError):
    """A measurement that cannot start or continue (wrong file, board/model/dataset mismatch)."""


class ReferenceMismatchError(TinydynError):
    """Board results differ from the integer reference (after everything was written)."""


@dataclass
class Session:
    """Link statistics of this process's part of the run (a resumed run counts only its own)."""

    images: int = 0
    seconds: float = 0.0
    payload_bytes: int = 0  # image bytes sent
    wire_bytes_out: int = 0  # INFER frames on the wire (COBS + delimiters + header + CRC)
    wire_bytes_in: int = 0  # RESULT frames on the wire
    retries: int = 0
    resets: int = 0

    def to_json(self) -> dict[str, Any]:
        s = max(self.seconds, 1e-9)
        return {
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "images_per_s": self.images / s,
            "payload_bytes_per_s": self.payload_bytes / s,
            "wire_bytes_per_s": (self.wire_bytes_out + self.wire_bytes_in) / s,
            "wire_out_bytes_per_s": self.wire_bytes_out / s,
            "wire_in_bytes_per_s": self.wire_bytes_in / s,
            "framing_efficiency": self.payload_bytes / max(self.wire_bytes_out, 1),
            "retries": self.retries,
            "resets": self.resets,
        }


@dataclass
class Outcome:
    """What measure() returns: all records of the file (this run's and resumed ones) and stats."""

    header: dict[str, Any]
    records: list[dict[str, Any]]
    reference: Results
    labels: np.ndarray
    info: P.BoardInfo
    session: Session
    mismatches: list[dict[str, Any]] = field(default_factory=list)


def run_header(
    ir: IRModel,
    info: P.BoardInfo,
    dataset: str,
    policy: ExitPolicy,
    logits: bool,
    schedule: Schedule | None = None,
) -> dict[str, Any]:
    return {
        "kind": "run",
        "model_id": ir.model_id(),
        "model": ir.name,
        "board": info.board_name,
        "dataset": dataset,
        "policy": policy.kind,
        "threshold": policy.threshold,
        "gating": policy.gating,
        "logits": logits,
        "budget_unit": policy.unit,
        "schedule": [list(x) for x in schedule] if schedule else None,
        "protocol_version": info.version,
        "cost_model": None if policy.costs is None else f"{policy.costs.cost_model_id:08x}",
        "cycles_unit": policy.costs is not None and "cycles" in policy.costs.units,
        "info": info.to_dict(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def compare(result: P.Result, ref: Results, i: int) -> dict[str, list[Any]]:
    """Fields where the board's result differs from the reference: {field: [board, reference]}."""
    got = {
        "class": result.predicted,
        "exit": result.exit_index,
        "macs": result.macs,
        "skipped_blocks": result.skipped_blocks,
        "skipped_channels": result.skipped_channels,
    }
    want = {
        "class": int(ref.predictions[i]),
        "exit": int(ref.exits[i]),
        "macs": int(ref.macs[i]),
        "skipped_blocks": int(ref.skipped_blocks[i]),
        "skipped_channels": int(ref.skipped_channels[i]),
    }
    for key in COST_CHECKED:  # v2 results, where the reference has the same cost model
        if getattr(result, key) is not None and key in ref.extra:
            got[key], want[key] = getattr(result, key), int(ref.extra[key][i])
    diff = {k: [got[k], want[k]] for k in got if got[k] != want[k]}
    if result.logits is not None:
        ref_logits = [int(v) for v in ref.logits[i]]
        if list(result.logits) != ref_logits:
            diff["logits"] = [list(result.logits), ref_logits]
    return diff


class EnergyCheck:
    """Recomputes a board's MODELLED energy with tinydyn.cost.energy (the firmware embeds the same
    integer model, so they must agree exactly); boards the model does not know are not checked."""

    def __init__(self, ir: IRModel, board: str) -> None:
        from tinydyn.cost import energy

        self._energy = energy
        self.board = board
        self.profile = energy.traffic_profile(ir, board) if board in energy.COEFFICIENTS else None

    def check(self, r: P.Result) -> bool | None:
        if self.profile is None or r.energy_kind != P.EnergyKind.MODELLED:
            return None
        try:
            est = self._energy.energy_from_macs(self.board, self.profile, r.macs, r.counter)
        except self._energy.EnergyModelError:
            return False
        return (est.energy_nj, est.power_uw) == (r.energy_nj, r.power_uw)


def record_of(
    i: int,
    label: int,
    r: P.Result,
    diff: dict[str, list[Any]],
    seconds: float,
    cycles: Any = None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "seq": i,
        "label": label,
        "class": r.predicted,
        "exit": r.exit_index,
        "macs": r.macs,
        "counter": r.counter,
        "counter_kind": r.counter_kind.name.lower(),
        "skipped_blocks": r.skipped_blocks,
        "skipped_channels": r.skipped_channels,
        "energy_nj": r.energy_nj,
        "power_uw": r.power_uw,
        "energy_kind": r.energy_kind.name.lower(),
        "config_tag": r.config_tag,
        "match": not diff,
        "host_s": round(seconds, 6),
    }
    if cycles is not None:  # a tinydyn.host.cycles.CycleRecord: modelled, never measured
        rec["cycles_modelled"] = cycles.cycles
        rec["cycle_model_insns"] = cycles.insns
    if r.policy is not None:  # v2: what decided the exit, and the modelled costs of what ran
        rec.update(policy=r.policy, budget_unit=r.budget_unit, budget=r.budget)
        rec.update(energy_cost_nj=r.energy_cost_nj, cycles_cost=r.cycles_cost, gate_macs=r.gate_macs)
    if r.logits is not None:
        rec["logits"] = list(r.logits)
    if diff:
        rec["diff"] = diff
    return rec


def _check_info(info: P.BoardInfo, ir: IRModel, image_shape: tuple[int, ...], port: str) -> None:
    c, h, w = image_shape
    if (info.in_c, info.in_h, info.in_w) != (c, h, w):
        raise MeasureError(
            f"board on {port} takes {info.in_c}x{info.in_h}x{info.in_w} images "
            f"but the dataset has {c}x{h}x{w}: "
            "use the dataset the model was trained on"
        )
    if info.num_exits != len(ir.exits()) or info.num_classes != ir.num_classes:
        raise MeasureError(
            f"board on {port} reports {info.num_exits} exits / {info.num_classes} classes, "
            "the reference model "
            f"{len(ir.exits())} / {ir.num_classes}: give the --checkpoint or --ir the firmware was built from"
        )


def prepare_file(out: Path, resume: bool, overwrite: bool) -> list[dict[str, Any]]:
    """The records to resume from (none for a fresh run); refuses to clobber a run by accident."""
    records = load_records(out)
    if records and not resume:
        if not overwrite:
            raise MeasureError(
                f"{out} already holds {len(records)} records: pass --resume to continue that run, "
                "or choose another --out"
            )
        out.unlink()
        return []
    if records and records[0].get("kind") != "run":
        raise MeasureError(f"{out} does not start with a run record: it is not a tinydyn measure file")
    return records


def parse_schedule(text: str, unit: str) -> Schedule:
    """``--budget-schedule``: comma-separated budgets (``3M``, ``250k``, ``1500``), each optionally
    ``unit:value`` (``energy:900,cycles:2M``); the rest are in ``unit``."""
    out: Schedule = []
    for item in text.split(","):
        item = item.strip()
        u, _, value = item.rpartition(":")
        out.append((u or unit, parse_amount(value)))
        if out[-1][0] not in P.BUDGET_UNITS:
            raise MeasureError(
                f"budget schedule item '{item}': unknown unit '{out[-1][0]}', use {', '.join(P.BUDGET_UNITS)}"
            )
    if not out:
        raise MeasureError("empty budget schedule: give budgets such as 1M,2M,500k")
    return out


def parse_amount(text: str) -> int:
    """``3M`` = 3,000,000, ``250k``, ``1.5G``, plain integers; refused beyond uint32."""
    t = text.strip().replace("_", "")
    scale = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        raise MeasureError(f"budget '{text}' is not a number: give e.g. 3M, 250k or 1500") from None
    if not 0 <= value <= P.U32_MAX or value != value:
        raise MeasureError(f"budget '{text}' is outside 0..4294967295 (the firmware's uint32)")
    return int(value)


def reference_under_schedule(
    ir: IRModel, images: np.ndarray, policy: ExitPolicy, schedule: Schedule
) -> Results:
    """The reference with image i under ``schedule[i % len]`` (one pass per distinct budget)."""
    slot = np.arange(len(images)) % len(schedule)
    groups = []
    for unit, budget in sorted(set(schedule)):
        members = np.flatnonzero(
            np.isin(slot, [k for k, item in enumerate(schedule) if item == (unit, budget)])
        )
        if len(members):
            groups.append((members, execute(ir, images[members], policy.with_budget(budget, unit))))
    if not groups:
        return execute(ir, images, policy)
    order = np.concatenate([m for m, _ in groups])
    merged = Results.concat([r for _, r in groups])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    names = ("logits", "predictions", "exits", "macs", "skipped_blocks", "skipped_channels")
    return Results(
        **{k: getattr(merged, k)[inverse] for k in names},
        extra={k: v[inverse] for k, v in merged.extra.items()},
    )


def _board_costs(
    ir: IRModel, info: P.BoardInfo, policy: ExitPolicy, table: CostTable | None = None
) -> ExitPolicy:
    """The policy with the cost model the firmware was built with: the policy's own (checked
    against INFO's id), or, when none was given, the board's energy model with ``table`` if its
    id matches; a v1 board reports none."""
    from tinydyn.cost.budget import budget_costs

    if info.version < 2:
        return policy
    if policy.costs is not None:
        if policy.costs.cost_model_id != info.cost_model_id:
            raise MeasureError(
                f"the firmware's budget cost model ({info.cost_model_id:08x}) is not the host's "
                f"({policy.costs.cost_model_id:08x}): give the --cost-table the firmware was built with"
            )
        return policy
    default = budget_costs(ir, info.board_name, table)
    if default.cost_model_id == info.cost_model_id:
        return ExitPolicy(policy.kind, policy.threshold, policy.gating, policy.unit, default)
    if table is not None or policy.unit != "macs":
        raise MeasureError(
            f"the firmware's budget cost model ({info.cost_model_id:08x}) is not the host's "
            f"({default.cost_model_id:08x}): give the --cost-table the firmware was built with"
        )
    return policy  # built with a cost table the host was not given: costs are not checked


def measure(
    client: BoardClient,
    ir: IRModel,
    images: np.ndarray,
    labels: np.ndarray,
    policy: ExitPolicy,
    out: Path,
    dataset: str = "fashion-mnist",
    resume: bool = False,
    overwrite: bool = False,
    logits: bool = True,
    progress: bool = True,
    reference: Results | None = None,
    log: Callable[[str], None] = print,
    max_reported: int = 5,
    cycles: CycleLog | None = None,
    schedule: Schedule | None = None,
    cost_table: CostTable | None = None,
) -> Outcome:
    """Measure ``images`` (uint8, N×C×H×W; seq = index) on the board behind ``client``; with
    ``cycles`` (a QEMU board's cycle model) each record also gets the modelled cycles; with
    ``schedule`` image i carries the per-request budget ``schedule[i % len(schedule)]``."""
    out = Path(out)
    previous = prepare_file(out, resume, overwrite)
    if policy.kind == "budget" and policy.threshold >= 2**32:
        raise MeasureError(
            f"budget {policy.threshold:.0f} {policy.unit} does not fit the firmware's uint32: "
            "give a smaller budget"
        )
    info = client.open()
    _check_info(info, ir, tuple(images.shape[1:]), client.port)
    checked = _board_costs(ir, info, policy, cost_table)
    if reference is None or checked.costs is not policy.costs:
        policy = checked
        reference = (
            reference_under_schedule(ir, images, policy, schedule)
            if schedule
            else execute(ir, images, policy)
        )
    header = run_header(ir, info, dataset, policy, logits, schedule)
    if cycles is not None:
        header["cycle_model"] = cycles.model.to_json()
    if previous:
        old = previous[0]
        differ = [k for k in RUN_KEYS if old.get(k) != header[k]]
        if differ:
            what = ", ".join(f"{k} {old.get(k)!r} -> {header[k]!r}" for k in differ)
            raise MeasureError(
                f"cannot resume {out}: it was measured with other settings ({what}); "
                "use the same settings or another --out"
            )
        old_model, new_model = old.get("cycle_model"), header.get("cycle_model")
        if old_model is not None and new_model is not None and old_model != new_model:
            raise MeasureError(
                f"cannot resume {out}: its modelled cycles used another cycle model "
                f"({old_model} -> {new_model}); use the same parameters or another --out"
            )
    ip = policy.to_integer(ir)
    config = P.Config.from_policy(ip, info.num_exits, gating=ip.gating, logits=logits)
    client.configure(
        config.policy,
        config.confidence_t16,
        config.margins,
        config.budget_macs,
        gating=config.gating,
        logits=logits,
        budget_unit=config.budget_unit,
    )

    energy_check = EnergyCheck(ir, info.board_name)
    done = {int(r["seq"]) for r in previous if "seq" in r}
    todo = [i for i in range(len(images)) if i not in done]
    session = Session()
    mismatches = [r for r in previous if "seq" in r and not r.get("match", True)]
    stats0 = dict(client.stats)
    if cycles is not None:
        cycles.take()  # drop anything the plugin wrote before this run
    missing_cycles = 0
    with ResultsWriter(out) as writer:
        if not previous:
            writer.write(header)
        bar = _progress(len(images), len(done), progress)
        started = time.perf_counter()
        try:
            for i in todo:
                image = np.ascontiguousarray(images[i], dtype=np.uint8).tobytes()
                t0 = time.perf_counter()
                unit, budget = schedule[i % len(schedule)] if schedule else ("macs", None)
                r = client.infer(i, image, budget=budget, budget_unit=unit)
                seconds = time.perf_counter() - t0
                diff = compare(r, reference, i)
                c = cycles.take() if cycles is not None else None
                if cycles is not None and c is None:
                    missing_cycles += 1
                    if missing_cycles == 1:
                        _write(bar, log, f"image {i}: the cycle model wrote no line (no modelled cycles)")
                rec = record_of(i, int(labels[i]), r, diff, seconds, c)
                ok = energy_check.check(r)
                if ok is not None:
                    rec["energy_model_ok"] = ok
                writer.write(rec)  # on disk before the next image is sent
                session.images += 1
                session.payload_bytes += len(image)
                session.wire_bytes_out += len(
                    P.encode_infer(
                        i % P.SEQ_MODULUS,
                        image,
                        client.version,
                        unit if budget is not None else None,
                        budget or 0,
                    )
                )
                session.wire_bytes_in += len(P.encode_result(i % P.SEQ_MODULUS, r))
                if diff:
                    mismatches.append(rec)
                    if len(mismatches) <= max_reported:
                        _write(bar, log, f"MISMATCH image {i}: " + _diff_text(diff))
                if bar is not None:
                    bar.update(1)
                    if mismatches:
                        bar.set_postfix(mismatches=len(mismatches))
        finally:
            session.seconds = time.perf_counter() - started
            session.retries = client.stats["retries"] - stats0["retries"]
            session.resets = client.stats["resets"] - stats0["resets"]
            if bar is not None:
                bar.close()
    records = [r for r in load_records(out) if "seq" in r and int(r["seq"]) < len(images)]
    records.sort(key=lambda r: int(r["seq"]))
    return Outcome(load_records(out)[0], records, reference, labels, info, session, mismatches)


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc="measure", dynamic_ncols=True)


def _write(bar: Any, log: Callable[[str], None], text: str) -> None:
    if bar is not None:
        bar.write(text)
    else:
        log(text)


def _diff_text(diff: dict[str, list[Any]]) -> str:
    parts = []
    for k, (got, want) in diff.items():
        if k == "logits":
            parts.append("logits differ")
        else:
            parts.append(f"{k} board {got} vs reference {want}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------- summary
def _label(kinds: set[str]) -> str:
    if not kinds:
        return "none"
    return kinds.pop() if len(kinds) == 1 else "mixed (" + ", ".join(sorted(kinds)) + ")"


def summarize(outcome: Outcome, ir: IRModel) -> dict[str, Any]:
    """Accuracy, agreement, exits, MACs, counter, latency, energy/power (labelled) of all records."""
    recs = outcome.records
    n = len(recs)
    if n == 0:
        raise MeasureError("no results to summarise: measure at least one image")
    info = outcome.info
    seqs = np.array([r["seq"] for r in recs])
    ref = outcome.reference
    labels = outcome.labels[seqs]
    cls = np.array([r["class"] for r in recs])
    macs = np.array([r["macs"] for r in recs], dtype=np.float64)
    counter = np.array([r["counter"] for r in recs], dtype=np.float64)
    energy = np.array([r["energy_nj"] for r in recs], dtype=np.float64)
    power = np.array([r["power_uw"] for r in recs], dtype=np.float64)
    exits = np.array([r["exit"] for r in recs])
    counter_kind = _label({r["counter_kind"] for r in recs})
    energy_kind = _label({r["energy_kind"] for r in recs})
    static = int(ir.meta.get("static_backbone_macs", info.static_macs))
    clock = info.clock_hz
    summary: dict[str, Any] = {
        "model": ir.name,
        "model_id": ir.model_id(),
        "board": info.board_name,
        "dataset": outcome.header.get("dataset"),
        "policy": outcome.header.get("policy"),
        "threshold": outcome.header.get("threshold"),
        "budget_unit": outcome.header.get("budget_unit", "macs"),
        "images": n,
        "accuracy": float((cls == labels).mean()),
        "reference_accuracy": float((ref.predictions[seqs] == labels).mean()),
        "agreement": float(np.mean([r.get("match", False) for r in recs])),
        "class_agreement": float((cls == ref.predictions[seqs]).mean()),
        "mismatches": int(sum(1 for r in recs if not r.get("match", False))),
        "mismatch_seqs": [int(r["seq"]) for r in recs if not r.get("match", False)][:20],
        "exit_histogram": np.bincount(exits, minlength=info.num_exits).tolist(),
        "reference_exit_histogram": np.bincount(ref.exits[seqs], minlength=info.num_exits).tolist(),
        "mean_macs": float(macs.mean()),
        "static_backbone_macs": static,
        "mac_reduction": static / float(macs.mean()) if macs.mean() > 0 else math.inf,
        "mean_skipped_blocks": float(np.mean([r["skipped_blocks"] for r in recs])),
        "mean_skipped_channels": float(np.mean([r["skipped_channels"] for r in recs])),
        "counter_kind": counter_kind,
        "mean_counter": float(counter.mean()),
        "min_counter": int(counter.min()),
        "max_counter": int(counter.max()),
        "clock_hz": clock,
        "energy_kind": energy_kind,
        "mean_energy_uj": float(energy.mean() / 1000.0),
        # modelled energy recomputed on the host (tinydyn.cost.energy): share that agrees exactly
        "energy_model_agreement": (
            float(np.mean([r["energy_model_ok"] for r in recs if "energy_model_ok" in r]))
            if any("energy_model_ok" in r for r in recs)
            else None
        ),
        "mean_power_mw": float(power.mean() / 1000.0),
        "session": outcome.session.to_json(),
    }
    if counter_kind in ("cycles", "instructions") and clock > 0:
        # QEMU counts instructions: at one instruction per cycle that is the latency's lower bound
        summary["mean_latency_ms"] = float(counter.mean() / clock * 1000.0)
        summary["latency_basis"] = (
            "cycles at the board clock"
            if counter_kind == "cycles"
            else "instructions at 1 per cycle at the board clock"
        )
        summary["counter_per_mac"] = float(counter.sum() / max(macs.sum(), 1.0))
    summary.update(modelled_cycles_summary(recs, clock, outcome.header.get("cycle_model")))
    v2 = all(r.get("gate_macs") is not None for r in recs)
    summary.update(
        skip_summary(
            ref,
            seqs,
            np.array([r["gate_macs"] for r in recs], dtype=np.int64) if v2 else None,
            macs.astype(np.int64),
            cycles_unit=bool(outcome.header.get("cycles_unit")),
        )
    )
    schedule = outcome.header.get("schedule")
    if schedule:
        summary["per_budget"] = per_budget_summary(recs, labels, schedule)
    return summary


def per_budget_summary(
    recs: list[dict[str, Any]], labels: np.ndarray, schedule: list[list[Any]]
) -> list[dict[str, Any]]:
    """Accuracy, mean MACs and exits of the images run under each budget of a schedule."""
    out = []
    for unit, budget in sorted({(u, int(b)) for u, b in schedule}):
        slots = {k for k, (u, b) in enumerate(schedule) if (u, int(b)) == (unit, budget)}
        rows = [j for j, r in enumerate(recs) if int(r["seq"]) % len(schedule) in slots]
        if not rows:
            continue
        out.append(
            {
                "budget_unit": unit,
                "budget": budget,
                "images": len(rows),
                "accuracy": float(np.mean([recs[j]["class"] == labels[j] for j in rows])),
                "mean_macs": float(np.mean([recs[j]["macs"] for j in rows])),
                "exit_histogram": np.bincount([recs[j]["exit"] for j in rows]).tolist(),
            }
        )
    return out


def modelled_cycles_summary(
    recs: list[dict[str, Any]], clock_hz: int, model: dict[str, Any] | None
) -> dict[str, Any]:
    """Mean modelled cycles, CPI and latency at the board clock of the records that carry them
    (tinydyn.host.cycles); empty when none does. Every key says 'modelled'."""
    have = [r for r in recs if "cycles_modelled" in r]
    if not have:
        return {}
    cyc = np.array([r["cycles_modelled"] for r in have], dtype=np.float64)
    ins = np.array([r["cycle_model_insns"] for r in have], dtype=np.float64)
    macs = np.array([r["macs"] for r in have], dtype=np.float64)
    out: dict[str, Any] = {
        "cycles_kind": "modelled",
        "cycle_model": model,
        "cycles_modelled_images": len(have),
        "mean_cycles_modelled": float(cyc.mean()),
        "min_cycles_modelled": int(cyc.min()),
        "max_cycles_modelled": int(cyc.max()),
        "modelled_cpi": float(cyc.sum() / max(ins.sum(), 1.0)),
        "cycles_modelled_per_mac": float(cyc.sum() / max(macs.sum(), 1.0)),
        "mean_cycle_model_insns": float(ins.mean()),
    }
    if clock_hz > 0:
        out["mean_latency_modelled_ms"] = float(cyc.mean() / clock_hz * 1000.0)
    counted = [r for r in have if r.get("counter_kind") == "instructions"]
    if counted:
        # the board's count spans the two timer reads around td_infer: a few more than td_infer's
        gap = np.array([r["counter"] - r["cycle_model_insns"] for r in counted], dtype=np.int64)
        out["counter_minus_model_insns"] = [int(gap.min()), int(gap.max())]
    return out


def summary_lines(s: dict[str, Any]) -> list[str]:
    hist = " ".join(f"exit{i}:{k}" for i, k in enumerate(s["exit_histogram"]))
    ref_hist = " ".join(f"exit{i}:{k}" for i, k in enumerate(s["reference_exit_histogram"]))
    unit = {"macs": "MACs", "energy": "nJ (modelled)", "cycles": "cycles"}.get(s.get("budget_unit") or "macs")
    threshold = f"{s['threshold']:,.0f} {unit}" if s["policy"] == "budget" else f"{s['threshold']:g}"
    lines = [
        f"board                  {s['board']}  (model {s['model']} {s['model_id']})",
        *([f"dataset                {s['dataset_note']}"] if s.get("dataset_note") else []),
        f"images                 {s['images']}  (policy {s['policy']}, threshold {threshold})",
        f"accuracy board         {100 * s['accuracy']:.2f}%   "
        f"(reference {100 * s['reference_accuracy']:.2f}%)",
        f"agreement w/ reference {100 * s['agreement']:.2f}%   ({s['mismatches']} mismatches; "
        f"class agreement {100 * s['class_agreement']:.2f}%)",
        f"exit histogram         {hist}   (reference {ref_hist})",
        *([f"exit rule              {s['threshold_note']}"] if s.get("threshold_note") else []),
        f"mean executed MACs     {s['mean_macs']:,.0f}   (static {s['static_backbone_macs']:,}: "
        f"{s['mac_reduction']:.2f}x fewer)",
        f"skipped per image      {s['mean_skipped_blocks']:.2f} blocks, "
        f"{s['mean_skipped_channels']:.1f} channels",
    ]
    if "mean_latency_ms" in s:
        lines.append(
            f"mean {s['counter_kind']:<17} {s['mean_counter']:,.0f}   (measured"
            + (", exact under QEMU -icount" if s["counter_kind"] == "instructions" else "")
            + f"; {s['counter_per_mac']:.2f} per MAC; "
            f"min {s['min_counter']:,}, max {s['max_counter']:,})"
        )
        lines.append(
            f"mean latency           {s['mean_latency_ms']:.2f} ms   ({s['latency_basis']}, "
            f"{s['clock_hz'] / 1e6:g} MHz)"
        )
    if "mean_cycles_modelled" in s:
        partial = (
            "" if s["cycles_modelled_images"] == s["images"] else f" of {s['cycles_modelled_images']} images"
        )
        lines.append(
            f"mean cycles (modelled) {s['mean_cycles_modelled']:,.0f}{partial}   (Cortex-M4 cycle model: "
            f"CPI {s['modelled_cpi']:.3f}, {s['cycles_modelled_per_mac']:.2f} per MAC; "
            f"min {s['min_cycles_modelled']:,}, max {s['max_cycles_modelled']:,})"
        )
        if "mean_latency_modelled_ms" in s:
            lines.append(
                f"latency (modelled)     {s['mean_latency_modelled_ms']:.2f} ms   "
                f"(modelled cycles at {s['clock_hz'] / 1e6:g} MHz)"
            )
    if "layer_skip_ratio" in s:
        lines += skip_lines(s)
    for b in s.get("per_budget", []):
        lines.append(
            f"budget {b['budget']:>12,} {b['budget_unit']:<6} {b['images']} images, accuracy "
            f"{100 * b['accuracy']:.2f}%, mean MACs {b['mean_macs']:,.0f}, exits {b['exit_histogram']}"
        )
    if s["energy_kind"] != "none":
        check = s.get("energy_model_agreement")
        lines.append(
            f"energy ({s['energy_kind']:<8})      {s['mean_energy_uj']:,.1f} uJ per image, "
            f"mean power {s['mean_power_mw']:.2f} mW"
            + ("" if check is None else f"   (host energy model agrees on {100 * check:.1f}%)")
        )
    sess = s["session"]
    if sess["images"]:
        lines.append(
            f"link (this session)    {sess['images_per_s']:.1f} img/s, image payload "
            f"{sess['payload_bytes_per_s'] / 1000:.1f} kB/s of "
            f"{sess['wire_bytes_per_s'] / 1000:.1f} kB/s on the wire "
            f"({sess['retries']} retries)"
        )
    return lines
