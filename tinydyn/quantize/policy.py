"""Early-exit policies: user-facing (floats) and integer (what the executor and C evaluate).

* ``none``: only the final classifier answers; early heads are not computed.
* ``confidence``: leave at an exit when the softmax top-1 probability ≥ threshold. In
  integers: ``d_k = max(l) - l_k``; ``i_k = min(round_shift(d_k * lut_mult, lut_shift), 255)``
  maps d to steps of 1/16 nat; ``S = Σ EXP_LUT[i_k]`` with ``EXP_LUT[i] = round(65535·e^(-i/16))``;
  leave when ``65535 · 65536 ≥ t16 · S`` (uint64), where ``t16 = round(threshold · 65536)``.
* ``margin``: leave when top-1 minus top-2 logit ≥ threshold (in logit units, converted to
  each exit's integer logit scale by ``ceil(threshold / scale)``).
* ``budget``: a hard budget in one of three units (tinydyn/cost/budget.py): ``macs``, modelled
  ``energy`` (nJ) or ``cycles`` (from a per-layer cost table). At a non-final exit an image leaves
  when its cost so far plus the most the way to the next exit's decision can cost exceeds the
  budget (DDI §III-B: it stops at the latest branch whose cumulative cost fits). In MACs the
  most is the exit's attr ``next_cost_max``; in the other units the cost model's ``next_*``.

Independently of the policy, ``gating=False`` runs the static network: every salience is
255 (fully open) and the gate FCs are not computed, so no block or channel is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinydyn.cost.budget import PJ_PER_NJ, UNITS, BudgetCosts
from tinydyn.errors import TinydynError
from tinydyn.ir import IRModel

POLICIES = ("none", "confidence", "margin", "budget")
BUDGET_MAX = 2**32 - 1  # the firmware's uint32 budget, in every unit
EXP_LUT_SIZE = 256
EXP_LUT_STEPS_PER_NAT = 16
EXP_LUT_ONE = 65535
CONFIDENCE_ONE = 65536  # t16 for threshold 1.0
LUT_SHIFT = 24


class PolicyError(TinydynError):
    """An exit policy that cannot be applied."""


def exp_lut() -> np.ndarray:
    """``EXP_LUT[i] = round(65535 · exp(-i/16))``, emitted verbatim into the firmware."""
    i = np.arange(EXP_LUT_SIZE, dtype=np.float64)
    return np.floor(EXP_LUT_ONE * np.exp(-i / EXP_LUT_STEPS_PER_NAT) + 0.5).astype(np.int64)


def lut_multiplier(logit_scale: float) -> int:
    """Fixed-point factor turning an integer logit difference into LUT steps (shift 24)."""
    return int(round(logit_scale * EXP_LUT_STEPS_PER_NAT * (1 << LUT_SHIFT)))


@dataclass(frozen=True)
class ExitPolicy:
    """What a user asks for: a policy kind and its threshold (probability, logits, or a budget in
    ``unit``: MACs, nJ or cycles). ``costs`` is the per-op cost model (tinydyn/cost/budget.py) the
    firmware was built with: needed for energy and cycles budgets, and it makes the reference
    report every image's modelled energy and cycles."""

    kind: str = "none"
    threshold: float = 0.0
    gating: bool = True
    unit: str = "macs"
    costs: BudgetCosts | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise PolicyError(f"unknown exit policy '{self.kind}': use one of {', '.join(POLICIES)}")
        if self.unit not in UNITS:
            raise PolicyError(f"unknown budget unit '{self.unit}': use one of {', '.join(UNITS)}")
        if self.kind == "confidence" and not 0.0 <= self.threshold <= 1.0:
            raise PolicyError(f"confidence threshold {self.threshold} is outside [0, 1]: give a probability")
        if self.kind in ("margin", "budget") and self.threshold < 0:
            raise PolicyError(f"{self.kind} threshold {self.threshold} is negative: give a value >= 0")

    def to_integer(self, model: IRModel) -> IntegerPolicy:
        if self.kind == "budget" and self.unit != "macs":
            # a budget in energy or cycles is decided on the per-op cost model the firmware bakes in
            if self.costs is None:
                raise PolicyError(
                    f"a budget in {self.unit} needs the cost model the firmware was built with "
                    "(tinydyn.cost.budget.budget_costs; for cycles, a cost table from `tinydyn profile`)"
                )
            if self.unit not in self.costs.units:
                raise PolicyError(
                    f"the cost model has no {self.unit} costs: "
                    + (
                        "run `tinydyn profile` and pass its cost_table.json (--cost-table)"
                        if self.unit == "cycles"
                        else "use a board with an energy model (docs/ENERGY.md)"
                    )
                )
            if self.costs.model_id != model.model_id():
                raise PolicyError(
                    f"the budget cost model is of model {self.costs.model_id}, not {model.model_id()}"
                )
        exits = sorted(model.exits(), key=lambda op: op.attrs["index"])
        scales = [model.tensors[op.attrs["logits"]].scale for op in exits]
        return IntegerPolicy(
            kind=self.kind,
            confidence_t16=int(round(min(max(self.threshold, 0.0), 1.0) * CONFIDENCE_ONE))
            if self.kind == "confidence"
            else 0,
            margins=[int(math.ceil(self.threshold / s)) for s in scales] if self.kind == "margin" else [],
            budget=int(self.threshold) if self.kind == "budget" else 0,
            lut_mults=[lut_multiplier(s) for s in scales],
            gating=self.gating,
            exit_t16=[op.attrs.get("confidence_t16") for op in exits],
            budget_unit=self.unit if self.kind == "budget" else "macs",
            costs=self.costs,
        )

    def with_budget(self, budget: float, unit: str) -> ExitPolicy:
        """The same gating and cost model under a budget (a per-request override)."""
        return ExitPolicy("budget", float(budget), self.gating, unit, self.costs)


@dataclass
class IntegerPolicy:
    """The integer parameters the firmware receives in CONFIG."""

    kind: str
    confidence_t16: int = 0
    margins: list[int] = field(default_factory=list)
    budget: int = 0
    lut_mults: list[int] = field(default_factory=list)
    gating: bool = True
    # per exit: its own confidence threshold from the IR (attr confidence_t16), or None
    exit_t16: list[int | None] = field(default_factory=list)
    budget_unit: str = "macs"
    costs: BudgetCosts | None = None

    def over_budget(self, run: Any, op: Any) -> np.ndarray:
        """At early exit ``op``: whether going on to the next exit's decision could exceed the
        budget (the image then leaves here)."""
        if self.budget_unit == "macs":
            return run.macs + int(op.attrs["next_cost_max"]) > self.budget
        assert self.costs is not None  # ExitPolicy refuses a unit without its cost model
        index = int(op.attrs["index"])
        if self.budget_unit == "energy":
            return run.meter.energy_pj + self.costs.next_energy_pj[index] > self.budget * PJ_PER_NJ
        return run.meter.cycles + self.costs.next_cycles[index] > self.budget

    def decide(self, logits: np.ndarray, exit_index: int) -> np.ndarray:
        """Whether each image leaves at this (non-final) exit; logits (N, classes) ints."""
        if self.kind == "confidence":
            own = self.exit_t16[exit_index] if exit_index < len(self.exit_t16) else None
            return confident(logits, self.lut_mults[exit_index], self.confidence_t16 if own is None else own)
        if self.kind == "margin":
            ordered = np.sort(logits, axis=1)
            return ordered[:, -1] - ordered[:, -2] >= self.margins[exit_index]
        return np.zeros(len(logits), dtype=bool)


def confident(logits: np.ndarray, lut_mult: int, t16: int) -> np.ndarray:
    diff = logits.max(axis=1, keepdims=True) - logits
    steps = (diff * lut_mult + (1 << (LUT_SHIFT - 1))) >> LUT_SHIFT
    total = exp_lut()[np.minimum(steps, EXP_LUT_SIZE - 1)].sum(axis=1)
    # python ints: 65535·65536 and t16·S both fit uint64, as in C
    return np.array([EXP_LUT_ONE * CONFIDENCE_ONE >= t16 * int(s) for s in total], dtype=bool)
