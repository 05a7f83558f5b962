"""``lstm_gate``: one step of an integer LSTM cell and the salience it gives (DDI's layer gate: an
LSTM of hidden size ~10 whose state is carried from block to block).

Inputs ``x`` (uint8/int8 [D], e.g. a pooled feature vector) and, except for the first gate of a
chain (whose state is zero), ``h`` and ``c`` (int16 [H], the previous gate's new state). It
writes its ``output``, a uint8 salience [S] (a linear of the new hidden state, clamped to
0..255, consumed by a ``guard`` or as a channel gate), and the new state tensors named by attrs
``h_out`` and ``c_out``. It is always a gate (attr ``role`` is ``gate``): with gating off it is
not computed, its salience reads 255 and its state 0.

Fixed formats (docs/ARITHMETIC.md, "lstm_gate"): ``h`` is Q0.15 (scale 2^-15), ``c`` Q4.11
(scale 2^-11), pre-activations Q.8 clamped to [-8, 8); sigmoid and tanh are 129-entry int16
tables (:func:`sigmoid_lut`, :func:`tanh_lut`) interpolated linearly, emitted into the C."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tinydyn.ir_schema import DTYPE_RANGES, MAX_SHIFT, Field, IRError, is_int, safe_name
from tinydyn.ops.arith import round_shift
from tinydyn.ops.base import OpKind

if TYPE_CHECKING:
    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.cost.traffic import MemoryTraffic
    from tinydyn.ir import IRModel, Op
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run

H_FRAC = 15  # hidden state h: int16 Q0.15, scale 2^-15
C_FRAC = 11  # cell state c: int16 Q4.11, scale 2^-11
Z_FRAC = 8  # pre-activations: Q.8, clamped to [Z_MIN, Z_MAX] (= [-8, 8 - 1/256])
Z_MIN, Z_MAX = -(8 << Z_FRAC), (8 << Z_FRAC) - 1
LUT_STEP_SHIFT = 5  # one table entry every 2^5 units of z (1/8)
LUT_SIZE = ((Z_MAX - Z_MIN + 1) >> LUT_STEP_SHIFT) + 1  # 129: the last entry ends the last step
ACT_ONE = 1 << 15  # activations (sigmoid, tanh) are Q0.15, clamped to [-32767, 32767]
MAX_HIDDEN = 256  # keeps Σ w_h·h inside int32 for any state
MAX_SALIENCES = 256


def _table(fn: Any) -> np.ndarray:
    v = (Z_MIN + (np.arange(LUT_SIZE, dtype=np.int64) << LUT_STEP_SHIFT)) / float(1 << Z_FRAC)
    return np.clip(np.floor(ACT_ONE * fn(v) + 0.5), -(ACT_ONE - 1), ACT_ONE - 1).astype(np.int64)


def sigmoid_lut() -> np.ndarray:
    """``SIGMOID_LUT[k] = clamp(floor(32768·σ(-8 + k/8) + 0.5), -32767, 32767)``, k = 0..128."""
    return _table(lambda v: 1.0 / (1.0 + np.exp(-v)))


def tanh_lut() -> np.ndarray:
    """``TANH_LUT[k] = clamp(floor(32768·tanh(-8 + k/8) + 0.5), -32767, 32767)``, k = 0..128."""
    return _table(np.tanh)


def lut_activation(table: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Linear interpolation of a table at Q.8 points: ``u = clamp(z) + 2048``, ``k = u >> 5``,
    ``r = u & 31``, ``T[k] + round_shift((T[k+1] - T[k])·r, 5)``."""
    u = np.clip(z, Z_MIN, Z_MAX) - Z_MIN
    k, r = u >> LUT_STEP_SHIFT, u & ((1 << LUT_STEP_SHIFT) - 1)
    return table[k] + round_shift((table[k + 1] - table[k]) * r, LUT_STEP_SHIFT)


def lstm_step(
    x: np.ndarray,
    h: np.ndarray | None,
    c: np.ndarray | None,
    arrays: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(salience, h', c') of a batch: x (N, D), h and c (N, H) int64 or None (zero state).
    ``arrays`` holds w_x, bias, mult_x, shift, [w_h, mult_h], sal_weight, sal_bias, sal_mult,
    sal_shift (without the op-name prefix)."""
    w_x = arrays["w_x"].astype(np.float64)
    hidden = w_x.shape[0] // 4
    acc_x = (x.astype(np.float64) @ w_x.T).astype(np.int64) + arrays["bias"].astype(np.int64)
    value = acc_x * arrays["mult_x"].astype(np.int64)
    if h is not None:
        acc_h = (h.astype(np.float64) @ arrays["w_h"].astype(np.float64).T).astype(np.int64)
        value = value + acc_h * arrays["mult_h"].astype(np.int64)
    z = np.clip(round_shift(value, arrays["shift"].astype(np.int64)), Z_MIN, Z_MAX)
    sig, tanh = sigmoid_lut(), tanh_lut()
    gi = lut_activation(sig, z[:, :hidden])
    gf = lut_activation(sig, z[:, hidden : 2 * hidden])
    gg = lut_activation(tanh, z[:, 2 * hidden : 3 * hidden])
    go = lut_activation(sig, z[:, 3 * hidden :])
    c_prev = np.zeros_like(gi) if c is None else c.astype(np.int64)
    # f·c is Q.26: << 4 makes it Q.30 like i·g; >> 19 gives Q.11
    c_new = np.clip(
        round_shift((gf * c_prev << (H_FRAC - C_FRAC)) + gi * gg, np.int64(2 * H_FRAC - C_FRAC)),
        *DTYPE_RANGES["int16"],
    )
    tc = lut_activation(tanh, round_shift(c_new, np.int64(C_FRAC - Z_FRAC)))
    h_new = round_shift(go * tc, np.int64(H_FRAC))
    s_acc = (h_new.astype(np.float64) @ arrays["sal_weight"].astype(np.float64).T).astype(np.int64)
    s_acc = s_acc + arrays["sal_bias"].astype(np.int64)
    sal = np.clip(
        round_shift(s_acc * arrays["sal_mult"].astype(np.int64), arrays["sal_shift"].astype(np.int64)), 0, 255
    )
    return sal, h_new, c_new


ARRAY_KEYS = ("w_x", "bias", "mult_x", "shift", "sal_weight", "sal_bias", "sal_mult", "sal_shift")
STATE_KEYS = ("w_h", "mult_h")


class LstmGate(OpKind):
    kind = "lstm_gate"
    inputs = ("x",)
    optional_inputs = ("h", "c")
    output_attrs = ("h_out", "c_out")
    template = "ops/lstm_gate.c.j2"
    attrs: ClassVar[dict[str, Field]] = {
        "h_out": Field(safe_name, "a tensor name", True),
        "c_out": Field(safe_name, "a tensor name", True),
        "role": Field(lambda v: v == "gate", "'gate' (an lstm_gate is always part of a gate)", True),
        "macs": Field(lambda v: is_int(v) and 0 <= v < 2**40, "a non-negative integer", True),
    }

    @staticmethod
    def macs_of(d: int, hidden: int, saliences: int, stateful: bool) -> int:
        """The matrix-vector products: 4H·D (+ 4H·H with a previous state) + S·H."""
        return 4 * hidden * d + (4 * hidden * hidden if stateful else 0) + saliences * hidden

    # --- schema -----------------------------------------------------------------------
    def check_shapes(self, checker: ShapeChecker, op: dict[str, Any], where: str) -> None:
        inputs, attrs, name = op["inputs"], op["attrs"], op["name"]
        x_shape, x_dtype, _ = checker.spec(inputs["x"])
        if len(x_shape) != 1 or x_dtype not in ("uint8", "int8"):
            raise IRError(f"{where} input 'x' is {x_dtype} {list(x_shape)}: expected a uint8/int8 [D] vector")
        if ("h" in inputs) != ("c" in inputs):
            raise IRError(f"{where} has one of inputs 'h' and 'c': give both (the previous state) or neither")
        h_shape, h_dtype, _ = checker.spec(attrs["h_out"])
        hidden = h_shape[0]
        if len(h_shape) != 1 or h_dtype != "int16" or not 1 <= hidden <= MAX_HIDDEN:
            raise IRError(
                f"{where} attr 'h_out' names a {h_dtype} {list(h_shape)} tensor: expected int16 [H], "
                f"H <= {MAX_HIDDEN}"
            )
        state = [("h_out", attrs["h_out"], H_FRAC), ("c_out", attrs["c_out"], C_FRAC)]
        if "h" in inputs:
            state += [("input 'h'", inputs["h"], H_FRAC), ("input 'c'", inputs["c"], C_FRAC)]
        for label, ref, frac in state:
            shape, dtype, _ = checker.spec(ref)
            if shape != (hidden,) or dtype != "int16":
                raise IRError(f"{where} {label} is {dtype} {list(shape)}: expected int16 [{hidden}]")
            if not math.isclose(checker.scale(ref), 2.0**-frac, rel_tol=1e-9):
                raise IRError(
                    f"{where} {label} names tensor '{ref}' of scale {checker.scale(ref):.6g}: "
                    f"the LSTM state has scale 2^-{frac}"
                )
        o_shape, o_dtype, o_kind = checker.spec(op["output"])
        if len(o_shape) != 1 or o_dtype != "uint8" or o_kind != "salience" or o_shape[0] > MAX_SALIENCES:
            raise IRError(f"{where} is a gate: its output must be a uint8 salience tensor [S]")
        s = o_shape[0]
        macs = self.macs_of(x_shape[0], hidden, s, "h" in inputs)
        if attrs["macs"] != macs:
            raise IRError(
                f"{where} attr 'macs' is {attrs['macs']}, its shapes give {macs}: re-run the lowering"
            )
        four = 4 * hidden
        checker.arrays[f"{name}.w_x"] = ("int8", (four, x_shape[0]))
        checker.arrays[f"{name}.bias"] = ("int32", (four,))
        checker.arrays[f"{name}.mult_x"] = ("int64", (four,))
        checker.arrays[f"{name}.shift"] = ("int32", (four,))
        if "h" in inputs:
            checker.arrays[f"{name}.w_h"] = ("int8", (four, hidden))
            checker.arrays[f"{name}.mult_h"] = ("int64", (four,))
        checker.arrays[f"{name}.sal_weight"] = ("int8", (s, hidden))
        checker.arrays[f"{name}.sal_bias"] = ("int32", (s,))
        checker.arrays[f"{name}.sal_mult"] = ("int64", (s,))
        checker.arrays[f"{name}.sal_shift"] = ("int32", (s,))

    def check_values(self, model: IRModel, op: Op) -> None:
        """Multipliers in [0, 2^31), shifts in 1..62, no int32 accumulator or int64 sum overflow."""
        a = {k: model.arrays[f"{op.name}.{k}"] for k in self.array_keys(op)}
        where = f"IR op '{op.name}'"
        for key in ("shift", "sal_shift"):
            if np.any(a[key] < 1) or np.any(a[key] > MAX_SHIFT):
                raise IRError(f"{where} array '{key}' has values outside 1..{MAX_SHIFT}")
        for key in ("mult_x", "mult_h", "sal_mult"):
            if key in a and (np.any(a[key] < 0) or np.any(a[key] >= 2**31)):
                raise IRError(f"{where} array '{key}' has values outside [0, 2^31): re-run the lowering")
        lo, hi = DTYPE_RANGES[model.tensors[op.inputs["x"]].dtype]
        acc_x = np.abs(a["w_x"].astype(np.int64)).sum(axis=1) * max(-lo, hi) + np.abs(
            a["bias"].astype(np.int64)
        )
        acc_h = (
            np.abs(a["w_h"].astype(np.int64)).sum(axis=1) * ACT_ONE if "w_h" in a else np.zeros_like(acc_x)
        )
        acc_s = np.abs(a["sal_weight"].astype(np.int64)).sum(axis=1) * ACT_ONE + np.abs(
            a["sal_bias"].astype(np.int64)
        )
        if max(acc_x.max(), np.max(acc_h), acc_s.max()) >= 2**31:
            raise IRError(f"layer '{op.name}' can overflow its int32 accumulator: reduce its weights")
        total = acc_x.astype(np.float64) * a["mult_x"] + 2.0 ** (a["shift"].astype(np.float64) - 1)
        if "mult_h" in a:
            total = total + acc_h.astype(np.float64) * a["mult_h"]
        sal = acc_s.astype(np.float64) * a["sal_mult"] + 2.0 ** (a["sal_shift"].astype(np.float64) - 1)
        if np.any(total >= 2.0**63) or np.any(sal >= 2.0**63):
            raise IRError(f"layer '{op.name}' can overflow its int64 requantisation: re-run the lowering")

    def array_keys(self, op: Op) -> tuple[str, ...]:
        return ARRAY_KEYS + (STATE_KEYS if "h" in op.inputs else ())

    # --- cost -------------------------------------------------------------------------
    def macs(self, op: Op) -> int:
        return int(op.attrs.get("macs", 0))

    def traffic(self, model: IRModel, op: Op, coeffs: Any) -> tuple[int, MemoryTraffic]:
        from tinydyn.cost.traffic import DTYPE_BYTES, QPARAM_BYTES, MemoryTraffic

        x, out = model.tensors[op.inputs["x"]], model.tensors[op.output]
        hidden = model.tensors[op.attrs["h_out"]].size
        stateful = "h" in op.inputs
        macs = self.macs(op)
        # weights once each, 4H + S rows of requantisation constants (+ mult_h), and two table
        # entries (4 bytes) per activation: 4 gates and tanh(c') per hidden unit
        flash = macs + (4 * hidden + out.size) * QPARAM_BYTES + (16 * hidden if stateful else 0) + 20 * hidden
        read = x.size * DTYPE_BYTES[x.dtype] + (4 * hidden if stateful else 0)
        return macs, MemoryTraffic(flash, read, out.size + 4 * hidden)

    # --- reference --------------------------------------------------------------------
    def execute(self, run: Run, op: Op, live: np.ndarray) -> None:
        arrays = {k: run.model.array(op, k) for k in self.array_keys(op)}
        h = run.env[op.inputs["h"]] if "h" in op.inputs else None
        c = run.env[op.inputs["c"]] if "c" in op.inputs else None
        sal, h_new, c_new = lstm_step(run.env[op.inputs["x"]], h, c, arrays)
        run.env[op.output] = sal
        run.env[op.attrs["h_out"]] = h_new
        run.env[op.attrs["c_out"]] = c_new
        run.macs += np.where(live, self.macs(op), 0)

    # --- C ----------------------------------------------------------------------------
    def describe(self, ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
        from tinydyn.codegen.cdefs import CArray, c_name, tensor_macro
        from tinydyn.codegen.packing import pack_linear, prove_accumulators

        cn = c_name(op.name)
        names = {a.name for a in desc.arrays}
        for table, values in (("td_lstm_sigmoid_lut", sigmoid_lut()), ("td_lstm_tanh_lut", tanh_lut())):
            if table not in names:  # one copy of each table for every lstm_gate
                desc.arrays.append(CArray(table, "int16_t", values))
        x = ir.tensors[op.inputs["x"]]
        a = {k: ir.array(op, k) for k in self.array_keys(op)}
        hidden, s = a["sal_weight"].shape[1], a["sal_weight"].shape[0]
        fields: dict[str, str] = {k: "NULL" for k in STATE_KEYS}
        rows: dict[str, int] = {}
        for key, values in a.items():
            ident = f"lstm_{key}_{cn}"
            if key in ("w_x", "w_h", "sal_weight"):  # packed like a linear's rows (SXTB16 order)
                values, rows[key] = pack_linear(values)
                ctype = "int8_t"
            else:
                ctype = "uint8_t" if key.endswith("shift") else "int32_t"
            desc.arrays.append(CArray(ident, ctype, values.astype(np.int64)))
            fields[key] = ident
        # the C accumulates from the bias in int32 on the packed rows: re-prove it there
        prove_accumulators(op.name, a["w_x"], a["w_x"].shape[1], a["bias"], x.dtype)
        if "w_h" in a:
            prove_accumulators(op.name, a["w_h"], hidden, np.zeros(4 * hidden, np.int64), "int16")
        prove_accumulators(op.name, a["sal_weight"], hidden, a["sal_bias"], "int16")
        row_x, row_h = rows["w_x"], rows["sal_weight"]
        desc.scratch[op.name] = 16 * hidden + 4 * row_x + 4 * row_h
        return {
            "arrays": fields,
            "in_d": x.size,
            "hidden": hidden,
            "saliences": s,
            "row_x": row_x,
            "row_h": row_h,
            "in_type": {"uint8": "TD_U8", "int8": "TD_S8"}[x.dtype],
            "macs": self.macs(op),
            "input": tensor_macro(op.inputs["x"]),
            "h": tensor_macro(op.inputs.get("h")),
            "c": tensor_macro(op.inputs.get("c")),
            "output": tensor_macro(op.output),
            "h_out": tensor_macro(op.attrs["h_out"]),
            "c_out": tensor_macro(op.attrs["c_out"]),
            "summary": f"LSTM gate step, {x.size} inputs, hidden {hidden}"
            f"{'' if 'h' in op.inputs else ' (zero initial state)'} -> {s} salience(s)",
        }
