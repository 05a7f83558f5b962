"""finn-plus front end for one partition: the DataflowBuildConfig, the step list, and reading back
FINN's estimate reports. The Vivado part (IP generation → one design → bitfile → deploy) resumes
from the saved intermediate models (:mod:`tinydyn.hw.finish`).
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinydyn.errors import TinydynError
from tinydyn.hw.boards import FpgaBoard
from tinydyn.hw.steps import (
    step_tinydyn_check_mapped,
    step_tinydyn_cut_tail,
    step_tinydyn_global_pool,
    step_tinydyn_streamline_forks,
    step_tinydyn_threshold_memory,
)

FRONT_END_STEPS: list[Any] = [
    "step_qonnx_to_finn",
    "step_tidy_up",
    "step_streamline",
    step_tinydyn_streamline_forks,
    step_tinydyn_global_pool,
    step_tinydyn_cut_tail,
    "step_convert_to_hw",
    "step_minimize_bit_width_initial",
    step_tinydyn_check_mapped,
    "step_create_dataflow_partition",
    "step_specialize_layers",
    "step_target_fps_parallelization",
    "step_apply_folding_config",
    step_tinydyn_threshold_memory,
    "step_minimize_bit_width",
    "step_generate_estimate_reports",
]
CODEGEN_STEP = "step_hw_codegen"


class FinnBuildError(TinydynError):
    """finn-plus could not map or estimate a stage."""


class UnsupportedLayerError(FinnBuildError):
    """A layer finn-plus has no hardware form for."""


@dataclass
class StageEstimate:
    """FINN's analytical estimates for one dataflow partition."""

    name: str
    target_fps: float
    resources: dict[str, float]  # LUT, FF, BRAM_18K, DSP, URAM (totals)
    max_cycles: int  # cycles of the slowest layer = initiation interval per image
    critical_path_cycles: int  # latency of one image through the pipeline
    layer_cycles: dict[str, int] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    float_layers: list[str] = field(default_factory=list)
    extras: dict[str, dict[str, float]] = field(default_factory=dict)  # tinydyn.hw.resources

    def fps(self, clock_mhz: float) -> float:
        return clock_mhz * 1e6 / max(self.max_cycles, 1)


def step_name(step: Any) -> str:
    return step if isinstance(step, str) else step.__name__


def make_config(
    board: FpgaBoard, out_dir: Path, target_fps: float, steps: list[Any], verify: tuple[Path, Path] | None
) -> Any:
    from finn.builder.build_dataflow_config import (
        DataflowBuildConfig,
        DataflowOutputType,
        ShellFlowType,
        VerificationStepType,
    )

    extra: dict[str, Any] = {}
    if verify is not None:
        # FINN's own python checks of the QONNX→FINN conversion and the tidied graph
        extra = {
            "verify_steps": [VerificationStepType.QONNX_TO_FINN_PYTHON, VerificationStepType.TIDY_UP_PYTHON],
            "verify_input_npy": str(verify[0]),
            "verify_expected_output_npy": str(verify[1]),
        }
    return DataflowBuildConfig(
        output_dir=str(out_dir),
        board=board.finn_name,
        shell_flow_type=ShellFlowType.VIVADO_ZYNQ,
        synth_clk_period_ns=1000.0 / board.clock_mhz,
        target_fps=max(1, int(round(target_fps))),
        steps=steps,
        generate_outputs=[DataflowOutputType.ESTIMATE_REPORTS],
        save_intermediate_models=True,
        **extra,
    )


def run_front_end(
    build_dataflow: Any,
    board: FpgaBoard,
    model_path: Path,
    out_dir: Path,
    target_fps: float,
    codegen: bool,
    verify: tuple[Path, Path] | None = None,
    codegen_only: bool = False,
) -> StageEstimate:
    """Run finn-plus from QONNX to estimates (and HLS/RTL code generation) for one partition.

    ``codegen_only``: resume a finished estimate run at the code generation step."""
    steps = FRONT_END_STEPS + ([CODEGEN_STEP] if codegen or codegen_only else [])
    cfg = make_config(board, out_dir, target_fps, steps, verify)
    if codegen_only:
        cfg.start_step = CODEGEN_STEP
    start = time.time()
    # FINN swaps sys.stdout/stderr for loggers and adds handlers; give them back afterwards
    streams, root, flow_log = (
        (sys.stdout, sys.stderr),
        logging.getLogger(),
        logging.getLogger("build_dataflow"),
    )
    handlers, level, flow_handlers = list(root.handlers), root.level, list(flow_log.handlers)
    # FINN echoes every step to the console; it all stays in <stage>/build_dataflow.log
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
    try:
        code = build_dataflow.build_dataflow_cfg(str(model_path), cfg)
    except Exception as exc:  # noqa: BLE001 - FINN raises many types; all become one line
        raise _as_tinydyn_error(exc, model_path) from None
    finally:
        sys.stdout, sys.stderr = streams
        for handler in set(flow_log.handlers) - set(flow_handlers):
            handler.close()
        root.handlers[:], flow_log.handlers[:] = handlers, flow_handlers
        root.setLevel(level)
    if code != 0:
        raise _as_tinydyn_error(RuntimeError(_last_error(out_dir)), model_path)
    estimate = read_estimates(out_dir, model_path.stem, target_fps)
    estimate.step_seconds = _step_times(out_dir)
    estimate.step_seconds.setdefault("total_build_time", round(time.time() - start, 2))
    return estimate


def _as_tinydyn_error(exc: Exception, model_path: Path) -> TinydynError:
    text = " ".join(str(exc).split())
    if "unmapped layers" in text:
        text = text[text.index("unmapped layers") :]
    if "nmapped" in text or "not supported" in text.lower():
        return UnsupportedLayerError(
            f"finn-plus cannot map {model_path.stem} to hardware ({text[:200]}): "
            "the FPGA path maps conv/linear/ReLU/residual/concat/pool/GAP layers of the LC-Net, "
            "DDI and S2DNAS families only"
        )
    return FinnBuildError(f"finn-plus failed on {model_path.stem} ({text[:200]}): see build_dataflow.log")


def _last_error(out_dir: Path) -> str:
    log = out_dir / "build_dataflow.log"
    if not log.is_file():
        return "no build log"
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "ERROR" in ln or "rror:" in ln]
    return lines[-1] if lines else "unknown error"


def _step_times(out_dir: Path) -> dict[str, float]:
    path = out_dir / "report" / "time_per_step.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def read_estimates(out_dir: Path, name: str, target_fps: float) -> StageEstimate:
    report = out_dir / "report"
    try:
        resources = json.loads((report / "estimate_layer_resources.json").read_text())
        cycles = json.loads((report / "estimate_layer_cycles.json").read_text())
        perf = json.loads((report / "estimate_network_performance.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FinnBuildError(
            f"finn-plus wrote no estimate reports for {name} ({exc}): see {out_dir}"
        ) from None
    total = {k: float(v) for k, v in resources["total"].items()}
    return StageEstimate(
        name=name,
        target_fps=target_fps,
        resources=total,
        max_cycles=int(perf.get("max_cycles", max(cycles.values(), default=1))),
        critical_path_cycles=int(perf.get("critical_path_cycles", sum(cycles.values()))),
        layer_cycles={k: int(v) for k, v in cycles.items()},
    )
