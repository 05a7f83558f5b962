"""What conv2d and linear share: int8 weights, an int32 accumulator, gates, and the one
requantisation (``docs/ARITHMETIC.md``) with an optional residual."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tinydyn.ir_schema import (
    DTYPE_RANGES,
    GATE_KEYS,
    MAX_SHIFT,
    ROLES,
    SALIENCE_ONE,
    Field,
    IRError,
    is_int,
    safe_name,
)
from tinydyn.ops.arith import requantize
from tinydyn.ops.base import OpKind

if TYPE_CHECKING:
    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.cost.traffic import MemoryTraffic
    from tinydyn.ir import IRModel, Op, TensorSpec
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run

OUT_RANGE = Field(
    lambda v: isinstance(v, list) and len(v) == 2 and all(is_int(x) for x in v) and v[0] <= v[1],
    "[lo, hi] integers with lo <= hi",
    required=True,
)
WEIGHTED_ATTRS: dict[str, Field] = {
    "out_range": OUT_RANGE,
    "macs": Field(lambda v: is_int(v) and 0 <= v < 2**40, "a non-negative integer", required=True),
    "role": Field(lambda v: v in ROLES, f"one of {', '.join(ROLES)}"),
    **{key: Field(safe_name, "a tensor name") for key in GATE_KEYS},
}


class WeightedOp(OpKind):
    """Base of conv2d and linear."""

    inputs: ClassVar[tuple[str, ...]] = ("x",)
    optional_inputs: ClassVar[tuple[str, ...]] = ("residual",)
    attrs: ClassVar[dict[str, Field]] = WEIGHTED_ATTRS

    # --- schema -----------------------------------------------------------------------
    def check_gates(
        self, checker: ShapeChecker, attrs: dict[str, Any], where: str, cin: int, cout: int
    ) -> None:
        checker.gate(where, attrs, "channel_gate", cout)
        checker.gate(where, attrs, "block_gate", 1)
        checker.gate(where, attrs, "input_mask", cin)
        if attrs.get("channel_gate") and attrs.get("block_gate"):
            raise IRError(f"{where} has both a channel gate and a block gate")

    def check_values(self, model: IRModel, op: Op) -> None:
        check_shift(model, op)
        prove_bounds(model, op)

    # --- cost -------------------------------------------------------------------------
    def macs(self, op: Op) -> int:
        return int(op.attrs.get("macs", 0))

    def macs_of_shapes(self, weight: tuple[int, ...], out: tuple[int, ...]) -> int:
        """MACs of a full execution: every weight once per output position (what the lowering
        records as attr ``macs`` and the schema re-checks)."""
        return int(np.prod(weight)) * int(np.prod(out[1:]))

    def traffic(self, model: IRModel, op: Op, coeffs: Any) -> tuple[int, MemoryTraffic]:
        from tinydyn.cost.traffic import DTYPE_BYTES, QPARAM_BYTES, RES_MULT_BYTES, MemoryTraffic

        x, out = model.tensors[op.inputs["x"]], model.tensors[op.output]
        macs = self.macs(op)
        cout = int(model.array(op, "weight").shape[0])
        flash = -(-macs // coeffs.weight_reuse) + cout * QPARAM_BYTES
        # each MAC consumes one input element; blocking reuses a fetched one input_reuse times
        read = -(-macs * DTYPE_BYTES[x.dtype] // coeffs.input_reuse)
        if "residual" in op.inputs:
            res = model.tensors[op.inputs["residual"]]
            read += res.size * DTYPE_BYTES[res.dtype]
            flash += cout * RES_MULT_BYTES
        return macs, MemoryTraffic(flash, read, out.size * DTYPE_BYTES[out.dtype])

    # --- reference --------------------------------------------------------------------
    def operands(self, run: Run, op: Op) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(input, channel/ block gate (N, Cout), active outputs, active inputs)."""
        x = run.env[op.inputs["x"]]
        cout = run.model.array(op, "weight").shape[0]
        n = x.shape[0]
        mask = run.gate_of(op, "input_mask")
        active_in = np.ones((n, x.shape[1]), dtype=bool) if mask is None else mask != 0
        if mask is not None:  # masked input channels are not read: they contribute nothing
            x = x * active_in.reshape(active_in.shape + (1,) * (x.ndim - 2))
        channel_gate = run.gate_of(op, "channel_gate")
        block_gate = run.gate_of(op, "block_gate")
        if channel_gate is not None:
            gate = channel_gate
            active_out = channel_gate != 0
        elif block_gate is not None:
            gate = np.broadcast_to(block_gate, (n, cout))
            active_out = np.ones((n, cout), dtype=bool)
        else:
            gate = np.ones((n, cout), dtype=np.int64)
            active_out = np.ones((n, cout), dtype=bool)
        return x, gate, active_out, active_in

    def finish(self, run: Run, op: Op, acc: np.ndarray, gate: np.ndarray) -> None:
        """Requantise the accumulators (gate and residual included) into the output tensor."""
        m = run.model
        residual = res_mult = None
        if "residual" in op.inputs:
            residual, res_mult = run.env[op.inputs["residual"]], m.array(op, "res_mult")
        gate = gate.reshape(gate.shape + (1,) * (acc.ndim - 2))
        run.env[op.output] = requantize(
            acc,
            gate,
            m.array(op, "mult"),
            m.array(op, "shift"),
            tuple(op.attrs["out_range"]),
            residual,
            res_mult,
        )

    # --- C ----------------------------------------------------------------------------
    def quant_fields(
        self, ir: IRModel, op: Op, desc: ModelDesc, acc_max: int, high_word: bool = False
    ) -> dict[str, Any]:
        """td_quant_t's fields and arrays. With ``high_word`` (the kernel supports it) and where
        it is exact, one table ``rq_<layer>`` (codegen.packing.high_word_table) replaces the
        mult/res_mult/shift arrays: the layer then requantises on the high word only."""
        from tinydyn.codegen.cdefs import CArray, c_name
        from tinydyn.codegen.packing import high_word_table, prove_requant, uniform_shift

        cn = c_name(op.name)
        mult = ir.array(op, "mult").astype(np.int64)
        shift = ir.array(op, "shift").astype(np.int64)
        bias = ir.array(op, "bias").astype(np.int64)
        res_name = op.inputs.get("residual")
        res_mult = ir.array(op, "res_mult").astype(np.int64) if res_name else None
        gated = bool(op.attrs.get("channel_gate") or op.attrs.get("block_gate"))
        prove_requant(
            op.name, acc_max, gated, mult, shift, res_mult, ir.tensors[res_name].dtype if res_name else None
        )
        lo, hi = op.attrs["out_range"]
        res_dtype = ir.tensors[res_name].dtype if res_name else None
        table = high_word_table(acc_max, gated, mult, shift, res_mult, res_dtype) if high_word else None
        if table is not None:
            desc.arrays += [CArray(f"b_{cn}", "int32_t", bias), CArray(f"rq_{cn}", "int32_t", table)]
            return {
                "bias": f"b_{cn}",
                "mult": "NULL",
                "res_mult": "NULL",
                "shift": "NULL",
                "out_min": int(lo),
                "out_max": int(hi),
                "rq": f"rq_{cn}",
                "rq_sh": uniform_shift(table, res_mult is not None),
                "shift_min": int(shift.min()),
                "shift_max": int(shift.max()),
            }
        desc.arrays += [
            CArray(f"b_{cn}", "int32_t", bias),
            CArray(f"m_{cn}", "int32_t", mult),
            CArray(f"s_{cn}", "uint8_t", shift),
        ]
        if res_mult is not None:
            desc.arrays.append(CArray(f"r_{cn}", "int64_t", res_mult))
        return {
            "bias": f"b_{cn}",
            "mult": f"m_{cn}",
            "res_mult": f"r_{cn}" if res_mult is not None else "NULL",
            "shift": f"s_{cn}",
            "out_min": int(lo),
            "out_max": int(hi),
            "rq": "NULL",
            "shift_min": int(shift.min()),
            "shift_max": int(shift.max()),
        }

    def common_fields(self, ir: IRModel, op: Op, x: TensorSpec, out: TensorSpec) -> dict[str, Any]:
        from tinydyn.codegen.cdefs import TD_TYPES, tensor_macro

        residual = op.inputs.get("residual")
        return {
            "in_type": TD_TYPES[x.dtype],
            "out_type": TD_TYPES[out.dtype],
            "res_type": TD_TYPES[ir.tensors[residual].dtype] if residual else "TD_U8",
            "gates": {key: tensor_macro(op.attrs.get(key)) for key in GATE_KEYS},
            "input": tensor_macro(op.inputs["x"]),
            "residual": tensor_macro(residual),
            "output": tensor_macro(op.output),
            "macs": self.macs(op),
        }


# ----------------------------------------------------------------------------- array checks
def check_shift(model: IRModel, op: Op) -> np.ndarray:
    shift = model.arrays[f"{op.name}.shift"]
    if np.any(shift < 1) or np.any(shift > MAX_SHIFT):
        raise IRError(f"IR op '{op.name}' array 'shift' has values outside 1..{MAX_SHIFT}")
    return shift


def prove_bounds(model: IRModel, op: Op) -> None:
    """No input makes the int32 accumulator or the int64 requantisation overflow."""
    lo, hi = DTYPE_RANGES[model.tensors[op.inputs["x"]].dtype]
    weight = model.arrays[f"{op.name}.weight"].astype(np.int64)
    mult = model.arrays[f"{op.name}.mult"]
    if np.any(mult < 0):
        raise IRError(f"IR op '{op.name}' array 'mult' has negative values: re-run the lowering")
    acc_max = np.abs(weight).reshape(weight.shape[0], -1).sum(axis=1) * max(-lo, hi) + np.abs(
        model.arrays[f"{op.name}.bias"].astype(np.int64)
    )
    if np.any(acc_max >= 2**31):
        raise IRError(
            f"layer '{op.name}' can overflow its int32 accumulator (bound {int(acc_max.max())}): "
            "reduce its fan-in or input range"
        )
    gated = op.attrs.get("channel_gate") or op.attrs.get("block_gate")
    gate_max = SALIENCE_ONE if gated else 1
    shift = model.arrays[f"{op.name}.shift"].astype(np.float64)
    value = acc_max.astype(np.float64) * gate_max * mult.astype(np.float64) + 2.0 ** (shift - 1)
    if "residual" in op.inputs:
        r_lo, r_hi = DTYPE_RANGES[model.tensors[op.inputs["residual"]].dtype]
        value = value + max(-r_lo, r_hi) * np.abs(model.arrays[f"{op.name}.res_mult"]).astype(np.float64)
    if np.any(value >= 2.0**63):
        raise IRError(f"layer '{op.name}' can overflow its int64 requantisation: retrain with smaller scales")


def requant_arrays(
    checker: ShapeChecker, name: str, where: str, op: dict[str, Any], attrs: dict[str, Any]
) -> None:
    """bias/mult/shift (and res_mult with a residual) per output channel, out_range in range."""
    shape, dtype, _ = checker.spec(op["output"])
    lo, hi = DTYPE_RANGES[dtype]
    r_lo, r_hi = attrs["out_range"]
    if r_lo < lo or r_hi > hi:
        raise IRError(f"{where} attr 'out_range' [{r_lo}, {r_hi}] exceeds its output's {dtype} range")
    cout = shape[0]
    checker.arrays[f"{name}.bias"] = ("int32", (cout,))
    checker.arrays[f"{name}.mult"] = ("int64", (cout,))
    checker.arrays[f"{name}.shift"] = ("int32", (cout,))
    residual = op.get("inputs", {}).get("residual")
    if residual is not None:
        if checker.spec(residual)[0] != shape:
            raise IRError(
                f"{where} input 'residual' has shape {list(checker.spec(residual)[0])}, "
                f"its output {list(shape)}"
            )
        checker.arrays[f"{name}.res_mult"] = ("int64", (cout,))
