"""What a model family supplies (see :mod:`tinydyn.models.registry`). One subclass per family,
in its own module; the training loop, checkpoints, commands and the FPGA flow call only these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import torch
    from torch import nn

    from tinydyn.ir import IRModel


@dataclass
class TrainOutputs:
    """What one training forward pass gives the loss: logits of every exit (the final
    classifier last) and the family's resource penalty before its coefficient."""

    logits: list[torch.Tensor]
    penalty: torch.Tensor
    shown: dict[str, float] = field(default_factory=dict)  # figures for the progress bar (e.g. skip ratio)


@dataclass
class StepPlan:
    """A family's own schedule for one optimizer step (:meth:`ModelFamily.step_plan`)."""

    frozen: list[nn.Parameter]  # parameters whose gradients are dropped this step
    coefficient: float  # what multiplies TrainOutputs.penalty in the loss (instead of --l1's ramp)


@dataclass
class StaticForFpga:
    """The gate-free model a dataflow build holds, and what folding the gates did."""

    module: nn.Module
    note: str  # one sentence for the report: what happened to the gates
    calibration_images: int  # images the folded constants were measured on (0: nothing folded)
    folded: dict[str, Any] | None  # the folded constants, JSON (None: nothing folded)


class ModelFamily:
    """Base of every family; each method raises until the family implements it."""

    name: ClassVar[str]

    # --- architecture ---------------------------------------------------------------------
    def config_from_json(self, data: Any) -> Any:
        """The family's config from a checkpoint's JSON, validated (types, bounds) before any
        module is built; raises :class:`tinydyn.models.lcnet.ConfigError` naming the problem."""
        raise NotImplementedError

    def config_from_options(self, **options: Any) -> Any:
        """The config `tinydyn train` builds from its command-line options."""
        raise NotImplementedError

    def build(self, config: Any) -> nn.Module:
        raise NotImplementedError

    def input_shape(self, config: Any) -> tuple[int, int, int]:
        """(channels, height, width); every family's config so far names square inputs so."""
        return (config.in_channels, config.input_size, config.input_size)

    def classes(self, config: Any) -> tuple[str, ...]:
        return tuple(config.classes)

    # --- lowering ---------------------------------------------------------------------
    def lower(self, model: nn.Module, name: str) -> IRModel:
        """The integer IR of a trained model (eval mode)."""
        raise NotImplementedError

    # --- training ---------------------------------------------------------------------
    def loss_terms(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, exit_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(classification loss over all exits, the family's resource penalty before its
        coefficient) for one batch."""
        raise NotImplementedError

    def train_outputs(
        self, model: nn.Module, images: torch.Tensor, forward: Callable[..., Any] | None = None
    ) -> TrainOutputs:
        """Exit logits and resource penalty for one batch. ``forward`` runs the model (a
        ``DistributedDataParallel`` wrapper of ``model``, or a teacher); default ``model`` itself.
        The training loop builds its loss (label smoothing, distillation) from these."""
        raise NotImplementedError

    def start_training(self, model: nn.Module, cfg: Any, steps_per_epoch: int, total_steps: int) -> None:
        """Called once before the first step of a run (a resumed one too) with the recipe
        (``cfg.extra`` holds the family's own options): check them, fix the family's schedule."""

    def step_plan(self, model: nn.Module, step: int) -> StepPlan | None:
        """The family's own schedule at global ``step`` (frozen parameters, penalty coefficient),
        or None for the loop's gate schedule (gates held open, then --l1 ramped)."""
        return None

    def open_gates(self, model: nn.Module) -> None:
        """Set every gate to pass everything, whatever the input (a dynamic model then computes
        exactly its static backbone): how a model warm-started from a static backbone begins.
        A family without gates does nothing."""
        if self.has_gates(model):
            raise NotImplementedError

    # training images a run holds out (the last ones) for after_training to tune on; 0: none
    held_out_images: ClassVar[int] = 0

    def warm_start(self, model: nn.Module, source: dict[str, Any], images: np.ndarray) -> bool:
        """Start ``model`` from another checkpoint's payload (--backbone-from) the family's own
        way (S2DNAS: the static-to-dynamic transformation); False leaves it to the training
        loop's default (tensors copied by name and shape, then open_gates)."""
        return False

    def after_training(self, model: nn.Module, held_out: Any) -> dict[str, Any] | None:
        """Called once the last epoch is trained, before its checkpoint is written, with the
        held-out training images (a Dataset, or None): what the family tunes on data (S2DNAS:
        per-stage exit thresholds, written into the config). Returns a JSON record or None."""
        return None

    def parameter_groups(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, gate parameters): gates train at their own learning rate."""
        raise NotImplementedError

    def has_gates(self, model: nn.Module) -> bool:
        """Whether the model decides per input what to skip (beyond early exits)."""
        raise NotImplementedError

    # --- FPGA -------------------------------------------------------------------------
    def static_for_fpga(
        self, model: nn.Module, images: np.ndarray | None, folded_from: str | None = None
    ) -> StaticForFpga:
        """The gate-free model a dataflow build can hold: gates folded into constant scales
        measured on ``images`` (None for a model without gates). ``folded_from``: the
        checkpoint a gate-free model was folded from earlier, for the note."""
        raise NotImplementedError

    def fpga_partitions(self, config: Any) -> list[Any]:
        """Dataflow partitions: backbone segments and exit heads, in the order the PS runs them."""
        raise NotImplementedError

    def fpga_whole(self, config: Any) -> Any:
        """The one-partition static baseline."""
        raise NotImplementedError

    def fpga_module(self, model: nn.Module, spec: Any) -> nn.Module:
        """The exportable torch module of one partition of the static model."""
        raise NotImplementedError

    def fpga_branches(self, config: Any) -> list[str]:
        """The early exits a dataflow build may leave out, one short description each (DDI's
        RADI branches: 'after unit 4'); [] where a build always has every exit."""
        return []

    def fpga_subset(self, config: Any, branches: tuple[int, ...]) -> Any:
        """The config ``fpga_partitions``/``fpga_whole`` take to build only the early exits
        ``branches`` (indices into ``fpga_branches``)."""
        raise NotImplementedError

    def fpga_keep_branches(self, model: nn.Module, subset: Any) -> nn.Module:
        """The static model (``static_for_fpga``) without the exits ``subset`` leaves out."""
        raise NotImplementedError
