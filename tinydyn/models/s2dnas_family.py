"""S2DNAS behind the family registry: its config, module, lowering, loss (Eq. 3: Σ α_i·CE over the
stages, through the training loop's exit loss), the S2D transformation of a static checkpoint
(``tinydyn train --model s2dnas --backbone-from STATIC``) and the per-stage thresholds chosen on
held-out training images when training ends (:mod:`tinydyn.models.s2dnas_thresholds`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinydyn.data import Dataset
from tinydyn.errors import TinydynError
from tinydyn.ir import IRModel
from tinydyn.models.family import ModelFamily, StaticForFpga, TrainOutputs
from tinydyn.models.lcnet import ConfigError
from tinydyn.models.s2dnas import S2DNASConfig, S2DNASNet, inherit

# Fashion-MNIST and MNIST have no validation split, CIFAR-10 none either: the last 5,000 training
# images are held out of a training run to choose the per-stage thresholds (the paper holds 5k
# of CIFAR's 50k out the same way)
HELD_OUT_IMAGES = 5000


class S2DNASFamily(ModelFamily):
    name = "s2dnas"
    held_out_images = HELD_OUT_IMAGES

    def config_from_json(self, data: Any) -> S2DNASConfig:
        return S2DNASConfig.from_json(data)

    def config_from_options(self, **options: Any) -> S2DNASConfig:
        """From `tinydyn train`'s options: the LC-Net ones it shares (sizes, widths, blocks)
        plus ``s2d`` (backbone, groups, stages, splits, concat); ``gates``/``exits`` do not
        apply. With ``backbone_from`` the architecture is that static checkpoint's."""
        s2d = dict(options.pop("s2d", None) or {})
        source = options.pop("backbone_from", None)
        keep = ("in_channels", "input_size", "num_classes", "stem_width", "widths", "blocks", "classes")
        fields = {k: v for k, v in options.items() if k in keep}
        if source is not None:
            fields.update(static_architecture(source))
            s2d.pop("backbone", None)  # the static checkpoint's architecture wins
        resolutions = len(fields.get("widths", S2DNASConfig.widths))
        for key in ("splits", "concat"):  # one setting given: every resolution's
            if key in s2d and len(s2d[key]) == 1:
                s2d[key] = s2d[key] * resolutions
        return S2DNASConfig(**fields, **s2d)

    def build(self, config: S2DNASConfig) -> S2DNASNet:
        return S2DNASNet(config)

    def lower(self, model: nn.Module, name: str) -> IRModel:
        from tinydyn.models.s2dnas_lower import lower

        return lower(model, name)  # type: ignore[arg-type]

    def train_outputs(
        self, model: nn.Module, images: torch.Tensor, forward: Callable[..., Any] | None = None
    ) -> TrainOutputs:
        """Every exit's logits (naive early exits, then the stages, the final classifier last);
        no resource penalty: the cost of a candidate is its architecture, which the search chooses."""
        out = (forward or model)(images)
        return TrainOutputs(list(out.logits), out.logits[0].new_zeros(()))

    def loss_terms(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, exit_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.train_outputs(model, images)
        ce = F.cross_entropy(out.logits[-1], labels)
        for logits in out.logits[:-1]:
            ce = ce + exit_weight * F.cross_entropy(logits, labels)
        return ce, out.penalty

    def parameter_groups(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        return list(model.parameters()), []

    def start_training(self, model: nn.Module, cfg: Any, steps_per_epoch: int, total_steps: int) -> None:
        """--cost: what the thresholds' reward counts as COST when training ends (MACs, the
        default board's modelled energy, or with ``profile`` the cycles of this very model profiled
        on the QEMU board); nothing else of the recipe is S2DNAS's own."""
        from tinydyn.models.s2dnas_thresholds import COST_UNITS

        options = {k: v for k, v in dict(cfg.extra).items() if v is not None}
        unit = options.pop("cost", "macs")
        unit = "cycles" if unit == "profile" else unit  # profiled when training ends, no table given
        if options:
            raise TinydynError(
                f"{', '.join('--' + k.replace('_', '-') for k in sorted(options))} is not an S2DNAS "
                "option: drop it"
            )
        if unit not in COST_UNITS:
            raise TinydynError(f"--cost {unit} is not an S2DNAS threshold cost: use macs, energy or profile")
        model._threshold_unit = unit  # type: ignore[assignment]

    def has_gates(self, model: nn.Module) -> bool:
        return False

    def warm_start(self, model: nn.Module, state: dict[str, Any], images: np.ndarray) -> bool:
        """The S2D transformation: the static checkpoint's weights into the multi-stage model
        (backbone by name, each stage's classifier from the static one), removed connections
        zeroed. Naive early exits' heads start fresh."""
        model.train()
        with torch.no_grad():  # let Brevitas build its runtime state first
            model(torch.from_numpy(images[:2].astype(np.float32) / 255.0))
        family = state.get("family", "lcnet")
        weights = state.get("state_dict")
        if not isinstance(weights, dict):
            raise TinydynError(
                "the --backbone-from checkpoint holds no weights: pass a file 'tinydyn train' wrote"
            )
        missing = inherit(model, weights, family)  # type: ignore[arg-type]
        missing = [k for k in missing if not k.startswith("naive_heads.")]  # new: nothing to inherit
        if any(k.endswith("weight") and ".bn" not in k for k in missing):
            raise TinydynError(
                "the --backbone-from checkpoint does not hold this backbone's weights "
                f"({len(missing)} tensors missing, e.g. '{missing[0]}'): give a static checkpoint of the "
                "same backbone, widths and blocks"
            )
        return True

    # --- FPGA: one partition per stage, each reading the image (tinydyn.models.s2dnas_fpga) ------
    def static_for_fpga(
        self, model: nn.Module, images: np.ndarray | None, folded_from: str | None = None
    ) -> StaticForFpga:
        """No gates: the model is built as it is."""
        joins = (
            "residual joins run in float32 (finn-plus ElementwiseMul/Add: the trained branch and "
            "shortcut scales differ)"
            if model.config.backbone == "resnet"  # type: ignore[union-attr]
            else "the VGG backbone has no residual joins"
        )
        note = f"S2DNAS has no gates: the model is built as it is, one partition per stage; {joins}"
        return StaticForFpga(model, note, 0, None)

    def fpga_partitions(self, config: S2DNASConfig) -> list[Any]:
        from tinydyn.models.s2dnas_fpga import partition_specs

        return partition_specs(config)  # type: ignore[return-value]

    def fpga_whole(self, config: S2DNASConfig) -> Any:
        from tinydyn.models.s2dnas_fpga import whole_network_spec

        return whole_network_spec(config)

    def fpga_module(self, model: nn.Module, spec: Any) -> nn.Module:
        from tinydyn.models.s2dnas_fpga import stage_partition

        return stage_partition(model, spec)  # type: ignore[arg-type]

    def after_training(self, model: nn.Module, held_out: Any) -> dict[str, Any] | None:
        """Per-exit thresholds (stages or naive early exits) maximising the reward on the
        held-out images (written into the model's config, so the checkpoint and its lowering
        carry them)."""
        from tinydyn.models.s2dnas_thresholds import tune_thresholds

        if held_out is None or len(held_out) == 0 or model.config.exit_count == 1:  # type: ignore[union-attr]
            return None
        unit = getattr(model, "_threshold_unit", "macs")
        choice = tune_thresholds(model, held_out, unit=unit)  # type: ignore[arg-type]
        return choice.to_json()


def static_architecture(path: Any) -> dict[str, Any]:
    """The backbone fields of a static checkpoint: an LC-Net without gates or early exits (the
    project's static ResNet), or a one-stage S2DNAS model (e.g. the static VGG)."""
    from tinydyn.models.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    family = payload.get("family", "lcnet")
    config = payload.get("config")
    if family == "lcnet":
        from tinydyn.models.lcnet import LCNetConfig

        cfg = LCNetConfig.from_json(config)
        if cfg.gates or cfg.exits:
            raise ConfigError(
                f"{path} is a dynamic LC-Net (gates or early exits)",
                "give a static one, trained with --no-gates --exits ''",
            )
        return {
            "backbone": "resnet",
            "stem_width": cfg.stem_width,
            "widths": cfg.widths,
            "blocks": cfg.blocks,
        }
    if family == "s2dnas":
        cfg2 = S2DNASConfig.from_json(config)
        if cfg2.stages != 1:
            raise ConfigError(
                f"{path} is already multi-stage", "give the one-stage (static) model it came from"
            )
        if cfg2.naive_exits:
            raise ConfigError(
                f"{path} has naive early exits", "give the one-stage (static) model it came from"
            )
        return {
            "backbone": cfg2.backbone,
            "stem_width": cfg2.stem_width,
            "widths": cfg2.widths,
            "blocks": cfg2.blocks,
        }
    raise ConfigError(
        f"{path} is a {family} model", "give a static ResNet (lcnet --no-gates) or VGG checkpoint"
    )


def hold_out(data: Dataset, count: int) -> tuple[Dataset, Dataset | None]:
    """(training images, the last ``count`` held out); at most a tenth of a small set is held out."""
    if count < 0:
        raise TinydynError(f"--held-out {count} is negative: give a number of images, 0 for none")
    count = min(count, len(data) // 10)
    if count == 0:
        return data, None
    cut = len(data) - count

    def part(a: int, b: int) -> Dataset:
        return Dataset(data.images[a:b], data.labels[a:b], data.classes, data.name, data.split, data.note)

    return part(0, cut), part(cut, len(data))


def parse_settings(text: str, what: str) -> list[str]:
    """One setting per resolution from the command line: 'A/B/C', or 'A' for every resolution."""
    parts = [t.strip() for t in text.split("/")]
    if any(not p for p in parts):
        raise ConfigError(f"{what} '{text[:40]}' has an empty setting", "e.g. 3,5/3,5/2,6")
    return parts


def s2d_options(
    backbone: str,
    groups: int,
    stages: int,
    splits: str | None,
    concat: str | None,
    naive_exits: tuple[int, ...] = (),
) -> dict[str, Any]:
    """The S2D settings of `tinydyn train --model s2dnas`: ``splits`` like '3,5/3,5/2,6' (one
    list of split points per resolution; one list for all), ``concat`` like '111/101/011' (the
    indicators m_12, m_13, m_23 per resolution, 1 = reuse; one string for all), ``naive_exits``
    the resolutions after which a naive early exit sits (with one stage)."""
    out: dict[str, Any] = {"backbone": backbone, "groups": groups, "stages": stages}
    if naive_exits:
        out["naive_exits"] = tuple(naive_exits)
    if splits:
        lists = []
        for part in parse_settings(splits, "--splits"):
            try:
                lists.append([int(v) for v in part.split(",")])
            except ValueError:
                raise ConfigError(
                    f"--splits '{part[:40]}' is not a list of whole numbers", "e.g. 3,5"
                ) from None
        out["splits"] = lists
    if concat:
        flags = []
        for part in parse_settings(concat, "--concat"):
            if set(part) - {"0", "1"}:
                raise ConfigError(f"--concat '{part[:40]}' holds more than 0 and 1", "e.g. 111/101/011")
            flags.append([c == "1" for c in part])
        out["concat"] = flags
    return out


S2DNAS = S2DNASFamily()
