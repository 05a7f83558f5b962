"""LC-Net (fully dynamic inference) on a ResNet of basic blocks, built from Brevitas layers.

Per block, as the paper defines it: one global-average-pool of the block input is shared by
the L-Net (FC → ReLU-1 → block salience ``s_L``) and the C-Net (FC → ReLU-1 → one salience
per output channel of the block's first conv, ``s_C``). The block computes
``relu(shortcut(x) + s_L · bn2(conv2(relu(bn1(conv1(x)) · s_C))))``: channels with ``s_C = 0``
and blocks with ``s_L = 0`` are work the integer model does not do. ReLU-1 is leaky while
training and hard (and quantised to 8 bits, 1/255 steps) at inference.

Quantisation matches the integer spec: int8 per-output-channel weights, uint8 activations
after every ReLU, int8 for projection shortcuts, int16 logits; the pooled vector fed to
gates and heads is rounded to the activation grid (``round_half_up(mean / scale)``) exactly as
the integer ``gap`` op does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import brevitas.nn as qnn
import torch
from brevitas.quant import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Uint8ActPerTensorFloat,
)
from torch import nn

from tinydyn.errors import TinydynError


class ConfigError(TinydynError):
    """A model configuration that cannot be built."""


class Int16ActPerTensorFloat(Int8ActPerTensorFloat):
    """Logits keep 16 bits so that close classes stay distinguishable."""

    bit_width = 16


@dataclass
class LCNetConfig:
    """Architecture of an LC-Net ResNet; stored in every checkpoint."""

    in_channels: int = 1
    input_size: int = 28
    num_classes: int = 10
    stem_width: int = 16
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: tuple[int, ...] = (1, 1, 1)
    exits: tuple[int, ...] = (0, 1)  # global block indices followed by an early-exit head
    gates: bool = True  # L-Net and C-Net on every block
    leak: float = 0.01  # slope of the leaky ReLU-1 used in training
    classes: tuple[str, ...] = field(default_factory=lambda: tuple(str(i) for i in range(10)))

    def __post_init__(self) -> None:
        self.widths, self.blocks, self.exits = tuple(self.widths), tuple(self.blocks), tuple(self.exits)
        self.classes = tuple(self.classes)
        if len(self.widths) != len(self.blocks) or not self.widths:
            raise ConfigError(
                "widths and blocks need one entry per stage: e.g. --widths 16,32,64 --blocks 1,1,1"
            )
        if any(b < 1 for b in self.blocks) or any(w < 1 for w in self.widths):
            raise ConfigError("every stage needs at least one block and one channel")
        total = sum(self.blocks)
        if any(not 0 <= e < total - 1 for e in self.exits):
            raise ConfigError(
                f"early exits {self.exits} must name blocks 0..{total - 2} (the last block feeds "
                "the final classifier)"
            )
        if len(self.classes) != self.num_classes:
            raise ConfigError(f"{len(self.classes)} class names given for {self.num_classes} classes")
        if self.input_size < 2 ** len(self.widths):
            raise ConfigError(f"input size {self.input_size} is too small for {len(self.widths)} stages")

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @staticmethod
    def from_json(data: dict[str, Any]) -> LCNetConfig:
        known = LCNetConfig.__dataclass_fields__
        unknown = set(data) - set(known)
        if unknown:
            raise ConfigError(
                f"unknown model config keys {sorted(unknown)}: checkpoint from another version?"
            )
        return LCNetConfig(**data)


class ReLU1(nn.Module):
    """ReLU-1: clamp to [0, 1]. Leaky in training; hard and on the 1/255 grid at inference."""

    def __init__(self, leak: float) -> None:
        super().__init__()
        self.leak = leak

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        hard = z.clamp(0.0, 1.0)
        if self.training:
            return hard + self.leak * (z - hard)
        return torch.floor(hard * 255.0 + 0.5) / 255.0


class _RoundHalfUp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return grad  # straight-through


def pooled_on_grid(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Global average pool rounded to the input's quantisation grid (the integer ``gap``)."""
    scale = scale.detach()
    return _RoundHalfUp.apply(x.mean(dim=(2, 3)) / scale) * scale


def act_scale(relu: qnn.QuantReLU | qnn.QuantIdentity) -> torch.Tensor:
    return relu.act_quant.scale()


def conv3x3(cin: int, cout: int, stride: int) -> qnn.QuantConv2d:
    return qnn.QuantConv2d(
        cin, cout, 3, stride=stride, padding=1, bias=False, weight_quant=Int8WeightPerChannelFloat
    )


def uint8_relu() -> qnn.QuantReLU:
    return qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat)


class Gate(nn.Module):
    """FC → ReLU-1 on the shared pooled vector: a salience per output."""

    def __init__(self, cin: int, cout: int, leak: float, open_bias: float) -> None:
        super().__init__()
        self.fc = qnn.QuantLinear(cin, cout, bias=True, weight_quant=Int8WeightPerChannelFloat)
        nn.init.constant_(self.fc.bias, open_bias)  # start with the gate open
        self.relu1 = ReLU1(leak)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.relu1(self.fc(pooled))


class ExitHead(nn.Module):
    """GAP (on grid) → FC → int16 logits."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.fc = qnn.QuantLinear(cin, num_classes, bias=True, weight_quant=Int8WeightPerChannelFloat)
        self.out_quant = qnn.QuantIdentity(act_quant=Int16ActPerTensorFloat)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_quant(self.fc(pooled))


class LCBlock(nn.Module):
    """A ResNet basic block with L-Net (block salience) and C-Net (channel salience)."""

    def __init__(self, cin: int, cout: int, stride: int, gates: bool, leak: float) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), uint8_relu()
        self.conv2, self.bn2 = conv3x3(cout, cout, 1), nn.BatchNorm2d(cout)
        self.out_relu = uint8_relu()
        self.gated = gates
        if gates:
            self.lnet = Gate(cin, 1, leak, open_bias=1.0)
            self.cnet = Gate(cin, cout, leak, open_bias=1.0)
        self.projection = stride != 1 or cin != cout
        if self.projection:
            self.short_conv = qnn.QuantConv2d(
                cin, cout, 1, stride=stride, bias=False, weight_quant=Int8WeightPerChannelFloat
            )
            self.short_bn = nn.BatchNorm2d(cout)
            self.short_quant = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat)

    def forward(
        self, x: torch.Tensor, x_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        s_block = s_channels = None
        h = self.bn1(self.conv1(x))
        if self.gated:
            pooled = pooled_on_grid(x, x_scale)  # shared by L-Net and C-Net
            s_block, s_channels = self.lnet(pooled), self.cnet(pooled)
            h = h * s_channels[:, :, None, None]
        f = self.bn2(self.conv2(self.relu1(h)))
        if s_block is not None:
            f = f * s_block[:, :, None, None]
        short = self.short_quant(self.short_bn(self.short_conv(x))) if self.projection else x
        return self.out_relu(short + f), s_block, s_channels


@dataclass
class ModelOutput:
    logits: list[torch.Tensor]  # one per exit, the final classifier last
    block_saliences: list[torch.Tensor]  # (N, 1) per gated block
    channel_saliences: list[torch.Tensor]  # (N, C) per gated block


class LCNet(nn.Module):
    """LC-Net ResNet with optional early-exit heads after chosen blocks."""

    def __init__(self, config: LCNetConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = conv3x3(config.in_channels, config.stem_width, 1)
        self.stem_bn, self.stem_relu = nn.BatchNorm2d(config.stem_width), uint8_relu()
        blocks, cin = [], config.stem_width
        for stage, (width, count) in enumerate(zip(config.widths, config.blocks, strict=True)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(LCBlock(cin, width, stride, config.gates, config.leak))
                cin = width
        self.blocks = nn.ModuleList(blocks)
        self.exit_heads = nn.ModuleDict(
            {str(b): ExitHead(self.blocks[b].conv2.out_channels, config.num_classes) for b in config.exits}
        )
        self.head = ExitHead(cin, config.num_classes)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        """``images``: float pixels in [0, 1] (uint8 / 255), shape (N, C, H, W)."""
        x = self.stem_relu(self.stem_bn(self.stem(images)))
        scale = act_scale(self.stem_relu)
        out = ModelOutput([], [], [])
        for index, block in enumerate(self.blocks):
            x, s_block, s_channels = block(x, scale)
            scale = act_scale(block.out_relu)
            if s_block is not None:
                out.block_saliences.append(s_block)
                out.channel_saliences.append(s_channels)
            if str(index) in self.exit_heads:
                out.logits.append(self.exit_heads[str(index)](pooled_on_grid(x, scale)))
        out.logits.append(self.head(pooled_on_grid(x, scale)))
        return out
