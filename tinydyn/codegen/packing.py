"""Weight packing: constant int8 weights laid out at build time the way the kernels read them.

Activations are HWC, so a convolution's weight row for one output channel is ordered
(ky, kx, ci) and matches one im2col column. Rows are padded with zeros to a multiple of 4
and each group of 4 is stored ``[w0 w2 w1 w3]``: one word load then ``SXTB16`` and
``SXTB16 ROR 8`` give the int16 pairs ``(w0, w1)`` and ``(w2, w3)`` that ``SMLAD`` multiplies
with the natural-order int16 column, so the DSP inner loop needs no shuffles. The portable
path reads the same bytes through the same permutation.

Packing is also where int32 accumulators are proven safe for the packed layout: padding
adds zero terms and masked channels remove terms, so the bound over the packed row holds
for every run-time mask.
"""

from __future__ import annotations

import numpy as np

from tinydyn.codegen.errors import CodegenError
from tinydyn.ir import DTYPE_RANGES

INT32_MAX = 2**31 - 1


def round4(n: int) -> int:
    return (n + 3) & ~3


def packed_positions(length: int) -> np.ndarray:
    """``pos[k]``: where element k of a row is stored (self-inverse within groups of 4)."""
    k = np.arange(length)
    return (k & ~3) | ((k & 1) << 1) | ((k >> 1) & 1)


def pack_rows(rows: np.ndarray) -> np.ndarray:
    """(R, K) int8 rows → (R, round4(K)) zero-padded and interleaved for SXTB16/SMLAD."""
    r, k = rows.shape
    padded = np.zeros((r, round4(k)), dtype=np.int8)
    padded[:, :k] = rows
    out = np.empty_like(padded)
    out[:, packed_positions(padded.shape[1])] = padded
    return out


def unpack_rows(packed: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_rows` (tests and the overflow proof use it)."""
    return packed[:, packed_positions(packed.shape[1])][:, :k]


def pack_conv(weight: np.ndarray, groups: int) -> tuple[np.ndarray, int]:
    """OIHW int8 → (packed flat array, row length). groups > 1 keeps [co][ky][kx][ci_g]."""
    cout = weight.shape[0]
    hwc = np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(cout, -1).astype(np.int8)
    if groups != 1:
        return hwc.reshape(-1), hwc.shape[1]
    packed = pack_rows(hwc)
    return packed.reshape(-1), packed.shape[1]


def pack_linear(weight: np.ndarray) -> tuple[np.ndarray, int]:
    packed = pack_rows(weight.astype(np.int8))
    return packed.reshape(-1), packed.shape[1]


def prove_accumulators(layer: str, packed: np.ndarray, row_len: int, bias: np.ndarray, in_dtype: str) -> int:
    """Largest |accumulator| any input can produce with these packed rows; raises if it
    could leave int32 (the C kernels accumulate in int32 starting from the bias)."""
    lo, hi = DTYPE_RANGES[in_dtype]
    x_max = max(abs(lo), abs(hi))
    rows = packed.reshape(-1, row_len).astype(np.int64)
    bound = np.abs(rows).sum(axis=1) * x_max + np.abs(bias.astype(np.int64))
    worst = int(bound.max()) if bound.size else 0
    if worst > INT32_MAX:
        raise CodegenError(
            f"layer '{layer}' can overflow its int32 accumulator in the packed layout (bound {worst}): "
            "reduce its fan-in or input range and re-run the lowering"
        )
    return worst


def prove_requant(
    layer: str,
    acc_max: int,
    gated: bool,
    mult: np.ndarray,
    shift: np.ndarray,
    res_mult: np.ndarray | None,
    res_dtype: str | None,
) -> None:
    """The C requantisation computes gate*mult in int32 and the sum in int64: check both."""
    gate_max = 255 if gated else 1
    if np.any(mult < 0) or np.any(mult.astype(np.int64) * gate_max > INT32_MAX):
        raise CodegenError(
            f"layer '{layer}' has a requantisation multiplier outside [0, 2^31/255): re-run the lowering"
        )
    if np.any(shift < 1) or np.any(shift > 62):
        raise CodegenError(f"layer '{layer}' has a shift outside 1..62: re-run the lowering")
    value = acc_max * gate_max * mult.astype(np.float64) + 2.0 ** (shift.astype(np.float64) - 1)
    if res_mult is not None:
        lo, hi = DTYPE_RANGES[res_dtype or "int16"]
        value = value + max(abs(lo), abs(hi)) * np.abs(res_mult).astype(np.float64)
    if np.any(value >= 2.0**63):
        raise CodegenError(f"layer '{layer}' can overflow its int64 requantisation: re-run the lowering")


HIGH_WORD_SHIFT = 33  # the smallest shift whose rounding constant lives in the high word


def high_word_table(
    acc_max: int,
    gated: bool,
    mult: np.ndarray,
    shift: np.ndarray,
    res_mult: np.ndarray | None,
    res_dtype: str | None,
) -> np.ndarray | None:
    """The requantisation table of ``td_quant_t.rq`` (int32, per channel ``[mult', res_lo,
    res_hi, sh]`` with a residual, ``[mult', sh]`` without), or None where it would not be exact.

    A channel with shift s < 33 is scaled by 2^k, k = 33 - s: round_shift(v·2^k, s + k) equals
    round_shift(v, s) exactly, so every channel ends with shift' >= 33, whose rounding constant
    2^(shift'-1) only touches the high word of the 64-bit sum. Exact when gate·mult' fits int32
    (SMULL operand) and |v·2^k| + 2^(shift'-1) < 2^63 for every input (checked in integers).
    ``res_mult' = res_hi·2^32 + res_lo`` with res_lo in [-2^31, 2^31): SMLAL res·res_lo then
    MLA res·res_hi into the high word."""
    gate_max = 255 if gated else 1
    r_max = 0
    if res_mult is not None:
        lo, hi = DTYPE_RANGES[res_dtype or "int16"]
        r_max = max(abs(lo), abs(hi))

    def row(c: int, s2: int) -> list[int] | None:
        """Channel c rescaled to shift' = s2 (>= its shift, >= 33), or None if not exact."""
        m, s = int(mult[c]), int(shift[c])
        rm = int(res_mult[c]) if res_mult is not None else 0
        k = s2 - s
        m2, rm2 = m << k, rm << k
        if m2 < 0 or m2 * gate_max > INT32_MAX:
            return None
        if (acc_max * gate_max * m + r_max * abs(rm)) * (1 << k) + (1 << (s2 - 1)) >= 2**63:
            return None
        rh = (rm2 + 2**31) >> 32
        rl = rm2 - (rh << 32)
        if not -(2**31) <= rh <= INT32_MAX:
            return None
        sh = s2 - HIGH_WORD_SHIFT
        return [m2, rl, rh, sh] if res_mult is not None else [m2, sh]

    # First one shift' for every channel (the largest; the kernel then shifts by a constant),
    # else each channel its own (the smallest >= 33).
    common = max(HIGH_WORD_SHIFT, int(np.max(shift))) if len(mult) else HIGH_WORD_SHIFT
    rows = [row(c, common) for c in range(len(mult))]
    if any(r is None for r in rows):
        rows = [row(c, max(HIGH_WORD_SHIFT, int(shift[c]))) for c in range(len(mult))]
        if any(r is None for r in rows):
            return None
    return np.array(rows, dtype=np.int64).reshape(-1)


def uniform_shift(table: np.ndarray, residual: bool) -> int:
    """``td_quant_t.rq_sh``: 1 + the sh every channel of a high-word table shares, 0 if they
    differ (the kernel then loads each channel's)."""
    sh = np.asarray(table).reshape(-1, 4 if residual else 2)[:, -1]
    return int(sh[0]) + 1 if sh.size and np.all(sh == sh[0]) else 0
