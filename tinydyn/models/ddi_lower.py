"""DDI's lowering: the walk over a :class:`~tinydyn.models.ddi.DDINet` onto the generic
:class:`tinydyn.quantize.builder.IRBuilder`.

Per gated unit ``u<i>``: ``gap`` of the unit input → ``lstm_gate`` (``u<i>.lgate``: the fused 1x1
conv + LSTM step, its state ``u<i>.lstm_h``/``u<i>.lstm_c`` read by the next gated unit) → a ``guard`` on
the layer salience ``u<i>.s_layer``. Its ``then`` branch holds the channel-gate chain (convs and
FC with role ``gate``, the FC's salience ``u<i>.s_chan`` is 0 or 255) and the unit's convs
(first conv ``channel_gate``, second ``input_mask``); its ``orelse`` the skip: a ResNet block's
shortcut requantised as the block output (``rescale``), a dense layer's copy of the previous
layer's new maps (``split`` of the last ``growth`` channels). Dense features grow by ``concat``.
Both gates are thresholds on an int32 accumulator: ``salience = 255 if acc > 0 else 0`` (the
requantisation ratio 255 per accumulator unit), which is the float model's ``logit > 0``.
"""

from __future__ import annotations

import numpy as np
import torch
from brevitas import nn as qnn
from torch import nn

from tinydyn.ir import SALIENCE_ONE, IRModel, Op, validate
from tinydyn.models.ddi import (
    Branch,
    ChannelGate,
    DDINet,
    DenseUnit,
    GateLSTM,
    LayerGate,
    ResUnit,
    Transition,
    int8_rows,
)
from tinydyn.models.lcnet import ExitHead
from tinydyn.models.lcnet_lower import conv_attrs, lower_exit, pooled
from tinydyn.ops.lstm_gate import C_FRAC, H_FRAC, Z_FRAC, LstmGate
from tinydyn.quantize.builder import (
    INPUT_SCALE,
    IRBuilder,
    act_scale,
    check_supported,
    fold,
    ir_model_name,
    set_next_costs,
)
from tinydyn.quantize.executor import static_macs
from tinydyn.quantize.requant import multipliers, scaled

SUPPORTED_MODULES: tuple[type, ...] = (
    DDINet,
    ResUnit,
    DenseUnit,
    Transition,
    Branch,
    ChannelGate,
    LayerGate,
    GateLSTM,
    ExitHead,
    qnn.QuantConv2d,
    qnn.QuantLinear,
    qnn.QuantReLU,
    qnn.QuantIdentity,
    nn.BatchNorm2d,
    nn.Linear,
    nn.ModuleList,
    nn.ModuleDict,
)
SUPPORTED_TEXT = "QuantConv2d, QuantLinear, QuantReLU, QuantIdentity, BatchNorm2d and the DDI gates"
THRESHOLD = np.float64(SALIENCE_ONE)  # salience per accumulator unit: any acc >= 1 saturates at 255


class Walk:
    """Lowering state: the builder, the ops so far, the LSTM state tensors and exit count."""

    def __init__(self, model: DDINet) -> None:
        self.model = model
        self.b = IRBuilder()
        self.ops: list[Op] = []
        self.state: tuple[str, str] | None = None
        self.exits = 0

    # --- pieces shared by both backbones --------------------------------------------------
    def conv(
        self,
        name: str,
        conv: qnn.QuantConv2d,
        bn: nn.BatchNorm2d | None,
        x: str,
        out: str,
        out_scale: float,
        role: str = "backbone",
        gate_scale: int = 1,
        extra: dict | None = None,
        residual: tuple[str, float] | None = None,
    ) -> Op:
        """A conv+BN into the uint8/int8 tensor ``out`` (created here unless it exists)."""
        b = self.b
        cin, h, w = b.tensors[x].shape
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        shape = (conv.out_channels, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        if out not in b.tensors:
            b.tensor(out, shape, "uint8", out_scale)
        f = fold(conv, b.tensors[x].scale, bn, name)
        attrs = conv_attrs(conv) | {"role": role} | (extra or {})
        if residual is None:
            return b.weighted("conv2d", name, x, out, f, f.acc_scale / (gate_scale * out_scale), attrs)
        res, res_scale = residual
        ratio = np.full(conv.out_channels, res_scale / out_scale)
        return b.weighted(
            "conv2d", name, x, out, f, f.acc_scale / (gate_scale * out_scale), attrs, res, ratio
        )

    def layer_gate(self, gate: LayerGate, p: str, x: str) -> tuple[str, list[Op]]:
        """gap → lstm_gate: the layer salience ``p.s_layer`` (0 or 255) and the ops."""
        b, lstm = self.b, self.model.lstm
        pool, ops = pooled(b, x, b.tensors[x].scale)
        hidden = lstm.hidden
        with torch.no_grad():
            w_x, bias = gate.input_projection(lstm)
            q_x, s_x = int8_rows(w_x)
            acc_scale = s_x.reshape(-1) * float(b.tensors[x].scale)
            bias_int = torch.floor(bias / acc_scale + 0.5)
            q_h, s_h = int8_rows(lstm.w_hh)
            q_s, s_s = int8_rows(lstm.sal.weight)
            sal_bias = torch.floor(lstm.sal.bias / (s_s.reshape(-1) * 2.0**-H_FRAC) + 0.5)
        z_scale = 2.0**-Z_FRAC
        ratio_x = acc_scale.double().numpy() / z_scale
        name = f"{p}.lgate"
        a = b.arrays
        a[f"{name}.w_x"] = q_x.numpy().astype(np.int8)
        a[f"{name}.bias"] = bias_int.numpy().astype(np.int32)
        inputs = {"x": pool}
        if self.state is None:
            mult, shift = multipliers(ratio_x, name)
        else:
            ratio_h = s_h.reshape(-1).double().numpy() * 2.0**-H_FRAC / z_scale
            _, shift = multipliers(np.maximum(ratio_x, ratio_h), name)  # one shift, both below 2^23
            mult = scaled(ratio_x, shift)
            a[f"{name}.w_h"] = q_h.numpy().astype(np.int8)
            a[f"{name}.mult_h"] = scaled(ratio_h, shift)
            inputs |= {"h": self.state[0], "c": self.state[1]}
        a[f"{name}.mult_x"], a[f"{name}.shift"] = mult, shift
        a[f"{name}.sal_weight"] = q_s.numpy().astype(np.int8)
        a[f"{name}.sal_bias"] = sal_bias.numpy().astype(np.int32)
        a[f"{name}.sal_mult"], a[f"{name}.sal_shift"] = multipliers(np.array([THRESHOLD]), name)
        s_layer = b.tensor(f"{p}.s_layer", (1,), "uint8", 1 / SALIENCE_ONE, "salience")
        h_out = b.tensor(f"{p}.lstm_h", (hidden,), "int16", 2.0**-H_FRAC, "vector")
        c_out = b.tensor(f"{p}.lstm_c", (hidden,), "int16", 2.0**-C_FRAC, "vector")
        macs = LstmGate.macs_of(b.tensors[pool].shape[0], hidden, 1, self.state is not None)
        ops.append(
            Op(
                "lstm_gate",
                name,
                inputs,
                s_layer,
                {"h_out": h_out, "c_out": c_out, "role": "gate", "macs": macs},
            )
        )
        self.state = (h_out, c_out)
        return s_layer, ops

    def channel_gate(self, gate: ChannelGate, p: str, x: str, cout: int) -> tuple[str, list[Op]]:
        """conv(s) → gap → FC: the channel saliences ``p.s_chan`` (each 0 or 255) and the ops."""
        b = self.b
        y = f"{p}.cg.a"
        ops = [self.conv(y, gate.conv_a, gate.bn_a, x, y, float(act_scale(gate.relu_a)), role="gate")]
        last = gate.relu_a
        if gate.light:
            ops.append(
                self.conv(
                    f"{p}.cg.b", gate.conv_b, gate.bn_b, y, f"{p}.cg.b", float(act_scale(gate.relu_b)), "gate"
                )
            )
            y, last = f"{p}.cg.b", gate.relu_b
        pool, pool_ops = pooled(b, y, float(act_scale(last)))
        s_chan = b.tensor(f"{p}.s_chan", (cout,), "uint8", 1 / SALIENCE_ONE, "salience")
        f = fold(gate.fc, float(act_scale(last)), None, f"{p}.cg.fc")
        fc = b.weighted("linear", f"{p}.cg.fc", pool, s_chan, f, np.full(cout, THRESHOLD), {"role": "gate"})
        return s_chan, [*ops, *pool_ops, fc]

    def branch(self, head: Branch, x: str) -> None:
        """A RADI exit: max pools, conv, gap, FC, under an ``exit`` op."""
        b, p = self.b, f"exit{self.exits}"
        ops: list[Op] = []
        scale = b.tensors[x].scale
        for i in range(head.pools):
            c, h, w = b.tensors[x].shape
            y = b.tensor(f"{p}.pool{i}", (c, h // 2, w // 2), "uint8", scale)
            ops.append(Op("maxpool", y, {"x": x}, y, {"kernel": 2, "stride": 2}))
            x = y
        out_scale = float(act_scale(head.relu))
        ops.append(self.conv(f"{p}.conv", head.conv, head.bn, x, f"{p}.conv", out_scale, role="exit_head"))
        exit_ops = lower_exit(b, head.head, p, f"{p}.conv", out_scale, self.exits, False)
        *pool_ops, exit_op = exit_ops
        exit_op.then = [*ops, *pool_ops, *exit_op.then]
        self.ops.append(exit_op)
        self.exits += 1

    # --- ResNet ---------------------------------------------------------------------------
    def res_unit(self, unit: ResUnit, p: str, x: str) -> str:
        b = self.b
        x_scale = b.tensors[x].scale
        cout = unit.conv1.out_channels
        h_scale, out_scale = float(act_scale(unit.relu1)), float(act_scale(unit.out_relu))
        out = f"{p}.out"
        if unit.projection:
            short_scale = float(act_scale(unit.short_quant))
            c, h, w = b.tensors[x].shape
            s = unit.short_conv.stride[0]
            b.tensor(f"{p}.short", (cout, (h - 1) // s + 1, (w - 1) // s + 1), "int8", short_scale)
            self.ops.append(
                self.conv(f"{p}.short", unit.short_conv, unit.short_bn, x, f"{p}.short", short_scale)
            )
            residual = (f"{p}.short", short_scale)
        else:
            residual = (x, x_scale)
        if not unit.gated:
            conv1 = self.conv(f"{p}.conv1", unit.conv1, unit.bn1, x, f"{p}.h", h_scale)
            conv2 = self.conv(f"{p}.conv2", unit.conv2, unit.bn2, f"{p}.h", out, out_scale, residual=residual)
            self.ops += [conv1, conv2]
            return out
        s_layer, gate_ops = self.layer_gate(unit.layer_gate, p, x)
        self.ops += gate_ops
        s_chan, chan_ops = self.channel_gate(unit.channel_gate, p, x, cout)
        conv1 = self.conv(
            f"{p}.conv1", unit.conv1, unit.bn1, x, f"{p}.h", h_scale,
            gate_scale=SALIENCE_ONE, extra={"channel_gate": s_chan},
        )  # fmt: skip
        conv2 = self.conv(
            f"{p}.conv2", unit.conv2, unit.bn2, f"{p}.h", out, out_scale,
            extra={"input_mask": s_chan}, residual=residual,
        )  # fmt: skip
        # skipped (Eq. 3, G^L = 0): the shortcut requantised exactly as conv2 does it
        skip = Op("rescale", f"{p}.skip", {"x": residual[0]}, out, {"out_range": [0, 255]})
        b.arrays[f"{p}.skip.res_mult"] = b.arrays[f"{p}.conv2.res_mult"]
        b.arrays[f"{p}.skip.shift"] = b.arrays[f"{p}.conv2.shift"]
        self.ops.append(
            Op("guard", f"{p}.guard", attrs={"gate": s_layer}, then=[*chan_ops, conv1, conv2], orelse=[skip])
        )
        return out

    # --- DenseNet -------------------------------------------------------------------------
    def dense_unit(self, unit: DenseUnit, p: str, x: str, feat_scale: float) -> str:
        b = self.b
        cin = b.tensors[x].shape[0]
        growth = unit.conv2.out_channels
        mid = unit.conv1.out_channels
        h_scale = float(act_scale(unit.relu1))
        new = f"{p}.new"
        body: list[Op] = []
        extra1: dict = {}
        extra2: dict = {}
        if unit.gated:
            s_layer = None
            if unit.layer_gated:
                s_layer, gate_ops = self.layer_gate(unit.layer_gate, p, x)
                self.ops += gate_ops
            s_chan, chan_ops = self.channel_gate(unit.channel_gate, p, x, mid)
            body += chan_ops
            extra1, extra2 = {"channel_gate": s_chan}, {"input_mask": s_chan}
        conv1 = self.conv(
            f"{p}.conv1", unit.conv1, unit.bn1, x, f"{p}.h", h_scale,
            gate_scale=SALIENCE_ONE if unit.gated else 1, extra=extra1,
        )  # fmt: skip
        conv2 = self.conv(f"{p}.conv2", unit.conv2, unit.bn2, f"{p}.h", new, feat_scale, extra=extra2)
        body += [conv1, conv2]
        if unit.layer_gated:
            # skipped (Fig. 3): the previous dense layer's new maps, the input's last channels
            copy = Op("split", f"{p}.skip", {"x": x}, new, {"offset": cin - growth, "count": growth})
            self.ops.append(Op("guard", f"{p}.guard", attrs={"gate": s_layer}, then=body, orelse=[copy]))
        else:
            self.ops += body
        feat = b.tensor(f"{p}.feat", (cin + growth, *b.tensors[x].shape[1:]), "uint8", feat_scale)
        self.ops.append(Op("concat", feat, {"x0": x, "x1": new}, feat))
        return feat

    def transition(self, t: Transition, name: str, x: str, out_scale: float) -> str:
        b = self.b
        c, h, w = b.tensors[x].shape
        pool = b.tensor(f"{name}.pool", (c, h // 2, w // 2), "uint8", b.tensors[x].scale)
        self.ops.append(Op("avgpool", pool, {"x": x}, pool, {"kernel": 2, "stride": 2}))
        self.ops.append(self.conv(f"{name}.conv", t.conv, t.bn, pool, f"{name}.out", out_scale))
        return f"{name}.out"


def lower(model: DDINet, name: str = "ddi") -> IRModel:
    """The integer IR of a trained DDI network (model in eval mode)."""
    check_supported(model, SUPPORTED_MODULES, SUPPORTED_TEXT)
    model.eval()
    cfg = model.config
    walk = Walk(model)
    b = walk.b
    size = cfg.input_size
    x = b.tensor("input", (cfg.in_channels, size, size), "uint8", INPUT_SCALE)
    with torch.no_grad():
        if cfg.backbone == "resnet":
            stem_scale = float(act_scale(model.stem_relu))
            walk.ops.append(walk.conv("stem", model.stem, model.stem_bn, x, "stem", stem_scale))
            x = "stem"
            for i, unit in enumerate(model.units):
                x = walk.res_unit(unit, f"u{i}", x)
                if str(i) in model.branches:
                    walk.branch(model.branches[str(i)], x)
        else:
            feat = [float(act_scale(q)) for q in model.feat_quants]
            walk.ops.append(walk.conv("stem", model.stem, model.stem_bn, x, "stem", feat[0]))
            x, index = "stem", 0
            for stage, count in enumerate(cfg.blocks):
                if stage > 0:
                    x = walk.transition(model.transitions[stage - 1], f"t{stage}", x, feat[stage])
                for _ in range(count):
                    x = walk.dense_unit(model.units[index], f"u{index}", x, feat[stage])
                    if str(index) in model.branches:
                        walk.branch(model.branches[str(index)], x)
                    index += 1
        walk.ops += lower_exit(b, model.head, "final", x, b.tensors[x].scale, walk.exits, True)
    set_next_costs(walk.ops)
    ir = IRModel(
        name=ir_model_name(name),
        input="input",
        tensors=b.tensors,
        ops=walk.ops,
        arrays=b.arrays,
        classes=list(cfg.classes),
        meta={"model_config": cfg.to_json(), "input_scale": INPUT_SCALE},
    )
    ir.meta["static_backbone_macs"] = static_macs(ir)
    validate(ir)
    return ir
