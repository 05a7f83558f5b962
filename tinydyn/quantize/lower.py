"""Lowering a trained Brevitas LC-Net to the integer IR.

Batch norm folds into the per-output-channel weight scale and an int32 bias (the int8
weights stay exactly as trained; a negative BN factor flips the channel's weight signs).
Every ratio of scales becomes a (mult, shift) pair (see :mod:`tinydyn.quantize.requant`).
The lowering also proves that no accumulator can overflow int32, and no requantisation
int64, for any input, or stops naming the layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from brevitas import nn as qnn
from torch import nn

from tinydyn.cost.torch_cost import static_backbone_macs
from tinydyn.errors import TinydynError
from tinydyn.ir import DTYPE_RANGES, SALIENCE_ONE, IRModel, Op, TensorSpec, validate
from tinydyn.models.lcnet import ExitHead, Gate, LCBlock, LCNet, ReLU1, act_scale
from tinydyn.ops import op_kind
from tinydyn.quantize.requant import multipliers, scaled

INPUT_SCALE = 1.0 / 255.0
SUPPORTED_MODULES: tuple[type, ...] = (
    LCNet,
    LCBlock,
    Gate,
    ExitHead,
    ReLU1,
    qnn.QuantConv2d,
    qnn.QuantLinear,
    qnn.QuantReLU,
    qnn.QuantIdentity,
    nn.BatchNorm2d,
    nn.ModuleList,
    nn.ModuleDict,
)


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


def check_supported(model: nn.Module) -> None:
    """Every module must have an integer form; Brevitas layers own their quantiser internals."""
    owners: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(owner + ".") for owner in owners):
            continue
        if not isinstance(module, SUPPORTED_MODULES):
            raise UnsupportedLayerError(
                f"cannot lower module '{name or type(module).__name__}' of type "
                f"{type(module).__name__}: tinydyn lowers QuantConv2d, QuantLinear, QuantReLU, "
                "QuantIdentity and BatchNorm2d inside LC-Net blocks; replace or remove it"
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


class _Builder:
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


def lower(model: LCNet, name: str = "lcnet") -> IRModel:
    """The integer IR of a trained LC-Net (model in eval mode)."""
    check_supported(model)
    model.eval()
    cfg = model.config
    b = _Builder()
    size = cfg.input_size
    x = b.tensor("input", (cfg.in_channels, size, size), "uint8", INPUT_SCALE)
    ops: list[Op] = []
    with torch.no_grad():
        stem_scale = float(act_scale(model.stem_relu))
        b.tensor("stem", (cfg.stem_width, size, size), "uint8", stem_scale)
        folded = fold(model.stem, INPUT_SCALE, model.stem_bn, "stem")
        ops.append(
            b.weighted(
                "conv2d", "stem", x, "stem", folded, folded.acc_scale / stem_scale, conv_attrs(model.stem)
            )
        )
        x, x_scale = "stem", stem_scale
        exit_index = 0
        for i, block in enumerate(model.blocks):
            x, x_scale, block_ops = lower_block(b, block, f"b{i}", x, x_scale)
            ops.extend(block_ops)
            if str(i) in model.exit_heads:
                ops.extend(
                    lower_exit(
                        b, model.exit_heads[str(i)], f"exit{exit_index}", x, x_scale, exit_index, False
                    )
                )
                exit_index += 1
        ops.extend(lower_exit(b, model.head, "final", x, x_scale, exit_index, True))
    set_next_costs(ops)
    ir = IRModel(
        name=ir_model_name(name),
        input="input",
        tensors=b.tensors,
        ops=ops,
        arrays=b.arrays,
        classes=list(cfg.classes),
        meta={
            "model_config": cfg.to_json(),
            "static_backbone_macs": static_backbone_macs(model),
            "input_scale": INPUT_SCALE,
        },
    )
    validate(ir)
    return ir


def ir_model_name(name: str) -> str:
    """A safe IR name from any text (often a checkpoint's file name): letters, digits, '_' and
    '.', starting with a letter, at most 64 characters — what the IR schema accepts."""
    cleaned = re.sub(r"[^A-Za-z0-9_.]", "_", name)[:63]
    return cleaned if cleaned[:1].isalpha() else f"m{cleaned}"[:64]


def conv_attrs(conv: qnn.QuantConv2d) -> dict:
    return {
        "stride": int(conv.stride[0]),
        "padding": int(conv.padding[0]),
        "groups": int(conv.groups),
        "role": "backbone",
    }


def pooled(b: _Builder, x: str, scale: float) -> tuple[str, list[Op]]:
    """The GAP of a tensor (same scale, uint8 rounded mean), computed once and shared by
    everything that reads it: an exit head after a block and the next block's gates."""
    out = f"{x}.pool"
    if out in b.tensors:
        return out, []
    b.tensor(out, (b.tensors[x].shape[0],), "uint8", scale, "vector")
    return out, [Op("gap", out, {"x": x}, out)]


def lower_block(b: _Builder, block: LCBlock, p: str, x: str, x_scale: float) -> tuple[str, float, list[Op]]:
    ops: list[Op] = []
    cin, h, w = b.tensors[x].shape
    stride = block.conv1.stride[0]
    cout = block.conv1.out_channels
    ho, wo = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
    h_scale, out_scale = float(act_scale(block.relu1)), float(act_scale(block.out_relu))
    b.tensor(f"{p}.h", (cout, ho, wo), "uint8", h_scale)
    out = b.tensor(f"{p}.out", (cout, ho, wo), "uint8", out_scale)
    if block.gated:
        pool, pool_ops = pooled(b, x, x_scale)
        ops.extend(pool_ops)
        s_block = b.tensor(f"{p}.s_block", (1,), "uint8", 1 / SALIENCE_ONE, "salience")
        s_chan = b.tensor(f"{p}.s_chan", (cout,), "uint8", 1 / SALIENCE_ONE, "salience")
        f = fold(block.lnet.fc, x_scale, None, f"{p}.lnet")
        ops.append(
            b.weighted("linear", f"{p}.lnet", pool, s_block, f, f.acc_scale * SALIENCE_ONE, {"role": "gate"})
        )
        f = fold(block.cnet.fc, x_scale, None, f"{p}.cnet")
        cnet = b.weighted(
            "linear", f"{p}.cnet", pool, s_chan, f, f.acc_scale * SALIENCE_ONE, {"role": "gate"}
        )
    if block.projection:
        short_scale = float(act_scale(block.short_quant))
        short = b.tensor(f"{p}.short", (cout, ho, wo), "int8", short_scale)
        f = fold(block.short_conv, x_scale, block.short_bn, f"{p}.short")
        ops.append(
            b.weighted(
                "conv2d", f"{p}.short", x, short, f, f.acc_scale / short_scale, conv_attrs(block.short_conv)
            )
        )
        residual, res_scale = short, short_scale
    else:
        residual, res_scale = x, x_scale
    gate_scale = SALIENCE_ONE if block.gated else 1
    f1 = fold(block.conv1, x_scale, block.bn1, f"{p}.conv1")
    attrs1 = conv_attrs(block.conv1) | ({"channel_gate": f"{p}.s_chan"} if block.gated else {})
    conv1 = b.weighted("conv2d", f"{p}.conv1", x, f"{p}.h", f1, f1.acc_scale / (gate_scale * h_scale), attrs1)
    f2 = fold(block.conv2, h_scale, block.bn2, f"{p}.conv2")
    attrs2 = conv_attrs(block.conv2) | (
        {"block_gate": f"{p}.s_block", "input_mask": f"{p}.s_chan"} if block.gated else {}
    )
    res_ratio = np.full(cout, res_scale / out_scale)
    conv2 = b.weighted(
        "conv2d",
        f"{p}.conv2",
        f"{p}.h",
        out,
        f2,
        f2.acc_scale / (gate_scale * out_scale),
        attrs2,
        residual,
        res_ratio,
    )
    if not block.gated:
        return out, out_scale, [*ops, conv1, conv2]
    # the skipped block's output is the shortcut requantised exactly as conv2 does with s_L = 0
    skip = Op("rescale", f"{p}.skip", {"x": residual}, out, {"out_range": [0, 255]})
    b.arrays[f"{p}.skip.res_mult"] = b.arrays[f"{p}.conv2.res_mult"]
    b.arrays[f"{p}.skip.shift"] = b.arrays[f"{p}.conv2.shift"]
    ops.append(Op("guard", f"{p}.guard", attrs={"gate": s_block}, then=[cnet, conv1, conv2], orelse=[skip]))
    return out, out_scale, ops


def lower_exit(
    b: _Builder, head: ExitHead, p: str, x: str, x_scale: float, index: int, final: bool
) -> list[Op]:
    pool, pool_ops = pooled(b, x, x_scale)
    logit_scale = float(act_scale(head.out_quant))
    logits = b.tensor(f"{p}.logits", (head.fc.out_features,), "int16", logit_scale, "logits")
    f = fold(head.fc, x_scale, None, f"{p}.fc")
    fc = b.weighted("linear", f"{p}.fc", pool, logits, f, f.acc_scale / logit_scale, {"role": "exit_head"})
    return [*pool_ops, Op("exit", p, attrs={"index": index, "final": final, "logits": logits}, then=[fc])]


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
