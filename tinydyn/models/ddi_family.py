"""DDI behind the family registry: config, module, lowering, and the training hooks of the
paper's schedule (:mod:`tinydyn.models.ddi_train`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from tinydyn.ir import IRModel
from tinydyn.models.ddi import DDIConfig, DDINet
from tinydyn.models.family import ModelFamily, StaticForFpga, StepPlan, TrainOutputs

GATE_MODULES = (".layer_gate.", ".channel_gate.", "lstm.")


class DDIFamily(ModelFamily):
    name = "ddi"

    def config_from_json(self, data: Any) -> DDIConfig:
        return DDIConfig.from_json(data)

    def config_from_options(self, **options: Any) -> DDIConfig:
        """From `tinydyn train`'s options: ``backbone`` picks the settings that apply (a DenseNet
        takes ``growth_rate`` and no widths; a ResNet the reverse); branch positions follow the
        1/4-3/4 rule (--exits does not apply); a static backbone (--no-gates) has no branches."""
        options = dict(options)
        options.pop("exits", None)
        backbone = options.get("backbone", "resnet")
        growth = options.pop("growth_rate", None)
        if backbone == "densenet":
            options["widths"] = ()
            options["growth_rate"] = 12 if growth is None else growth
            options["stem_width"] = 2 * options["growth_rate"]
        elif growth is not None:
            options["growth_rate"] = growth  # the config says a ResNet takes none
        options.setdefault("branches", options.get("gates", True))
        return DDIConfig(**options)

    def build(self, config: DDIConfig) -> DDINet:
        return DDINet(config)

    def lower(self, model: nn.Module, name: str) -> IRModel:
        from tinydyn.models.ddi_lower import lower

        return lower(model, name)  # type: ignore[arg-type]

    # --- training -------------------------------------------------------------------------
    def start_training(self, model: nn.Module, cfg: Any, steps_per_epoch: int, total_steps: int) -> None:
        from tinydyn.models.ddi_train import start

        start(model, cfg, steps_per_epoch, total_steps)  # type: ignore[arg-type]

    def step_plan(self, model: nn.Module, step: int) -> StepPlan | None:
        from tinydyn.models.ddi_train import plan

        return plan(model, step)  # type: ignore[arg-type]

    def train_outputs(
        self, model: nn.Module, images: torch.Tensor, forward: Callable[..., Any] | None = None
    ) -> TrainOutputs:
        from tinydyn.models.ddi_train import outputs

        return outputs(model, images, forward)  # type: ignore[arg-type]

    def loss_terms(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, exit_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.nn.functional as F

        out = self.train_outputs(model, images)
        ce = F.cross_entropy(out.logits[-1], labels)
        for logits in out.logits[:-1]:
            ce = ce + exit_weight * F.cross_entropy(logits, labels)
        return ce, out.penalty

    def parameter_groups(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        gates = [p for name, p in model.named_parameters() if any(g in f".{name}" for g in GATE_MODULES)]
        ids = {id(p) for p in gates}
        return [p for p in model.parameters() if id(p) not in ids], gates

    def open_gates(self, model: nn.Module) -> None:
        """Every gate open whatever the input, so that a model warm-started from a static backbone
        computes that backbone: output biases are +3 from construction, and the weights feeding
        them shrink (channel-gate FCs to 1/100, the LSTM's salience FC to 1/10) so that no input
        moves a logit below 0. Not to exactly 0: an all-zero row leaves the int8 weight quantiser
        no scale, and the integer bias would overflow int32."""
        if not self.has_gates(model):
            return
        with torch.no_grad():
            for unit in model.units:  # type: ignore[union-attr]
                unit.channel_gate.fc.weight.mul_(1e-2)
            model.lstm.sal.weight.mul_(0.1)  # type: ignore[union-attr]

    def has_gates(self, model: nn.Module) -> bool:
        return bool(model.config.gates)  # type: ignore[union-attr]

    # --- FPGA: gates not mapped, RADI branches as partitions (tinydyn.models.ddi_fpga) --------
    def static_for_fpga(
        self, model: nn.Module, images: np.ndarray | None, folded_from: str | None = None
    ) -> StaticForFpga:
        """The network without its gates (every unit and channel: the gating-off model), branches
        kept; nothing is folded, so ``images`` are not needed."""
        from tinydyn.models.ddi_fpga import GATES_NOTE, static_model

        net = static_model(model)  # type: ignore[arg-type]
        note = GATES_NOTE if self.has_gates(model) else "this DDI model has no gates: it is built as it is"
        return StaticForFpga(net, note, 0, None)

    def fpga_partitions(self, config: Any) -> list[Any]:
        from tinydyn.models.ddi_fpga import partition_specs

        return partition_specs(config)  # type: ignore[return-value]

    def fpga_whole(self, config: Any) -> Any:
        from tinydyn.models.ddi_fpga import whole_network_spec

        return whole_network_spec(config)

    def fpga_module(self, model: nn.Module, spec: Any) -> nn.Module:
        from tinydyn.models.ddi_fpga import partition_module

        return partition_module(model, spec)  # type: ignore[arg-type]

    def fpga_branches(self, config: DDIConfig) -> list[str]:
        from tinydyn.models.ddi_fpga import all_branch_units

        return [f"after unit {u}" for u in all_branch_units(config)]

    def fpga_subset(self, config: DDIConfig, branches: tuple[int, ...]) -> Any:
        from tinydyn.models.ddi_fpga import branch_subset

        return branch_subset(config, branches)

    def fpga_keep_branches(self, model: nn.Module, subset: Any) -> nn.Module:
        from tinydyn.models.ddi_fpga import keep_branches

        return keep_branches(model, subset)  # type: ignore[arg-type]


DDI = DDIFamily()
