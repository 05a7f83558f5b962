"""LC-Net behind the family registry: its config, module, lowering, training loss and gate
parameters, and FPGA hooks (:mod:`tinydyn.models.lcnet_fpga`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinydyn.cost.torch_cost import SalienceWeight, salience_penalty
from tinydyn.errors import TinydynError
from tinydyn.ir import IRModel
from tinydyn.models.family import ModelFamily, StaticForFpga, TrainOutputs
from tinydyn.models.lcnet import LCNet, LCNetConfig
from tinydyn.models.lcnet_fpga import (
    FinnPartition,
    PartitionSpec,
    gates_note,
    mean_saliences,
    partition_specs,
    static_model,
    whole_network_spec,
)


class LCNetFamily(ModelFamily):
    name = "lcnet"

    def config_from_json(self, data: Any) -> LCNetConfig:
        return LCNetConfig.from_json(data)

    def config_from_options(self, **options: Any) -> LCNetConfig:
        return LCNetConfig(**options)

    def build(self, config: LCNetConfig) -> LCNet:
        return LCNet(config)

    def lower(self, model: nn.Module, name: str) -> IRModel:
        from tinydyn.models.lcnet_lower import lower

        return lower(model, name)  # type: ignore[arg-type]

    def train_outputs(
        self, model: nn.Module, images: torch.Tensor, forward: Callable[..., Any] | None = None
    ) -> TrainOutputs:
        """Every exit's logits and the cost-weighted L1 of the saliences (LC-Net's penalty: MACs,
        or a cost table's cycles with --cost profile)."""
        out = (forward or model)(images)
        weights = getattr(model, "_salience_weights", None)
        penalty = salience_penalty(model, out.block_saliences, out.channel_saliences, weights)  # type: ignore[arg-type]
        return TrainOutputs(list(out.logits), penalty)

    def start_training(self, model: nn.Module, cfg: Any, steps_per_epoch: int, total_steps: int) -> None:
        """--cost profile: weigh the saliences by the cycles they save on the profiled target."""
        options = dict(cfg.extra)
        cost, table = options.pop("cost", "macs"), options.pop("cost_table", None)
        if options:
            raise TinydynError(
                f"{', '.join('--' + k.replace('_', '-') for k in sorted(options))} "
                "is a DDI option: drop it, or train with --model ddi"
            )
        if cost not in ("macs", "profile"):
            raise TinydynError(f"--cost {cost} is DDI's: LC-Net weighs its saliences by macs or profile")
        if (cost == "profile") != (table is not None):
            raise TinydynError("--cost profile takes the table from --cost-table FILE (and only it does)")
        if table is not None and self.has_gates(model):
            model._salience_weights = cycle_salience_weights(model, table)  # type: ignore[assignment]

    def loss_terms(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, exit_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the final classifier plus each early exit's (weighted), and the
        MAC-weighted L1 of the saliences (LC-Net's penalty)."""
        out = self.train_outputs(model, images)
        ce = F.cross_entropy(out.logits[-1], labels)
        for logits in out.logits[:-1]:
            ce = ce + exit_weight * F.cross_entropy(logits, labels)
        return ce, out.penalty

    def parameter_groups(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        gates = [p for name, p in model.named_parameters() if ".lnet." in name or ".cnet." in name]
        ids = {id(p) for p in gates}
        return [p for p in model.parameters() if id(p) not in ids], gates

    def open_gates(self, model: nn.Module) -> None:
        """Every L-Net/C-Net FC to bias 1 and its weights to 1/1000 of their initialisation: each
        salience is within ~1e-3 of 1 (exactly 1 after the 8-bit rounding at inference), so the
        block computes its static form. Not exactly 0: an all-zero row leaves the int8 weight
        quantiser no scale, and the integer bias would overflow int32."""
        if not self.has_gates(model):
            return
        with torch.no_grad():
            for block in model.blocks:  # type: ignore[union-attr]
                for gate in (block.lnet, block.cnet):
                    gate.fc.weight.mul_(1e-3)
                    gate.fc.bias.fill_(1.0)

    def has_gates(self, model: nn.Module) -> bool:
        return bool(model.config.gates)  # type: ignore[union-attr]

    def static_for_fpga(
        self, model: nn.Module, images: np.ndarray | None, folded_from: str | None = None
    ) -> StaticForFpga:
        """Gates folded into their mean saliences over ``images`` (none to fold: as is)."""
        saliences = mean_saliences(model, images) if self.has_gates(model) and images is not None else None  # type: ignore[arg-type]
        return StaticForFpga(
            static_model(model, saliences),  # type: ignore[arg-type]
            gates_note(saliences, folded_from),
            saliences.images if saliences else 0,
            saliences.to_json() if saliences else None,
        )

    def fpga_partitions(self, config: LCNetConfig) -> list[PartitionSpec]:
        return partition_specs(config)

    def fpga_whole(self, config: LCNetConfig) -> PartitionSpec:
        return whole_network_spec(config)

    def fpga_module(self, model: nn.Module, spec: PartitionSpec) -> FinnPartition:
        return FinnPartition(model, spec)  # type: ignore[arg-type]


def cycle_salience_weights(model: LCNet, table_path: str) -> list[SalienceWeight]:
    """Salience weights from a ``tinydyn profile`` cost table of a model of this architecture:
    a block salience weighs the cycles skipping its block saves, a channel salience the cycles
    one of its channels saves (conv1's output and conv2's input), each as a share of the whole
    model's cycles and halved as the MAC weighting is (both gates together control a block), so
    that --l1 means about the same with either cost."""
    from pathlib import Path

    from tinydyn.cost.cost_table import read_cost_table
    from tinydyn.models.lcnet_lower import lower

    table = read_cost_table(Path(table_path))
    table.check_shapes(lower(LCNet(model.config), "cost"))  # op names and MACs depend on shapes only
    total = sum(table.layer_weights().values()) + table.control_cycles
    blocks, channels = table.block_weights(), table.gate_channel_weights()
    weights = []
    for i, block in enumerate(model.blocks):
        if not block.gated:
            continue
        if f"b{i}.guard" not in blocks or f"b{i}.s_chan" not in channels:
            raise TinydynError(
                f"the cost table has no cycles for block b{i}'s gates: profile a gated model of this "
                "architecture with `tinydyn profile`"
            )
        weights.append(
            SalienceWeight(blocks[f"b{i}.guard"] / total / 2, channels[f"b{i}.s_chan"] / total / 2)
        )
    return weights


LCNET = LCNetFamily()
