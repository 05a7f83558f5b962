"""The family-independent half of lowering a trained Brevitas model to the integer IR: folding
batch norm into integer weights and bias, scale ratios into (mult, shift) pairs, tensor and
array bookkeeping, exit costs. Each model family walks its own modules
(:mod:`tinydyn.models`) and calls this.

Batch norm folds into the per-output-channel weight scale and an int32 bias (the int8
weights stay exactly as trained; a negative BN factor flips the channel's weight signs).
Every ratio of scales becomes a (mult, shift) pair (see :mod:`tinydyn.quantize.requant`).
:func:`tinydyn.ir.validate` then proves that no accumulator can overflow int32, and no
requantisation int64, for any input, or stops naming the layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from brevitas import nn as qnn
from torch import nn

from tinydyn.errors import TinydynError
from tinydyn.ir import DTYPE_RANGES, Op, TensorSpec
from tinydyn.ops import op_kind
from tinydyn.quantize.requant import multipliers, scaled

INPUT_SCALE = 1.0 / 255.0  # uint8 pixels on [0, 1]


class UnsupportedLayerError(TinydynError):
    """A module the lowering has no integer form for."""


class OverflowRiskError(TinydynError):
    """A layer whose integer arithmetic could overflow for some input."""


@dataclass
class Folded:
    """Integer weights of one conv/linear and the real scale of its accumulator."""

    weight: np.ndarray  # int8
    bias: np.ndarray  # int32
    acc_scale: np.ndarray  # float64 per output channel (> 0)


def act_scale(quant: qnn.QuantReLU | qnn.QuantIdentity) -> torch.Tensor:
    """The learned scale of a Brevitas activation quantiser."""
    return quant.act_quant.scale()


def check_supported(model: nn.Module, supported: tuple[type, ...], what: str) -> None:
    """Every module must have an integer form; Brevitas layers own their quantiser internals."""
    owners: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(owner + ".") for owner in owners):
            continue
        if not isinstance(module, supported):
            raise UnsupportedLayerError(
                f"cannot lower module '{name or type(module).__name__}' of type "
                f"{type(module).__name__}: tinydyn lowers {what}; replace or remove it"
            )
        if type(module).__module__.startswith("brevitas."):
            owners.append(name)


def fold(
    layer: qnn.QuantConv2d | qnn.QuantLinear, in_scale: float, bn: nn.BatchNorm2d | None, name: str
) -> Folded:
    qw = layer.quant_weight()
    weight = qw.int().detach().numpy().astype(np.int64)
    w_scale = qw.scale.detach().reshape(-1).double().numpy() * in_scale
    bias = np.zeros(weight.shape[0]) if layer.bias is None else layer.bias.detach().double().numpy()
    factor = np.ones(weight.shape[0])
    if bn is not None:
        sigma = np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
        gamma = bn.weight.detach().double().numpy()
        factor = gamma / sigma
        bias = bn.bias.detach().double().numpy() - bn.running_mean.detach().double().numpy() * factor
    acc_scale = w_scale * factor
    sign = np.where(acc_scale < 0, -1, 1)
    weight = weight * sign.reshape((-1,) + (1,) * (weight.ndim - 1))
    acc_scale = np.abs(acc_scale)
    safe = np.where(acc_scale > 0, acc_scale, 1.0)
    bias_int = np.where(acc_scale > 0, np.floor(bias / safe + 0.5), 0)
    lo, hi = DTYPE_RANGES["int32"]
    if np.any(bias_int < lo) or np.any(bias_int > hi):
        raise OverflowRiskError(
            f"layer '{name}' has a bias that does not fit int32 after folding: retrain it"
        )
    return Folded(weight.astype(np.int8), bias_int.astype(np.int32), acc_scale)


class IRBuilder:
    """Collects tensors, arrays and ops while walking the model."""

    def __init__(self) -> None:
        self.tensors: dict[str, TensorSpec] = {}
        self.arrays: dict[str, np.ndarray] = {}

    def tensor(
        self, name: str, shape: tuple[int, ...], dtype: str, scale: float, kind: str = "activation"
    ) -> str:
        self.tensors[name] = TensorSpec(name, tuple(int(s) for s in shape), dtype, float(scale), kind)
        return name

    def weighted(
        self,
        kind: str,
        name: str,
        x: str,
        out: str,
        folded: Folded,
        ratio: np.ndarray,
        attrs: dict,
        residual: str | None = None,
        res_ratio: np.ndarray | None = None,
    ) -> Op:
        mult, shift = multipliers(ratio, name)
        inputs = {"x": x}
        self.arrays[f"{name}.weight"] = folded.weight
        self.arrays[f"{name}.bias"] = folded.bias
        self.arrays[f"{name}.mult"] = mult
        self.arrays[f"{name}.shift"] = shift
        if residual is not None:
            inputs["residual"] = residual
            self.arrays[f"{name}.res_mult"] = scaled(res_ratio, shift)
        out_spec = self.tensors[out]
        macs = op_kind(kind).macs_of_shapes(folded.weight.shape, out_spec.shape)
        attrs = {**attrs, "out_range": list(DTYPE_RANGES[out_spec.dtype]), "macs": int(macs)}
        # the int32/int64 bounds are proved for the whole model by validate() (ir_schema)
        return Op(kind, name, inputs, out, attrs)


def ir_model_name(name: str) -> str:
    """A safe IR name from any text (often a checkpoint's file name): letters, digits, '_' and
    '.', starting with a letter, at most 64 characters — what the IR schema accepts."""
    cleaned = re.sub(r"[^A-Za-z0-9_.]", "_", name)[:63]
    return cleaned if cleaned[:1].isalpha() else f"m{cleaned}"[:64]


def set_next_costs(ops: list[Op]) -> None:
    """For each early exit, the most MACs the way to the next exit's decision can cost."""
    exits = [i for i, op in enumerate(ops) if op.kind == "exit"]
    for here, nxt in zip(exits, exits[1:], strict=False):
        cost = sum(op_max_macs(op) for op in ops[here + 1 : nxt])
        cost += sum(op_max_macs(op) for op in ops[nxt].then)
        ops[here].attrs["next_cost_max"] = int(cost)
    ops[exits[-1]].attrs["next_cost_max"] = 0


def op_max_macs(op: Op) -> int:
    """The most MACs one execution of ``op`` can cost (a guard: its dearer branch)."""
    return op_kind(op.kind).max_macs(op, lambda block: sum(op_max_macs(o) for o in block))
