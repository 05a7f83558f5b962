"""Checks that tie every FPGA artefact to the models it came from.

* export: QONNX (qonnx ``execute_onnx``) vs the Brevitas stage; the stage itself equals the
  trained model with gates forced open (checked exactly on the same images);
* integer: QONNX classes vs the integer reference executor on the gate-open stage IR;
* hardware graph: finn-plus's python execution of the HW-layer graph gives the head's integer
  accumulators; finished as the PS does, they must match QONNX to one int16 logit step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinydyn.hw.export import ExportedStage, ExportError, forced_open, run_qonnx, torch_logits
from tinydyn.ir import IRModel
from tinydyn.models.lcnet import LCNet
from tinydyn.quantize.executor import execute, requantize
from tinydyn.quantize.policy import ExitPolicy

ATOL = 1e-5
MIN_AGREEMENT = 0.98  # float-tie rounding at a quantiser boundary may flip a rare image
# Share of images that must match to ATOL: a wrong export differs on (nearly) every image, a
# float tie on a quantiser boundary only on some (more of them for random weights/images).
MIN_ATOL_SHARE = 0.5


def agrees(count: int, n: int) -> bool:
    """Class agreement on all but 2 % of the images (at least one image may differ)."""
    return count >= n - max(1, int((1 - MIN_AGREEMENT) * n))


@dataclass
class StageCheck:
    images: int
    qonnx_vs_brevitas_max_abs: float
    qonnx_vs_brevitas_within_atol: int  # images whose every logit is within ATOL
    qonnx_class_vs_brevitas: int
    stage_vs_gates_open_max_abs: float  # the exported stage vs the trained model, gates open
    stage_vs_gates_open_within_atol: int  # all but GAP rounding ties (half-even vs half-up)
    qonnx_class_vs_integer: int  # images where QONNX and the integer reference agree
    # finn-plus python execution of the HW graph, logits finished as the PS does (integer head)
    hw_python_vs_qonnx_max_lsb: float = -1.0  # in int16 logit steps
    hw_python_within_1acc: int = -1  # within one accumulator unit (+1 logit step) of QONNX
    hw_python_class_vs_qonnx: int = -1
    hw_python_class_vs_integer: int = -1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_export(model: LCNet, stage: ExportedStage, stage_ir: IRModel, images: np.ndarray) -> StageCheck:
    qonnx = run_qonnx(stage.path, images)
    brevitas = torch_logits(stage.module, images)
    with torch.no_grad(), forced_open(model):
        full = model(torch.from_numpy(images.astype(np.float32) / 255.0))
    gates_open = full.logits[stage.spec.index].numpy()
    diff = np.abs(qonnx - brevitas).max(axis=1)
    reference = execute(stage_ir, images, ExitPolicy("none"))
    check = StageCheck(
        images=len(images),
        qonnx_vs_brevitas_max_abs=float(diff.max()),
        qonnx_vs_brevitas_within_atol=int((diff <= ATOL).sum()),
        qonnx_class_vs_brevitas=int((qonnx.argmax(axis=1) == brevitas.argmax(axis=1)).sum()),
        stage_vs_gates_open_max_abs=float(np.abs(brevitas - gates_open).max()),
        stage_vs_gates_open_within_atol=int((np.abs(brevitas - gates_open).max(axis=1) <= ATOL).sum()),
        qonnx_class_vs_integer=int((qonnx.argmax(axis=1) == reference.predictions).sum()),
    )
    if check.stage_vs_gates_open_within_atol < MIN_ATOL_SHARE * len(images):
        raise ExportError(
            f"{stage.spec.name} differs from the gate-open model on "
            f"{len(images) - check.stage_vs_gates_open_within_atol}/{len(images)} images: "
            "the stage rebuild is wrong (report this bug)"
        )
    # float32 evaluation order differs between torch and onnxruntime: an activation exactly on a
    # quantiser's rounding boundary may land one step apart (and move the int16 logits by tens of
    # their tiny steps), so demand ATOL on most images and the same class on (nearly) all
    if (
        check.qonnx_vs_brevitas_within_atol < MIN_ATOL_SHARE * len(images)
        or not agrees(check.qonnx_class_vs_brevitas, len(images))
        or not agrees(check.qonnx_class_vs_integer, len(images))
    ):
        raise ExportError(
            f"{stage.spec.name}: QONNX export does not match (within 1e-5 on "
            f"{check.qonnx_vs_brevitas_within_atol}/{len(images)} images, class = integer reference on "
            f"{check.qonnx_class_vs_integer}/{len(images)}): check the brevitas/qonnx versions"
        )
    return check


def head_arrays(stage_ir: IRModel) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(bias, mult, shift, logit scale) of the stage's (only, final) head."""
    final = stage_ir.exits()[-1]
    fc = final.then[0]
    scale = stage_ir.tensors[final.attrs["logits"]].scale
    return stage_ir.array(fc, "bias"), stage_ir.array(fc, "mult"), stage_ir.array(fc, "shift"), scale


def finish_logits(acc: np.ndarray, stage_ir: IRModel) -> np.ndarray:
    """What the PS computes from the stage's accumulators (td_fpga_logit)."""
    bias, mult, shift, _ = head_arrays(stage_ir)
    total = acc.astype(np.int64) + bias.astype(np.int64)
    return requantize(total, np.ones_like(total), mult, shift, (-32768, 32767))


def run_hw_python(hw_model_path: Path, images: np.ndarray) -> np.ndarray:
    """Head accumulators from finn-plus's python execution of the HW-layer graph."""
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    wrapper = ModelWrapper(str(hw_model_path))
    iname, oname = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    outs = [execute_onnx(wrapper, {iname: img[None].astype(np.float32)})[oname] for img in images]
    acc = np.concatenate(outs).reshape(len(images), -1)
    if not np.array_equal(acc, np.round(acc)):
        raise ExportError(f"{hw_model_path.name}: HW graph output is not integer: the head was not cut")
    return np.round(acc).astype(np.int64)


def check_hw_python(
    check: StageCheck, hw_model_path: Path, stage: ExportedStage, stage_ir: IRModel, images: np.ndarray
) -> np.ndarray:
    """The HW graph computes the Brevitas (float-join) arithmetic, so its finished logits are
    compared with QONNX to one accumulator step (the PS's integer bias rounding) on most
    images (thresholds round ties up where Quant rounds them to even: see check_export), and
    its classes with both QONNX and the integer reference."""
    acc = run_hw_python(hw_model_path, images)
    logits = finish_logits(acc, stage_ir)
    scale = head_arrays(stage_ir)[3]
    qonnx = run_qonnx(stage.path, images)
    lsb_all = np.abs(np.round(qonnx / scale) - logits)
    lsb = lsb_all.max(axis=1)
    # the PS's integer bias is rounded to the accumulator grid: one accumulator unit is
    # mult / 2**shift logit steps (often several: int16 logits have a fine scale)
    _, mult, shift, _ = head_arrays(stage_ir)
    per_acc = mult.astype(np.float64) / 2.0 ** shift.astype(np.float64)
    close = (lsb_all <= per_acc[None, :] + 1).all(axis=1)
    reference = execute(stage_ir, images, ExitPolicy("none"))
    check.hw_python_vs_qonnx_max_lsb = float(lsb.max())
    check.hw_python_within_1acc = int(close.sum())
    check.hw_python_class_vs_qonnx = int((logits.argmax(axis=1) == qonnx.argmax(axis=1)).sum())
    check.hw_python_class_vs_integer = int((logits.argmax(axis=1) == reference.predictions).sum())
    n = len(images)
    if check.hw_python_within_1acc < MIN_ATOL_SHARE * n or not agrees(check.hw_python_class_vs_qonnx, n):
        raise ExportError(
            f"{stage.spec.name}: the HW-layer graph does not compute the exported model (within one "
            f"accumulator step on {check.hw_python_within_1acc}/{n} images, same class on "
            f"{check.hw_python_class_vs_qonnx}/{n}): streamlining changed the arithmetic"
        )
    return acc
