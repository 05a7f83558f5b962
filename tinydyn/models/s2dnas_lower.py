"""S2DNAS's lowering: one pass per stage over the static backbone's layers, each computing only
that stage's channels, then the stage's exit.

Stage ``i``'s conv at a layer is the static conv's rows of stage ``i``'s output channels and its
columns of the stages it reads (its own, and the earlier ones whose concat indicator is set).
Where it reads earlier stages, a ``concat`` joins their tensors (computed in their own passes
and still live in the arena) with its own: nothing is computed twice. Every stage slice of a
feature map has the static layer's scale, so no rescale is needed before a concat.

After its layers each stage pools its last feature map (``gap``, kept for the later
classifiers) and its exit head concatenates the pooled vectors of stages ``1..i`` (the
prediction layer reads every earlier stage) into its FC. Early exits carry the stage's own
confidence threshold (attr ``confidence_t16``). The IR thus runs stage 1, decides, and only
then computes stage 2.

Naive early exits (a one-stage model, the paper's baseline) sit in the single stage's walk after
the last layer of their resolution: an exit whose head pools that map (``gap``) into its FC, all
inside the exit (nothing after it reads the pooled vector), with its own threshold.
"""

from __future__ import annotations

import numpy as np
import torch
from brevitas import nn as qnn
from torch import nn

from tinydyn.ir import IRModel, Op, validate
from tinydyn.models.lcnet import ExitHead, LCBlock
from tinydyn.models.lcnet_lower import conv_attrs
from tinydyn.models.s2dnas import S2DNASConfig, S2DNASNet, VGGLayer, layer_plan, naive_exit_layers
from tinydyn.ops.arith import conv_output_hw
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
from tinydyn.quantize.policy import CONFIDENCE_ONE

SUPPORTED_MODULES: tuple[type, ...] = (
    S2DNASNet,
    LCBlock,
    VGGLayer,
    ExitHead,
    qnn.QuantConv2d,
    qnn.QuantLinear,
    qnn.QuantReLU,
    qnn.QuantIdentity,
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.ModuleList,
)
SUPPORTED_TEXT = (
    "S2DNAS ResNet/VGG backbones (QuantConv2d, BatchNorm2d, QuantReLU, MaxPool2d), stage heads and "
    "naive early-exit heads"
)


def resolution_sizes(cfg: S2DNASConfig) -> list[int]:
    """Height (= width) of the feature maps at each resolution: stride-2 convs (resnet) or 2x2
    max-pools (vgg) between resolutions."""
    sizes = [cfg.input_size]
    for _ in cfg.widths[1:]:
        prev = sizes[-1]
        sizes.append(conv_output_hw(prev, prev, 3, 2, 1)[0] if cfg.backbone == "resnet" else prev // 2)
    return sizes


def static_macs(cfg: S2DNASConfig) -> int:
    """MACs of the static backbone the model was transformed from (every connection, one
    classifier): what the multi-stage model's mean MACs are compared with."""
    sizes = resolution_sizes(cfg)
    total = sum(p["k"] ** 2 * p["cin"] * p["cout"] * sizes[p["r_out"]] ** 2 for p in layer_plan(cfg))
    return total + cfg.widths[-1] * cfg.num_classes


def confidence_t16(threshold: float) -> int:
    """A probability threshold on the 1/65536 grid the integer confidence policy compares."""
    return int(round(min(max(threshold, 0.0), 1.0) * CONFIDENCE_ONE))


class _Lowering:
    """The walk: tensors per (stage, feature map), concats cached, ops in schedule order."""

    def __init__(self, model: S2DNASNet) -> None:
        self.model, self.cfg = model, model.config
        self.b = IRBuilder()
        self.ops: list[Op] = []
        # stage -> feature-map name -> that stage's tensor of it
        self.maps: list[dict[str, str]] = [{} for _ in range(self.cfg.stages)]
        self.joined: dict[tuple[int, str], str] = {}
        # block (resnet) / conv (vgg) index -> the naive early exit after it
        self.naive = {layer: k for k, layer in enumerate(naive_exit_layers(self.cfg))}

    def gather(self, stage: int, fm: str, resolution: int | None) -> str:
        """Stage ``stage``'s input from feature map ``fm``: its own slice, joined after the
        slices of the earlier stages it reuses at that resolution."""
        if resolution is None:
            return fm  # the image: every stage reads all of it
        used = self.cfg.reused(resolution, stage)
        if len(used) == 1:
            return self.maps[stage][fm]
        key = (stage, fm)
        if key not in self.joined:
            parts = [self.maps[j][fm] for j in used]
            first = self.b.tensors[parts[0]]
            channels = sum(self.b.tensors[p].shape[0] for p in parts)
            name = self.b.tensor(f"s{stage}.{fm}.cat", (channels, *first.shape[1:]), first.dtype, first.scale)
            self.ops.append(Op("concat", name, {f"x{k}": p for k, p in enumerate(parts)}, name))
            self.joined[key] = name
        return self.joined[key]

    def conv(
        self,
        stage: int,
        layer: dict,
        module: qnn.QuantConv2d,
        bn: nn.BatchNorm2d,
        fm_in: str,
        x_scale: float,
        out: tuple[str, str, float],
        residual: tuple[str, float] | None = None,
    ) -> str:
        """Stage ``stage``'s part of a static conv: its output rows, the input columns it reads."""
        fm_out, dtype, out_scale = out
        folded = fold(module, x_scale, bn, f"s{stage}.{layer['name']}")
        rows = slice(*self.cfg.stage_ranges(layer["cout"], layer["r_out"])[stage])
        if layer["r_in"] is None:
            cols = np.arange(layer["cin"])
        else:
            ranges = self.cfg.stage_ranges(layer["cin"], layer["r_in"])
            cols = np.concatenate([np.arange(*ranges[j]) for j in self.cfg.reused(layer["r_in"], stage)])
        part = Folded(folded.weight[rows][:, cols], folded.bias[rows], folded.acc_scale[rows])
        x = self.gather(stage, fm_in, layer["r_in"])
        _, h, w = self.b.tensors[x].shape
        k, stride = layer["k"], layer["stride"]
        ho, wo = conv_output_hw(h, w, k, stride, k // 2)
        name = f"s{stage}.{fm_out}"
        self.b.tensor(name, (rows.stop - rows.start, ho, wo), dtype, out_scale)
        res_name, res_ratio = None, None
        if residual is not None:
            res_name, res_scale = residual
            res_ratio = np.full(rows.stop - rows.start, res_scale / out_scale)
        self.ops.append(
            self.b.weighted(
                "conv2d",
                name,
                x,
                name,
                part,
                part.acc_scale / out_scale,
                conv_attrs(module),
                res_name,
                res_ratio,
            )
        )
        self.maps[stage][fm_out] = name
        return name

    def stage(self, stage: int) -> tuple[str, float]:
        """Stage ``stage``'s layers; its last feature map and scale."""
        model, plan = self.model, {p["name"]: p for p in layer_plan(self.cfg)}
        scale = float(act_scale(model.stem_relu))
        self.conv(
            stage, plan["stem"], model.stem, model.stem_bn, "input", INPUT_SCALE, ("stem", "uint8", scale)
        )
        fm = "stem"
        if self.cfg.backbone == "resnet":
            for k, block in enumerate(model.blocks):
                fm, scale = self.block(stage, k, block, plan, fm, scale)
                if k in self.naive:
                    self.naive_exit(self.naive[k], fm, scale)
        else:
            for k, layer in enumerate(model.convs):
                spec = plan[f"convs.{k}.conv"]
                if spec["pool"]:
                    fm = self.pool(stage, fm, f"c{k}.in")
                out_scale = float(act_scale(layer.relu))
                self.conv(stage, spec, layer.conv, layer.bn, fm, scale, (f"c{k}", "uint8", out_scale))
                fm, scale = f"c{k}", out_scale
                if k in self.naive:
                    self.naive_exit(self.naive[k], fm, scale)
        return fm, scale

    def naive_exit(self, index: int, fm: str, scale: float) -> None:
        """Naive early exit ``index`` on the (only) stage's map ``fm``: gap → FC → int16 logits,
        all in the exit's head (only it reads the pooled vector), left at its own threshold."""
        b, head = self.b, self.model.naive_heads[index]
        p = f"naive{index}"
        x = self.maps[0][fm]
        pooled = b.tensor(f"{p}.pool", (b.tensors[x].shape[0],), "uint8", scale, "vector")
        folded = fold(head.fc, scale, None, f"{p}.fc")
        logit_scale = float(act_scale(head.out_quant))
        logits = b.tensor(f"{p}.logits", (self.cfg.num_classes,), "int16", logit_scale, "logits")
        fc = b.weighted(
            "linear", f"{p}.fc", pooled, logits, folded, folded.acc_scale / logit_scale, {"role": "exit_head"}
        )
        attrs = {
            "index": index,
            "final": False,
            "logits": logits,
            "confidence_t16": confidence_t16(self.cfg.thresholds[index]),
        }
        self.ops.append(Op("exit", p, attrs=attrs, then=[Op("gap", pooled, {"x": x}, pooled), fc]))

    def pool(self, stage: int, fm: str, out: str) -> str:
        """A 2x2 max-pool of this stage's own slice (pooling is per channel: slices pool alone)."""
        src = self.b.tensors[self.maps[stage][fm]]
        c, h, w = src.shape
        name = self.b.tensor(f"s{stage}.{out}", (c, *conv_output_hw(h, w, 2, 2, 0)), src.dtype, src.scale)
        self.ops.append(Op("maxpool", name, {"x": src.name}, name, {"kernel": 2, "stride": 2, "padding": 0}))
        self.maps[stage][out] = name
        return out

    def block(
        self, stage: int, k: int, block: LCBlock, plan: dict, fm: str, x_scale: float
    ) -> tuple[str, float]:
        p = f"b{k}"
        h_scale, out_scale = float(act_scale(block.relu1)), float(act_scale(block.out_relu))
        conv1 = plan[f"blocks.{k}.conv1"]
        self.conv(stage, conv1, block.conv1, block.bn1, fm, x_scale, (f"{p}.h", "uint8", h_scale))
        if block.projection:
            short_scale = float(act_scale(block.short_quant))
            spec = plan[f"blocks.{k}.short_conv"]
            short = self.conv(
                stage,
                spec,
                block.short_conv,
                block.short_bn,
                fm,
                x_scale,
                (f"{p}.short", "int8", short_scale),
            )
            residual = (short, short_scale)
        else:
            residual = (self.maps[stage][fm], x_scale)  # identity: this stage's own channels
        conv2 = plan[f"blocks.{k}.conv2"]
        self.conv(
            stage,
            conv2,
            block.conv2,
            block.bn2,
            f"{p}.h",
            h_scale,
            (f"{p}.out", "uint8", out_scale),
            residual,
        )
        return f"{p}.out", out_scale

    def exit(self, stage: int, fm: str, scale: float) -> None:
        """Pool this stage's last map (kept for later classifiers), then its exit: concat of the
        pooled vectors of stages 1..i → FC → int16 logits."""
        cfg, b = self.cfg, self.b
        own = self.maps[stage][fm]
        pooled = b.tensor(f"s{stage}.pool", (b.tensors[own].shape[0],), "uint8", scale, "vector")
        self.ops.append(Op("gap", pooled, {"x": own}, pooled))
        self.maps[stage]["pool"] = pooled
        head_ops: list[Op] = []
        x = pooled
        if stage > 0:
            parts = [self.maps[j]["pool"] for j in range(stage + 1)]
            channels = sum(b.tensors[p].shape[0] for p in parts)
            x = b.tensor(f"exit{stage}.in", (channels,), "uint8", scale, "vector")
            head_ops.append(Op("concat", x, {f"x{k}": p for k, p in enumerate(parts)}, x))
        head = self.model.heads[stage]
        width = b.tensors[x].shape[0]
        folded = fold(head.fc, scale, None, f"exit{stage}.fc")
        part = Folded(folded.weight[:, :width], folded.bias, folded.acc_scale)
        logit_scale = float(act_scale(head.out_quant))
        logits = b.tensor(f"exit{stage}.logits", (cfg.num_classes,), "int16", logit_scale, "logits")
        head_ops.append(
            b.weighted(
                "linear",
                f"exit{stage}.fc",
                x,
                logits,
                part,
                part.acc_scale / logit_scale,
                {"role": "exit_head"},
            )
        )
        final = stage == cfg.stages - 1
        index = len(cfg.naive_exits) + stage  # after the naive early exits (one-stage models only)
        attrs: dict = {"index": index, "final": final, "logits": logits}
        if not final:
            attrs["confidence_t16"] = confidence_t16(cfg.thresholds[index])
        self.ops.append(Op("exit", "final" if final else f"exit{stage}", attrs=attrs, then=head_ops))


def lower(model: S2DNASNet, name: str = "s2dnas") -> IRModel:
    """The integer IR of a trained S2DNAS model (eval mode)."""
    check_supported(model, SUPPORTED_MODULES, SUPPORTED_TEXT)
    model.eval()
    cfg = model.config
    walk = _Lowering(model)
    walk.b.tensor("input", (cfg.in_channels, cfg.input_size, cfg.input_size), "uint8", INPUT_SCALE)
    with torch.no_grad():
        for stage in range(cfg.stages):
            fm, scale = walk.stage(stage)
            walk.exit(stage, fm, scale)
    set_next_costs(walk.ops)
    ir = IRModel(
        name=ir_model_name(name),
        input="input",
        tensors=walk.b.tensors,
        ops=walk.ops,
        arrays=walk.b.arrays,
        classes=list(cfg.classes),
        meta={
            "model_config": cfg.to_json(),
            "static_backbone_macs": static_macs(cfg),
            "input_scale": INPUT_SCALE,
        },
    )
    validate(ir)
    return ir
