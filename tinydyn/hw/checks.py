"""Checks that tie every FPGA partition to the models it came from.

Every partition is fed the *integer reference's* tensor at its input (the pixels, or the uint8
feature map the previous segment produced in the integer IR of the same static model), so each
partition is checked on its own, errors cannot compound, and the result says which one is off:

* export: QONNX (qonnx ``execute_onnx``) vs the Brevitas partition;
* integer: a segment's uint8 feature map vs the integer reference's tensor; a head's classes vs
  the integer reference's logits;
* hardware graph: finn-plus's python execution of the HW-layer graph (``step_convert_to_hw``):
  a segment's streamed integers vs QONNX and the integer reference; a head's accumulators,
  finished as the PS does, vs QONNX to one accumulator step.

The FPGA computes the Brevitas/QONNX arithmetic (float BN folded into thresholds, float32
residual joins): the HW graph must equal QONNX on (nearly) every element; where torch's and
onnxruntime's float32 orders put a value on the other side of a rounding boundary, that step
feeds the rest of the segment (seen: 2 steps on 0.01 % of a segment's elements). The
integer reference differs from that arithmetic by design: it rounds the folded BN bias to the
accumulator grid and the scale ratios to 23-bit multipliers and rounds half up (Brevitas rounds
ties to even), so a value within ~1e-3 of a rounding boundary lands one step apart (measured on
the bundled model: 0.01 % of a block's first activation, 0.2 % of a residual join's output, given
identical inputs). Inside one segment such a one-step difference feeds the following layers, so
a segment with several requantisations (stem, conv1, join) may show two steps on a few elements:
demand at most one step per requantisation along the segment (``requantisations``: measured
on 20 images, seg0 of the bundled model: 98.7 % equal, max 3) and exact equality on
``MIN_INTEGER_EQUAL`` of the elements.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinydyn.hw.export import ExportedPartition, ExportError, output_scale, run_qonnx, torch_outputs
from tinydyn.ir import IRModel
from tinydyn.quantize.executor import _Run, requantize
from tinydyn.quantize.policy import ExitPolicy

ATOL = 1e-5
MIN_AGREEMENT = 0.98  # float-tie rounding at a quantiser boundary may flip a rare image
# Share of images that must match to ATOL: a wrong export differs on (nearly) every image, a
# float tie on a quantiser boundary only on some (more of them for random weights/images).
MIN_ATOL_SHARE = 0.5
# Feature maps: HW graph vs QONNX (same arithmetic) and QONNX vs Brevitas: equal but for rare
# float32 ties (and what they feed inside the segment); vs the integer reference: see above.
MIN_EQUAL_SHARE = 0.999
MIN_INTEGER_EQUAL = 0.97


def requantisations(spec) -> int:
    """Activation quantisers a segment's values pass through in sequence (stem, conv1, join)."""
    return int(spec.stem) + 2 * len(spec.blocks)


def agrees(count: int, n: int) -> bool:
    """Class agreement on all but 2 % of the images (at least one image may differ)."""
    return count >= n - max(1, int((1 - MIN_AGREEMENT) * n))


def reference_tensors(ir: IRModel, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the integer reference for ``images`` (no early exit), exit logits included."""
    run = _Run(ir, images, ExitPolicy("none").to_integer(ir))
    live = np.ones(len(images), dtype=bool)
    run.run_ops(ir.ops, live)
    for op in ir.exits():
        if op.attrs["logits"] not in run.env:  # early heads are skipped under policy none
            run.running[:] = True
            run.run_ops(op.then, live)
    return run.env


def head_arrays(ir: IRModel, head: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(bias, mult, shift, logit scale) of exit ``head`` ('final' or an exit-head key)."""
    exits = sorted(ir.exits(), key=lambda op: op.attrs["index"])
    exit_op = (
        exits[-1] if head == "final" else exits[sorted(ir.meta["model_config"]["exits"]).index(int(head))]
    )
    fc = exit_op.then[0]
    scale = ir.tensors[exit_op.attrs["logits"]].scale
    return ir.array(fc, "bias"), ir.array(fc, "mult"), ir.array(fc, "shift"), scale


def logits_name(ir: IRModel, head: str) -> str:
    exits = sorted(ir.exits(), key=lambda op: op.attrs["index"])
    exit_op = (
        exits[-1] if head == "final" else exits[sorted(ir.meta["model_config"]["exits"]).index(int(head))]
    )
    return exit_op.attrs["logits"]


def finish_logits(acc: np.ndarray, ir: IRModel, head: str) -> np.ndarray:
    """What the PS computes from a head's accumulators (td_fpga_logit)."""
    bias, mult, shift, _ = head_arrays(ir, head)
    total = acc.astype(np.int64) + bias.astype(np.int64)
    return requantize(total, np.ones_like(total), mult, shift, (-32768, 32767))


def run_hw_python(hw_model_path: Path, inputs: np.ndarray) -> np.ndarray:
    """Integer outputs of finn-plus's python execution of the HW-layer graph (NCHW inputs)."""
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    wrapper = ModelWrapper(str(hw_model_path))
    iname, oname = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    outs = [execute_onnx(wrapper, {iname: x[None].astype(np.float32)})[oname] for x in inputs]
    out = np.concatenate(outs)
    if not np.array_equal(out, np.round(out)):
        raise ExportError(f"{hw_model_path.name}: HW graph output is not integer: the tail was not cut")
    return np.round(out).astype(np.int64)


@dataclass
class PartitionCheck:
    name: str
    kind: str  # "features" or "logits"
    images: int
    # features: max |step| and share of exactly equal elements; logits: see below
    qonnx_vs_brevitas_max: float = -1.0
    qonnx_vs_brevitas_equal: float = -1.0  # features: share of elements; logits: images within ATOL
    brevitas_vs_integer_max_step: float = -1.0
    brevitas_vs_integer_equal: float = -1.0
    qonnx_class_vs_brevitas: int = -1
    qonnx_class_vs_integer: int = -1
    hw_python_vs_qonnx_max: float = -1.0  # features: steps; logits: int16 logit steps
    hw_python_vs_qonnx_equal: float = -1.0  # features: share; logits: images within one acc step
    hw_python_vs_integer_max_step: float = -1.0
    hw_python_vs_integer_equal: float = -1.0
    hw_python_class_vs_qonnx: int = -1
    hw_python_class_vs_integer: int = -1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _steps(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return float(diff.max(initial=0)), float((diff == 0).mean())


def _fail(part: ExportedPartition, what: str) -> ExportError:
    return ExportError(
        f"{part.spec.name}: {what}: streamlining or export changed the arithmetic (report this bug)"
    )


def check_partition(
    part: ExportedPartition, ir: IRModel, ref: dict[str, np.ndarray], hw_model_path: Path
) -> PartitionCheck:
    """Export, integer and HW-graph checks of one partition (see the module docstring)."""
    spec = part.spec
    inputs = ref[spec.input_tensor]
    n = len(inputs)
    qonnx = run_qonnx(part.path, inputs)
    brevitas = torch_outputs(part.module, inputs)
    hw = run_hw_python(hw_model_path, inputs)
    if spec.output_tensor is not None:
        scale = output_scale(part.module.net, spec)
        ref_out = ref[spec.output_tensor]
        q_int = np.round(qonnx / scale).astype(np.int64)
        b_int = np.round(brevitas / scale).astype(np.int64)
        hw_int = hw.transpose(0, 3, 1, 2)  # the segment streams NHWC
        check = PartitionCheck(spec.name, "features", n)
        check.qonnx_vs_brevitas_max, check.qonnx_vs_brevitas_equal = _steps(q_int, b_int)
        check.brevitas_vs_integer_max_step, check.brevitas_vs_integer_equal = _steps(b_int, ref_out)
        check.hw_python_vs_qonnx_max, check.hw_python_vs_qonnx_equal = _steps(hw_int, q_int)
        check.hw_python_vs_integer_max_step, check.hw_python_vs_integer_equal = _steps(hw_int, ref_out)
        steps = requantisations(spec)  # a one-step tie at each may add up along the segment
        same, integer = (steps, MIN_EQUAL_SHARE), (steps, MIN_INTEGER_EQUAL)
        for label, worst, share, (max_steps, min_share) in (
            ("QONNX vs Brevitas", check.qonnx_vs_brevitas_max, check.qonnx_vs_brevitas_equal, same),
            ("HW graph vs QONNX", check.hw_python_vs_qonnx_max, check.hw_python_vs_qonnx_equal, same),
            (
                "Brevitas vs integer reference",
                check.brevitas_vs_integer_max_step,
                check.brevitas_vs_integer_equal,
                integer,
            ),
            (
                "HW graph vs integer reference",
                check.hw_python_vs_integer_max_step,
                check.hw_python_vs_integer_equal,
                integer,
            ),
        ):
            if worst > max_steps or share < min_share:
                raise _fail(part, f"{label} feature maps differ (max {worst:.0f} steps, {share:.2%} equal)")
        return check
    head = spec.head or "final"
    ref_logits = ref[logits_name(ir, head)]
    ref_class = ref_logits.argmax(axis=1)
    qonnx = qonnx.reshape(n, -1)
    brevitas = brevitas.reshape(n, -1)
    diff = np.abs(qonnx - brevitas).max(axis=1)
    logits = finish_logits(hw.reshape(n, -1), ir, head)
    _, mult, shift, lscale = head_arrays(ir, head)
    lsb_all = np.abs(np.round(qonnx / lscale) - logits)
    # the PS's integer bias is rounded to the accumulator grid: one accumulator unit is
    # mult / 2**shift logit steps (often several: int16 logits have a fine scale)
    per_acc = mult.astype(np.float64) / 2.0 ** shift.astype(np.float64)
    close = (lsb_all <= per_acc[None, :] + 1).all(axis=1)
    check = PartitionCheck(spec.name, "logits", n)
    check.qonnx_vs_brevitas_max = float(diff.max())
    check.qonnx_vs_brevitas_equal = float((diff <= ATOL).sum())
    check.qonnx_class_vs_brevitas = int((qonnx.argmax(axis=1) == brevitas.argmax(axis=1)).sum())
    check.qonnx_class_vs_integer = int((qonnx.argmax(axis=1) == ref_class).sum())
    check.brevitas_vs_integer_max_step = float(np.abs(np.round(brevitas / lscale) - ref_logits).max())
    check.hw_python_vs_qonnx_max = float(lsb_all.max())
    check.hw_python_vs_qonnx_equal = float(close.sum())
    check.hw_python_class_vs_qonnx = int((logits.argmax(axis=1) == qonnx.argmax(axis=1)).sum())
    check.hw_python_class_vs_integer = int((logits.argmax(axis=1) == ref_class).sum())
    # float32 evaluation order differs between torch and onnxruntime: an activation exactly on a
    # quantiser's rounding boundary may land one step apart (and move the int16 logits by tens of
    # their tiny steps), so demand ATOL on most images and the same class on (nearly) all
    if (
        check.qonnx_vs_brevitas_equal < MIN_ATOL_SHARE * n
        or not agrees(check.qonnx_class_vs_brevitas, n)
        or not agrees(check.qonnx_class_vs_integer, n)
    ):
        raise ExportError(
            f"{spec.name}: QONNX export does not match (within 1e-5 on "
            f"{check.qonnx_vs_brevitas_equal:.0f}/{n} images, class = integer reference on "
            f"{check.qonnx_class_vs_integer}/{n}): "
            "check the brevitas/qonnx versions"
        )
    if check.hw_python_vs_qonnx_equal < MIN_ATOL_SHARE * n or not agrees(check.hw_python_class_vs_qonnx, n):
        raise _fail(
            part,
            "HW-layer graph vs QONNX: within one accumulator step on "
            f"{check.hw_python_vs_qonnx_equal:.0f}/{n} images, same class on "
            f"{check.hw_python_class_vs_qonnx}/{n}",
        )
    return check
