"""The integer arithmetic the op kinds share, in numpy: *the* spec (docs/ARITHMETIC.md).

Products are accumulated exactly: convolutions run as float64 matrix products, exact because
every partial sum of int8 × uint8/int8 products stays far below 2**53 (the IR schema proves
|acc| < 2**31); everything after the accumulator is int64 numpy.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


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


def conv_output_hw(h: int, w: int, k: int, stride: int, pad: int) -> tuple[int, int]:
    return (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1


def conv_accumulate(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int, pad: int, groups: int
) -> np.ndarray:
    """int32-exact accumulators of a grouped 2-D convolution with zero padding."""
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


def global_average_pool(x: np.ndarray) -> np.ndarray:
    """Channel means rounded half up: ``(sum + HW//2) // HW`` (inputs are non-negative)."""
    hw = x.shape[2] * x.shape[3]
    return (x.sum(axis=(2, 3)) + hw // 2) // hw


def max_pool(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=np.iinfo(np.int64).min)
    return sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride].max(axis=(4, 5))


def avg_pool(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    sums = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride].sum(axis=(4, 5))
    area = k * k  # padding counts as zeros, like the C kernel
    return np.where(sums >= 0, (sums + area // 2) // area, -((-sums + area // 2) // area))
