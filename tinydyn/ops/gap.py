"""``gap``: global average pool of a uint8 [C, H, W] tensor to a [C] vector, rounded half up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tinydyn.ir_schema import IRError
from tinydyn.ops.arith import global_average_pool
from tinydyn.ops.base import OpKind

if TYPE_CHECKING:
    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.cost.traffic import MemoryTraffic
    from tinydyn.ir import IRModel, Op
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run


class Gap(OpKind):
    kind = "gap"
    inputs = ("x",)
    template = "ops/gap.c.j2"

    def check_shapes(self, checker: ShapeChecker, op: dict[str, Any], where: str) -> None:
        (x_shape, x_dtype, _), (o_shape, o_dtype, _) = (
            checker.spec(op["inputs"]["x"]),
            checker.spec(op["output"]),
        )
        if len(x_shape) != 3 or o_shape != (x_shape[0],) or x_dtype != o_dtype or x_dtype != "uint8":
            raise IRError(f"{where}: a gap maps a uint8 [C, H, W] tensor to a uint8 [C] vector")

    def traffic(self, model: IRModel, op: Op, coeffs: Any) -> tuple[int, MemoryTraffic]:
        from tinydyn.cost.traffic import DTYPE_BYTES, MemoryTraffic

        x, out = model.tensors[op.inputs["x"]], model.tensors[op.output]
        return 0, MemoryTraffic(0, x.size * DTYPE_BYTES[x.dtype], out.size * DTYPE_BYTES[out.dtype])

    def execute(self, run: Run, op: Op, live: np.ndarray) -> None:
        run.env[op.output] = global_average_pool(run.env[op.inputs["x"]])

    def describe(self, ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
        from tinydyn.codegen.cdefs import TD_TYPES, hwc, tensor_macro

        c, h, w = hwc(ir.tensors[op.inputs["x"]])
        desc.scratch[op.name] = 4 * c
        return {
            "c": c,
            "hw": h * w,
            "type": TD_TYPES[ir.tensors[op.inputs["x"]].dtype],
            "input": tensor_macro(op.inputs["x"]),
            "output": tensor_macro(op.output),
            "summary": f"global average pool {c}x{h}x{w} -> {c}",
        }
