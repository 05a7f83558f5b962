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

from collections.abc import Iterable
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
from tinydyn.quantize.builder import act_scale


class ConfigError(TinydynError):
    """A model configuration that cannot be built: ``problem`` names what is wrong, the message
    adds the fix (a checkpoint loader words its own fix around ``problem``)."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(f"{problem}: {fix}" if fix else problem)
        self.problem = problem


# Bounds of a buildable config. A config comes from the command line or from a checkpoint (an
# untrusted file), so every value is checked before a single module is allocated: a width of
# 100000 would otherwise ask torch for hundreds of GB.
MAX_WIDTH = 1024  # channels per stage: one 3x3 conv is then 9.4M weights, beyond any board target
MAX_STAGES = 6  # each stage halves the image: 6 stages take 256 px down to 8
MAX_BLOCKS_PER_STAGE = 16  # deeper than any LC-Net/ResNet variant the paper or tinydyn trains
MAX_IN_CHANNELS = 4  # grey, RGB, RGBA
# square images: 8 px is the least three stride-2 stages reduce sensibly; 256 px is far beyond what
# the MCU firmware buffers (3x32x32 by default) while a training batch of them still fits memory
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 256
MIN_CLASSES, MAX_CLASSES = 2, 100  # the MCU firmware's TD_MAX_CLASSES (tinydyn_model.h)
MAX_CLASS_NAME = 64  # class names are printed in reports and one-line messages
# ~80 MB of float32 weights: 40x the int8 weights the largest MCU target (2 MB flash) holds,
# so only a typo or a hostile file reaches it, and building such a model still takes seconds
MAX_PARAMETERS = 20_000_000


def _shown(value: Any) -> str:
    """A value for a one-line message: numbers as such (huge ones elided), other things by type."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"a {type(value).__name__}"
    if isinstance(value, int) and abs(value) >= 10**12:
        return "a number with more than 12 digits"  # str() of a huge int can even raise
    return f"{value:g}" if isinstance(value, float) else str(value)


def _int(name: str, value: Any, low: int, high: int, fix: str) -> int:
    # bool is an int subclass, but True as a width is a mistake, not a 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {_shown(value)}", fix)
    if not low <= value <= high:
        raise ConfigError(f"{name} {_shown(value)} is outside {low}..{high}", fix)
    return int(value)


def _ints(name: str, value: Any, low: int, high: int, fix: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{name} must be a list of whole numbers, got {_shown(value)}", fix)
    if len(value) > 64:  # longer than any bound below: do not walk a hostile million-entry list
        raise ConfigError(f"{name} has {len(value)} entries", fix)
    return tuple(_int(f"{name}[{i}]", v, low, high, fix) for i, v in enumerate(value))


def parameter_count(cfg: LCNetConfig) -> int:
    """Weights and BN parameters the config builds (for the size cap; biases included)."""
    total, cin = 9 * cfg.in_channels * cfg.stem_width + 4 * cfg.stem_width, cfg.stem_width
    outs = []
    for stage, (width, count) in enumerate(zip(cfg.widths, cfg.blocks, strict=True)):
        for i in range(count):
            total += 9 * cin * width + 9 * width * width + 8 * width
            if cfg.gates:
                total += cin * (1 + width) + 1 + width
            if (stage > 0 and i == 0) or cin != width:
                total += cin * width + 4 * width
            outs.append(width)
            cin = width
    heads = [outs[e] for e in cfg.exits] + [cin]
    return total + sum((c + 1) * cfg.num_classes for c in heads)


OPTIONAL_CONFIG_KEYS = ("int_joins",)  # added later: checkpoints without it keep the default


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
    # one shared int8 quantiser requantises branch and shortcut at each residual join, so FINN maps
    # the add to integer hardware (docs/FPGA.md); gate-free models only
    int_joins: bool = False

    def __post_init__(self) -> None:
        # types and bounds first: a checkpoint is untrusted, and nothing is built from it before this
        shape = "e.g. --widths 16,32,64 --blocks 1,1,1"
        check_image_fields(self)
        self.widths = _ints("widths", self.widths, 1, MAX_WIDTH, f"give widths in 1..{MAX_WIDTH}, {shape}")
        self.stem_width = _int("stem_width", self.stem_width, 1, MAX_WIDTH, f"give widths in 1..{MAX_WIDTH}")
        self.blocks = _ints(
            "blocks", self.blocks, 1, MAX_BLOCKS_PER_STAGE, f"give 1..{MAX_BLOCKS_PER_STAGE} blocks per stage"
        )
        self.exits = _ints("exits", self.exits, 0, 10**6, "name blocks by their index, e.g. --exits 0,1")
        if not isinstance(self.gates, bool):
            raise ConfigError(f"gates must be true or false, got {_shown(self.gates)}", "retrain the model")
        if not isinstance(self.int_joins, bool):
            raise ConfigError(
                f"int_joins must be true or false, got {_shown(self.int_joins)}", "retrain the model"
            )
        if self.int_joins and self.gates:
            raise ConfigError(
                "integer residual joins are for gate-free models",
                "train with --no-gates or fold the gates first",
            )
        leak = self.leak
        if isinstance(leak, bool) or not isinstance(leak, int | float) or not 0.0 <= leak <= 1.0:
            raise ConfigError(f"leak must be a number in 0..1, got {_shown(leak)}", "retrain the model")
        self.leak = float(leak)
        if not isinstance(self.classes, list | tuple) or len(self.classes) > MAX_CLASSES:
            raise ConfigError(f"classes must be a list of up to {MAX_CLASSES} names", "retrain the model")
        for i, name in enumerate(self.classes):
            if not isinstance(name, str) or not 0 < len(name) <= MAX_CLASS_NAME or not name.isprintable():
                raise ConfigError(
                    f"class name {i} must be 1..{MAX_CLASS_NAME} printable characters", "retrain the model"
                )
        self.classes = tuple(self.classes)
        # then the structure
        if len(self.widths) != len(self.blocks) or not self.widths:
            raise ConfigError("widths and blocks need one entry per stage", shape)
        if len(self.widths) > MAX_STAGES:
            raise ConfigError(f"{len(self.widths)} stages is more than {MAX_STAGES}", shape)
        total = sum(self.blocks)
        if any(not 0 <= e < total - 1 for e in self.exits):
            raise ConfigError(
                f"early exits {list(self.exits)} must name blocks 0..{total - 2}",
                "the last block feeds the final classifier",
            )
        if list(self.exits) != sorted(set(self.exits)):
            raise ConfigError(
                f"early exits {list(self.exits)} repeat or are out of order",
                "give them ascending, e.g. --exits 0,1",
            )
        if len(self.classes) != self.num_classes:
            raise ConfigError(
                f"{len(self.classes)} class names given for {self.num_classes} classes", "retrain the model"
            )
        if self.input_size < 2 ** len(self.widths):
            raise ConfigError(
                f"input size {self.input_size} is too small for {len(self.widths)} stages", "use fewer stages"
            )
        params = parameter_count(self)
        if params > MAX_PARAMETERS:
            raise ConfigError(
                f"the model would have {params:,} parameters, more than tinydyn's cap of {MAX_PARAMETERS:,}",
                "use narrower or fewer stages",
            )

    def to_json(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if not self.int_joins:  # as before the option existed: checkpoints and IR fingerprints unchanged
            del out["int_joins"]
        return out

    @staticmethod
    def from_json(data: Any) -> LCNetConfig:
        """The config a checkpoint stores; every field must be there (no silent defaults)."""
        return config_from_json(LCNetConfig, data, OPTIONAL_CONFIG_KEYS)


def check_image_fields(config: Any) -> None:
    """The input and label fields every family's config has: image channels and size, classes."""
    config.in_channels = _int(
        "in_channels", config.in_channels, 1, MAX_IN_CHANNELS, "train on grey or colour images"
    )
    config.input_size = _int(
        "input_size", config.input_size, MIN_INPUT_SIZE, MAX_INPUT_SIZE, "train on images of that size"
    )
    config.num_classes = _int(
        "num_classes", config.num_classes, MIN_CLASSES, MAX_CLASSES, "train on a dataset with that many"
    )


def config_from_json(config_class: type, data: Any, optional: Iterable[str] = ()) -> Any:
    """A family's dataclass config from a checkpoint's JSON: a mapping with exactly its fields (the
    ``optional`` ones may be absent: fields added later); the class's ``__post_init__`` then
    checks each value's type and bounds before any module is built."""
    if not isinstance(data, dict):
        raise ConfigError(f"the model config is {_shown(data)}, not a mapping", "retrain the model")
    known = config_class.__dataclass_fields__
    unknown = [str(k)[:40] for k in data if k not in known]
    if unknown:
        raise ConfigError(
            f"unknown model config keys {sorted(unknown)[:5]}", "checkpoint from another version?"
        )
    missing = [k for k in known if k not in data and k not in set(optional)]
    if missing:
        raise ConfigError(f"model config lacks {missing}", "checkpoint from another version?")
    return config_class(**data)


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

    def __init__(
        self, cin: int, cout: int, stride: int, gates: bool, leak: float, int_joins: bool = False
    ) -> None:
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
            if not int_joins:  # with integer joins the shared join quantiser takes its place
                self.short_quant = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat)
        self.int_joins = int_joins
        if int_joins:  # shared by branch and shortcut
            self.join_quant = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat)

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
        if self.int_joins:
            return self.out_relu(self.join(x, f)), s_block, s_channels
        short = self.short_quant(self.short_bn(self.short_conv(x))) if self.projection else x
        return self.out_relu(short + f), s_block, s_channels

    def join(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Integer residual join: shortcut and branch requantised by the one shared quantiser."""
        short = self.short_bn(self.short_conv(x)) if self.projection else x
        return self.join_quant(short) + self.join_quant(f)


@dataclass
class ModelOutput:
    logits: list[torch.Tensor]  # one per exit, the final classifier last
    block_saliences: list[torch.Tensor]  # (N, 1) per gated block
    channel_saliences: list[torch.Tensor]  # (N, C) per gated block


class LCNet(nn.Module):
    """LC-Net ResNet with optional early-exit heads after chosen blocks."""

    family = "lcnet"  # its entry in tinydyn.models.registry (recorded in checkpoints)

    def __init__(self, config: LCNetConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = conv3x3(config.in_channels, config.stem_width, 1)
        self.stem_bn, self.stem_relu = nn.BatchNorm2d(config.stem_width), uint8_relu()
        blocks, cin = [], config.stem_width
        for stage, (width, count) in enumerate(zip(config.widths, config.blocks, strict=True)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(LCBlock(cin, width, stride, config.gates, config.leak, config.int_joins))
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
