"""The FPGA build summary: per-partition resources and throughput, early exit vs static, fit."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tinydyn.errors import TinydynError
from tinydyn.hw.boards import FpgaBoard
from tinydyn.hw.flow import StageEstimate

FIT_KEYS = ("LUT", "BRAM_18K", "DSP")  # what finn-plus estimates (no FF model)


class DoesNotFitError(TinydynError):
    """The dataflow design needs more of the FPGA than the part has."""


@dataclass
class StageRow:
    """One dataflow partition (backbone segment or exit head) of stage ``stage``."""

    name: str
    stage: int
    kind: str  # "segment" (exit heads run on the PS)
    reach: float  # fraction of images that reach this partition's stage
    target_fps: float
    resources: dict[str, float]
    max_cycles: int
    latency_cycles: int
    fps: float  # images/s this stage alone sustains
    check: dict[str, Any] = field(default_factory=dict)
    # what ``resources`` (the total) is made of: finn-plus's layers, DWCs, FIFOs, layers finn-plus
    # does not estimate, IODMAs (tinydyn.hw.resources)
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)
    # MACs per image: fabric (finn-plus's count), reference_new, reference_to_exit (hw.build.stage_macs)
    macs: dict[str, int] = field(default_factory=dict)


@dataclass
class FpgaReport:
    board: str
    part: str
    clock_mhz: float
    policy: str
    threshold: float
    calibration_images: int
    stages: list[StageRow]
    total: dict[str, float]
    available: dict[str, int]
    utilisation: dict[str, float]
    fits: bool
    early_exit_fps: float
    static_fps: float
    static_resources: dict[str, float]
    static_target_fps: float
    speedup: float
    accuracy: dict[str, float]
    notes: list[str]
    target_fps: float = 0.0  # images/s the design was folded for (segment k: × reach_k)
    target_search: list[dict[str, Any]] = field(default_factory=list)  # automatic search attempts
    schedule: dict[str, Any] = field(default_factory=dict)  # tinydyn.hw.schedule.schedule_figures
    exit_table: list[dict[str, Any]] = field(default_factory=list)  # per exit: share, accuracy
    eval_images: int = 0
    out_dir: str = ""
    shell: dict[str, float] = field(default_factory=dict)  # Zynq shell, once per design (in total)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, out_dir: Path) -> None:
        (out_dir / "report.json").write_text(json.dumps(self.to_json(), indent=2))
        (out_dir / "report.txt").write_text(self.text() + "\n")

    def breakdown_lines(self) -> list[str]:
        """LUT/BRAM18/DSP by category, summed over partitions, and the shell."""
        if not any(s.breakdown for s in self.stages):
            return []
        cats: dict[str, dict[str, float]] = {}
        for s in self.stages:
            for name, res in s.breakdown.items():
                if name == "skip_fifos":
                    continue
                into = cats.setdefault(name, {})
                for k, v in res.items():
                    into[k] = into.get(k, 0.0) + v
        cats["shell"] = self.shell
        return [
            f"  {name:<12}{r.get('LUT', 0):>14.0f}{r.get('BRAM_18K', 0):>8.0f}{r.get('DSP', 0):>6.0f}"
            for name, r in cats.items()
        ]

    def macs_lines(self) -> list[str]:
        """What each partition computes against what the integer reference counts."""
        if not any(s.macs for s in self.stages):
            return []
        return [
            "MACs per image (fabric: finn-plus's count of what the partition computes / integer reference: "
            "what this stage adds / an image leaving here): "
            + "; ".join(
                f"{s.name} {m['fabric']:,} / {m['reference_new']:,} / {m['reference_to_exit']:,}"
                for s in self.stages
                if (m := s.macs)
            )
        ]

    def schedule_lines(self) -> list[str]:
        if not self.schedule:
            ee, st = self.early_exit_fps, self.static_fps
            return [f"throughput: early exit {ee:.0f} img/s vs static {st:.0f} img/s"]
        return _schedule_text(self.schedule, self.static_resources.get("LUT", 0.0))

    def text(self) -> str:
        head = f"{'part':<8}{'reach':>7}{'target':>8}{'LUT':>9}{'BRAM18':>8}{'DSP':>6}{'II cyc':>9}"
        head += f"{'lat cyc':>10}{'fps':>10}{'fps/reach':>11}"
        rows = [
            f"{s.name:<8}{s.reach:>7.1%}{s.target_fps:>8.0f}{s.resources.get('LUT', 0):>9.0f}"
            f"{s.resources.get('BRAM_18K', 0):>8.0f}{s.resources.get('DSP', 0):>6.0f}"
            f"{s.max_cycles:>9}{s.latency_cycles:>10}{s.fps:>10.0f}{s.fps / max(s.reach, 1e-9):>11.0f}"
            for s in self.stages
        ]
        t = self.total
        search = ""
        if len(self.target_search) > 1:
            search = (
                " (automatic search: "
                + ", ".join(
                    f"{a['target_fps']:.0f}{' fits' if a['fits'] else ' over'}" for a in self.target_search
                )
                + ")"
            )
        exits = [
            f"  exit {e['exit']}: FPGA model {e['fpga_share']:.1%} leave, {e['fpga_accuracy']:.2%} correct"
            + (
                f"; dynamic model {e['dynamic_share']:.1%} leave, {e['dynamic_accuracy']:.2%} correct"
                if "dynamic_share" in e
                else ""
            )
            for e in self.exit_table
        ]
        lines = [
            f"FPGA build for {self.board} ({self.part}, {self.clock_mhz:.0f} MHz), "
            f"exit policy {self.policy} {self.threshold:g}, reach on {self.eval_images} validation images, "
            f"accuracy on {self.eval_images} test images; "
            f"folded for {self.target_fps:.0f} img/s{search}",
            head,
            *rows,
            *self.breakdown_lines(),
            f"{'total':<8}{'':>15}{t.get('LUT', 0):>9.0f}{t.get('BRAM_18K', 0):>8.0f}{t.get('DSP', 0):>6.0f}"
            "  (everything: layers, DWCs, FIFOs, unestimated layers, IODMAs, shell)",
            "available: "
            + ", ".join(f"{k} {self.available[k]} ({self.utilisation.get(k, 0):.0%} used)" for k in FIT_KEYS),
            f"fits {self.part}: {'yes' if self.fits else 'NO'}",
            *self.macs_lines(),
            *self.schedule_lines(),
            "accuracy: " + (", ".join(f"{k} {v:.2%}" for k, v in self.accuracy.items()) or "no labels"),
            *exits,
            *(f"note: {n}" for n in self.notes),
        ]
        return "\n".join(lines)


def _schedule_text(sched: dict[str, Any], static_lut: float) -> list[str]:
    ee, st, lat = sched["early_exit"], sched["static"], sched["single_image_us"]
    costs = sched["costs"]
    per_exit = ", ".join(f"exit {k} {v:.0f}" for k, v in enumerate(lat["per_exit"][:-1]))
    return [
        f"throughput (modelled: the PS controller's pipelined schedule, batches of {sched['batch']}, "
        f"PS {costs['setup']:.0f} cycles per run set-up, {costs['decide']:.0f} per decision, "
        f"{costs['copy_per_byte']:g} per byte compacted, exit heads in software "
        f"{costs.get('head_per_byte', 0):g} per feature byte + {costs.get('head_per_mac', 0):g} per MAC, "
        f"cache maintenance {costs.get('cache_per_byte', 0):g} per DMA byte): "
        f"early exit {ee['fps']:.0f} img/s "
        f"(simulated on the measured exits: {ee['simulated_fps']:.0f}; "
        f"fabric bound {ee['fabric_bound_fps']:.0f}; "
        f"PS busy {ee['ps_work_cycles'] / ee['period_cycles']:.0%} of a round) vs static whole network "
        f"{st['fps']:.0f} img/s at <= the same resources (LUT {static_lut:.0f}): x{sched['speedup']:.2f}",
        f"worst case (every image reaches the end): {ee['worst_case_fps']:.0f} img/s "
        f"(x{sched['worst_case_speedup']:.2f} the static design)",
        f"single-image latency (batch of one): {per_exit}{', ' if per_exit else ''}"
        f"final {lat['worst']:.0f} us, "
        f"mean {lat['mean']:.0f} us; static {lat['static']:.0f} us",
    ]


def stage_row(
    est: StageEstimate, stage: int, kind: str, reach: float, clock_mhz: float, check: dict[str, Any]
) -> StageRow:
    from tinydyn.hw.resources import with_extras

    return StageRow(
        name=est.name,
        stage=stage,
        kind=kind,
        reach=reach,
        target_fps=est.target_fps,
        resources=with_extras(est.resources, est.extras) if est.extras else est.resources,
        breakdown={"layers": dict(est.resources), **est.extras},
        max_cycles=est.max_cycles,
        latency_cycles=est.critical_path_cycles,
        fps=est.fps(clock_mhz),
        check=check,
    )


def early_exit_fps(rows: list[StageRow]) -> float:
    """All partitions sit in the fabric at once; segment k and head k see the fraction ``reach_k``
    of the images, so the mean rate is limited by the partition with the least headroom
    (PS overhead and DDR traffic ignored)."""
    return min(row.fps / max(row.reach, 1e-9) for row in rows)


def totals(rows: list[StageRow], shell: dict[str, float] | None = None) -> dict[str, float]:
    """The design's total: every partition (everything it instantiates) and the Zynq shell."""
    shell = shell or {}
    keys = sorted({k for row in rows for k in row.resources} | set(shell))
    return {k: sum(row.resources.get(k, 0.0) for row in rows) + shell.get(k, 0.0) for k in keys}


def fits_within(resources: dict[str, float], budget: dict[str, float]) -> bool:
    return all(resources.get(k, 0.0) <= budget.get(k, 0.0) + 1e-9 for k in FIT_KEYS)


def check_fit(report: FpgaReport, board: FpgaBoard) -> None:
    if report.fits:
        return
    over = [
        f"{k} {report.total.get(k, 0):.0f}/{board.resources[k]}"
        for k in FIT_KEYS
        if report.total.get(k, 0) > board.resources[k]
    ]
    verdict = report.target_search[-1].get("verdict", "") if report.target_search else ""
    if verdict:  # the automatic search already tried lower rates
        raise DoesNotFitError(
            f"the dataflow design does not fit the {board.part} ({', '.join(over)}); automatic search: "
            f"{verdict}: use a smaller model (or --allow-overfit to write the report anyway)"
        )
    raise DoesNotFitError(
        f"the dataflow design does not fit the {board.part} ({', '.join(over)}): lower --target-fps "
        "(or leave it out: automatic search) or use a smaller model"
    )
