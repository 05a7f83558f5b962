"""S2DNAS (static to dynamic): a trained static CNN made multi-stage along the channel width.

The transformation (paper §3.2, Fig. 3), as tinydyn builds it:

* Feature maps are grouped by resolution. At resolution ``r`` every feature map's channels are
  divided into ``G`` equal groups, and the split points ``splits[r]`` (``s - 1`` strictly
  increasing numbers in ``1..G-1``) give stage ``i`` the groups ``p_i .. p_{i+1} - 1``: a
  contiguous run of channels. One setting per resolution, as the paper restricts it.
* A layer reading a resolution-``r`` feature map computes, for stage ``i``, the output channels
  of stage ``i`` from the input channels of stage ``i`` plus those of every earlier stage ``j``
  whose concat indicator ``m_ji`` (``concat[r]``) is set; every other connection of the static
  layer is removed. A stage never reads a later stage.
* The input layer is not split: every stage's first conv reads the whole image.
* The prediction layer concatenates all earlier stages: stage ``i``'s classifier (global pool
  + FC) reads the pooled features of stages ``1..i`` of the last feature map.

In torch the model stays one network whose conv/FC weights are masked (the removed connections
are zero and receive no gradient): one forward pass computes every stage at once, and stage
``i``'s features depend on stages ``<= i`` only, so they equal what stage ``i`` computes alone.
Every stage slice of a feature map shares the static layer's activation quantiser, so the
integer model joins them without rescaling (:mod:`tinydyn.models.s2dnas_lower`).

Backbones: ``resnet`` (the ResNet of basic blocks of :mod:`tinydyn.models.lcnet`, the project's
static model with ``--no-gates --exits ''``) and ``vgg`` (plain 3x3 conv + BN + ReLU layers,
2x2 max-pool between resolutions, no residual connections). ``stages == 1`` is the static model
itself: how a VGG backbone is trained before it is transformed.

Naive early exits (the paper's Table 1 baseline, ``naive_exits``): the one-stage (static) model
with a classifier (global pool + FC) after the last layer of some resolutions; exit ``k`` leaves
when its confidence reaches ``thresholds[k]``, like an S2DNAS stage.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
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
    LCBlock,
    _int,
    _ints,
    _shown,
    check_image_fields,
    config_from_json,
    conv3x3,
    pooled_on_grid,
    uint8_relu,
)
from tinydyn.quantize.builder import act_scale

BACKBONES = ("resnet", "vgg")
MAX_GROUPS = 64  # the paper uses 8; more only multiplies the search space
MAX_EXIT_STAGES = 8  # the IR's concat joins at most 8 tensors: the last classifier reads them all
DEFAULT_GROUPS, DEFAULT_STAGES, DEFAULT_THRESHOLD = 8, 3, 0.9


def even_splits(groups: int, stages: int) -> tuple[int, ...]:
    """Split points giving each stage about the same number of groups (the untuned default)."""
    return tuple(round(groups * i / stages) for i in range(1, stages))


def pair_count(stages: int) -> int:
    """Concat indicators per resolution: one per (earlier stage, later stage) pair."""
    return stages * (stages - 1) // 2


def pairs(stages: int) -> list[tuple[int, int]]:
    """(j, i) with j < i, in the order ``concat`` lists their indicators: (0,1), (0,2), (1,2), ..."""
    return list(itertools.combinations(range(stages), 2))


@dataclass
class S2DNASConfig:
    """Architecture of a multi-stage model: its static backbone and the S2D settings."""

    backbone: str = "resnet"
    in_channels: int = 1
    input_size: int = 28
    num_classes: int = 10
    stem_width: int = 16
    widths: tuple[int, ...] = (16, 32, 64)  # channels per resolution
    blocks: tuple[int, ...] = (1, 1, 1)  # resnet: basic blocks per resolution; vgg: 3x3 convs after the stem
    groups: int = DEFAULT_GROUPS  # G
    stages: int = DEFAULT_STAGES  # s
    splits: tuple[tuple[int, ...], ...] = ()  # per resolution: s-1 split points (empty: even)
    concat: tuple[tuple[bool, ...], ...] = ()  # per resolution: m_ji for (j, i) in pairs(s) (empty: all)
    thresholds: tuple[float, ...] = ()  # one confidence threshold per early exit (empty: 0.9 each)
    # resolutions after whose last layer a naive early exit sits (stages == 1 only; absent in
    # checkpoints written before it existed)
    naive_exits: tuple[int, ...] = ()
    classes: tuple[str, ...] = field(default_factory=lambda: tuple(str(i) for i in range(10)))

    def __post_init__(self) -> None:
        retrain = "retrain the model"
        if not isinstance(self.backbone, str) or self.backbone not in BACKBONES:
            raise ConfigError(
                f"backbone must be one of {', '.join(BACKBONES)}", "pass --backbone resnet or vgg"
            )
        check_image_fields(self)
        self.stem_width = _int("stem_width", self.stem_width, 1, MAX_WIDTH, f"give widths in 1..{MAX_WIDTH}")
        self.widths = _ints("widths", self.widths, 1, MAX_WIDTH, "e.g. --widths 16,32,64")
        self.blocks = _ints("blocks", self.blocks, 1, MAX_BLOCKS_PER_STAGE, "e.g. --blocks 1,1,1")
        self.groups = _int("groups", self.groups, 1, MAX_GROUPS, f"give --groups in 1..{MAX_GROUPS}")
        self.stages = _int(
            "stages", self.stages, 1, MAX_EXIT_STAGES, f"give --stages in 1..{MAX_EXIT_STAGES}"
        )
        if not self.widths or len(self.widths) != len(self.blocks):
            raise ConfigError(
                "widths and blocks need one entry per resolution", "e.g. --widths 16,32,64 --blocks 1,1,1"
            )
        if len(self.widths) > MAX_STAGES:
            raise ConfigError(f"{len(self.widths)} resolutions is more than {MAX_STAGES}", "use fewer")
        if self.input_size < 2 ** len(self.widths):
            raise ConfigError(
                f"input size {self.input_size} is too small for {len(self.widths)} resolutions", "use fewer"
            )
        if self.stages > self.groups:
            raise ConfigError(
                f"{self.stages} stages need at least as many channel groups, not {self.groups}",
                "give more --groups or fewer --stages",
            )
        for name, width in [
            ("stem_width", self.stem_width),
            *((f"widths[{i}]", w) for i, w in enumerate(self.widths)),
        ]:
            if width % self.groups:
                raise ConfigError(
                    f"{name} {width} is not a multiple of {self.groups} groups",
                    "give --groups dividing every width (each group is C/G channels)",
                )
        resolutions = len(self.widths)
        self.splits = self._splits(self.splits, resolutions)
        self.concat = self._concat(self.concat, resolutions)
        self.naive_exits = self._naive_exits(self.naive_exits, resolutions)
        self.thresholds = self._thresholds(self.thresholds)  # one per early exit: after naive_exits
        if not isinstance(self.classes, list | tuple) or len(self.classes) > MAX_CLASSES:
            raise ConfigError(f"classes must be a list of up to {MAX_CLASSES} names", retrain)
        for i, name in enumerate(self.classes):
            if not isinstance(name, str) or not 0 < len(name) <= MAX_CLASS_NAME or not name.isprintable():
                raise ConfigError(f"class name {i} must be 1..{MAX_CLASS_NAME} printable characters", retrain)
        self.classes = tuple(self.classes)
        if len(self.classes) != self.num_classes:
            raise ConfigError(
                f"{len(self.classes)} class names given for {self.num_classes} classes", retrain
            )
        params = parameter_count(self)
        if params > MAX_PARAMETERS:
            raise ConfigError(
                f"the model would have {params:,} parameters, more than tinydyn's cap of {MAX_PARAMETERS:,}",
                "use narrower or fewer layers",
            )

    def _splits(self, value: Any, resolutions: int) -> tuple[tuple[int, ...], ...]:
        fix = f"give {resolutions} lists of {self.stages - 1} increasing split points in 1..{self.groups - 1}"
        if isinstance(value, list | tuple) and len(value) == 0:
            return tuple(even_splits(self.groups, self.stages) for _ in range(resolutions))
        if not isinstance(value, list | tuple) or len(value) != resolutions:
            raise ConfigError(
                f"splits must have one entry per resolution ({resolutions}), got {_shown(value)}", fix
            )
        out = []
        for r, points in enumerate(value):
            points = _ints(f"splits[{r}]", points, 1, self.groups - 1, fix)
            if len(points) != self.stages - 1 or list(points) != sorted(set(points)):
                raise ConfigError(
                    f"splits[{r}] {list(points)} must be {self.stages - 1} strictly increasing points", fix
                )
            out.append(points)
        return tuple(out)

    def _concat(self, value: Any, resolutions: int) -> tuple[tuple[bool, ...], ...]:
        count = pair_count(self.stages)
        fix = f"give {resolutions} lists of {count} true/false concat indicators"
        if isinstance(value, list | tuple) and len(value) == 0:
            return tuple((True,) * count for _ in range(resolutions))
        if not isinstance(value, list | tuple) or len(value) != resolutions:
            raise ConfigError(
                f"concat must have one entry per resolution ({resolutions}), got {_shown(value)}", fix
            )
        out = []
        for r, flags in enumerate(value):
            if not isinstance(flags, list | tuple) or len(flags) != count:
                raise ConfigError(f"concat[{r}] must list {count} indicators", fix)
            if not all(isinstance(f, bool) for f in flags):
                raise ConfigError(f"concat[{r}] must hold true or false only", fix)
            out.append(tuple(flags))
        return tuple(out)

    def _naive_exits(self, value: Any, resolutions: int) -> tuple[int, ...]:
        last = resolutions - 2  # the last resolution ends in the final classifier
        fix = f"give strictly increasing resolution indices in 0..{last}, e.g. --naive-exits 0,1"
        exits = _ints("naive_exits", value, 0, MAX_STAGES, fix)  # types first
        if not exits:
            return ()
        if self.stages != 1:
            raise ConfigError(
                f"naive early exits need a one-stage (static) model, not {self.stages} stages",
                "pass --stages 1 with --naive-exits",
            )
        if last < 0:
            raise ConfigError(
                "a model with one resolution has no place for a naive early exit", "leave --naive-exits out"
            )
        for i, r in enumerate(exits):
            if r > last:
                raise ConfigError(f"naive_exits[{i}] {r} is outside 0..{last}", fix)
        if list(exits) != sorted(set(exits)):
            raise ConfigError(f"naive_exits {list(exits)} must be strictly increasing", fix)
        return exits

    @property
    def exit_count(self) -> int:
        """Exits of the model, the final classifier included: one per stage, or with naive early
        exits (one stage) one per naive exit plus the final one."""
        return self.stages + len(self.naive_exits)

    def _thresholds(self, value: Any) -> tuple[float, ...]:
        early = self.exit_count - 1
        fix = f"give {early} confidences in 0..1, one per early exit"
        if isinstance(value, list | tuple) and len(value) == 0:
            return (DEFAULT_THRESHOLD,) * early
        if not isinstance(value, list | tuple) or len(value) != early:
            raise ConfigError(f"thresholds must list {early} numbers, got {_shown(value)}", fix)
        out = []
        for t in value:
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t <= 1.0:
                raise ConfigError(f"threshold {_shown(t)} is not a number in 0..1", fix)
            out.append(float(t))
        return tuple(out)

    # --- the structure the settings give ---------------------------------------------------
    def stage_ranges(self, channels: int, resolution: int) -> list[tuple[int, int]]:
        """[start, end) channels of each stage in a ``channels``-wide map at ``resolution``."""
        per_group = channels // self.groups
        points = (0, *self.splits[resolution], self.groups)
        return [(points[i] * per_group, points[i + 1] * per_group) for i in range(self.stages)]

    def reused(self, resolution: int, stage: int) -> list[int]:
        """The stages whose features stage ``stage`` reads at ``resolution`` (itself last)."""
        flags = dict(zip(pairs(self.stages), self.concat[resolution], strict=True))
        return [j for j in range(stage) if flags[(j, stage)]] + [stage]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("widths", "blocks", "thresholds", "naive_exits", "classes"):
            data[key] = list(data[key])
        data["splits"] = [list(p) for p in self.splits]
        data["concat"] = [list(c) for c in self.concat]
        return data

    @staticmethod
    def from_json(data: Any) -> S2DNASConfig:
        """The config a checkpoint stores; every field must be there (no silent defaults) but
        ``naive_exits``, which checkpoints written before it existed lack (they have none)."""
        return config_from_json(S2DNASConfig, data, optional=("naive_exits",))


def layer_plan(cfg: S2DNASConfig) -> list[dict[str, Any]]:
    """The static backbone's conv layers in order: name, (cin, cout), stride, input and output
    resolution, and what it reads; the same walk serves the parameter count, masks, MACs and
    the lowering."""
    plan = [
        {
            "name": "stem",
            "cin": cfg.in_channels,
            "cout": cfg.stem_width,
            "stride": 1,
            "k": 3,
            "r_in": None,
            "r_out": 0,
        }
    ]
    cin = cfg.stem_width
    for r, (width, count) in enumerate(zip(cfg.widths, cfg.blocks, strict=True)):
        for i in range(count):
            first = i == 0
            if cfg.backbone == "resnet":
                stride = 2 if r > 0 and first else 1
                r_in = r - 1 if r > 0 and first else r
                b = len([p for p in plan if p["name"].endswith(".conv1")])
                plan.append(
                    {
                        "name": f"blocks.{b}.conv1",
                        "cin": cin,
                        "cout": width,
                        "stride": stride,
                        "k": 3,
                        "r_in": r_in,
                        "r_out": r,
                    }
                )
                plan.append(
                    {
                        "name": f"blocks.{b}.conv2",
                        "cin": width,
                        "cout": width,
                        "stride": 1,
                        "k": 3,
                        "r_in": r,
                        "r_out": r,
                    }
                )
                if stride != 1 or cin != width:
                    plan.append(
                        {
                            "name": f"blocks.{b}.short_conv",
                            "cin": cin,
                            "cout": width,
                            "stride": stride,
                            "k": 1,
                            "r_in": r_in,
                            "r_out": r,
                        }
                    )
            else:
                c = len([p for p in plan if p["name"].startswith("convs.")])
                pool = r > 0 and first  # 2x2 max-pool before the first conv of a smaller resolution
                plan.append(
                    {
                        "name": f"convs.{c}.conv",
                        "cin": cin,
                        "cout": width,
                        "stride": 1,
                        "k": 3,
                        "r_in": r - 1 if pool else r,
                        "r_out": r,
                        "pool": pool,
                    }
                )
            cin = width
    return plan


def parameter_count(cfg: S2DNASConfig) -> int:
    total = sum(p["k"] * p["k"] * p["cin"] * p["cout"] + 4 * p["cout"] for p in layer_plan(cfg))
    naive = sum((cfg.widths[r] + 1) * cfg.num_classes for r in cfg.naive_exits)
    return total + cfg.stages * (cfg.widths[-1] + 1) * cfg.num_classes + naive


def naive_exit_layers(cfg: S2DNASConfig) -> list[int]:
    """Per naive early exit, the block (resnet) or 3x3 conv after the stem (vgg) it follows: the
    last one of its resolution (both backbones have ``blocks[r]`` of them at resolution r)."""
    ends = list(itertools.accumulate(cfg.blocks))
    return [ends[r] - 1 for r in cfg.naive_exits]


def conv_mask(cfg: S2DNASConfig, layer: dict[str, Any]) -> torch.Tensor:
    """(cout, cin) 0/1: which connections of a static conv the multi-stage model keeps."""
    mask = torch.zeros(layer["cout"], layer["cin"])
    outs = cfg.stage_ranges(layer["cout"], layer["r_out"])
    for stage, (o0, o1) in enumerate(outs):
        if layer["r_in"] is None:  # the input layer is not split: every stage reads the image
            mask[o0:o1, :] = 1
            continue
        ins = cfg.stage_ranges(layer["cin"], layer["r_in"])
        for j in cfg.reused(layer["r_in"], stage):
            mask[o0:o1, ins[j][0] : ins[j][1]] = 1
    return mask


def head_mask(cfg: S2DNASConfig, stage: int) -> torch.Tensor:
    """(classes, C) 0/1: stage ``stage``'s classifier reads the pooled features of stages <= it."""
    width = cfg.widths[-1]
    mask = torch.zeros(cfg.num_classes, width)
    mask[:, : cfg.stage_ranges(width, len(cfg.widths) - 1)[stage][1]] = 1
    return mask


class VGGLayer(nn.Module):
    """[2x2 max-pool] → 3x3 conv → BN → uint8 ReLU."""

    def __init__(self, cin: int, cout: int, pool: bool) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2, 2) if pool else None
        self.conv, self.bn, self.relu = conv3x3(cin, cout, 1), nn.BatchNorm2d(cout), uint8_relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        return self.relu(self.bn(self.conv(x)))


@dataclass
class StageOutput:
    # one per exit: the naive early exits in order, then one per stage, the final classifier last
    logits: list[torch.Tensor]


class S2DNASNet(nn.Module):
    """The multi-stage model: a static backbone with masked connections and one classifier per
    stage on the last feature map. Parameter names are the static model's (``stem``,
    ``blocks.N``/``convs.N``), plus ``heads.I``: a static checkpoint's weights load by name.
    A one-stage model may also carry naive early exits (``naive_heads.K``)."""

    family = "s2dnas"  # its entry in tinydyn.models.registry (recorded in checkpoints)

    def __init__(self, config: S2DNASConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = conv3x3(config.in_channels, config.stem_width, 1)
        self.stem_bn, self.stem_relu = nn.BatchNorm2d(config.stem_width), uint8_relu()
        plan = layer_plan(config)
        if config.backbone == "resnet":
            blocks, cin = [], config.stem_width
            for r, (width, count) in enumerate(zip(config.widths, config.blocks, strict=True)):
                for i in range(count):
                    blocks.append(LCBlock(cin, width, 2 if r > 0 and i == 0 else 1, gates=False, leak=0.0))
                    cin = width
            self.blocks = nn.ModuleList(blocks)
        else:
            self.convs = nn.ModuleList(
                [VGGLayer(p["cin"], p["cout"], p["pool"]) for p in plan if p["name"].startswith("convs.")]
            )
        self.heads = nn.ModuleList(
            [ExitHead(config.widths[-1], config.num_classes) for _ in range(config.stages)]
        )
        self.naive_heads = nn.ModuleList(
            [ExitHead(config.widths[r], config.num_classes) for r in config.naive_exits]
        )
        # the removed connections: zero weights that no gradient moves (SGD/AdamW decay of a
        # zero weight is zero too), so the int8 weights of the kept ones are all there is
        self._masked: list[tuple[nn.Parameter, torch.Tensor]] = []
        for layer in plan:
            module = self.get_submodule(layer["name"])
            mask = conv_mask(config, layer)[:, :, None, None].expand_as(module.weight).contiguous()
            self._mask(module.weight, mask)
        for stage, head in enumerate(self.heads):
            self._mask(head.fc.weight, head_mask(config, stage))
        self.apply_masks()
        self.register_load_state_dict_post_hook(lambda module, _keys: module.apply_masks())

    def _mask(self, weight: nn.Parameter, mask: torch.Tensor) -> None:
        if bool(mask.all()):
            return
        self._masked.append((weight, mask))
        weight.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device))

    def apply_masks(self) -> None:
        """Zero the removed connections (also after loading: a file's values there never count)."""
        with torch.no_grad():
            for weight, mask in self._masked:
                weight.mul_(mask.to(weight.device))

    def features(
        self, images: torch.Tensor, early: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The last feature map (every stage's channels) and its activation scale. ``early``,
        when given, receives each naive early exit's logits in order."""
        heads = dict(zip(naive_exit_layers(self.config), self.naive_heads, strict=True))
        x = self.stem_relu(self.stem_bn(self.stem(images)))
        scale = act_scale(self.stem_relu)
        layers = self.blocks if self.config.backbone == "resnet" else self.convs
        for i, layer in enumerate(layers):
            if self.config.backbone == "resnet":
                x, _, _ = layer(x, scale)
                scale = act_scale(layer.out_relu)
            else:
                x = layer(x)
                scale = act_scale(layer.relu)
            if early is not None and i in heads:
                early.append(heads[i](pooled_on_grid(x, scale)))
        return x, scale

    def forward(self, images: torch.Tensor) -> StageOutput:
        """``images``: float pixels in [0, 1] (uint8 / 255), shape (N, C, H, W)."""
        early: list[torch.Tensor] = []
        x, scale = self.features(images, early)
        pooled = pooled_on_grid(x, scale)
        return StageOutput([*early, *(head(pooled) for head in self.heads)])


def inherit(model: S2DNASNet, state: dict[str, torch.Tensor], source_family: str) -> list[str]:
    """Load a trained static model's weights into ``model`` (the S2D transformation starts
    trained): every backbone tensor by name; every stage's classifier from the static
    classifier (``head.*`` of an LC-Net, ``heads.0.*`` of a one-stage S2DNAS model); naive early
    exits start fresh. Returns the names of the model's tensors the source did not have. Masks are
    applied afterwards."""
    own = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            continue
        head_key = None
        if source_family == "lcnet" and key.startswith("head."):
            head_key = key[len("head.") :]
        elif source_family == "s2dnas" and key.startswith("heads.0."):
            head_key = key[len("heads.0.") :]
        elif key.startswith(("heads.", "exit_heads.", "naive_heads.")):
            continue  # other stages' or early-exit heads of the source: not the static classifier
        if head_key is not None:
            for stage in range(model.config.stages):
                renamed[f"heads.{stage}.{head_key}"] = value
        else:
            renamed[key] = value
    shared = {k: v for k, v in renamed.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    model.load_state_dict(shared, strict=False)  # the post-hook applies the masks
    return [k for k in own if k not in shared]
