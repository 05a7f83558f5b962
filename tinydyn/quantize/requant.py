"""Turning real-valued scale ratios into the integer multipliers of the spec.

A ratio ``M`` becomes ``mult · 2^-shift`` with ``mult < 2^23`` (23 bits keep float32's
precision) and ``1 <= shift <= 62``. Keeping ``mult`` under 2^23 is what lets
``acc · salience · mult`` (|acc| < 2^31, salience <= 255) stay inside int64.
"""

from __future__ import annotations

import math

import numpy as np

from tinydyn.errors import TinydynError

MULT_BITS = 23
MAX_SHIFT = 62


class RequantError(TinydynError):
    """A scale ratio with no integer multiplier inside the spec's limits."""


def choose_shift(ratio: float, layer: str) -> int:
    """The largest shift whose multiplier for ``ratio`` stays below 2^23."""
    if not math.isfinite(ratio) or ratio < 0:
        raise RequantError(f"layer '{layer}' has an invalid scale ratio {ratio}: retrain or re-export it")
    if ratio == 0:
        return MAX_SHIFT
    shift = MULT_BITS - 1 - math.floor(math.log2(ratio))
    while shift > 1 and round(ratio * 2.0**shift) >= 2**MULT_BITS:
        shift -= 1
    shift = min(shift, MAX_SHIFT)
    if shift < 1 or round(ratio * 2.0**shift) >= 2**MULT_BITS:
        raise RequantError(
            f"layer '{layer}' needs a requantisation factor of {ratio:.3g} (>= 2^22): its output "
            "scale is far smaller than its input's; retrain with activation quantisation on"
        )
    return shift


def multipliers(ratios: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mult int64, shift int32) for an array of ratios."""
    shifts = np.array([choose_shift(float(r), layer) for r in ratios], dtype=np.int32)
    mults = np.array(
        [round(float(r) * 2.0 ** int(s)) for r, s in zip(ratios, shifts, strict=True)], dtype=np.int64
    )
    return mults, shifts


def scaled(ratios: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """A second ratio expressed with already chosen shifts (a residual's multiplier)."""
    return np.array(
        [round(float(r) * 2.0 ** int(s)) for r, s in zip(ratios, shifts, strict=True)], dtype=np.int64
    )
