"""``split``: a channel slice, ``y = x[offset : offset + count]`` (attrs ``offset``, ``count``), same
dtype, spatial size and scale (S2DNAS's channel groups). No arithmetic.

Layout (docs/ARITHMETIC.md, "split"): activations are HWC in C, so a channel slice is strided
(``count`` elements every ``C``); the C kernel copies it into its own buffer. Where the slice
is the whole row of channels (a [C] vector or spatial size 1) the copy is one memcpy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tinydyn.ir_schema import MAX_DIM, Field, IRError, is_int
from tinydyn.ops.base import OpKind
from tinydyn.ops.concat import same_scale

if TYPE_CHECKING:
    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.cost.traffic import MemoryTraffic
    from tinydyn.ir import IRModel, Op
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run


class Split(OpKind):
    kind = "split"
    inputs = ("x",)
    template = "ops/split.c.j2"
    attrs: ClassVar[dict[str, Field]] = {
        "offset": Field(lambda v: is_int(v) and 0 <= v < MAX_DIM, f"an integer in 0..{MAX_DIM - 1}", True),
        "count": Field(lambda v: is_int(v) and 1 <= v <= MAX_DIM, f"an integer in 1..{MAX_DIM}", True),
    }

    def check_shapes(self, checker: ShapeChecker, op: dict[str, Any], where: str) -> None:
        (x_shape, x_dtype, _), (o_shape, o_dtype, _) = (
            checker.spec(op["inputs"]["x"]),
            checker.spec(op["output"]),
        )
        offset, count = op["attrs"]["offset"], op["attrs"]["count"]
        if offset + count > x_shape[0]:
            raise IRError(
                f"{where} takes channels {offset}..{offset + count - 1} of an input with {x_shape[0]}"
            )
        if x_dtype != o_dtype or o_shape != (count, *x_shape[1:]):
            raise IRError(
                f"{where}: a split of {x_dtype} {list(x_shape)} writes {x_dtype} "
                f"{[count, *x_shape[1:]]}, not {o_dtype} {list(o_shape)}"
            )
        if not same_scale(checker.scale(op["inputs"]["x"]), checker.scale(op["output"])):
            raise IRError(f"{where}: a split keeps its input's scale")

    def traffic(self, model: IRModel, op: Op, coeffs: Any) -> tuple[int, MemoryTraffic]:
        from tinydyn.cost.traffic import DTYPE_BYTES, MemoryTraffic

        out = model.tensors[op.output]
        size = out.size * DTYPE_BYTES[out.dtype]
        return 0, MemoryTraffic(0, size, size)

    def execute(self, run: Run, op: Op, live: np.ndarray) -> None:
        offset, count = int(op.attrs["offset"]), int(op.attrs["count"])
        run.env[op.output] = run.env[op.inputs["x"]][:, offset : offset + count].copy()

    def describe(self, ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
        from tinydyn.codegen.cdefs import ELEM_BYTES, hwc, tensor_macro

        x = ir.tensors[op.inputs["x"]]
        c, h, w = hwc(x)
        size = ELEM_BYTES[x.dtype]
        offset, count = int(op.attrs["offset"]), int(op.attrs["count"])
        return {
            "hw": h * w,
            "in_bytes": c * size,
            "offset_bytes": offset * size,
            "count_bytes": count * size,
            "input": tensor_macro(op.inputs["x"]),
            "output": tensor_macro(op.output),
            "summary": f"channels {offset}..{offset + count - 1} of {c}x{h}x{w}",
        }
