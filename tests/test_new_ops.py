"""concat, split and lstm_gate: hand-computed reference examples, the LUTs, the schema's
one-line errors, gating off. (The generated C is compared with these references in
tests/test_codegen_property.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinydyn.ir import IRError, IRModel, Op, TensorSpec, validate
from tinydyn.ops import OPS, op_kind
from tinydyn.ops.lstm_gate import (
    LUT_SIZE,
    Z_MAX,
    Z_MIN,
    lstm_step,
    lut_activation,
    sigmoid_lut,
    tanh_lut,
)
from tinydyn.quantize.executor import execute, trace
from tinydyn.quantize.policy import ExitPolicy

H_SCALE, C_SCALE = 2.0**-15, 2.0**-11


# ----------------------------------------------------------------------------- LUTs
def test_luts_are_generated_as_specified():
    sig, tanh = sigmoid_lut(), tanh_lut()
    assert LUT_SIZE == 129 and sig.shape == tanh.shape == (129,)
    for k in (0, 1, 37, 64, 100, 128):
        v = -8 + k / 8
        assert sig[k] == min(max(math.floor(32768 / (1 + math.exp(-v)) + 0.5), -32767), 32767)
        assert tanh[k] == min(max(math.floor(32768 * math.tanh(v) + 0.5), -32767), 32767)
    assert (sig[0], sig[64], sig[128]) == (11, 16384, 32757)
    assert (tanh[0], tanh[64], tanh[72], tanh[128]) == (-32767, 0, 24956, 32767)
    assert np.all(np.diff(sig) >= 0) and np.all(np.diff(tanh) >= 0)


def test_lut_interpolation():
    tanh = tanh_lut()
    # z = 98 (0.383): u = 2146, k = 67, r = 2: 11743 + round_shift((15143 - 11743)·2, 5)
    assert (tanh[67], tanh[68]) == (11743, 15143)
    assert lut_activation(tanh, np.array([98]))[0] == 11743 + ((3400 * 2 + 16) >> 5) == 11956
    # out-of-range pre-activations clamp; table points are exact
    z = np.array([Z_MIN - 100, Z_MIN, 0, 256, Z_MAX, Z_MAX + 5000])
    assert lut_activation(tanh, z).tolist() == [-32767, -32767, 0, 24956, 32767, 32767]
    # the interpolated curve stays within 50 LSB of the real one everywhere
    zs = np.arange(Z_MIN, Z_MAX + 1)
    assert np.abs(lut_activation(tanh, zs) - 32768 * np.tanh(zs / 256)).max() < 50
    assert np.abs(lut_activation(sigmoid_lut(), zs) - 32768 / (1 + np.exp(-zs / 256))).max() < 8


# ----------------------------------------------------------------------------- lstm_step
def _arrays(**over) -> dict[str, np.ndarray]:
    base = {
        "w_x": np.zeros((4, 1), np.int8),
        "bias": np.array([0, 0, 256, 0], np.int32),
        "mult_x": np.full(4, 2, np.int64),
        "shift": np.ones(4, np.int32),
        "sal_weight": np.array([[1]], np.int8),
        "sal_bias": np.array([0], np.int32),
        "sal_mult": np.array([1], np.int64),
        "sal_shift": np.array([6], np.int32),
    }
    return {**base, **over}


def _rs(v: int, s: int) -> int:
    return (v + (1 << (s - 1))) >> s


def _act(table: np.ndarray, z: int) -> int:
    u = min(max(z, -2048), 2047) + 2048
    k, r = u >> 5, u & 31
    return int(table[k]) + _rs((int(table[k + 1]) - int(table[k])) * r, 5)


def scalar_lstm(x, h, c, a) -> tuple[list[int], list[int], list[int]]:
    """docs/ARITHMETIC.md's lstm_gate, literally, in Python ints (a second implementation)."""
    sig, tanh = sigmoid_lut(), tanh_lut()
    hidden = a["w_x"].shape[0] // 4
    z = []
    for r in range(4 * hidden):
        acc_x = int(a["bias"][r]) + sum(int(w) * int(v) for w, v in zip(a["w_x"][r], x, strict=True))
        value = acc_x * int(a["mult_x"][r])
        if h is not None:
            value += sum(int(w) * int(v) for w, v in zip(a["w_h"][r], h, strict=True)) * int(a["mult_h"][r])
        z.append(min(max(_rs(value, int(a["shift"][r])), -2048), 2047))
    h_new, c_new = [], []
    for j in range(hidden):
        i, f = _act(sig, z[j]), _act(sig, z[hidden + j])
        g, o = _act(tanh, z[2 * hidden + j]), _act(sig, z[3 * hidden + j])
        cj = 0 if c is None else int(c[j])
        c2 = min(max(_rs(f * cj * 16 + i * g, 19), -32768), 32767)
        c_new.append(c2)
        h_new.append(_rs(o * _act(tanh, _rs(c2, 3)), 15))
    sal = []
    for s in range(a["sal_weight"].shape[0]):
        acc = int(a["sal_bias"][s]) + sum(int(w) * v for w, v in zip(a["sal_weight"][s], h_new, strict=True))
        sal.append(min(max(_rs(acc * int(a["sal_mult"][s]), int(a["sal_shift"][s])), 0), 255))
    return sal, h_new, c_new


def test_lstm_step_zero_state_by_hand():
    # z = round_shift(acc·2, 1) = bias: i = f = o = σ(0) = 16384, g = tanh(1) = TANH_LUT[72] = 24956
    # c' = round_shift(16384·24956, 19) = 780 (0.381 = 0.5·tanh(1));
    # tanh(c'): z = round_shift(780, 3) = 98 -> 11956; h' = round_shift(16384·11956, 15) = 5978;
    # salience = round_shift(5978, 6) = 93
    sal, h, c = lstm_step(np.array([[1]]), None, None, _arrays())
    assert (sal.tolist(), h.tolist(), c.tolist()) == ([[93]], [[5978]], [[780]])
    assert scalar_lstm([1], None, None, _arrays()) == ([93], [5978], [780])


def test_lstm_step_with_state_by_hand():
    a = _arrays(
        w_h=np.ones((4, 1), np.int8),
        mult_h=np.ones(4, np.int64),
        bias=np.array([0, 512, 256, -256], np.int32),
    )
    # acc_h = 100 for every row: z = round_shift(2·bias + 100, 1) = [50, 562, 306, -206]
    sal, h, c = lstm_step(np.array([[1]]), np.array([[100]]), np.array([[2048]]), a)
    assert (sal.tolist(), h.tolist(), c.tolist()) == ([[139]], [[8865]], [[2777]])
    assert scalar_lstm([1], [100], [2048], a) == ([139], [8865], [2777])


def test_lstm_step_equals_the_literal_spec_on_random_cells():
    rng = np.random.default_rng(5)
    for trial in range(20):
        d, hidden, s = rng.integers(1, 6), rng.integers(1, 5), rng.integers(1, 3)
        a = {
            "w_x": rng.integers(-127, 128, (4 * hidden, d)).astype(np.int8),
            "bias": rng.integers(-5000, 5000, 4 * hidden).astype(np.int32),
            "mult_x": rng.integers(1, 1 << 20, 4 * hidden),
            "shift": rng.integers(12, 24, 4 * hidden).astype(np.int32),
            "w_h": rng.integers(-127, 128, (4 * hidden, hidden)).astype(np.int8),
            "mult_h": rng.integers(1, 1 << 12, 4 * hidden),
            "sal_weight": rng.integers(-127, 128, (s, hidden)).astype(np.int8),
            "sal_bias": rng.integers(-9000, 9000, s).astype(np.int32),
            "sal_mult": rng.integers(1, 1 << 10, s),
            "sal_shift": rng.integers(10, 20, s).astype(np.int32),
        }
        x = rng.integers(0, 256, (3, d))
        h = rng.integers(-32767, 32768, (3, hidden))
        c = rng.integers(-32768, 32768, (3, hidden))
        stateful = trial % 2 == 0
        got = lstm_step(x, h if stateful else None, c if stateful else None, a)
        for n in range(3):
            want = scalar_lstm(x[n], h[n] if stateful else None, c[n] if stateful else None, a)
            assert tuple(g[n].tolist() for g in got) == want


# ----------------------------------------------------------------------------- tiny IRs
def tiny_ir(d_split=1, state=True, concat_scale=0.05, **edit) -> IRModel:
    """input (3, 4, 4) → split ch 1..2 → concat(input, split) (5 ch) → gap → lstm_gate (chain of two
    when ``state``) → guard(conv) → gap → linear → final exit."""
    t = {
        "input": TensorSpec("input", (3, 4, 4), "uint8", 0.05),
        "sp": TensorSpec("sp", (d_split, 4, 4), "uint8", 0.05),
        "cat": TensorSpec("cat", (3 + d_split, 4, 4), "uint8", concat_scale),
        "pool": TensorSpec("pool", (3 + d_split,), "uint8", concat_scale, "vector"),
        "s0": TensorSpec("s0", (1,), "uint8", 1 / 255, "salience"),
        "h0": TensorSpec("h0", (2,), "int16", H_SCALE, "vector"),
        "c0": TensorSpec("c0", (2,), "int16", C_SCALE, "vector"),
        "s1": TensorSpec("s1", (1,), "uint8", 1 / 255, "salience"),
        "h1": TensorSpec("h1", (2,), "int16", H_SCALE, "vector"),
        "c1": TensorSpec("c1", (2,), "int16", C_SCALE, "vector"),
        "y": TensorSpec("y", (2, 4, 4), "uint8", 0.05),
        "z": TensorSpec("z", (2, 4, 4), "uint8", 0.05),
        "pz": TensorSpec("pz", (2,), "uint8", 0.05, "vector"),
        "logits": TensorSpec("logits", (2,), "int16", 0.1, "logits"),
    }
    rng = np.random.default_rng(1)
    d = 3 + d_split
    arrays: dict[str, np.ndarray] = {}

    def lstm(name: str, stateful: bool, sal_bias: int) -> None:
        arrays.update(
            {
                f"{name}.w_x": rng.integers(-60, 61, (8, d)).astype(np.int8),
                f"{name}.bias": rng.integers(-500, 500, 8).astype(np.int32),
                f"{name}.mult_x": np.full(8, 1 << 12, np.int64),
                f"{name}.shift": np.full(8, 16, np.int32),
                f"{name}.sal_weight": np.array([[60, -30]], np.int8),
                f"{name}.sal_bias": np.array([sal_bias], np.int32),  # about half the blocks skipped
                f"{name}.sal_mult": np.array([1 << 10], np.int64),
                f"{name}.sal_shift": np.array([18], np.int32),
            }
        )
        if stateful:
            arrays[f"{name}.w_h"] = rng.integers(-60, 61, (8, 2)).astype(np.int8)
            arrays[f"{name}.mult_h"] = np.full(8, 1 << 6, np.int64)

    lstm("g0", False, 1_170_000)
    ops = [
        Op("split", "sp", {"x": "input"}, "sp", {"offset": 1, "count": d_split}),
        Op("concat", "cat", {"x0": "input", "x1": "sp"}, "cat"),
        Op("gap", "gap0", {"x": "cat"}, "pool"),
        Op(
            "lstm_gate",
            "g0",
            {"x": "pool"},
            "s0",
            {"h_out": "h0", "c_out": "c0", "role": "gate", "macs": 8 * d + 2},
        ),
    ]
    gate = "s0"
    if state:
        lstm("g1", True, 520_000)
        ops.append(
            Op(
                "lstm_gate",
                "g1",
                {"x": "pool", "h": "h0", "c": "c0"},
                "s1",
                {"h_out": "h1", "c_out": "c1", "role": "gate", "macs": 8 * d + 16 + 2},
            )
        )
        gate = "s1"
    arrays.update(
        {
            "conv.weight": rng.integers(-60, 61, (2, d, 1, 1)).astype(np.int8),
            "conv.bias": np.zeros(2, np.int32),
            "conv.mult": np.full(2, 1 << 20, np.int64),
            "conv.shift": np.full(2, 28, np.int32),
            "skip.weight": rng.integers(-60, 61, (2, d, 1, 1)).astype(np.int8),
            "skip.bias": np.zeros(2, np.int32),
            "skip.mult": np.full(2, 1 << 20, np.int64),
            "skip.shift": np.full(2, 20, np.int32),
            "fc.weight": np.array([[1, -1], [-1, 1]], np.int8),
            "fc.bias": np.zeros(2, np.int32),
            "fc.mult": np.full(2, 1 << 20, np.int64),
            "fc.shift": np.full(2, 20, np.int32),
        }
    )
    conv_attrs = {"stride": 1, "padding": 0, "out_range": [0, 255], "macs": 2 * d * 16}
    ops += [
        Op(
            "guard",
            "guard",
            attrs={"gate": gate},
            then=[Op("conv2d", "conv", {"x": "cat"}, "y", {**conv_attrs, "block_gate": gate})],
            orelse=[Op("conv2d", "skip", {"x": "cat"}, "y", conv_attrs)],
        ),
        Op("gap", "gap1", {"x": "y"}, "pz"),
        Op(
            "exit",
            "final",
            attrs={"index": 0, "final": True, "logits": "logits"},
            then=[Op("linear", "fc", {"x": "pz"}, "logits", {"out_range": [-32768, 32767], "macs": 4})],
        ),
    ]
    ir = IRModel("tiny", "input", t, ops, arrays, ["a", "b"], {})
    for key, value in edit.items():
        name, _, field = key.partition("__")
        op = next(o for o in ir.walk() if o.name == name)
        if field in ("inputs", "attrs"):
            setattr(op, field, value)
        else:
            ir.arrays[f"{name}.{field}"] = value
    return ir


def test_tiny_ir_runs_and_follows_the_spec():
    ir = tiny_ir()
    validate(ir)
    images = np.random.default_rng(2).integers(0, 256, (16, 3, 4, 4)).astype(np.uint8)
    env = trace(ir, images).tensors
    assert np.array_equal(env["sp"], images[:, 1:2].astype(np.int64))
    assert np.array_equal(env["cat"], np.concatenate([images, images[:, 1:2]], axis=1))
    a0 = {k.split(".", 1)[1]: v for k, v in ir.arrays.items() if k.startswith("g0.")}
    a1 = {k.split(".", 1)[1]: v for k, v in ir.arrays.items() if k.startswith("g1.")}
    s0, h0, c0 = lstm_step(env["pool"], None, None, a0)
    s1, h1, c1 = lstm_step(env["pool"], h0, c0, a1)
    for name, want in {"s0": s0, "h0": h0, "c0": c0, "s1": s1, "h1": h1, "c1": c1}.items():
        assert np.array_equal(env[name], want), name
    res = execute(ir, images)
    gate_macs = 8 * 4 + 2 + 8 * 4 + 16 + 2
    assert res.macs.tolist() == [gate_macs + 2 * 4 * 16 + 4] * 16  # either branch: one 1x1 conv
    assert res.skipped_blocks.tolist() == (s1[:, 0] == 0).astype(int).tolist()
    assert 0 < res.skipped_blocks.sum() < 16 and len(set(s1[:, 0].tolist())) > 3
    assert op_kind("lstm_gate").writes(ir.ops[4]) == ["s1", "h1", "c1"]
    assert op_kind("lstm_gate").reads(ir.ops[4]) == ["pool", "h0", "c0"]


def test_gating_off_opens_every_gate_and_zeroes_the_state():
    ir = tiny_ir()
    images = np.random.default_rng(3).integers(0, 256, (8, 3, 4, 4)).astype(np.uint8)
    run = trace(ir, images, ExitPolicy("none", gating=False))
    for name in ("s0", "s1"):
        assert np.all(run.tensors[name] == 255)
    for name in ("h0", "c0", "h1", "c1"):
        assert np.all(run.tensors[name] == 0)
    assert run.results.macs.tolist() == [2 * 4 * 16 + 4] * 8  # no gate MACs
    assert run.results.skipped_blocks.tolist() == [0] * 8


def test_vector_concat_and_split():
    run = type("R", (), {})()
    run.env = {"a": np.array([[1, 2], [3, 4]]), "b": np.array([[5], [6]])}
    OPS["concat"].execute(run, Op("concat", "c", {"x0": "a", "x1": "b"}, "o"), np.ones(2, bool))
    assert run.env["o"].tolist() == [[1, 2, 5], [3, 4, 6]]
    OPS["split"].execute(run, Op("split", "s", {"x": "o"}, "p", {"offset": 1, "count": 2}), np.ones(2, bool))
    assert run.env["p"].tolist() == [[2, 5], [4, 6]]


# ----------------------------------------------------------------------------- schema errors
def _retensor(ir: IRModel, name: str, **changes) -> IRModel:
    spec = ir.tensors[name]
    fields = {"shape": spec.shape, "dtype": spec.dtype, "scale": spec.scale, "kind": spec.kind, **changes}
    ir.tensors[name] = TensorSpec(name, **fields)
    return ir


SCHEMA_CASES = [
    ("concat of two scales", lambda: tiny_ir(concat_scale=0.1), "rescale it first"),
    (
        "concat input gap",
        lambda: tiny_ir(cat__inputs={"x0": "input", "x1": "sp", "x3": "sp"}),
        "without gaps",
    ),
    ("concat of one input", lambda: tiny_ir(cat__inputs={"x0": "input"}), "has no input 'x1'"),
    (
        "concat of nine inputs",
        lambda: tiny_ir(cat__inputs={f"x{i}": "input" for i in range(9)}),
        "unknown input 'x8'",
    ),
    ("concat channel count", lambda: _retensor(tiny_ir(), "cat", shape=(5, 4, 4)), "channels in all"),
    ("concat dtype", lambda: _retensor(tiny_ir(), "cat", dtype="int8"), "output's dtype int8"),
    ("split dtype", lambda: _retensor(tiny_ir(), "sp", dtype="int8"), "not int8 [1, 4, 4]"),
    ("split past the end", lambda: tiny_ir(sp__attrs={"offset": 3, "count": 1}), "takes channels 3..3"),
    ("split shape", lambda: tiny_ir(sp__attrs={"offset": 0, "count": 2}), "a split of"),
    ("split count 0", lambda: tiny_ir(sp__attrs={"offset": 0, "count": 0}), "attr 'count'"),
    (
        "lstm h without c",
        lambda: tiny_ir(g1__inputs={"x": "pool", "h": "h0"}),
        "give both",
    ),
    ("lstm state scale", lambda: _retensor(tiny_ir(), "c0", scale=H_SCALE), "scale 2^-11"),
    ("lstm state dtype", lambda: _retensor(tiny_ir(), "h0", dtype="int8"), "attr 'h_out'"),
    (
        "lstm state read before written",
        lambda: tiny_ir(g0__inputs={"x": "pool", "h": "h1", "c": "c1"}),
        "before",
    ),
    (
        "lstm role",
        lambda: tiny_ir(g0__attrs={"h_out": "h0", "c_out": "c0", "role": "backbone", "macs": 34}),
        "attr 'role'",
    ),
    (
        "lstm macs",
        lambda: tiny_ir(g0__attrs={"h_out": "h0", "c_out": "c0", "role": "gate", "macs": 35}),
        "its shapes give 34",
    ),
    (
        "lstm writes its input",
        lambda: tiny_ir(g1__attrs={"h_out": "h0", "c_out": "c1", "role": "gate", "macs": 50}),
        "already wrote",
    ),
    (
        "lstm unknown state tensor",
        lambda: tiny_ir(g0__attrs={"h_out": "nope", "c_out": "c0", "role": "gate", "macs": 34}),
        "unknown tensor",
    ),
    ("lstm salience kind", lambda: _retensor(tiny_ir(), "s0", kind="vector"), "salience"),
    ("lstm shift", lambda: tiny_ir(g0__shift=np.zeros(8, np.int32)), "array 'shift'"),
    ("lstm negative mult", lambda: tiny_ir(g1__mult_h=np.full(8, -1, np.int64)), "array 'mult_h'"),
    ("lstm accumulator", lambda: tiny_ir(g0__bias=np.full(8, 2**31 - 1, np.int32)), "int32 accumulator"),
    ("lstm missing w_h", lambda: _drop(tiny_ir(), "g1.w_h"), "'g1.w_h' is missing"),
    (
        "lstm stray w_h",
        lambda: tiny_ir(
            g1__inputs={"x": "pool"}, g1__attrs={"h_out": "h1", "c_out": "c1", "role": "gate", "macs": 34}
        ),
        "belongs to no op",
    ),
]


def _drop(ir: IRModel, key: str) -> IRModel:
    del ir.arrays[key]
    return ir


@pytest.mark.parametrize("make, fragment", [c[1:] for c in SCHEMA_CASES], ids=[c[0] for c in SCHEMA_CASES])
def test_schema_errors_are_one_line(make, fragment):
    with pytest.raises(IRError) as info:
        validate(make())
    message = str(info.value)
    assert fragment in message and "\n" not in message, message


def test_ir_with_new_ops_round_trips_through_files(tmp_path):
    ir = tiny_ir()
    loaded = IRModel.load(ir.save(tmp_path / "ir"))
    images = np.random.default_rng(4).integers(0, 256, (4, 3, 4, 4)).astype(np.uint8)
    assert np.array_equal(execute(loaded, images).logits, execute(ir, images).logits)


# ----------------------------------------------------------------------------- C
@pytest.mark.parametrize("state", [False, True])
@pytest.mark.parametrize("cflags", ["-O1", "-O1 -DTD_EMULATE_DSP"])
def test_generated_c_equals_the_reference(state, cflags, tmp_path):
    """concat, split and the LSTM gates (zero state, carried state) in C, portable and DSP
    paths, gating on and off: bit-exact with the executor, tensors included through the
    logits and the saliences' effect on skipped blocks and MACs."""
    from tinydyn.codegen import build_project
    from tinydyn.codegen.harness import run_host

    from .codegen_support import assert_same
    from .conftest import require_tool

    require_tool("gcc")
    ir = tiny_ir(state=state)
    build_project(ir, "host", tmp_path, compile=True, extra_cflags=cflags)
    images = np.random.default_rng(6).integers(0, 256, (48, 3, 4, 4)).astype(np.uint8)
    for gating in (True, False):
        policy = ExitPolicy("none", gating=gating)
        ref = execute(ir, images, policy)
        assert_same(ref, run_host(ir, tmp_path / "fw", images, policy))
    assert 0 < execute(ir, images).skipped_blocks.sum() < len(images)


def test_cortex_m4_build_equals_the_reference(tmp_path):
    """The real DSP path (SMLAD) on a Cortex-M4 under QEMU: the LSTM chain, split and concat."""
    from tinydyn.codegen import build_project
    from tinydyn.codegen.harness import run_qemu

    from .codegen_support import assert_same
    from .conftest import require_tool

    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    ir = tiny_ir()
    build_project(ir, "qemu-mps2-an386", tmp_path, compile=True)
    images = np.random.default_rng(7).integers(0, 256, (32, 3, 4, 4)).astype(np.uint8)
    for gating in (True, False):
        policy = ExitPolicy("none", gating=gating)
        assert_same(execute(ir, images, policy), run_qemu(ir, tmp_path / "fw.elf", images, policy))
