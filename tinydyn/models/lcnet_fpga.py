"""LC-Net on an FPGA: the static model (gates folded into constant scales) and its dataflow
partitions (backbone segments and exit heads) — the family's FPGA hooks.

FINN builds fixed dataflow pipelines with no data-dependent control flow, so early exit is
realised by partitioning (DESIGN.md, "FPGA path"). With exits after blocks e_0 < e_1 < …:

* ``seg0``: input pixels → stem → blocks 0..e_0 → the integer (uint8) feature map of block e_0;
* exit head 0 (GAP → FC on that feature map) runs on the PS in software, bit for bit like the
  integer reference: a few microseconds on the Cortex-A9, where the exit decision is taken anyway.
  In the fabric it would cost a partition of its own, with two IODMAs and two interconnect ports
  (about 8,000 LUT of fixed cost on the xc7z020, docs/FPGA.md), for a layer of ~1,000 MACs;
* ``seg1``: the feature map of block e_0 (read back from DDR) → blocks e_0+1..e_1 → features;
* … the last segment runs the remaining blocks and the final classifier in one partition.

The L-Net/C-Net gates cannot be built either. Forcing every salience to 1 breaks a model
trained with gates (the branches were trained scaled down), so each salience is replaced by
its mean over calibration images:

    h   = relu(bn1(conv1(x)) · mean(s_C))        →  bn1.weight, bn1.bias  × mean(s_C)  (per channel)
    out = relu(short + mean(s_L) · bn2(conv2(h))) →  bn2.weight, bn2.bias × mean(s_L)  (per block)

Saliences are ReLU-1 outputs (≥ 0), so the scaled BNs stay valid BNs: the lowering folds them
into the integer weights' scales and FINN streamlines them into thresholds like any BN. The
result is a gate-free :class:`LCNet` (exits kept) that both the QONNX export and the integer
reference take as is.

Each partition is a :class:`FinnPartition` over the static model's modules, written so that it
exports to QONNX and maps to FINN:

* input: integers (pixels 0..255 or a uint8 feature map; float tensor annotated UINT8 in the
  QONNX graph) times their scale (1/255 or the producing block's activation scale), a scalar
  multiply FINN streamlines into the first thresholds;
* feature output: the last block's uint8 activation; the flow cuts the trailing scale multiply so
  that the partition streams the integers themselves (what the next segment reads);
* residual joins: float (finn-plus ElementwiseMul/Add) unless the model was trained with integer
  joins (``LCNetConfig.int_joins``, ``tinydyn train --int-joins``): then branch and shortcut pass
  one shared int8 quantiser and the add maps to an integer AddStreams;
* GAP on the activation grid: ``AdaptiveAvgPool2d(1)`` (→ FINN GlobalAccPool) followed by a copy
  of the block's output quantiser, so it rounds to the grid of ``pooled_on_grid`` (Brevitas rounds
  ties to even, ``pooled_on_grid`` and the integer executor half up: the only difference).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import brevitas.nn as qnn
import numpy as np
import torch
from brevitas.quant import Uint8ActPerTensorFloat
from torch import nn

from tinydyn.errors import TinydynError
from tinydyn.models.lcnet import LCNet, LCNetConfig
from tinydyn.quantize.builder import act_scale


class FpgaModelError(TinydynError):
    """A partition or static model that does not match the model it came from."""


@dataclass(frozen=True)
class PartitionSpec:
    """One dataflow partition: optional stem, blocks ``first..last`` (may be none), optional head.

    ``stage`` is the exit index the partition belongs to (segment k and head k form stage k).
    """

    name: str
    kind: str  # "segment" or "head"
    stage: int
    first_block: int
    last_block: int
    stem: bool
    head: str | None  # key in model.exit_heads, "final", or None (feature output)

    @property
    def blocks(self) -> range:
        return range(self.first_block, self.last_block + 1) if self.kind == "segment" else range(0)

    @property
    def input_tensor(self) -> str:
        """Name of the partition's input in the integer IR."""
        if self.stem:
            return "input"
        source = self.first_block - 1 if self.kind == "segment" else self.last_block
        return f"b{source}.out" if source >= 0 else "stem"

    @property
    def output_tensor(self) -> str | None:
        """IR tensor of a feature output (None: the partition ends in head accumulators)."""
        return None if self.head is not None else f"b{self.last_block}.out"

    reads_image = False  # segment k > 0 reads segment k-1's feature map (not the image again)

    @property
    def mac_prefixes(self) -> tuple[str, ...]:
        """IR op-name prefixes of the segment's layers (their MACs: stem, blocks)."""
        return (*(("stem",) if self.stem else ()), *(f"b{i}" for i in self.blocks))

    @property
    def head_prefix(self) -> str:
        """IR op-name prefix of the stage's exit head (on the PS, or the final one in the segment)."""
        return "final" if self.head == "final" else f"exit{self.stage}"


def partition_specs(config: LCNetConfig) -> list[PartitionSpec]:
    """seg0, seg1, …, segN: backbone segments only (the last one holds the final classifier);
    the early exit heads run on the PS (see the module docstring)."""
    specs, first = [], 0
    exits = sorted(config.exits)
    for k, block in enumerate(exits):
        specs.append(PartitionSpec(f"seg{k}", "segment", k, first, block, first == 0, None))
        first = block + 1
    last = sum(config.blocks) - 1
    specs.append(PartitionSpec(f"seg{len(exits)}", "segment", len(exits), first, last, first == 0, "final"))
    return specs


def whole_network_spec(config: LCNetConfig) -> PartitionSpec:
    """The static baseline: input → every block → final classifier as one partition."""
    return PartitionSpec("static", "segment", 0, 0, sum(config.blocks) - 1, True, "final")


def input_scale(net: LCNet, spec: PartitionSpec) -> float:
    if spec.stem:
        return 1.0 / 255.0
    source = spec.first_block - 1 if spec.kind == "segment" else spec.last_block
    relu = net.blocks[source].out_relu if source >= 0 else net.stem_relu
    return float(act_scale(relu))


def output_scale(net: LCNet, spec: PartitionSpec) -> float:
    return float(act_scale(net.blocks[spec.last_block].out_relu))


class FinnPartition(nn.Module):
    """Exportable forward of one partition of a gate-free LCNet: integers in (as float) →
    the last block's activation (on its grid) or int16-grid logits."""

    def __init__(self, net: LCNet, spec: PartitionSpec) -> None:
        super().__init__()
        if net.config.gates:
            raise FpgaModelError(f"{spec.name}: export the static model (gates folded), not the gated one")
        self.net, self.spec = net, spec
        self.in_scale = input_scale(net, spec)
        self.head = None
        if spec.head is not None:
            self.head = net.head if spec.head == "final" else net.exit_heads[spec.head]
            self.pool = nn.AdaptiveAvgPool2d(1)
            # a copy of the block's output quantizer (same learned scale): the pooled vector lands
            # on the activation grid. Passing the proxy itself would re-initialise the shared scale.
            self.pool_quant = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat)
            self.pool_quant.load_state_dict(net.blocks[spec.last_block].out_relu.state_dict())
            self.pool_quant.eval()

    def output_scale(self) -> float:
        """Scale of the feature map a segment without a head streams out."""
        return output_scale(self.net, self.spec)

    def feature_output(self) -> FinnPartition:
        """The same blocks ending in their feature map (no head): to check a head's input."""
        spec = self.spec
        features = PartitionSpec(
            f"{spec.name}_features", "segment", spec.stage, spec.first_block, spec.last_block, spec.stem, None
        )
        return FinnPartition(self.net, features)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = q * self.in_scale
        if self.spec.stem:
            x = n.stem_relu(n.stem_bn(n.stem(x)))
        for i in self.spec.blocks:
            block = n.blocks[i]
            h = block.relu1(block.bn1(block.conv1(x)))
            f = block.bn2(block.conv2(h))
            if block.int_joins:  # one shared quantiser: FINN adds the integers (AddStreams)
                x = block.out_relu(block.join(x, f))
                continue
            short = block.short_quant(block.short_bn(block.short_conv(x))) if block.projection else x
            x = block.out_relu(short + f)
        if self.head is None:
            return x
        return self.head(self.pool_quant(self.pool(x).flatten(1)))


@dataclass
class Saliences:
    """Mean saliences per gated block (block index → values) over ``images`` images."""

    block: dict[int, float]
    channel: dict[int, np.ndarray]
    images: int

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "block": {str(k): round(v, 6) for k, v in self.block.items()},
            "channel": {str(k): [round(float(x), 6) for x in v] for k, v in self.channel.items()},
        }


def gates_note(saliences: Saliences | None, folded_from: str | None = None) -> str:
    head = "L-Net/C-Net gates are not built on the FPGA"
    tail = "every block and channel runs; early exits are built as backbone segments the PS chains"
    if folded_from:
        return (
            f"{head}: this checkpoint's gates were folded into static channel scales (from "
            f"{Path(folded_from).name}) and the gate-free model fine-tuned "
            f"(tinydyn train --fold-gates); {tail}"
        )
    if saliences is None or not saliences.block:
        return f"{head} (this model has none): {tail}"
    return (
        f"{head}: they are folded into static channel scales "
        f"(their mean over {saliences.images} calibration images); {tail}"
    )


def mean_saliences(model: LCNet, images: np.ndarray, batch: int = 250) -> Saliences:
    """Mean block/channel saliences of the trained model (eval mode, on the 1/255 grid)."""
    gated = [i for i, b in enumerate(model.blocks) if b.gated]
    sums_l = {i: 0.0 for i in gated}
    sums_c = {i: np.zeros(model.blocks[i].conv1.out_channels) for i in gated}
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start : start + batch].astype(np.float32) / 255.0)
            out = model(x)
            for i, s_l, s_c in zip(gated, out.block_saliences, out.channel_saliences, strict=True):
                sums_l[i] += float(s_l.sum())
                sums_c[i] += s_c.sum(dim=0).double().numpy()
    n = max(len(images), 1)
    return Saliences(
        {i: v / n for i, v in sums_l.items()}, {i: v / n for i, v in sums_c.items()}, len(images)
    )


def static_model(model: LCNet, saliences: Saliences | None) -> LCNet:
    """A gate-free LCNet (exits kept) computing the trained model with constant saliences."""
    cfg = LCNetConfig.from_json({**model.config.to_json(), "gates": False})
    net = LCNet(cfg)
    state = {k: v for k, v in model.state_dict().items() if ".lnet." not in k and ".cnet." not in k}
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("zero_hw_sentinel", "counter"))]
    if missing:
        raise FpgaModelError(
            f"the gate-free model does not match the checkpoint ({missing[0]}): "
            "the checkpoint and this tinydyn disagree on the architecture"
        )
    if saliences is not None:
        with torch.no_grad():
            for i, block in enumerate(net.blocks):
                if i not in saliences.block:
                    continue
                s_c = torch.as_tensor(saliences.channel[i], dtype=block.bn1.weight.dtype)
                block.bn1.weight.mul_(s_c)
                block.bn1.bias.mul_(s_c)
                block.bn2.weight.mul_(saliences.block[i])
                block.bn2.bias.mul_(saliences.block[i])
    return net.eval()
