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

from tinydyn.cost.budget import CostMeter
from tinydyn.errors import TinydynError
from tinydyn.ir import DTYPE_RANGES, SALIENCE_ONE, IRModel, Op
from tinydyn.ops import op_kind
from tinydyn.quantize.policy import ExitPolicy, IntegerPolicy

__all__ = [
    "InputShapeError",
    "Results",
    "Run",
    "Trace",
    "check_images",
    "every_head",
    "execute",
    "static_macs",
    "top1",
    "trace",
]


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
        extra = {k: np.concatenate([p.extra[k] for p in parts]) for k in parts[0].extra}
        return Results(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names}, extra=extra)


# ----------------------------------------------------------------------------- executor
class Run:
    """State of one batch run: tensor values, which images still run, their counters. Each op
    kind (:mod:`tinydyn.ops`) executes itself on it."""

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
        # per exit index whose head ran: its logits and the MACs counted when it decided
        self.exit_logits: dict[int, np.ndarray] = {}
        self.exit_macs: dict[int, np.ndarray] = {}
        # budget-unit costs, gate/head MACs, skip-ratio denominators (tinydyn/cost/budget.py)
        self.meter = CostMeter(model, policy.costs, n)

    # each op runs for the whole batch; `live` marks images that really execute it
    def run_ops(self, ops: list[Op], live: np.ndarray) -> None:
        for op in ops:
            kind = op_kind(op.kind)
            if not self.policy.gating and kind.is_gate(op):
                # gating off: the gate is not computed and reads as fully open
                # (in its own shape: a gate's conv feeds a gap, e.g. DDI's channel gates)
                n, shape = len(self.running), self.model.tensors[op.output].shape
                self.env[op.output] = np.full((n, *shape), SALIENCE_ONE, dtype=np.int64)
                for name in kind.writes(op)[1:]:  # anything else a gate writes reads as 0
                    self.env[name] = np.zeros((n, *self.model.tensors[name].shape), dtype=np.int64)
                continue
            executed, before = live & self.running, self.macs.copy()
            kind.execute(self, op, executed)
            self.meter.charge(op, executed, self.macs - before)

    def gate_of(self, op: Op, key: str) -> np.ndarray | None:
        """The salience tensor an attr names, as (N, channels), or None."""
        name = op.attrs.get(key)
        if not name:
            return None
        gate = self.env[name]
        return gate.reshape(gate.shape[0], -1) if gate.ndim > 1 else gate.reshape(-1, 1)


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
    return trace(model, images, policy, batch_size, keep_tensors=False).results


@dataclass
class Trace:
    """A run with its full execution context (as qonnx's ``execute_onnx(...,
    return_full_exec_context=True)``): every tensor an op wrote, and for each exit whose head
    ran, its logits and the MACs counted when it decided (earlier heads included)."""

    results: Results
    tensors: dict[str, np.ndarray]
    exit_logits: dict[int, np.ndarray]
    exit_macs: dict[int, np.ndarray]
    # per exit index whose head ran: (pJ, cycles) of the cost model when it decided
    exit_costs: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def every_head() -> ExitPolicy:
    """A policy under which every exit head runs and no image leaves early (a margin no logit
    difference reaches): for traces that need all heads' logits."""
    return ExitPolicy("margin", 1e12)


def trace(
    model: IRModel,
    images: np.ndarray,
    policy: ExitPolicy | None = None,
    batch_size: int = 256,
    keep_tensors: bool = True,
) -> Trace:
    """Run like :func:`execute` and keep the full execution context (tensors for the whole
    batch: a guard's tensors hold each image's own branch; a head that did not run for an
    image still has its values computed for the batch)."""
    images = check_images(model, images)
    int_policy = (policy or ExitPolicy()).to_integer(model)
    parts: list[Run] = []
    for start in range(0, len(images), batch_size):
        run = Run(model, images[start : start + batch_size], int_policy)
        run.run_ops(model.ops, np.ones(len(run.running), dtype=bool))
        if not keep_tensors:
            run.env = {}
        parts.append(run)
    results = Results.concat(
        [
            Results(
                r.logits,
                top1(r.logits),
                r.exits,
                r.macs,
                r.skipped_blocks,
                r.skipped_channels,
                r.meter.results(),
            )
            for r in parts
        ]
    )

    def joined(key: str) -> dict:
        maps = [getattr(r, key) for r in parts]
        return {k: np.concatenate([m[k] for m in maps]) for k in maps[0] if all(k in m for m in maps)}

    costs = [r.meter.exit_costs for r in parts]
    exit_costs = {
        k: (np.concatenate([c[k][0] for c in costs]), np.concatenate([c[k][1] for c in costs]))
        for k in costs[0]
        if all(k in c for c in costs)
    }
    return Trace(results, joined("env"), joined("exit_logits"), joined("exit_macs"), exit_costs)


def top1(logits: np.ndarray) -> np.ndarray:
    """Index of the largest logit; ties go to the lowest index (as in C)."""
    return np.argmax(logits, axis=1).astype(np.int64)


def static_macs(model: IRModel) -> int:
    """MACs of the backbone with every gate fully open and no early exit, gates not counted."""
    total = 0
    for op in model.walk():
        if op.attrs.get("role") not in ("gate", "exit_head"):
            total += op_kind(op.kind).macs(op)
    return total + sum(op_kind(o.kind).macs(o) for o in model.ops[-1].then)
