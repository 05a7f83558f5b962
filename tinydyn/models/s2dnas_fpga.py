"""S2DNAS on an FPGA: one dataflow partition per stage — the family's FPGA hooks.

An S2DNAS model has no gates: its only dynamic part is the early exit after each stage, which
makes it the most FPGA-friendly family. Stage ``i`` of the lowered model reuses the feature maps
of the earlier stages at every layer whose concat indicator is set, and its classifier reads the
pooled features of stages ``1..i``. A FINN partition streams one input, so tinydyn builds
(option "recompute", docs/FPGA.md):

* partition ``stage<i>``: the image → the backbone restricted to the channels of stages
  ``1..i`` → GAP → classifier ``i``'s accumulators. It recomputes the earlier stages' channels it
  needs instead of reading them back from DDR: one input stream, no feature maps kept by the PS,
  no DDR round trip per reused layer. The price is fabric work, reported per partition (its MACs
  against the reference's, which computes every stage's channels once);
* the PS finishes the logits from the accumulators exactly as the integer reference does and
  decides by the stage's own confidence threshold ``t_i`` (attr ``confidence_t16`` of the IR's
  exit); the images that stay are gathered from the image array into stage ``i+1``'s input.

Why the channels of stages ``1..i`` form a self-contained network: stage ``j`` holds the
contiguous channels ``[p_j, p_{j+1})`` of every feature map (the earlier stages first) and never
reads a later stage, so the first ``end_i`` channels of each map depend only on the first
``end_i`` channels of the maps before. The stage network is the static backbone with every
width cut to ``end_i`` at its resolution: each tensor of the trained model sliced to its leading
rows/columns (the masked connections inside stay zero: FINN's matrix units compute them, which
the fabric MACs count). The per-output-channel weight scales are unchanged: the columns cut
away are exactly the zeros of those rows. Activation quantisers are the trained ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import brevitas.nn as qnn
import numpy as np
import torch
from brevitas.quant import Uint8ActPerTensorFloat
from torch import nn

from tinydyn.errors import TinydynError
from tinydyn.models.s2dnas import S2DNASConfig, S2DNASNet, layer_plan
from tinydyn.quantize.builder import act_scale


class S2DNASFpgaError(TinydynError):
    """A stage network that does not match the model it came from."""


@dataclass(frozen=True)
class StagePartitionSpec:
    """Partition of stage ``stage``: the image in, classifier ``stage``'s accumulators out (or,
    ``features``: the stage network's last feature map, for the checks)."""

    name: str
    stage: int
    final: bool  # the last stage (its exit is the model's final classifier)
    layers: int  # conv layers of the backbone (for the checks: a partition with layers and a head)
    features: bool = False

    kind = "segment"
    stem = True
    reads_image = True  # every stage partition reads the image: the PS gathers the images that stay
    input_tensor = "input"

    @property
    def head(self) -> str | None:
        """The exit whose logits the partition ends in (tinydyn.hw.checks.head_arrays key)."""
        if self.features:
            return None
        return "final" if self.final else f"stage{self.stage}"

    @property
    def output_tensor(self) -> str | None:
        return None  # the accumulators of a head, never a feature map of the integer IR

    @property
    def blocks(self) -> range:
        return range(self.layers)

    @property
    def mac_prefixes(self) -> tuple[str, ...]:
        """IR op-name prefixes of what this stage adds in the integer reference (its own
        channels; the earlier stages' are theirs)."""
        return (f"s{self.stage}",)

    @property
    def head_prefix(self) -> str:
        return f"exit{self.stage}"


def refuse_naive_exits(config: S2DNASConfig) -> None:
    """The partitions are stages; a naive early exit would be an exit inside a partition, which
    the PS controller cannot stop at: such a model is refused before anything is exported."""
    if config.naive_exits:
        raise S2DNASFpgaError(
            "tinydyn fpga does not build S2DNAS models with naive early exits (after resolutions "
            f"{', '.join(map(str, config.naive_exits))}): deploy it on a microcontroller board "
            "(tinydyn build / run), or build the static model it came from"
        )


def partition_specs(config: S2DNASConfig) -> list[StagePartitionSpec]:
    refuse_naive_exits(config)
    layers = len(layer_plan(config))
    return [StagePartitionSpec(f"stage{i}", i, i == config.stages - 1, layers) for i in range(config.stages)]


def whole_network_spec(config: S2DNASConfig) -> StagePartitionSpec:
    """The static baseline: every stage's channels and the final classifier in one partition
    (the same network as the last stage's partition; what 'run every stage' needs)."""
    refuse_naive_exits(config)
    return StagePartitionSpec("static", config.stages - 1, True, len(layer_plan(config)))


def stage_ends(config: S2DNASConfig, stage: int) -> tuple[int, tuple[int, ...]]:
    """Channels of stages 1..``stage`` (the leading ones): of the stem's map and per resolution."""

    def end(channels: int, resolution: int) -> int:
        return config.stage_ranges(channels, resolution)[stage][1]

    return end(config.stem_width, 0), tuple(end(w, r) for r, w in enumerate(config.widths))


def stage_network(model: S2DNASNet, stage: int) -> S2DNASNet:
    """The backbone of stages 1..``stage`` as a one-stage network: every tensor of the trained
    model cut to its leading channels, classifier ``stage`` as its only head (eval mode)."""
    cfg = model.config
    if not 0 <= stage < cfg.stages:
        raise S2DNASFpgaError(f"stage {stage} is not one of the model's {cfg.stages} stages")
    stem, widths = stage_ends(cfg, stage)
    sub_cfg = S2DNASConfig(
        backbone=cfg.backbone,
        in_channels=cfg.in_channels,
        input_size=cfg.input_size,
        num_classes=cfg.num_classes,
        stem_width=stem,
        widths=widths,
        blocks=cfg.blocks,
        groups=1,
        stages=1,
        classes=cfg.classes,
    )
    sub = S2DNASNet(sub_cfg)
    own = sub.state_dict()  # a fresh model lists no learned activation scale yet: those copy as they are
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("heads."):
            index, _, rest = key[len("heads.") :].partition(".")
            if index != str(stage):
                continue  # the other stages' classifiers
            key = f"heads.0.{rest}"
        shape = own[key].shape if key in own else value.shape
        if value.dim() != len(shape) or any(o > v for o, v in zip(shape, value.shape, strict=True)):
            raise S2DNASFpgaError(
                f"stage {stage}: '{key}' {tuple(shape)} does not fit in the model's {tuple(value.shape)}"
            )
        state[key] = value[tuple(slice(0, n) for n in shape)].clone()
    result = sub.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("zero_hw_sentinel", "counter"))]
    if missing or result.unexpected_keys:
        raise S2DNASFpgaError(
            f"stage {stage}: the stage network does not match the model "
            f"({(missing or result.unexpected_keys)[0]}): the checkpoint and this tinydyn disagree"
        )
    return sub.eval()


def fabric_macs(net: S2DNASNet) -> int:
    """MACs per image the stage network's matrix units compute: every conv dense over its
    (cut) widths, masked zeros included, plus the classifier."""
    from tinydyn.models.s2dnas_lower import resolution_sizes

    cfg = net.config
    sizes = resolution_sizes(cfg)
    convs = sum(p["k"] ** 2 * p["cin"] * p["cout"] * sizes[p["r_out"]] ** 2 for p in layer_plan(cfg))
    return convs + cfg.widths[-1] * cfg.num_classes


class StagePartition(nn.Module):
    """Exportable forward of one stage partition: integer pixels (as float) → the stage network
    → GAP on the last map's grid → classifier logits (int16 grid; the flow cuts them to the
    accumulators), or with ``spec.features`` the last feature map."""

    def __init__(self, net: S2DNASNet, spec: StagePartitionSpec) -> None:
        super().__init__()
        self.net, self.spec = net, spec
        self.in_scale = 1.0 / 255.0
        self.head = None if spec.features else net.heads[0]
        self.pool = nn.AdaptiveAvgPool2d(1)
        # a copy of the last map's quantiser (same learned scale): the pooled vector lands on its
        # grid (FINN GlobalAccPool + thresholds). The proxy itself would re-initialise the scale.
        self.pool_quant = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat)
        self.pool_quant.load_state_dict(self._last_relu().state_dict())
        self.pool_quant.eval()

    def _last_relu(self) -> qnn.QuantReLU:
        n = self.net
        return n.blocks[-1].out_relu if n.config.backbone == "resnet" else n.convs[-1].relu

    def output_scale(self) -> float:
        return float(act_scale(self._last_relu()))

    def feature_output(self) -> StagePartition:
        spec = self.spec
        return StagePartition(
            self.net, StagePartitionSpec(f"{spec.name}_features", spec.stage, spec.final, spec.layers, True)
        )

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.stem_relu(n.stem_bn(n.stem(q * self.in_scale)))
        if n.config.backbone == "resnet":
            for block in n.blocks:  # gate-free LCBlock, float join (as the trained model)
                h = block.relu1(block.bn1(block.conv1(x)))
                f = block.bn2(block.conv2(h))
                short = block.short_quant(block.short_bn(block.short_conv(x))) if block.projection else x
                x = block.out_relu(short + f)
        else:
            for layer in n.convs:
                x = layer(x)
        if self.head is None:
            return x
        return self.head(self.pool_quant(self.pool(x).flatten(1)))


def stage_partition(model: S2DNASNet, spec: StagePartitionSpec) -> StagePartition:
    return StagePartition(stage_network(model, spec.stage), spec)


def stage_logits(model: S2DNASNet, images: np.ndarray) -> list[np.ndarray]:
    """Every stage's logits of the full model (float, eval mode): what each stage network must
    reproduce (a check of the slicing)."""
    with torch.no_grad():
        out = model(torch.from_numpy(images.astype(np.float32) / 255.0))
    return [z.numpy() for z in out.logits]
