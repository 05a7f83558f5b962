"""Property test: random small integer networks (kernels, strides, paddings, groups, pools,
gates on/off, LSTM gates carrying state from block to block, split/concat stage branches,
exits, input sizes) compiled to C equal the executor on random inputs, under every exit
policy and with gating on and off."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinydyn.codegen import build_project
from tinydyn.codegen.harness import run_host
from tinydyn.ir import DTYPE_RANGES, IRModel, Op, TensorSpec, validate
from tinydyn.ops.arith import conv_accumulate, conv_output_hw
from tinydyn.ops.lstm_gate import lstm_step
from tinydyn.quantize.builder import set_next_costs
from tinydyn.quantize.executor import every_head, execute, trace
from tinydyn.quantize.policy import ExitPolicy

from .codegen_support import assert_same
from .conftest import require_tool


class NetBuilder:
    """Builds a random IR op by op, choosing multipliers that keep outputs in range."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.tensors: dict[str, TensorSpec] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.count = 0

    def tensor(self, shape: tuple[int, ...], dtype: str, kind: str = "activation", name: str = "") -> str:
        self.count += 1
        name = name or f"t{self.count}"
        self.tensors[name] = TensorSpec(name, shape, dtype, 0.05, kind)
        return name

    def requant(self, name: str, cout: int, fan_in: int, x_mean: float, gated: bool, target: float) -> None:
        """mult in [2^21, 2^23) and a shift mapping a typical accumulator to about ``target``."""
        mult = self.rng.integers(1 << 21, 1 << 23, cout)
        typical = max(1.0, math.sqrt(fan_in) * 40 * x_mean) * (128 if gated else 1)
        shift = int(np.clip(round(math.log2(float(mult.mean()) * typical / target)), 1, 62))
        self.arrays[f"{name}.mult"] = mult.astype(np.int64)
        self.arrays[f"{name}.shift"] = np.full(cout, shift, dtype=np.int32)

    def weighted(
        self, kind: str, name: str, x: str, out: str, weight: np.ndarray, attrs: dict, **gates
    ) -> Op:
        cout = weight.shape[0]
        fan_in = int(np.prod(weight.shape[1:]))
        self.arrays[f"{name}.weight"] = weight.astype(np.int8)
        self.arrays[f"{name}.bias"] = self.rng.integers(-2000, 2000, cout).astype(np.int32)
        out_spec = self.tensors[out]
        target = {"uint8": 100.0, "int8": 50.0, "int16": 3000.0}[out_spec.dtype]
        gated = bool(gates.get("channel_gate") or gates.get("block_gate"))
        self.requant(name, cout, fan_in, 60.0, gated, target)
        inputs = {"x": x}
        if gates.get("residual"):
            inputs["residual"] = gates.pop("residual")
            shift = self.arrays[f"{name}.shift"]
            self.arrays[f"{name}.res_mult"] = (self.rng.uniform(0.3, 1.0, cout) * 2.0**shift).astype(np.int64)
        macs = int(np.prod(weight.shape)) * (out_spec.shape[1] * out_spec.shape[2] if kind == "conv2d" else 1)
        attrs = {
            **attrs,
            **{k: v for k, v in gates.items() if v},
            "out_range": list(DTYPE_RANGES[out_spec.dtype]),
        }
        return Op(kind, name, inputs, out, {**attrs, "macs": macs})

    def conv(self, name: str, x: str, cout: int, k: int, stride: int, pad: int, groups: int = 1,
             dtype: str = "uint8", **gates) -> tuple[str, Op]:  # fmt: skip
        cin, h, w = self.tensors[x].shape
        ho, wo = conv_output_hw(h, w, k, stride, pad)
        out = self.tensor((cout, ho, wo), dtype)
        weight = self.rng.integers(-60, 61, (cout, cin // groups, k, k))
        attrs = {"stride": stride, "padding": pad, "groups": groups, "role": "backbone"}
        return out, self.weighted("conv2d", name, x, out, weight, attrs, **gates)

    def linear(self, name: str, x: str, cout: int, kind: str, role: str) -> tuple[str, Op]:
        dtype = "int16" if kind == "logits" else "uint8"
        out = self.tensor((cout,), dtype, kind)
        op = self.weighted(
            "linear", name, x, out, self.rng.integers(-60, 61, (cout, self.tensors[x].size)), {"role": role}
        )
        if kind == "salience":  # gates open, closed or in between depending on the image
            self.arrays[f"{name}.bias"] = self.rng.integers(-1500, 600, cout).astype(np.int32)
        return out, op

    def gap(self, x: str) -> tuple[str, Op]:
        out = self.tensor((self.tensors[x].shape[0],), self.tensors[x].dtype, "vector")
        return out, Op("gap", f"gap_{out}", {"x": x}, out)

    def split(self, x: str, offset: int, count: int) -> tuple[str, Op]:
        c, *hw = self.tensors[x].shape
        out = self.tensor((count, *hw), self.tensors[x].dtype)
        return out, Op("split", f"split_{out}", {"x": x}, out, {"offset": offset, "count": count})

    def concat(self, parts: list[str]) -> tuple[str, Op]:
        first = self.tensors[parts[0]]
        channels = sum(self.tensors[p].shape[0] for p in parts)
        out = self.tensor((channels, *first.shape[1:]), first.dtype, first.kind)
        return out, Op("concat", f"cat_{out}", {f"x{i}": p for i, p in enumerate(parts)}, out)

    def lstm(
        self, name: str, x: str, hidden: int, state: tuple[str, str] | None
    ) -> tuple[str, Op, tuple[str, str]]:
        """An LSTM gate step on vector ``x``: (salience, op, new state (h, c))."""
        d = self.tensors[x].size
        sal = self.tensor((1,), "uint8", "salience")
        h_out, c_out = self.tensor((hidden,), "int16", "vector"), self.tensor((hidden,), "int16", "vector")
        self.tensors[h_out].scale, self.tensors[c_out].scale = 2.0**-15, 2.0**-11
        four = 4 * hidden
        a = {
            "w_x": self.rng.integers(-60, 61, (four, d)).astype(np.int8),
            "bias": self.rng.integers(-2000, 2000, four).astype(np.int32),
            "mult_x": self.rng.integers(1 << 10, 1 << 12, four).astype(np.int64),
            "shift": np.full(four, 12, np.int32),
            "sal_weight": self.rng.integers(-60, 61, (1, hidden)).astype(np.int8),
            "sal_bias": np.zeros(1, np.int32),
            "sal_mult": np.array([1 << 10], np.int64),
            "sal_shift": np.array([20], np.int32),
        }
        inputs = {"x": x}
        if state is not None:
            inputs["h"], inputs["c"] = state
            a["w_h"] = self.rng.integers(-60, 61, (four, hidden)).astype(np.int8)
            a["mult_h"] = self.rng.integers(1 << 6, 1 << 8, four).astype(np.int64)
        self.arrays.update({f"{name}.{k}": v for k, v in a.items()})
        macs = four * d + (four * hidden if state else 0) + hidden
        attrs = {"h_out": h_out, "c_out": c_out, "role": "gate", "macs": macs}
        return sal, Op("lstm_gate", name, inputs, sal, attrs), (h_out, c_out)


def full_env(ir: IRModel, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor for the whole batch (both guard branches, every head)."""
    return trace(ir, images, every_head()).tensors


def calibrate(ir: IRModel, images: np.ndarray) -> None:
    """Choose each layer's bias and shift from the accumulators it really sees, in schedule
    order, so that activations spread over their range, about a third of the saliences are
    zero and logits differ between images."""
    for op in [o for o in ir.walk() if o.kind in ("conv2d", "linear", "lstm_gate")]:
        env = full_env(ir, images)
        x = env[op.inputs["x"]]
        if op.kind == "lstm_gate":
            calibrate_lstm(ir, op, env)
            continue
        weight, bias = ir.array(op, "weight"), ir.array(op, "bias")
        if op.kind == "conv2d":
            acc = (
                conv_accumulate(
                    x, weight, bias, op.attrs["stride"], op.attrs["padding"], op.attrs.get("groups", 1)
                )
                .transpose(1, 0, 2, 3)
                .reshape(len(bias), -1)
            )
        else:
            acc = (x.astype(np.float64) @ weight.astype(np.float64).T + bias).T
        out = ir.tensors[op.output]
        if out.kind == "salience":  # a third of the gates closed
            bias = bias - np.percentile(acc, 33, axis=1).astype(np.int32)
            ir.arrays[f"{op.name}.bias"] = bias
            acc = acc - np.percentile(acc, 33, axis=1, keepdims=True)
        target = {"uint8": 150.0, "int8": 60.0, "int16": 300.0}[out.dtype]
        gated = bool(op.attrs.get("channel_gate") or op.attrs.get("block_gate"))
        typical = max(float(np.percentile(np.abs(acc), 75)), 1.0) * (128 if gated else 1)
        mult = ir.array(op, "mult").astype(np.float64).mean()
        shift = int(np.clip(round(math.log2(mult * typical / target)), 1, 62))
        ir.arrays[f"{op.name}.shift"] = np.full(len(bias), shift, dtype=np.int32)
        if "residual" in op.inputs:
            ir.arrays[f"{op.name}.res_mult"] = (
                np.random.default_rng(shift).uniform(0.3, 1.0, len(bias)) * 2.0**shift
            ).astype(np.int64)
            skip = op.name.replace("conv2", "skip")
            if f"{skip}.res_mult" in ir.arrays:
                ir.arrays[f"{skip}.res_mult"] = ir.arrays[f"{op.name}.res_mult"]
                ir.arrays[f"{skip}.shift"] = ir.arrays[f"{op.name}.shift"]


def calibrate_lstm(ir: IRModel, op: Op, env: dict[str, np.ndarray]) -> None:
    """Pre-activations over about [-3, 3], the state's contribution about 1, and a salience
    that is 0 for about a third of the images and spread over 1..255 for the rest."""
    a = {k[len(op.name) + 1 :]: v for k, v in ir.arrays.items() if k.startswith(op.name + ".")}
    x = env[op.inputs["x"]].astype(np.float64)
    acc_x = x @ a["w_x"].astype(np.float64).T + a["bias"]
    typical = np.maximum(np.percentile(np.abs(acc_x), 75, axis=0), 1.0) * a["mult_x"]
    a["shift"] = np.clip(np.round(np.log2(typical / 768.0)), 1, 62).astype(np.int32)
    h = c = None
    if "h" in op.inputs:
        h, c = env[op.inputs["h"]], env[op.inputs["c"]]
        acc_h = np.maximum(np.percentile(np.abs(h @ a["w_h"].astype(np.float64).T), 75, axis=0), 1.0)
        a["mult_h"] = np.clip(np.round(256.0 * 2.0 ** a["shift"] / acc_h), 0, 2**31 - 1).astype(np.int64)
    _, h_new, _ = lstm_step(env[op.inputs["x"]], h, c, a)
    s_acc = (h_new @ a["sal_weight"].astype(np.float64).T)[:, 0]
    a["sal_bias"] = np.array([-int(np.percentile(s_acc, 33))], np.int32)
    spread = max(float(np.percentile(np.abs(s_acc + a["sal_bias"][0]), 90)), 1.0)
    a["sal_shift"] = np.array([int(np.clip(round(math.log2(spread * 1024 / 200.0)), 1, 62))], np.int32)
    ir.arrays.update({f"{op.name}.{k}": v for k, v in a.items()})


@st.composite
def networks(draw: st.DrawFn) -> tuple[IRModel, np.ndarray]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    nb = NetBuilder(rng)
    cin = draw(st.sampled_from([1, 2, 3]))
    size = draw(st.integers(5, 12))
    x = nb.tensor((cin, size, size), "uint8", name="input")
    ops: list[Op] = []
    k = draw(st.sampled_from([1, 3, 5]))
    width = draw(st.integers(1, 9))
    x, op = nb.conv("stem", x, width, k, draw(st.sampled_from([1, 2])), draw(st.integers(0, k // 2)))
    ops.append(op)
    c, h, w = nb.tensors[x].shape
    pk = draw(st.sampled_from([2, 3]))
    if min(h, w) >= pk and draw(st.booleans()):  # a pool
        kind = draw(st.sampled_from(["maxpool", "avgpool"]))
        pad, stride = draw(st.integers(0, pk // 2)), draw(st.sampled_from([1, 2]))
        ho, wo = conv_output_hw(h, w, pk, stride, pad)
        out = nb.tensor((c, ho, wo), "uint8")
        ops.append(Op(kind, f"pool_{out}", {"x": x}, out, {"kernel": pk, "stride": stride, "padding": pad}))
        x = out
    if draw(st.booleans()):  # a depthwise conv
        c = nb.tensors[x].shape[0]
        x, op = nb.conv("dw", x, c, 3, 1, 1, groups=c)
        ops.append(op)
    exits = 0
    lstm_state: tuple[str, str] | None = None
    hidden = draw(st.integers(1, 10))
    for b in range(draw(st.integers(1, 3))):
        if nb.tensors[x].shape[0] >= 2 and draw(st.booleans()):
            # S2DNAS-style stages: split the channels in two groups, the second stage also reads
            # the first stage's features (concat), and the block's output joins both stages
            c_all = nb.tensors[x].shape[0]
            k1 = draw(st.integers(1, c_all - 1))
            s1, op1 = nb.split(x, 0, k1)
            s2, op2 = nb.split(x, k1, c_all - k1)
            kk = draw(st.sampled_from([1, 3]))
            y1, conv_a = nb.conv(f"b{b}.stage1", s1, draw(st.integers(1, 4)), kk, 1, kk // 2)
            joined, cat1 = nb.concat([s2, y1])
            y2, conv_b = nb.conv(f"b{b}.stage2", joined, draw(st.integers(1, 4)), kk, 1, kk // 2)
            x, cat2 = nb.concat([y1, y2] if draw(st.booleans()) else [y1, y2, s1])
            ops += [op1, op2, conv_a, cat1, conv_b, cat2]
        cin_b = nb.tensors[x].shape[0]
        cout = draw(st.integers(1, 10))
        stride = draw(st.sampled_from([1, 2])) if min(nb.tensors[x].shape[1:]) >= 3 else 1
        gated = draw(st.booleans())
        pooled, gap_op = nb.gap(x)
        if cout != cin_b or stride != 1:
            short, short_op = nb.conv(f"b{b}.short", x, cout, 1, stride, 0, dtype="int8")
        else:
            short, short_op = x, None
        pre: list[Op] = [gap_op] + ([short_op] if short_op else [])
        if gated:
            if draw(st.booleans()):  # DDI's layer gate: an LSTM step carrying its state on
                s_block, lnet, lstm_state = nb.lstm(f"b{b}.lstm", pooled, hidden, lstm_state)
            else:
                s_block, lnet = nb.linear(f"b{b}.lnet", pooled, 1, "salience", "gate")
            s_chan, cnet = nb.linear(f"b{b}.cnet", pooled, cout, "salience", "gate")
            h, conv1 = nb.conv(f"b{b}.conv1", x, cout, 3, stride, 1, channel_gate=s_chan)
            out, conv2 = nb.conv(
                f"b{b}.conv2", h, cout, 3, 1, 1, block_gate=s_block, input_mask=s_chan, residual=short
            )
            skip = Op("rescale", f"b{b}.skip", {"x": short}, out, {"out_range": [0, 255]})
            nb.arrays[f"b{b}.skip.res_mult"] = nb.arrays[f"b{b}.conv2.res_mult"]
            nb.arrays[f"b{b}.skip.shift"] = nb.arrays[f"b{b}.conv2.shift"]
            guard = Op(
                "guard", f"b{b}.guard", attrs={"gate": s_block}, then=[cnet, conv1, conv2], orelse=[skip]
            )
            ops += pre + [lnet, guard]
        else:
            h, conv1 = nb.conv(f"b{b}.conv1", x, cout, 3, stride, 1)
            out, conv2 = nb.conv(f"b{b}.conv2", h, cout, 3, 1, 1, residual=short)
            ops += pre + [conv1, conv2]
        x = out
        if draw(st.booleans()):
            pooled, gap_op = nb.gap(x)
            logits, fc = nb.linear(f"exit{exits}.fc", pooled, 4, "logits", "exit_head")
            ops += [
                gap_op,
                Op(
                    "exit",
                    f"exit{exits}",
                    attrs={"index": exits, "final": False, "logits": logits},
                    then=[fc],
                ),
            ]
            exits += 1
    pooled, gap_op = nb.gap(x)
    logits, fc = nb.linear("final.fc", pooled, 4, "logits", "exit_head")
    ops += [gap_op, Op("exit", "final", attrs={"index": exits, "final": True, "logits": logits}, then=[fc])]
    set_next_costs(ops)
    ir = IRModel(
        "random", "input", nb.tensors, ops, nb.arrays, ["a", "b", "c", "d"], {"static_backbone_macs": 0}
    )
    validate(ir)
    images = rng.integers(0, 256, (24, cin, size, size)).astype(np.uint8)
    calibrate(ir, images)
    return ir, images


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    require_tool("gcc")
    return tmp_path_factory.mktemp("random_nets")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    net=networks(),
    policy_kind=st.sampled_from(["none", "confidence", "margin", "budget"]),
    gating=st.sampled_from([True, True, False]),
    dsp=st.booleans(),
)
def test_random_networks_bit_exact(net, policy_kind, gating, dsp, workdir):
    ir, images = net
    first = min(ir.exits(), key=lambda o: o.attrs["index"])
    logits = np.sort(full_env(ir, images)[first.attrs["logits"]], axis=1)
    scale = ir.tensors[first.attrs["logits"]].scale
    if policy_kind == "budget":  # between the cheapest and the dearest image
        macs = execute(ir, images, ExitPolicy("none")).macs
        threshold = float(macs.min() + macs.max()) / 2
    elif policy_kind == "margin":  # about half the images leave at the first exit
        threshold = float(np.median(logits[:, -1] - logits[:, -2])) * scale
    elif policy_kind == "confidence":
        z = (logits - logits[:, -1:]) * scale
        threshold = float(np.median(1 / np.exp(z).sum(axis=1)))
    else:
        threshold = 0.0
    policy = ExitPolicy(policy_kind, threshold, gating=gating)
    # the DSP path (emulated intrinsics) must give the portable path's results
    build_project(ir, "host", workdir, compile=True, extra_cflags="-O1 -DTD_EMULATE_DSP" if dsp else "-O1")
    assert_same(execute(ir, images, policy), run_host(ir, workdir / "fw", images, policy))
