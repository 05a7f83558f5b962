"""``build_fpga``: checkpoint → per-exit QONNX stages → finn-plus front end → report + package."""

from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tinydyn.hw.boards import get_board, register_with_finn
from tinydyn.hw.checks import check_export, check_hw_python, head_arrays
from tinydyn.hw.controller import StageHead, write_controller
from tinydyn.hw.export import GATES_NOTE, ExportError, export_stage, stage_lcnet, stage_specs
from tinydyn.hw.finn_shims import finn_version, load_finn
from tinydyn.hw.flow import run_front_end
from tinydyn.hw.package import write_package
from tinydyn.hw.report import FpgaReport, check_fit, early_exit_fps, fits_within, stage_row, totals
from tinydyn.models.checkpoint import load_model
from tinydyn.models.lcnet import LCNet
from tinydyn.quantize.executor import execute, static_macs
from tinydyn.quantize.lower import lower
from tinydyn.quantize.policy import ExitPolicy

STATIC_SWEEP = (0.6, 1.0, 1.6)  # static target fps tried, relative to the early-exit rate


def gate_open_model(model: LCNet) -> LCNet:
    """The whole model, exits included, with gates removed (salience 1): what the FPGA runs."""
    from tinydyn.models.lcnet import LCNetConfig

    cfg = LCNetConfig.from_json({**model.config.to_json(), "gates": False})
    net = LCNet(cfg)
    state = {k: v for k, v in model.state_dict().items() if ".lnet." not in k and ".cnet." not in k}
    net.load_state_dict(state, strict=False)
    return net.eval()


def reach_fractions(model: LCNet, images: np.ndarray, labels: np.ndarray | None, policy: ExitPolicy):
    """Fraction of images reaching each stage, and accuracies, from the integer reference."""
    ir = lower(gate_open_model(model))
    res = execute(ir, images, policy)
    n_stages = len(model.config.exits) + 1
    reach = [float((res.exits >= k).mean()) for k in range(n_stages)]
    acc = {}
    if labels is not None:
        acc["early exit"] = float((res.predictions == labels).mean())
        static = execute(ir, images, ExitPolicy("none"))
        acc["static"] = float((static.predictions == labels).mean())
    return reach, acc, ir


def default_images(model: LCNet, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Fashion-MNIST test images for a 1×28×28 model; random images otherwise."""
    cfg = model.config
    if (cfg.in_channels, cfg.input_size) == (1, 28):
        try:
            from tinydyn.data import load_dataset

            ds = load_dataset("fashion-mnist", "test")
            return ds.images[:count], np.asarray(ds.labels[:count])
        except Exception:  # noqa: BLE001 - no dataset: fall back to random images, labelled so
            pass
    rng = np.random.default_rng(seed)
    return rng.integers(
        0, 256, (count, cfg.in_channels, cfg.input_size, cfg.input_size), dtype=np.uint8
    ), None


def build_fpga(
    checkpoint: Path | None,
    board: str,
    out_dir: Path,
    *,
    model: LCNet | None = None,
    target_fps: float = 2000.0,
    policy: ExitPolicy | None = None,
    calibration_images: int = 1000,
    check_images: int = 20,
    codegen: bool = True,
    static_sweep: tuple[float, ...] = STATIC_SWEEP,
    allow_overfit: bool = False,
    progress: Callable[[str], None] = print,
) -> FpgaReport:
    """Build the FPGA front end for a checkpoint (or ``model``); see docs/FPGA.md."""
    fpga = get_board(board)
    policy = policy or ExitPolicy("confidence", 0.9)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.time()
    warnings.filterwarnings("ignore", module="brevitas")
    build_dataflow = load_finn(out_dir)  # fails first, with the fix, when finn-plus is missing
    register_with_finn(fpga)
    if model is None:
        model, _ = load_model(checkpoint)
    model.eval()
    progress(f"fpga: {GATES_NOTE}")

    images, labels = default_images(model, calibration_images)
    reach, accuracy, _ = reach_fractions(model, images, labels, policy)
    timings["calibration"] = round(time.time() - start, 2)
    progress("fpga: images reaching each stage: " + ", ".join(f"{r:.1%}" for r in reach))

    rows, heads, stage_meta, checks_json = [], [], [], {}
    probe = images[:check_images]
    cfg = model.config
    for spec, frac in zip(stage_specs(cfg), reach, strict=True):
        t0 = time.time()
        stage_dir = out_dir / "stages" / spec.name
        exported = export_stage(model, spec, stage_dir / "model.onnx")
        stage_ir = lower(stage_lcnet(model, spec), name=spec.name)
        check = check_export(model, exported, stage_ir, probe)
        np.save(stage_dir / "verify_input.npy", probe[:1].astype(np.float32))
        from tinydyn.hw.export import run_qonnx

        np.save(stage_dir / "verify_expected.npy", run_qonnx(exported.path, probe[:1]))
        stage_fps = max(target_fps * frac, 1.0)  # later stages folded for the images that reach them
        progress(f"fpga: {spec.name}: finn-plus front end (target {stage_fps:.0f} img/s)")
        est = run_front_end(
            build_dataflow,
            fpga,
            exported.path,
            stage_dir,
            stage_fps,
            codegen,
            (stage_dir / "verify_input.npy", stage_dir / "verify_expected.npy"),
        )
        est.name = spec.name
        hw_graph = stage_dir / "intermediate_models" / "step_convert_to_hw.onnx"
        check_hw_python(check, hw_graph, exported, stage_ir, probe)
        bias, mult, shift, scale = head_arrays(stage_ir)
        heads.append(
            StageHead(
                spec.name,
                bias,
                mult,
                shift,
                scale,
                out_bits=_acc_bits(stage_dir),
                in_bytes=cfg.in_channels * cfg.input_size**2,
                macs=static_macs(stage_ir),
            )
        )
        rows.append(stage_row(est, frac, fpga.clock_mhz, check.to_json()))
        stage_meta.append({"name": spec.name, "target_fps": stage_fps, "last_block": spec.last_block})
        checks_json[spec.name] = check.to_json()
        timings[spec.name] = round(time.time() - t0, 2)

    # static baseline: the whole network as one partition, folded as fast as the same budget allows
    t0 = time.time()
    total = totals(rows)
    ee_fps = early_exit_fps(rows)
    final = out_dir / "stages" / rows[-1].name / "model.onnx"
    best = None
    for factor in static_sweep:
        est = run_front_end(
            build_dataflow, fpga, final, out_dir / "static" / f"x{factor:g}", ee_fps * factor, False
        )
        if fits_within(est.resources, total) and (
            best is None or est.fps(fpga.clock_mhz) > best.fps(fpga.clock_mhz)
        ):
            best = est
    timings["static_sweep"] = round(time.time() - t0, 2)
    static_fps = best.fps(fpga.clock_mhz) if best else 0.0
    util = {k: total.get(k, 0.0) / v for k, v in fpga.resources.items() if k != "FF"}
    report = FpgaReport(
        board=fpga.name,
        part=fpga.part,
        clock_mhz=fpga.clock_mhz,
        policy=policy.kind,
        threshold=policy.threshold,
        calibration_images=len(images),
        stages=rows,
        total=total,
        available=fpga.resources,
        utilisation=util,
        fits=fits_within(total, {k: float(v) for k, v in fpga.resources.items()}),
        early_exit_fps=ee_fps,
        static_fps=static_fps,
        static_resources=best.resources if best else {},
        static_target_fps=best.target_fps if best else 0.0,
        speedup=ee_fps / static_fps if static_fps else float("inf"),
        accuracy=accuracy,
        notes=[
            GATES_NOTE,
            "residual joins run in float32 (finn-plus ElementwiseMul/Add): trained branch scales differ",
            "each stage recomputes the backbone from the input; the PS finishes the head logits in integers",
            "finn-plus estimates have no FF model and exclude the Zynq shell and IODMAs",
        ],
        out_dir=str(out_dir),
    )
    ps_dir = write_controller(
        out_dir / "ps",
        heads,
        _model_id(model),
        fpga.name,
        (cfg.in_channels, cfg.input_size, cfg.input_size),
        cpu_hz=667_000_000,
    )
    script = write_package(out_dir, fpga, stage_meta)
    timings["total"] = round(time.time() - start, 2)
    (out_dir / "run.json").write_text(
        json.dumps(
            {
                "steps_run": {r.name: list(_steps(out_dir / "stages" / r.name)) for r in rows},
                "checks": checks_json,
                "versions": _versions(),
                "timings_s": timings,
                "ran_here": "finn-plus front end: streamline, HW layers, folding, estimates"
                + (", HLS/RTL code generation" if codegen else ""),
                "needs_vivado": f"{script.name}: IP generation, stitching, synthesis, bitfile, deploy",
                "ps_controller": str(ps_dir),
            },
            indent=2,
        )
    )
    report.save(out_dir)
    if not allow_overfit:
        check_fit(report, fpga)
    return report


def _acc_bits(stage_dir: Path) -> int:
    """Width of the head accumulator stream (after finn-plus minimised it)."""
    try:
        from qonnx.core.modelwrapper import ModelWrapper

        path = stage_dir / "intermediate_models" / "step_minimize_bit_width.onnx"
        wrapper = ModelWrapper(str(path))
        return int(wrapper.get_tensor_datatype(wrapper.graph.output[0].name).bitwidth())
    except Exception:  # noqa: BLE001 - a missing model means the flow changed: fall back to int32
        return 32


def _steps(stage_dir: Path) -> dict[str, float]:
    path = stage_dir / "report" / "time_per_step.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _model_id(model: LCNet) -> str:
    import hashlib

    digest = hashlib.sha256(json.dumps(model.config.to_json(), sort_keys=True).encode())
    for value in model.state_dict().values():
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


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
