"""LC-Net's lowering: the walk over its modules (stem, blocks with L-Net/C-Net gates and a
guard, exit heads) onto the generic :class:`tinydyn.quantize.builder.IRBuilder`."""

from __future__ import annotations

import numpy as np
import torch
from brevitas import nn as qnn
from torch import nn

from tinydyn.cost.torch_cost import static_backbone_macs
from tinydyn.ir import SALIENCE_ONE, IRModel, Op, validate
from tinydyn.models.lcnet import ExitHead, Gate, LCBlock, LCNet, ReLU1
from tinydyn.quantize.builder import (
    INPUT_SCALE,
    Folded,
    IRBuilder,
    act_scale,
    check_supported,
    fold,
    ir_model_name,
    set_next_costs,
)
from tinydyn.quantize.requant import multipliers, scaled

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
SUPPORTED_TEXT = "QuantConv2d, QuantLinear, QuantReLU, QuantIdentity and BatchNorm2d inside LC-Net blocks"


def lower(model: LCNet, name: str = "lcnet") -> IRModel:
    """The integer IR of a trained LC-Net (model in eval mode)."""
    check_supported(model, SUPPORTED_MODULES, SUPPORTED_TEXT)
    model.eval()
    cfg = model.config
    b = IRBuilder()
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


def conv_attrs(conv: qnn.QuantConv2d) -> dict:
    return {
        "stride": int(conv.stride[0]),
        "padding": int(conv.padding[0]),
        "groups": int(conv.groups),
        "role": "backbone",
    }


def pooled(b: IRBuilder, x: str, scale: float) -> tuple[str, list[Op]]:
    """The GAP of a tensor (same scale, uint8 rounded mean), computed once and shared by
    everything that reads it: an exit head after a block and the next block's gates."""
    out = f"{x}.pool"
    if out in b.tensors:
        return out, []
    b.tensor(out, (b.tensors[x].shape[0],), "uint8", scale, "vector")
    return out, [Op("gap", out, {"x": x}, out)]


def lower_block(b: IRBuilder, block: LCBlock, p: str, x: str, x_scale: float) -> tuple[str, float, list[Op]]:
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
    if block.int_joins:
        return out, out_scale, lower_int_join(b, block, p, x, x_scale, h_scale, out, out_scale)
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


def lower_int_join(
    b: IRBuilder, block: LCBlock, p: str, x: str, x_scale: float, h_scale: float, out: str, out_scale: float
) -> list[Op]:
    """A gate-free block whose join requantises branch and shortcut with one shared int8 quantiser
    (scale s_j): conv2 -> int8 branch on s_j; the shortcut -> int8 on s_j (its 1x1 conv, or a
    rescale of the input); the join is the integer sum requantised to the output grid, written as
    a depthwise 1x1 conv2d with unit weights on the branch and the shortcut as its residual, both
    with the same multiplier: exactly round((branch + short) * s_j / s_out)."""
    cout, ho, wo = b.tensors[out].shape
    j_scale = float(act_scale(block.join_quant))
    branch = b.tensor(f"{p}.branch", (cout, ho, wo), "int8", j_scale)
    short = b.tensor(f"{p}.short", (cout, ho, wo), "int8", j_scale)
    ops = []
    if block.projection:
        f = fold(block.short_conv, x_scale, block.short_bn, f"{p}.short")
        ops.append(
            b.weighted(
                "conv2d", f"{p}.short", x, short, f, f.acc_scale / j_scale, conv_attrs(block.short_conv)
            )
        )
    else:
        _, shift = multipliers(np.full(cout, x_scale / j_scale), f"{p}.short")
        b.arrays[f"{p}.short.res_mult"] = scaled(np.full(cout, x_scale / j_scale), shift)
        b.arrays[f"{p}.short.shift"] = shift
        ops.append(Op("rescale", f"{p}.short", {"x": x}, short, {"out_range": [-128, 127]}))
    f1 = fold(block.conv1, x_scale, block.bn1, f"{p}.conv1")
    ops.append(
        b.weighted("conv2d", f"{p}.conv1", x, f"{p}.h", f1, f1.acc_scale / h_scale, conv_attrs(block.conv1))
    )
    f2 = fold(block.conv2, h_scale, block.bn2, f"{p}.conv2")
    ops.append(
        b.weighted(
            "conv2d", f"{p}.conv2", f"{p}.h", branch, f2, f2.acc_scale / j_scale, conv_attrs(block.conv2)
        )
    )
    unit = Folded(np.ones((cout, 1, 1, 1), np.int8), np.zeros(cout, np.int32), np.full(cout, j_scale))
    ratio = np.full(cout, j_scale / out_scale)
    attrs = {"stride": 1, "padding": 0, "groups": cout, "role": "backbone"}
    ops.append(b.weighted("conv2d", f"{p}.join", branch, out, unit, ratio, attrs, short, ratio))
    return ops


def lower_exit(
    b: IRBuilder, head: ExitHead, p: str, x: str, x_scale: float, index: int, final: bool
) -> list[Op]:
    pool, pool_ops = pooled(b, x, x_scale)
    logit_scale = float(act_scale(head.out_quant))
    logits = b.tensor(f"{p}.logits", (head.fc.out_features,), "int16", logit_scale, "logits")
    f = fold(head.fc, x_scale, None, f"{p}.fc")
    fc = b.weighted("linear", f"{p}.fc", pool, logits, f, f.acc_scale / logit_scale, {"role": "exit_head"})
    return [*pool_ops, Op("exit", p, attrs={"index": index, "final": final, "logits": logits}, then=[fc])]
