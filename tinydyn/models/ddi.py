"""DDI (Dual Dynamic Inference, Wang et al.): multi-grained learning to skip (MGL2S) and RADI
branch classifiers on a ResNet or a DenseNet, built from Brevitas layers.

Per gated unit (a residual block, or a dense layer after the first of its dense block):

* **layer gate G^L**: the unit's input is average-pooled (on the activation grid, as the integer
  ``gap``), projected by a 1×1 conv to ``gate_embed`` features and fed to one LSTM cell of hidden
  size ``lstm_hidden`` whose state is carried from gated unit to gated unit; an FC of the hidden
  state gives one logit, and the gate is ``logit > 0`` (sigmoid > 0.5). The 1×1 conv of the
  1×1 pooled map and the LSTM's input projection are both linear with nothing between them, so
  the model fake-quantises their product (one int8 matrix per unit, the integer ``lstm_gate``'s
  ``w_x``); LSTM weights are shared by every unit (SkipNet's recurrent gate), each unit has its
  own 1×1 conv. State and pre-activations are rounded to the integer op's fixed formats.
* **channel gate G^C** on the unit's first conv (``channel_gate``): ``full``, the ResNet's gate of
  paper Fig. 2(b), 3×3 stride-2 conv keeping the input's channels → GAP → FC(c×k); ``light``, the
  DenseNet's gate of Fig. 4, 1×1 stride-2 conv to half the channels, then a 3×3 conv → GAP → FC.
  Each backbone defaults to its paper's gate; a ResNet may take the light one (about a third of
  the full gate's MACs, which are 1/8 of a block's). Each output is ``logit > 0``.
* **coarse to fine (Eq. 3)**: a unit whose layer gate is 0 does not compute its channel gate;
  a skipped residual block outputs its shortcut (requantised at the block output), a skipped
  dense layer's new maps are the previous dense layer's new maps (Fig. 3), so shapes never change.

Training uses straight-through gates: the forward pass is the hard {0, 1} decision the integer
model takes, the backward pass the sigmoid's gradient (the paper's softmax approximation).

RADI branch classifiers (Fig. 5) sit at about 1/4 and 3/4 of every stage (:func:`branch_points`):
stride-2 max pools bring early, high-resolution features down to the last stage's resolution,
then a 3×3 conv, global pool and FC.

Quantisation as LC-Net's (:mod:`tinydyn.models.lcnet`): int8 per-channel weights, uint8
activations, int16 logits. A DenseNet's concatenated features share one activation quantiser per
dense block (the stem or transition output and every layer's new maps), so the integer
``concat`` joins one scale without rescaling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import brevitas.nn as qnn
import torch
import torch.nn.functional as F
from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat
from torch import nn

from tinydyn.models.lcnet import (
    MAX_BLOCKS_PER_STAGE,
    MAX_CLASS_NAME,
    MAX_CLASSES,
    MAX_PARAMETERS,
    MAX_STAGES,
    MAX_WIDTH,
    ConfigError,
    ExitHead,
    _int,
    _ints,
    _RoundHalfUp,
    _shown,
    check_image_fields,
    config_from_json,
    conv3x3,
    pooled_on_grid,
    uint8_relu,
)
from tinydyn.ops.lstm_gate import C_FRAC, H_FRAC, Z_FRAC
from tinydyn.quantize.builder import act_scale

BACKBONES = ("resnet", "densenet")
MAX_GROWTH = 64  # DenseNet-BC uses 12..48
MAX_GATE_WIDTH = 64  # LSTM hidden size / 1x1 embedding: the paper and SkipNet use 10
BOTTLENECK = 4  # a dense layer's 1x1 conv has 4 x growth channels (DenseNet-BC)
COMPRESSION = 0.5  # a transition halves the channels (DenseNet-BC)
OPEN_LOGIT = 3.0  # gate biases start here: every gate open (sigmoid 0.95), the static network
CHANNEL_GATES = ("full", "light")  # paper Fig. 2(b) and Fig. 4


def branch_positions(count: int) -> list[int]:
    """0-based positions, inside a stage of ``count`` units, after which a branch sits: about
    1/4 and 3/4 of the depth, ``round(count/4)`` and ``round(3·count/4)`` as 1-based positions,
    at least 1 (paper Fig. 5: the 2nd and 6th of 8). Short stages: one unit gets one branch
    (after it); two or three get branches after the first and second."""
    ones = {max(1, int(count * q + 0.5)) for q in (0.25, 0.75)}
    return sorted(p - 1 for p in ones)


def branch_points(blocks: tuple[int, ...]) -> list[int]:
    """Global unit indices followed by a branch: :func:`branch_positions` in every stage, except
    after the network's last unit, where the final classifier is."""
    points, start = [], 0
    for count in blocks:
        points += [start + p for p in branch_positions(count)]
        start += count
    return [p for p in points if p < start - 1]


def dense_widths(stem: int, growth: int, blocks: tuple[int, ...]) -> list[tuple[int, int]]:
    """(channels entering, channels leaving) each dense block; transitions halve (floor)."""
    out, c = [], stem
    for i, count in enumerate(blocks):
        out.append((c, c + count * growth))
        c = c + count * growth
        if i < len(blocks) - 1:
            c = max(1, int(c * COMPRESSION))
    return out


@dataclass
class DDIConfig:
    """Architecture of a DDI network; stored in every checkpoint."""

    backbone: str = "resnet"
    in_channels: int = 1
    input_size: int = 28
    num_classes: int = 10
    stem_width: int = 16  # DenseNet: 2 x growth rate
    widths: tuple[int, ...] = (16, 32, 64)  # ResNet channels per stage (DenseNet: empty)
    blocks: tuple[int, ...] = (3, 3, 3)  # residual blocks / dense layers per stage
    growth_rate: int = 0  # DenseNet (ResNet: 0)
    gates: bool = True  # MGL2S layer and channel gates
    branches: bool = True  # RADI branch classifiers
    lstm_hidden: int = 10
    gate_embed: int = 10
    channel_gate: str = ""  # "full" or "light"; "" takes the backbone's paper gate (optional in JSON)
    classes: tuple[str, ...] = field(default_factory=lambda: tuple(str(i) for i in range(10)))

    def __post_init__(self) -> None:
        # types and bounds first: a checkpoint is untrusted, nothing is built from it before this
        if self.backbone not in BACKBONES:
            shown = (
                repr(self.backbone) if isinstance(self.backbone, str) and len(self.backbone) <= 20 else None
            )
            raise ConfigError(
                f"backbone must be one of {', '.join(BACKBONES)}, got {shown or _shown(self.backbone)}",
                "pass --backbone resnet or --backbone densenet",
            )
        check_image_fields(self)
        self.stem_width = _int("stem_width", self.stem_width, 1, MAX_WIDTH, f"give widths in 1..{MAX_WIDTH}")
        self.widths = _ints("widths", self.widths, 1, MAX_WIDTH, f"give widths in 1..{MAX_WIDTH}")
        self.blocks = _ints(
            "blocks", self.blocks, 1, MAX_BLOCKS_PER_STAGE, f"give 1..{MAX_BLOCKS_PER_STAGE} blocks per stage"
        )
        self.growth_rate = _int(
            "growth_rate", self.growth_rate, 0, MAX_GROWTH, f"give --growth-rate 1..{MAX_GROWTH}"
        )
        for name in ("gates", "branches"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{name} must be true or false, got {_shown(getattr(self, name))}", "retrain"
                )
        self.lstm_hidden = _int("lstm_hidden", self.lstm_hidden, 1, MAX_GATE_WIDTH, "retrain the model")
        self.gate_embed = _int("gate_embed", self.gate_embed, 1, MAX_GATE_WIDTH, "retrain the model")
        if self.channel_gate == "":
            self.channel_gate = "full" if self.backbone == "resnet" else "light"
        if self.channel_gate not in CHANNEL_GATES:
            gate = self.channel_gate
            shown = repr(gate) if isinstance(gate, str) and len(gate) <= 20 else _shown(gate)
            raise ConfigError(
                f"channel_gate must be one of {', '.join(CHANNEL_GATES)}, got {shown}",
                "pass --channel-gate full or --channel-gate light",
            )
        if not isinstance(self.classes, list | tuple) or len(self.classes) > MAX_CLASSES:
            raise ConfigError(f"classes must be a list of up to {MAX_CLASSES} names", "retrain the model")
        for i, name in enumerate(self.classes):
            if not isinstance(name, str) or not 0 < len(name) <= MAX_CLASS_NAME or not name.isprintable():
                raise ConfigError(
                    f"class name {i} must be 1..{MAX_CLASS_NAME} printable characters", "retrain the model"
                )
        self.classes = tuple(self.classes)
        # then the structure
        stages = len(self.blocks)
        if not 1 <= stages <= MAX_STAGES:
            raise ConfigError(f"{stages} stages: give 1..{MAX_STAGES}", "e.g. --blocks 3,3,3")
        if self.backbone == "resnet":
            if len(self.widths) != stages:
                raise ConfigError(
                    "widths and blocks need one entry per stage", "e.g. --widths 16,32,64 --blocks 3,3,3"
                )
            if self.growth_rate != 0:
                raise ConfigError("growth_rate is a DenseNet setting", "leave --growth-rate out for a ResNet")
        else:
            if self.widths:
                raise ConfigError("a DenseNet's widths follow from its growth rate", "leave --widths out")
            if self.growth_rate < 1:
                raise ConfigError("a DenseNet needs a growth rate", f"give --growth-rate 1..{MAX_GROWTH}")
            widest = max(c for _, c in dense_widths(self.stem_width, self.growth_rate, self.blocks))
            if widest > MAX_WIDTH:
                raise ConfigError(
                    f"the dense blocks would reach {widest} channels, more than {MAX_WIDTH}",
                    "use a smaller growth rate or fewer layers",
                )
        if len(self.classes) != self.num_classes:
            raise ConfigError(
                f"{len(self.classes)} class names given for {self.num_classes} classes", "retrain the model"
            )
        if self.input_size < 2**stages:
            raise ConfigError(
                f"input size {self.input_size} is too small for {stages} stages", "use fewer stages"
            )
        # branches without gates: the gate-free model the FPGA builds (tinydyn train --fold-gates)
        params = parameter_count(self)
        if params > MAX_PARAMETERS:
            raise ConfigError(
                f"the model would have {params:,} parameters, more than tinydyn's cap of {MAX_PARAMETERS:,}",
                "use narrower or fewer stages",
            )

    @property
    def units(self) -> int:
        return sum(self.blocks)

    def stage_channels(self) -> list[int]:
        """Channels of each stage's features (ResNet: the width; DenseNet: leaving the dense block)."""
        if self.backbone == "resnet":
            return list(self.widths)
        return [c for _, c in dense_widths(self.stem_width, self.growth_rate, self.blocks)]

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @staticmethod
    def from_json(data: Any) -> DDIConfig:
        """The config a checkpoint stores; every field must be there (no silent defaults)."""
        return config_from_json(DDIConfig, data, optional=("channel_gate",))  # older checkpoints lack it


def parameter_count(cfg: DDIConfig) -> int:
    """Weights the config builds (conv/FC weights and biases, BN; for the size cap)."""
    e, h, k = cfg.gate_embed, cfg.lstm_hidden, cfg.num_classes
    total = 9 * cfg.in_channels * cfg.stem_width + 4 * cfg.stem_width
    if cfg.gates:
        total += 4 * h * (e + h + 2) + h + 1
    units: list[tuple[int, int]] = []  # (channels entering a unit, its first conv's channels)
    branch_c: list[int] = []
    if cfg.backbone == "resnet":
        cin = cfg.stem_width
        for width, count in zip(cfg.widths, cfg.blocks, strict=True):
            for _ in range(count):
                total += 9 * cin * width + 9 * width * width + 8 * width + cin * width + 4 * width
                if cfg.gates:
                    total += channel_gate_parameters(cfg.channel_gate, cin, width)
                units.append((cin, width))
                branch_c.append(width)
                cin = width
        last = cin
    else:
        g = cfg.growth_rate
        for i, (c0, c1) in enumerate(dense_widths(cfg.stem_width, g, cfg.blocks)):
            for j in range(cfg.blocks[i]):
                cin = c0 + j * g
                total += cin * BOTTLENECK * g + 9 * BOTTLENECK * g * g + 8 * BOTTLENECK * g + 4 * g
                if cfg.gates:
                    mid = BOTTLENECK * g
                    total += channel_gate_parameters(cfg.channel_gate, cin, mid, g)
                units.append((cin, BOTTLENECK * g))
                branch_c.append(cin + g)
            total += c1 * c1 + 4 * c1  # transition (an upper bound)
        last = cfg.stage_channels()[-1]
    if cfg.gates:
        total += sum(e * (cin + 1) for cin, _ in units)
    if cfg.branches:
        total += sum(
            9 * branch_c[p] ** 2 + 4 * branch_c[p] + (branch_c[p] + 1) * k for p in branch_points(cfg.blocks)
        )
    return total + (last + 1) * k


def light_gate_widths(cin: int, cout: int, growth: int = 0) -> tuple[int, int]:
    """(1x1 conv's channels, 3x3 conv's channels) of a light channel gate (Fig. 4): a dense
    layer's gate halves its bottleneck (``cout`` = 4 x growth) and ends at the growth rate; a
    residual block's halves its input, both convs."""
    if growth:
        return cout // 2, growth
    half = max(1, cin // 2)
    return half, half


def channel_gate_parameters(kind: str, cin: int, cout: int, growth: int = 0) -> int:
    """Weights of one channel gate (convs, BN, FC with bias) for :func:`parameter_count`."""
    if kind == "full":
        return 9 * cin * cin + 4 * cin + cin * cout + cout
    half, width = light_gate_widths(cin, cout, growth)
    return cin * half + 9 * half * width + 4 * (half + width) + width * cout + cout


# ----------------------------------------------------------------------------- gates
class _HardGate(torch.autograd.Function):
    """Forward: 1 where the logit is positive (sigmoid > 0.5), else 0. Backward: the sigmoid's
    gradient (straight-through)."""

    @staticmethod
    def forward(ctx: Any, logit: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logit)
        return (logit > 0).to(logit.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (logit,) = ctx.saved_tensors
        s = torch.sigmoid(logit)
        return grad * s * (1 - s)


def hard_gate(logit: torch.Tensor) -> torch.Tensor:
    return _HardGate.apply(logit)


def int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer weights, scale per row): symmetric int8 per output row, max |w| → 127. The
    integer values the lowering stores are exactly these."""
    scale = w.detach().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
    return torch.clamp(torch.round(w.detach() / scale), -127, 127), scale


def fake_int8_rows(w: torch.Tensor) -> torch.Tensor:
    """``w`` on its int8 per-row grid, straight-through."""
    q, scale = int8_rows(w)
    return w + (q * scale - w).detach()


def on_grid(x: torch.Tensor, step: float, low: float, high: float) -> torch.Tensor:
    """Round half up to multiples of ``step`` and clamp (the integer op's fixed format),
    straight-through inside the range."""
    return torch.clamp(_RoundHalfUp.apply(x / step), low / step, high / step) * step


class GateLSTM(nn.Module):
    """The LSTM cell and salience FC shared by every layer gate (gates order i, f, g, o)."""

    def __init__(self, embed: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.w_ih = nn.Parameter(torch.empty(4 * hidden, embed))
        self.w_hh = nn.Parameter(torch.empty(4 * hidden, hidden))
        self.bias = nn.Parameter(torch.zeros(4 * hidden))
        bound = 1.0 / hidden**0.5
        nn.init.uniform_(self.w_ih, -bound, bound)
        nn.init.uniform_(self.w_hh, -bound, bound)
        with torch.no_grad():
            self.bias[hidden : 2 * hidden] = 1.0  # forget gate bias 1 (the usual LSTM start)
        self.sal = nn.Linear(hidden, 1)
        nn.init.constant_(self.sal.bias, OPEN_LOGIT)


class LayerGate(nn.Module):
    """One unit's G^L: its own 1x1 conv of the pooled input, then the shared LSTM step."""

    def __init__(self, cin: int, embed: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cin, embed)  # the 1x1 conv on the 1x1 pooled map

    def input_projection(self, lstm: GateLSTM) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_x, b): the 1x1 conv followed by the LSTM's input weights, as one matrix."""
        return lstm.w_ih @ self.proj.weight, lstm.w_ih @ self.proj.bias + lstm.bias

    def forward(
        self,
        lstm: GateLSTM,
        pooled: torch.Tensor,
        x_scale: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(logit (N,), new state): the integer ``lstm_gate``'s arithmetic in float."""
        hidden = lstm.hidden
        w_x, b = self.input_projection(lstm)
        q, row_scale = int8_rows(w_x)
        acc_scale = row_scale.reshape(-1) * x_scale.detach()
        w_x = w_x + (q * row_scale - w_x).detach()
        b = _RoundHalfUp.apply(b / acc_scale) * acc_scale  # the int32 bias grid
        z = pooled @ w_x.t() + b
        if state is not None:
            z = z + state[0] @ fake_int8_rows(lstm.w_hh).t()
        z = on_grid(z, 2.0**-Z_FRAC, -8.0, 8.0 - 2.0**-Z_FRAC)
        i, f, g, o = z.split(hidden, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_prev = state[1] if state is not None else torch.zeros_like(i)
        c = on_grid(f * c_prev + i * g, 2.0**-C_FRAC, -16.0, 16.0 - 2.0**-C_FRAC)
        h = on_grid(o * torch.tanh(c), 2.0**-H_FRAC, -1.0, 1.0 - 2.0**-H_FRAC)
        w_s, s_scale = int8_rows(lstm.sal.weight)
        w_s = lstm.sal.weight + (w_s * s_scale - lstm.sal.weight).detach()
        s_acc = s_scale.reshape(-1) * 2.0**-H_FRAC
        logit = h @ w_s.t() + _RoundHalfUp.apply(lstm.sal.bias / s_acc) * s_acc
        return logit[:, 0], (h, c)


class ChannelGate(nn.Module):
    """G^C: conv(s) → GAP (on grid) → FC, one logit per output channel of the unit's first conv.
    ``full`` (Fig. 2(b)): 3x3 stride-2 conv keeping the input's channels. ``light`` (Fig. 4): 1x1
    stride-2 conv, then 3x3, to the widths of :func:`light_gate_widths` (``growth``: a dense
    layer's)."""

    def __init__(self, cin: int, cout: int, kind: str, growth: int = 0) -> None:
        super().__init__()
        self.light = kind == "light"
        if self.light:
            half, width = light_gate_widths(cin, cout, growth)
            self.conv_a = qnn.QuantConv2d(
                cin, half, 1, stride=2, bias=False, weight_quant=Int8WeightPerChannelFloat
            )
            self.conv_b = conv3x3(half, width, 1)
            self.bn_b, self.relu_b = nn.BatchNorm2d(width), uint8_relu()
        else:
            self.conv_a = conv3x3(cin, cin, 2)
            width = cin
        self.bn_a, self.relu_a = nn.BatchNorm2d(self.conv_a.out_channels), uint8_relu()
        self.fc = qnn.QuantLinear(width, cout, bias=True, weight_quant=Int8WeightPerChannelFloat)
        nn.init.constant_(self.fc.bias, OPEN_LOGIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu_a(self.bn_a(self.conv_a(x)))
        last = self.relu_a
        if self.light:
            y, last = self.relu_b(self.bn_b(self.conv_b(y))), self.relu_b
        return self.fc(pooled_on_grid(y, act_scale(last)))


# ----------------------------------------------------------------------------- units
class ResUnit(nn.Module):
    """A ResNet basic block with MGL2S: out = relu(shortcut + g_L · bn2(conv2(relu(bn1(conv1 x) · m_C))))."""

    def __init__(self, cin: int, cout: int, stride: int, cfg: DDIConfig) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout), uint8_relu()
        self.conv2, self.bn2 = conv3x3(cout, cout, 1), nn.BatchNorm2d(cout)
        self.out_relu = uint8_relu()
        self.gated = self.layer_gated = cfg.gates
        if cfg.gates:
            self.layer_gate = LayerGate(cin, cfg.gate_embed)
            self.channel_gate = ChannelGate(cin, cout, cfg.channel_gate)
        self.projection = stride != 1 or cin != cout
        if self.projection:
            self.short_conv = qnn.QuantConv2d(
                cin, cout, 1, stride=stride, bias=False, weight_quant=Int8WeightPerChannelFloat
            )
            self.short_bn = nn.BatchNorm2d(cout)
            self.short_quant = qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat)

    def forward(self, x: torch.Tensor, g: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.bn1(self.conv1(x))
        if mask is not None:
            h = h * mask[:, :, None, None]
        f = self.bn2(self.conv2(self.relu1(h)))
        if g is not None:
            f = f * g[:, None, None, None]
        short = self.short_quant(self.short_bn(self.short_conv(x))) if self.projection else x
        return self.out_relu(short + f)


class DenseUnit(nn.Module):
    """A bottleneck dense layer (post-activation): new = q(relu(bn2(conv3x3(relu(bn1(conv1x1 x) · m_C)))))
    where q is the dense block's shared feature quantiser."""

    def __init__(self, cin: int, growth: int, cfg: DDIConfig, layer_gated: bool) -> None:
        super().__init__()
        mid = BOTTLENECK * growth
        self.conv1 = qnn.QuantConv2d(cin, mid, 1, bias=False, weight_quant=Int8WeightPerChannelFloat)
        self.bn1, self.relu1 = nn.BatchNorm2d(mid), uint8_relu()
        self.conv2, self.bn2 = conv3x3(mid, growth, 1), nn.BatchNorm2d(growth)
        self.gated = cfg.gates
        self.layer_gated = cfg.gates and layer_gated
        if self.layer_gated:
            self.layer_gate = LayerGate(cin, cfg.gate_embed)
        if cfg.gates:
            self.channel_gate = ChannelGate(cin, mid, cfg.channel_gate, growth)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, feat_quant: nn.Module) -> torch.Tensor:
        h = self.bn1(self.conv1(x))
        if mask is not None:
            h = h * mask[:, :, None, None]
        return feat_quant(self.bn2(self.conv2(self.relu1(h))))


class Branch(nn.Module):
    """RADI branch classifier (Fig. 5(b)): ``pools`` stride-2 max pools, 3x3 conv, GAP, FC."""

    def __init__(self, cin: int, pools: int, num_classes: int) -> None:
        super().__init__()
        self.pools = pools
        self.conv, self.bn, self.relu = conv3x3(cin, cin, 1), nn.BatchNorm2d(cin), uint8_relu()
        self.head = ExitHead(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.pools):
            x = F.max_pool2d(x, 2, 2)
        y = self.relu(self.bn(self.conv(x)))
        return self.head(pooled_on_grid(y, act_scale(self.relu)))


class Transition(nn.Module):
    """DenseNet transition: 2x2 average pool (on grid) → 1x1 conv → BN → the next dense block's
    feature quantiser (pooling first: the same function as conv-then-pool, 4x fewer MACs)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = qnn.QuantConv2d(cin, cout, 1, bias=False, weight_quant=Int8WeightPerChannelFloat)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, x_scale: torch.Tensor, out_quant: nn.Module) -> torch.Tensor:
        scale = x_scale.detach()
        pooled = _RoundHalfUp.apply(F.avg_pool2d(x, 2, 2) / scale) * scale
        return out_quant(self.bn(self.conv(pooled)))


@dataclass
class DDIOutput:
    logits: list[torch.Tensor]  # branches in order, the final classifier last (branches may be absent)
    layer_gates: list[torch.Tensor | None]  # per unit: (N,) in {0, 1}, None where the unit has none
    channel_masks: list[torch.Tensor | None]  # per unit: (N, k) in {0, 1}, None without a channel gate


class DDINet(nn.Module):
    """A DDI ResNet or DenseNet; forward gives every exit's logits and every gate's decisions."""

    family = "ddi"  # its entry in tinydyn.models.registry (recorded in checkpoints)

    def __init__(self, config: DDIConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.stem = conv3x3(cfg.in_channels, cfg.stem_width, 1)
        self.stem_bn = nn.BatchNorm2d(cfg.stem_width)
        if cfg.gates:
            self.lstm = GateLSTM(cfg.gate_embed, cfg.lstm_hidden)
        units: list[nn.Module] = []
        unit_channels: list[int] = []  # channels of the features after each unit (branch inputs)
        self.stage_of: list[int] = []
        if cfg.backbone == "resnet":
            self.stem_relu = uint8_relu()
            cin = cfg.stem_width
            for stage, (width, count) in enumerate(zip(cfg.widths, cfg.blocks, strict=True)):
                for i in range(count):
                    units.append(ResUnit(cin, width, 2 if stage > 0 and i == 0 else 1, cfg))
                    unit_channels.append(width)
                    self.stage_of.append(stage)
                    cin = width
            self.transitions = nn.ModuleList()
            self.feat_quants = nn.ModuleList()
        else:
            g = cfg.growth_rate
            widths = dense_widths(cfg.stem_width, g, cfg.blocks)
            self.feat_quants = nn.ModuleList(uint8_relu() for _ in cfg.blocks)  # one scale per dense block
            self.transitions = nn.ModuleList(
                Transition(widths[s][1], widths[s + 1][0]) for s in range(len(cfg.blocks) - 1)
            )
            for stage, count in enumerate(cfg.blocks):
                for j in range(count):
                    units.append(DenseUnit(widths[stage][0] + j * g, g, cfg, layer_gated=j > 0))
                    unit_channels.append(widths[stage][0] + (j + 1) * g)
                    self.stage_of.append(stage)
            cin = widths[-1][1]
        self.units = nn.ModuleList(units)
        stages = len(cfg.blocks)
        self.branches = nn.ModuleDict(
            {
                str(p): Branch(unit_channels[p], stages - 1 - self.stage_of[p], cfg.num_classes)
                for p in (branch_points(cfg.blocks) if cfg.branches else [])
            }
        )
        self.head = ExitHead(cin, cfg.num_classes)

    def forward(self, images: torch.Tensor, with_branches: bool | None = None) -> DDIOutput:
        """``images``: float pixels in [0, 1] (uint8 / 255), shape (N, C, H, W). Branch logits are
        computed in eval mode, and in training when ``with_branches`` (RADI's phase)."""
        branches = (not self.training) if with_branches is None else with_branches
        if self.config.backbone == "resnet":
            return self._resnet(images, branches)
        return self._densenet(images, branches)

    def _gates(
        self, unit: nn.Module, x: torch.Tensor, scale: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, Any]:
        g = mask = None
        if unit.layer_gated:
            logit, state = unit.layer_gate(self.lstm, pooled_on_grid(x, scale), scale, state)
            g = hard_gate(logit)
        if unit.gated:
            mask = hard_gate(unit.channel_gate(x))
        return g, mask, state

    def _resnet(self, images: torch.Tensor, with_branches: bool) -> DDIOutput:
        x = self.stem_relu(self.stem_bn(self.stem(images)))
        scale = act_scale(self.stem_relu)
        out = DDIOutput([], [], [])
        state = None
        for index, unit in enumerate(self.units):
            g, mask, state = self._gates(unit, x, scale, state)
            x = unit(x, g, mask)
            scale = act_scale(unit.out_relu)
            out.layer_gates.append(g)
            out.channel_masks.append(mask)
            if with_branches and str(index) in self.branches:
                out.logits.append(self.branches[str(index)](x))
        out.logits.append(self.head(pooled_on_grid(x, scale)))
        return out

    def _densenet(self, images: torch.Tensor, with_branches: bool) -> DDIOutput:
        quant = self.feat_quants[0]
        x = quant(self.stem_bn(self.stem(images)))
        out = DDIOutput([], [], [])
        state = None
        index = 0
        for stage, count in enumerate(self.config.blocks):
            quant = self.feat_quants[stage]
            scale = act_scale(quant)
            if stage > 0:
                x = self.transitions[stage - 1](x, act_scale(self.feat_quants[stage - 1]), quant)
            previous = None
            for _ in range(count):
                unit = self.units[index]
                g, mask, state = self._gates(unit, x, scale, state)
                new = unit(x, mask, quant)
                if g is not None and previous is not None:
                    gv = g[:, None, None, None]
                    new = gv * new + (1 - gv) * previous  # skipped: the previous layer's new maps
                x, previous = torch.cat([x, new], dim=1), new
                out.layer_gates.append(g)
                out.channel_masks.append(mask)
                if with_branches and str(index) in self.branches:
                    out.logits.append(self.branches[str(index)](x))
                index += 1
        out.logits.append(self.head(pooled_on_grid(x, act_scale(self.feat_quants[-1]))))
        return out
