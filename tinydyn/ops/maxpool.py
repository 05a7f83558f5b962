"""``maxpool``: k×k windows (attrs ``kernel``, ``stride``, ``padding``), padding never wins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tinydyn.ir_schema import Field, IRError, is_int
from tinydyn.ops.arith import conv_output_hw, max_pool
from tinydyn.ops.base import OpKind

if TYPE_CHECKING:
    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.cost.traffic import MemoryTraffic
    from tinydyn.ir import IRModel, Op
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run


class MaxPool(OpKind):
    """Also the base of ``avgpool``, which differs only in its arithmetic and C kernel."""

    kind = "maxpool"
    inputs = ("x",)
    template = "ops/pool.c.j2"
    attrs: ClassVar[dict[str, Field]] = {
        "kernel": Field(lambda v: is_int(v) and 1 <= v <= 16, "an integer in 1..16", True),
        "stride": Field(lambda v: is_int(v) and 1 <= v <= 16, "an integer in 1..16", True),
        "padding": Field(lambda v: is_int(v) and 0 <= v <= 15, "an integer in 0..15"),
    }

    @staticmethod
    def window(op: Op) -> tuple[int, int, int]:
        return int(op.attrs["kernel"]), int(op.attrs["stride"]), int(op.attrs.get("padding", 0))

    def pool(self, x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
        return max_pool(x, k, stride, pad)

    def check_shapes(self, checker: ShapeChecker, op: dict[str, Any], where: str) -> None:
        attrs = op.get("attrs", {})
        (x_shape, x_dtype, _), (o_shape, o_dtype, _) = (
            checker.spec(op["inputs"]["x"]),
            checker.spec(op["output"]),
        )
        k, stride, pad = attrs["kernel"], attrs["stride"], attrs.get("padding", 0)
        if pad >= k:
            raise IRError(f"{where} attr 'padding' ({pad}) must be smaller than its kernel ({k})")
        if (
            len(x_shape) != 3
            or x_dtype != o_dtype
            or len(o_shape) != 3
            or o_shape[0] != x_shape[0]
            or conv_output_hw(x_shape[1], x_shape[2], k, stride, pad) != o_shape[1:]
        ):
            raise IRError(
                f"{where}: output {list(o_shape)} {o_dtype} does not follow from "
                f"input {list(x_shape)} {x_dtype}"
            )

    def traffic(self, model: IRModel, op: Op, coeffs: Any) -> tuple[int, MemoryTraffic]:
        from tinydyn.cost.traffic import DTYPE_BYTES, MemoryTraffic

        x, out = model.tensors[op.inputs["x"]], model.tensors[op.output]
        window = self.window(op)[0] ** 2  # one read per window element, one write per output
        return 0, MemoryTraffic(
            0, out.size * window * DTYPE_BYTES[x.dtype], out.size * DTYPE_BYTES[out.dtype]
        )

    def execute(self, run: Run, op: Op, live: np.ndarray) -> None:
        run.env[op.output] = self.pool(run.env[op.inputs["x"]], *self.window(op))

    def describe(self, ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
        from tinydyn.codegen.cdefs import TD_TYPES, hwc, tensor_macro

        x = ir.tensors[op.inputs["x"]]
        c, h, w = hwc(x)
        _, ho, wo = hwc(ir.tensors[op.output])
        k, stride, pad = self.window(op)
        return {
            "c": c,
            "in_h": h,
            "in_w": w,
            "out_h": ho,
            "out_w": wo,
            "kernel": k,
            "stride": stride,
            "pad": pad,
            "type": TD_TYPES[x.dtype],
            "input": tensor_macro(op.inputs["x"]),
            "output": tensor_macro(op.output),
            "summary": f"{op.kind} {k}x{k}/{stride} pad {pad}, {c}x{h}x{w} -> {c}x{ho}x{wo}",
        }
