"""The integer reference executor: *the* arithmetic spec (docs/ARITHMETIC.md) in numpy.

Every value is an integer. Products are accumulated exactly: convolutions and linears run
as float64 matrix products, which are exact because every partial sum of int8 × uint8/int8
products stays far below 2**53 (the lowering proves |acc| < 2**31); everything after the
accumulator (requantisation, gates, pooling, exit policies) is int64 numpy.

The executor runs a batch at once. Dynamic control is per image: a guard's two branches
and every exit head are evaluated for the whole batch, then each image takes the values of
the branch its own gate chose, and only the work an image really executes is counted in its
MACs. Because a zero gate makes the skipped work contribute exactly nothing (see the
requantisation formula), this equals running each image alone with real skipping — which is
what the C firmware does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tinydyn.errors import TinydynError
from tinydyn.ir import DTYPE_RANGES, SALIENCE_ONE, IRModel, Op
from tinydyn.quantize.policy import ExitPolicy, IntegerPolicy


class InputShapeError(TinydynError):
    """Images whose shape or dtype does not match the model's input."""


@dataclass
class Results:
    """Per-image outcome of a batch; arrays have the batch size as first dimension."""

    logits: np.ndarray  # int64 (N, classes): the logits of the exit each image took
    predictions: np.ndarray  # int64 (N,)
    exits: np.ndarray  # int64 (N,): exit index (the final classifier is the last)
    macs: np.ndarray  # int64 (N,): executed multiply-accumulates
    skipped_blocks: np.ndarray  # int64 (N,)
    skipped_channels: np.ndarray  # int64 (N,)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.predictions)

    @staticmethod
    def concat(parts: list[Results]) -> Results:
        names = ("logits", "predictions", "exits", "macs", "skipped_blocks", "skipped_channels")
        return Results(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


# ----------------------------------------------------------------------------- arithmetic
def round_shift(value: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``(value + 2**(shift-1)) >> shift``: round half up, the one rounding rule (shift >= 1)."""
    shift = np.asarray(shift, dtype=np.int64)
    return (value + (np.int64(1) << (shift - 1))) >> shift


def requantize(
    acc: np.ndarray,
    gate: np.ndarray,
    mult: np.ndarray,
    shift: np.ndarray,
    out_range: tuple[int, int],
    residual: np.ndarray | None = None,
    res_mult: np.ndarray | None = None,
) -> np.ndarray:
    """The output stage of conv2d/linear/rescale, channel axis 1.

    ``y = clamp((acc*gate*mult[c] + residual*res_mult[c] + 2**(shift[c]-1)) >> shift[c])``.
    ``gate`` is the salience (0..255, or 1 for an ungated layer, whose ``mult`` then has no
    1/255 folded in). Scaling by a salience happens here and nowhere else.
    """
    bshape = (1, -1) + (1,) * (acc.ndim - 2)
    value = acc * gate * mult.reshape(bshape)
    if residual is not None:
        value = value + residual * res_mult.reshape(bshape)
    out = round_shift(value, shift.reshape(bshape))
    return np.clip(out, out_range[0], out_range[1])


def conv_accumulate(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, op: Op) -> np.ndarray:
    """int32-exact accumulators of a grouped 2-D convolution with zero padding."""
    stride, pad, groups = op.attrs["stride"], op.attrs["padding"], op.attrs.get("groups", 1)
    n, cin, _, _ = x.shape
    cout, cin_g, kh, kw = weight.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    ho, wo = windows.shape[2], windows.shape[3]
    cout_g = cout // groups
    acc = np.empty((n, cout, ho, wo), dtype=np.float64)
    for g in range(groups):
        win = windows[:, g * cin_g : (g + 1) * cin_g]  # (n, cin_g, ho, wo, kh, kw)
        w = weight[g * cout_g : (g + 1) * cout_g].astype(np.float64)
        acc[:, g * cout_g : (g + 1) * cout_g] = np.einsum("nihwyx,oiyx->nohw", win, w, optimize=True)
    return acc.astype(np.int64) + bias.astype(np.int64).reshape(1, -1, 1, 1)


def conv_output_hw(h: int, w: int, k: int, stride: int, pad: int) -> tuple[int, int]:
    return (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1


def global_average_pool(x: np.ndarray) -> np.ndarray:
    """Channel means rounded half up: ``(sum + HW//2) // HW`` (inputs are non-negative)."""
    hw = x.shape[2] * x.shape[3]
    return (x.sum(axis=(2, 3)) + hw // 2) // hw


def pool2d(x: np.ndarray, op: Op) -> np.ndarray:
    k, stride, pad = op.attrs["kernel"], op.attrs["stride"], op.attrs.get("padding", 0)
    if op.kind == "maxpool":
        xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=np.iinfo(np.int64).min)
        return sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride].max(axis=(4, 5))
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    sums = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride].sum(axis=(4, 5))
    area = k * k  # padding counts as zeros, like the C kernel
    return np.where(sums >= 0, (sums + area // 2) // area, -((-sums + area // 2) // area))


# ----------------------------------------------------------------------------- executor
class _Run:
    """State of one batch run: tensor values, which images still run, their counters."""

    def __init__(self, model: IRModel, images: np.ndarray, policy: IntegerPolicy) -> None:
        self.model = model
        self.policy = policy
        n = images.shape[0]
        self.env: dict[str, np.ndarray] = {model.input: images.astype(np.int64)}
        self.running = np.ones(n, dtype=bool)
        self.macs = np.zeros(n, dtype=np.int64)
        self.skipped_blocks = np.zeros(n, dtype=np.int64)
        self.skipped_channels = np.zeros(n, dtype=np.int64)
        self.logits = np.zeros((n, model.num_classes), dtype=np.int64)
        self.exits = np.full(n, -1, dtype=np.int64)

    # each op runs for the whole batch; `live` marks images that really execute it
    def run_ops(self, ops: list[Op], live: np.ndarray) -> None:
        for op in ops:
            getattr(self, f"op_{op.kind}")(op, live & self.running)

    def gate_of(self, op: Op, key: str, channels: int) -> np.ndarray | None:
        name = op.attrs.get(key)
        if not name:
            return None
        gate = self.env[name]
        return gate.reshape(gate.shape[0], -1) if gate.ndim > 1 else gate.reshape(-1, 1)

    def weighted(self, op: Op) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(input, channel/ block gate (N, Cout), active outputs, active inputs)."""
        m = self.model
        x = self.env[op.inputs["x"]]
        weight = m.array(op, "weight")
        cout = weight.shape[0]
        n = x.shape[0]
        mask = self.gate_of(op, "input_mask", x.shape[1])
        active_in = np.ones((n, x.shape[1]), dtype=bool) if mask is None else mask != 0
        if mask is not None:  # masked input channels are not read: they contribute nothing
            x = x * active_in.reshape(active_in.shape + (1,) * (x.ndim - 2))
        channel_gate = self.gate_of(op, "channel_gate", cout)
        block_gate = self.gate_of(op, "block_gate", 1)
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

    def finish(self, op: Op, acc: np.ndarray, gate: np.ndarray, live: np.ndarray) -> None:
        m = self.model
        residual = res_mult = None
        if "residual" in op.inputs:
            residual, res_mult = self.env[op.inputs["residual"]], m.array(op, "res_mult")
        gate = gate.reshape(gate.shape + (1,) * (acc.ndim - 2))
        out = requantize(
            acc,
            gate,
            m.array(op, "mult"),
            m.array(op, "shift"),
            tuple(op.attrs["out_range"]),
            residual,
            res_mult,
        )
        self.env[op.output] = out

    def op_conv2d(self, op: Op, live: np.ndarray) -> None:
        x, gate, active_out, active_in = self.weighted(op)
        weight = self.model.array(op, "weight")
        acc = conv_accumulate(x, weight, self.model.array(op, "bias"), op)
        groups = op.attrs.get("groups", 1)
        kk = weight.shape[2] * weight.shape[3]
        hw = acc.shape[2] * acc.shape[3]
        cout_g, cin_g = weight.shape[0] // groups, weight.shape[1]
        macs = np.zeros(x.shape[0], dtype=np.int64)
        for g in range(groups):
            outs = active_out[:, g * cout_g : (g + 1) * cout_g].sum(axis=1)
            ins = active_in[:, g * cin_g : (g + 1) * cin_g].sum(axis=1)
            macs += outs * ins * kk * hw
        self.macs += np.where(live, macs, 0)
        if op.attrs.get("channel_gate"):
            self.skipped_channels += np.where(live, (~active_out).sum(axis=1), 0)
        self.finish(op, acc, gate, live)

    def op_linear(self, op: Op, live: np.ndarray) -> None:
        if op.attrs.get("role") == "gate" and not self.policy.gating:
            # gating off: the gate is not computed and reads as fully open
            n, cout = len(self.running), self.model.tensors[op.output].shape[0]
            self.env[op.output] = np.full((n, cout), SALIENCE_ONE, dtype=np.int64)
            return
        x, gate, active_out, active_in = self.weighted(op)
        weight = self.model.array(op, "weight").astype(np.float64)
        acc = (x.astype(np.float64) @ weight.T).astype(np.int64) + self.model.array(op, "bias")
        self.macs += np.where(live, active_out.sum(axis=1) * active_in.sum(axis=1), 0)
        if op.attrs.get("channel_gate"):
            self.skipped_channels += np.where(live, (~active_out).sum(axis=1), 0)
        self.finish(op, acc, gate, live)

    def op_gap(self, op: Op, live: np.ndarray) -> None:
        self.env[op.output] = global_average_pool(self.env[op.inputs["x"]])

    def op_maxpool(self, op: Op, live: np.ndarray) -> None:
        self.env[op.output] = pool2d(self.env[op.inputs["x"]], op)

    op_avgpool = op_maxpool

    def op_rescale(self, op: Op, live: np.ndarray) -> None:
        x = self.env[op.inputs["x"]]
        zero = np.zeros_like(x)
        out = requantize(
            zero,
            np.zeros((x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2), dtype=np.int64),
            self.model.array(op, "res_mult"),
            self.model.array(op, "shift"),
            tuple(op.attrs["out_range"]),
            x,
            self.model.array(op, "res_mult"),
        )
        self.env[op.output] = out

    def op_guard(self, op: Op, live: np.ndarray) -> None:
        gate = self.env[op.attrs["gate"]].reshape(-1)
        taken = gate != 0
        self.skipped_blocks += np.where(live & ~taken, 1, 0)
        before = self.env
        self.env = dict(before)
        self.run_ops(op.then, live & taken)
        then_env = self.env
        self.env = dict(before)
        self.run_ops(op.orelse, live & ~taken)
        else_env = self.env
        # each image keeps the values its own branch wrote
        merged = dict(before)
        for name in set(then_env) | set(else_env):
            a, b = then_env.get(name), else_env.get(name)
            a_new = a is not None and a is not before.get(name)
            b_new = b is not None and b is not before.get(name)
            if a_new and b_new:
                merged[name] = np.where(taken.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
            elif a_new or b_new:
                merged[name] = a if a_new else b
        self.env = merged

    def op_exit(self, op: Op, live: np.ndarray) -> None:
        index = int(op.attrs["index"])
        final = bool(op.attrs.get("final"))
        if final:
            leaving = live.copy()
        elif self.policy.kind == "budget":
            # exit now if the work up to the next exit's decision could break the budget;
            # the head runs only for images that leave here
            leaving = live & (self.macs + int(op.attrs["next_cost_max"]) > self.policy.budget)
        else:
            leaving = None
        head_live = leaving if leaving is not None else live
        if self.policy.kind == "none" and not final:
            return  # no policy: early heads are never computed
        self.run_ops(op.then, head_live)
        logits = self.env[op.attrs["logits"]]
        if leaving is None:
            leaving = live & self.policy.decide(logits, index)
        self.logits[leaving] = logits[leaving]
        self.exits[leaving] = index
        self.running &= ~leaving


def check_images(model: IRModel, images: np.ndarray) -> np.ndarray:
    shape = tuple(model.input_spec.shape)
    images = np.asarray(images)
    if images.ndim == len(shape):
        images = images[None]
    if tuple(images.shape[1:]) != shape:
        raise InputShapeError(
            f"input shape {tuple(images.shape[1:])} does not match the model's input {shape} "
            "(C, H, W): use the dataset the model was trained on"
        )
    lo, hi = DTYPE_RANGES[model.input_spec.dtype]
    if images.dtype.kind not in "iu" or images.min(initial=lo) < lo or images.max(initial=hi) > hi:
        raise InputShapeError(
            f"input must be integer pixels in [{lo}, {hi}] ({model.input_spec.dtype}), got "
            f"{images.dtype}: pass raw dataset pixels, not normalised floats"
        )
    return images


def execute(
    model: IRModel,
    images: np.ndarray,
    policy: ExitPolicy | None = None,
    batch_size: int = 256,
) -> Results:
    """Run the integer model on uint8 images (N, C, H, W) under an exit policy."""
    images = check_images(model, images)
    int_policy = (policy or ExitPolicy()).to_integer(model)
    parts = []
    for start in range(0, len(images), batch_size):
        run = _Run(model, images[start : start + batch_size], int_policy)
        run.run_ops(model.ops, np.ones(len(run.running), dtype=bool))
        predictions = top1(run.logits)
        parts.append(
            Results(run.logits, predictions, run.exits, run.macs, run.skipped_blocks, run.skipped_channels)
        )
    return Results.concat(parts)


def top1(logits: np.ndarray) -> np.ndarray:
    """Index of the largest logit; ties go to the lowest index (as in C)."""
    return np.argmax(logits, axis=1).astype(np.int64)


def static_macs(model: IRModel) -> int:
    """MACs of the backbone with every gate fully open and no early exit, gates not counted."""
    total = 0
    for op in model.walk():
        if op.kind not in ("conv2d", "linear") or op.attrs.get("role") in ("gate", "exit_head"):
            continue
        total += int(op.attrs["macs"])
    final = model.ops[-1]
    total += sum(int(o.attrs["macs"]) for o in final.then if o.kind == "linear")
    return total
