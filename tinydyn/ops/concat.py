"""``concat``: channel concatenation of 2..8 tensors (inputs ``x0``, ``x1``, ... in order) that
share dtype, spatial size and one scale; the lowering inserts a ``rescale`` where the scales of
what it joins differ (DenseNet's dense connectivity, S2DNAS's feature reuse between stages).

No arithmetic: the output's channels are ``x0``'s, then ``x1``'s, and so on. Activations are
HWC in C, so each pixel's channel runs are copied one after the other (docs/ARITHMETIC.md)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from tinydyn.ir_schema import IRError
from tinydyn.ops.base import OpKind

if TYPE_CHECKING:
    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.cost.traffic import MemoryTraffic
    from tinydyn.ir import IRModel, Op
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run

MAX_CONCAT_INPUTS = 8
SCALE_RTOL = 1e-6  # "one scale": equal to this relative tolerance (JSON round trips floats exactly)


def same_scale(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=SCALE_RTOL, abs_tol=0.0)


class Concat(OpKind):
    kind = "concat"
    inputs = ("x0", "x1")
    optional_inputs = tuple(f"x{i}" for i in range(2, MAX_CONCAT_INPUTS))

    template = "ops/concat.c.j2"

    @staticmethod
    def slots(inputs: dict[str, str]) -> list[str]:
        """The input tensors in channel order."""
        return [inputs[f"x{i}"] for i in range(MAX_CONCAT_INPUTS) if f"x{i}" in inputs]

    def check_shapes(self, checker: ShapeChecker, op: dict[str, Any], where: str) -> None:
        inputs = op["inputs"]
        count = len(self.slots(inputs))
        if sorted(inputs) != sorted(f"x{i}" for i in range(count)):
            raise IRError(f"{where}: concat inputs must be x0, x1, ... without gaps (got {sorted(inputs)})")
        names = self.slots(inputs)
        o_shape, o_dtype, _ = checker.spec(op["output"])
        channels = 0
        for slot, name in zip((f"x{i}" for i in range(count)), names, strict=True):
            shape, dtype, _ = checker.spec(name)
            if dtype != o_dtype or len(shape) != len(o_shape) or shape[1:] != o_shape[1:]:
                raise IRError(
                    f"{where} input '{slot}' is {dtype} {list(shape)}: every input must have the output's "
                    f"dtype {o_dtype} and spatial size {list(o_shape[1:])}"
                )
            if not same_scale(checker.scale(name), checker.scale(op["output"])):
                raise IRError(
                    f"{where} input '{slot}' has scale {checker.scale(name):.6g}, its output "
                    f"{checker.scale(op['output']):.6g}: rescale it first (concat joins one scale)"
                )
            channels += shape[0]
        if channels != o_shape[0]:
            raise IRError(f"{where}: its inputs have {channels} channels in all, its output {o_shape[0]}")

    def traffic(self, model: IRModel, op: Op, coeffs: Any) -> tuple[int, MemoryTraffic]:
        from tinydyn.cost.traffic import DTYPE_BYTES, MemoryTraffic

        out = model.tensors[op.output]
        size = out.size * DTYPE_BYTES[out.dtype]
        return 0, MemoryTraffic(0, size, size)

    def execute(self, run: Run, op: Op, live: np.ndarray) -> None:
        run.env[op.output] = np.concatenate([run.env[name] for name in self.slots(op.inputs)], axis=1)

    def describe(self, ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
        from tinydyn.codegen.cdefs import ELEM_BYTES, hwc, tensor_macro

        out = ir.tensors[op.output]
        c, h, w = hwc(out)
        size = ELEM_BYTES[out.dtype]
        names = self.slots(op.inputs)
        parts = [{"input": tensor_macro(n), "bytes": ir.tensors[n].shape[0] * size} for n in names]
        return {
            "parts": parts,
            "hw": h * w,
            "out_bytes": c * size,
            "output": tensor_macro(op.output),
            "summary": "concat "
            + " + ".join(str(ir.tensors[n].shape[0]) for n in names)
            + f" -> {c} channels of {h}x{w}",
        }
