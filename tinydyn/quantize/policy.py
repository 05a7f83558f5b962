"""Early-exit policies: user-facing (floats) and integer (what the executor and C evaluate).

* ``none``: only the final classifier answers; early heads are not computed.
* ``confidence``: leave at an exit when the softmax top-1 probability ≥ threshold. In
  integers: ``d_k = max(l) - l_k``; ``i_k = min(round_shift(d_k * lut_mult, lut_shift), 255)``
  maps d to steps of 1/16 nat; ``S = Σ EXP_LUT[i_k]`` with ``EXP_LUT[i] = round(65535·e^(-i/16))``;
  leave when ``65535 · 65536 ≥ t16 · S`` (uint64), where ``t16 = round(threshold · 65536)``.
* ``margin``: leave when top-1 minus top-2 logit ≥ threshold (in logit units, converted to
  each exit's integer logit scale by ``ceil(threshold / scale)``).
* ``budget``: a MAC budget. At a non-final exit an image leaves when its MACs so far plus the
  most the way to the next exit's decision can cost (attr ``next_cost_max``) exceed the budget.

Independently of the policy, ``gating=False`` runs the static network: every salience is
255 (fully open) and the gate FCs are not computed, so no block or channel is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tinydyn.errors import TinydynError
from tinydyn.ir import IRModel

POLICIES = ("none", "confidence", "margin", "budget")
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
    """What a user asks for: a policy kind and its threshold (probability, logits or MACs)."""

    kind: str = "none"
    threshold: float = 0.0
    gating: bool = True

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise PolicyError(f"unknown exit policy '{self.kind}': use one of {', '.join(POLICIES)}")
        if self.kind == "confidence" and not 0.0 <= self.threshold <= 1.0:
            raise PolicyError(f"confidence threshold {self.threshold} is outside [0, 1]: give a probability")
        if self.kind in ("margin", "budget") and self.threshold < 0:
            raise PolicyError(f"{self.kind} threshold {self.threshold} is negative: give a value >= 0")

    def to_integer(self, model: IRModel) -> IntegerPolicy:
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
        )


@dataclass
class IntegerPolicy:
    """The integer parameters the firmware receives in CONFIG."""

    kind: str
    confidence_t16: int = 0
    margins: list[int] = field(default_factory=list)
    budget: int = 0
    lut_mults: list[int] = field(default_factory=list)
    gating: bool = True

    def decide(self, logits: np.ndarray, exit_index: int) -> np.ndarray:
        """Whether each image leaves at this (non-final) exit; logits (N, classes) ints."""
        if self.kind == "confidence":
            return confident(logits, self.lut_mults[exit_index], self.confidence_t16)
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
