"""``linear``: a fully connected layer on vectors, int8 weights [Cout, Cin]; gates and salience
heads are linears whose output tensor has kind ``salience`` (uint8, scale 1/255)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tinydyn.ir_schema import IRError
from tinydyn.ops.weighted import WeightedOp, requant_arrays

if TYPE_CHECKING:
    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.ir import IRModel, Op
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run


class Linear(WeightedOp):
    kind = "linear"
    template = "ops/linear.c.j2"

    def check_shapes(self, checker: ShapeChecker, op: dict[str, Any], where: str) -> None:
        attrs, name = op.get("attrs", {}), op["name"]
        (x_shape, _, _), (o_shape, o_dtype, o_kind) = (
            checker.spec(op["inputs"]["x"]),
            checker.spec(op["output"]),
        )
        if len(x_shape) != 1 or len(o_shape) != 1:
            raise IRError(f"{where}: a linear reads and writes [C] vectors")
        cin, cout = x_shape[0], o_shape[0]
        checker.arrays[f"{name}.weight"] = ("int8", (cout, cin))
        if attrs["macs"] != cin * cout:
            raise IRError(
                f"{where} attr 'macs' is {attrs['macs']}, its shapes give {cin * cout}: re-run the lowering"
            )
        if attrs.get("role") == "gate" and (o_kind != "salience" or o_dtype != "uint8"):
            raise IRError(f"{where} is a gate: its output must be a uint8 salience tensor")
        self.check_gates(checker, attrs, where, cin, cout)
        requant_arrays(checker, name, where, op, attrs)

    def execute(self, run: Run, op: Op, live: np.ndarray) -> None:
        x, gate, active_out, active_in = self.operands(run, op)
        weight = run.model.array(op, "weight").astype(np.float64)
        acc = (x.astype(np.float64) @ weight.T).astype(np.int64) + run.model.array(op, "bias")
        run.macs += np.where(live, active_out.sum(axis=1) * active_in.sum(axis=1), 0)
        if op.attrs.get("channel_gate"):
            run.skipped_channels += np.where(live, (~active_out).sum(axis=1), 0)
        self.finish(run, op, acc, gate)

    def describe(self, ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
        from tinydyn.codegen.cdefs import CArray, c_name
        from tinydyn.codegen.packing import pack_linear, prove_accumulators
        from tinydyn.codegen.planner import align

        x, out = ir.tensors[op.inputs["x"]], ir.tensors[op.output]
        cout, cin = ir.array(op, "weight").shape
        packed, row_len = pack_linear(ir.array(op, "weight"))
        acc_max = prove_accumulators(op.name, packed, row_len, ir.array(op, "bias"), x.dtype)
        desc.max_acc[op.name] = acc_max
        cn = c_name(op.name)
        desc.arrays.append(CArray(f"w_{cn}", "int8_t", packed))
        quant = self.quant_fields(ir, op, desc, acc_max)
        desc.scratch[op.name] = align(2 * cout) + align(2 * cin) + 4 * row_len
        return {
            "weight": f"w_{cn}",
            "row_len": row_len,
            "in_c": cin,
            "out_c": cout,
            "quant": quant,
            **self.common_fields(ir, op, x, out),
            "summary": f"fully connected {cin} -> {cout} ({out.kind})",
        }
