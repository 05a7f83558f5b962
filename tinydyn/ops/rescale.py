"""``rescale``: per-channel requantisation of a tensor (a skipped residual block's output: the
shortcut requantised exactly as the block's last conv does with a zero gate)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tinydyn.ir_schema import DTYPE_RANGES, Field, IRError
from tinydyn.ops.arith import requantize
from tinydyn.ops.base import OpKind
from tinydyn.ops.weighted import OUT_RANGE, check_shift

if TYPE_CHECKING:
    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.cost.traffic import MemoryTraffic
    from tinydyn.ir import IRModel, Op
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run


class Rescale(OpKind):
    kind = "rescale"
    inputs = ("x",)
    template = "ops/rescale.c.j2"
    attrs: ClassVar[dict[str, Field]] = {"out_range": OUT_RANGE}

    def check_shapes(self, checker: ShapeChecker, op: dict[str, Any], where: str) -> None:
        x_shape, (o_shape, o_dtype, _) = checker.spec(op["inputs"]["x"])[0], checker.spec(op["output"])
        if x_shape != o_shape:
            raise IRError(f"{where}: a rescale keeps its shape ({list(x_shape)} -> {list(o_shape)})")
        lo, hi = DTYPE_RANGES[o_dtype]
        r_lo, r_hi = op["attrs"]["out_range"]
        if r_lo < lo or r_hi > hi:
            raise IRError(f"{where} attr 'out_range' [{r_lo}, {r_hi}] exceeds its output's {o_dtype} range")
        checker.arrays[f"{op['name']}.res_mult"] = ("int64", (o_shape[0],))
        checker.arrays[f"{op['name']}.shift"] = ("int32", (o_shape[0],))

    def check_values(self, model: IRModel, op: Op) -> None:
        shift = check_shift(model, op)
        res = np.abs(model.arrays[f"{op.name}.res_mult"]).astype(np.float64)
        lo, hi = DTYPE_RANGES[model.tensors[op.inputs["x"]].dtype]
        if np.any(res * max(-lo, hi) + 2.0 ** (shift - 1) >= 2.0**63):
            raise IRError(f"IR op '{op.name}' can overflow its int64 requantisation: re-run the lowering")

    def traffic(self, model: IRModel, op: Op, coeffs: Any) -> tuple[int, MemoryTraffic]:
        from tinydyn.cost.traffic import DTYPE_BYTES, MemoryTraffic

        x, out = model.tensors[op.inputs["x"]], model.tensors[op.output]
        return 0, MemoryTraffic(0, out.size * DTYPE_BYTES[x.dtype], out.size * DTYPE_BYTES[out.dtype])

    def execute(self, run: Run, op: Op, live: np.ndarray) -> None:
        x = run.env[op.inputs["x"]]
        res_mult = run.model.array(op, "res_mult")
        zero_gate = np.zeros((x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2), dtype=np.int64)
        run.env[op.output] = requantize(
            np.zeros_like(x),
            zero_gate,
            res_mult,
            run.model.array(op, "shift"),
            tuple(op.attrs["out_range"]),
            x,
            res_mult,
        )

    def describe(self, ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
        from tinydyn.codegen.cdefs import TD_TYPES, CArray, c_name, hwc, tensor_macro
        from tinydyn.codegen.packing import high_word_table, prove_requant, uniform_shift

        x, out = ir.tensors[op.inputs["x"]], ir.tensors[op.output]
        c, h, w = hwc(x)
        cn = c_name(op.name)
        res_mult = ir.array(op, "res_mult").astype(np.int64)
        shift = ir.array(op, "shift").astype(np.int64)
        zeros = np.zeros_like(res_mult)
        prove_requant(op.name, 0, False, zeros, shift, res_mult, x.dtype)
        lo, hi = op.attrs["out_range"]
        # the high-word table (rows {0, res_lo, res_hi, sh}) where exact: td_rescale's inline form
        table = high_word_table(0, False, zeros, shift, res_mult, x.dtype)
        if table is not None:
            desc.arrays.append(CArray(f"rq_{cn}", "int32_t", table))
            quant = {
                "res_mult": "NULL",
                "shift": "NULL",
                "rq": f"rq_{cn}",
                "rq_sh": uniform_shift(table, True),
            }
        else:
            desc.arrays += [CArray(f"r_{cn}", "int64_t", res_mult), CArray(f"s_{cn}", "uint8_t", shift)]
            quant = {"res_mult": f"r_{cn}", "shift": f"s_{cn}", "rq": "NULL"}
        return {
            "c": c,
            "hw": h * w,
            "in_type": TD_TYPES[x.dtype],
            "out_type": TD_TYPES[out.dtype],
            "quant": {"bias": "NULL", "mult": "NULL", **quant, "out_min": int(lo), "out_max": int(hi)},
            "input": tensor_macro(op.inputs["x"]),
            "output": tensor_macro(op.output),
            "summary": f"requantise {c}x{h}x{w} (block skipped: shortcut only)",
        }
