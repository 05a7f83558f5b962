"""Accuracy vs executed MACs over an exit-policy threshold sweep, from ONE reference pass.

Running the reference executor once per threshold costs a full pass each. Instead one *probe*
pass computes every exit head for every image without leaving, and records at each exit the
head's logits and the MACs executed so far. Gates do not depend on the exit policy, so every
policy's outcome follows exactly from the probe:

* confidence / margin: the image leaves at the first exit whose decision says so; its MACs are
  the probe's MACs at that exit (heads before it were computed too, as the policy computes them).
* budget: heads run only where an image leaves, so the MACs at exit k are the probe's minus the
  heads before k; it leaves when that plus the exit's ``next_cost_max`` exceeds the budget.

``tests/test_measure.py`` checks that this equals :func:`tinydyn.quantize.executor.execute`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinydyn.ir import IRModel, Op
from tinydyn.ops import op_kind
from tinydyn.quantize.executor import Trace, every_head, top1, trace
from tinydyn.quantize.policy import ExitPolicy

CONFIDENCE_SWEEP = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.995, 1.0)
MARGIN_SWEEP = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 1e9)
BUDGET_FRACTIONS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5)


def _head_macs(op: Op) -> int:
    return sum(op_kind(o.kind).macs(o) for o in op.then)


@dataclass
class Probe:
    """Per exit k (the last is the final classifier): logits (N, classes), MACs with every earlier
    head computed, the head's own MACs and next_cost_max."""

    logits: list[np.ndarray]
    macs: list[np.ndarray]
    head_macs: list[int]
    next_cost_max: list[int]

    @property
    def num_exits(self) -> int:
        return len(self.logits)

    def outcome(self, ir: IRModel, policy: ExitPolicy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(predictions, exits, MACs) per image under ``policy``: what execute() returns."""
        ip = policy.to_integer(ir)
        n = len(self.logits[0])
        exits = np.full(n, self.num_exits - 1, dtype=np.int64)
        macs = np.zeros(n, dtype=np.int64)
        chosen = self.logits[-1].copy()
        running = np.ones(n, dtype=bool)
        heads_before = 0
        for k in range(self.num_exits - 1 if ip.kind != "none" else 0):
            if ip.kind == "budget":
                before_head = self.macs[k] - heads_before - self.head_macs[k]
                leave = running & (before_head + self.next_cost_max[k] > ip.budget)
                macs[leave] = before_head[leave] + self.head_macs[k]
            else:
                leave = running & ip.decide(self.logits[k], k)
                macs[leave] = self.macs[k][leave]
            exits[leave] = k
            chosen[leave] = self.logits[k][leave]
            running &= ~leave
            heads_before += self.head_macs[k]
        # budget and none never computed the early heads of images that did not leave
        final_heads = sum(self.head_macs[:-1]) if ip.kind in ("budget", "none") else 0
        macs[running] = self.macs[-1][running] - final_heads
        return top1(chosen), exits, macs


def probe(ir: IRModel, images: np.ndarray, batch_size: int = 256) -> Probe:
    """One pass computing every head (see the module docstring)."""
    return probe_from_trace(ir, trace(ir, images, every_head(), batch_size, keep_tensors=False))


def probe_from_trace(ir: IRModel, run: Trace) -> Probe:
    """The probe of a trace run under :func:`every_head` (a caller that also wants the run's
    skip figures, which gating makes the same as under policy none, traces once)."""
    exit_ops = sorted(ir.exits(), key=lambda op: op.attrs["index"])
    final = int(exit_ops[-1].attrs["index"])
    logits = {**run.exit_logits, final: run.results.logits}
    macs = {**run.exit_macs, final: run.results.macs}
    indices = [int(op.attrs["index"]) for op in exit_ops]
    return Probe(
        logits=[logits[i] for i in indices],
        macs=[macs[i] for i in indices],
        head_macs=[_head_macs(op) for op in exit_ops],
        next_cost_max=[int(op.attrs.get("next_cost_max", 0)) for op in exit_ops],
    )


def sweep_policies(kind: str, static_macs: int) -> list[ExitPolicy]:
    """The thresholds swept for a policy kind ('none' sweeps confidence: the trade-off curve)."""
    if kind == "margin":
        return [ExitPolicy("margin", t) for t in MARGIN_SWEEP]
    if kind == "budget":
        return [ExitPolicy("budget", float(int(f * static_macs))) for f in BUDGET_FRACTIONS]
    return [ExitPolicy("confidence", t) for t in CONFIDENCE_SWEEP]


def sweep(
    ir: IRModel, images: np.ndarray, labels: np.ndarray, policies: list[ExitPolicy], pr: Probe | None = None
) -> list[dict[str, float | str]]:
    """Accuracy and mean MACs of the reference for each policy (one probe pass in all)."""
    pr = pr or probe(ir, images)
    points: list[dict[str, float | str]] = []
    for pol in policies:
        pred, exits, macs = pr.outcome(ir, pol)
        points.append(
            {
                "policy": pol.kind,
                "threshold": pol.threshold,
                "accuracy": float((pred == labels).mean()),
                "mean_macs": float(macs.mean()),
                "early_exit_share": float((exits < pr.num_exits - 1).mean()),
            }
        )
    return points
