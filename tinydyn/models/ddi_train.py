"""DDI's training schedule (paper §III-C, §IV-A) as family hooks of the training loop.

* **IADI step 1** (the first ``--gate-open-epochs``): the backbone is frozen and the gates train
  toward zero skipping (target 0).
* **IADI step 2**: backbone and gates train jointly on ``L + α·E`` toward ``--target-skip R``;
  α's sign is set per batch: positive when the batch skipped less than R (skip more), negative
  when it skipped more (skip less), so the ratio settles around R.
* **DDI** (the last ``--branch-epochs``): the RADI branches join and everything trains on the
  sum of every exit's loss (Eq. 4), still with the α term holding R. Its first
  ``--branch-warmup-epochs`` train the branches alone (backbone and gates frozen): freshly
  initialised branches' losses are several times the final classifier's, and their gradients,
  straight into the trained backbone, cost the final classifier about a point (ResNet t50,
  session 10: 90.43 % with the DDI phase against 91.38 % without it).

E is the expected executed cost of one image, from the hard gate decisions (straight-through),
in the unit ``--cost`` picks, per op of the integer model this network lowers to:
``macs`` (MACs), ``energy`` (the DDI energy model of :mod:`tinydyn.cost`, nJ on the QEMU
board's coefficients: MACs and flash/SRAM traffic per op) or ``profile`` (cycles per layer and
per executed channel from a ``tinydyn profile`` cost table). The skip ratio a batch is held at
is ``1 - E / E_static``, ``E_static`` the static backbone's cost (gates' own cost counted in E:
a target 0.5 halves the whole cost).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tinydyn.errors import TinydynError
from tinydyn.ir import IRModel, Op
from tinydyn.models.ddi import DDINet
from tinydyn.models.family import StepPlan, TrainOutputs

COSTS = ("macs", "energy", "profile")
ENERGY_BOARD = "qemu-mps2-an386"
DEFAULT_ALPHA = 0.5


@dataclass(frozen=True)
class DDIOptions:
    """The DDI-only options of `tinydyn train` (TrainConfig.extra)."""

    target_skip: float = 0.5
    cost: str = "macs"
    cost_table: str | None = None
    alpha: float = DEFAULT_ALPHA
    branch_epochs: int | None = None  # None: half the run (the paper trains IADI and DDI equally)
    branch_warmup_epochs: float = 0.0  # the DDI phase's first epochs: branches alone

    @staticmethod
    def from_extra(extra: dict[str, Any], epochs: int) -> DDIOptions:
        o = DDIOptions(**{k: v for k, v in extra.items() if v is not None})
        if not 0.0 <= o.target_skip < 1.0:
            raise TinydynError(
                f"--target-skip {o.target_skip:g} is outside [0, 1): give the share of cost to skip"
            )
        if o.cost not in COSTS:
            raise TinydynError(f"--cost {o.cost!r} is not one of {', '.join(COSTS)}")
        if (o.cost == "profile") != (o.cost_table is not None):
            raise TinydynError("--cost profile takes the table from --cost-table FILE (and only it does)")
        if not math.isfinite(o.alpha) or o.alpha < 0:
            raise TinydynError(f"--alpha {o.alpha:g} must be a finite number >= 0")
        if o.branch_epochs is not None and not 0 <= o.branch_epochs <= epochs:
            raise TinydynError(f"--branch-epochs {o.branch_epochs} is outside 0..--epochs ({epochs})")
        branch = epochs // 2 if o.branch_epochs is None else o.branch_epochs
        if not (math.isfinite(o.branch_warmup_epochs) and 0 <= o.branch_warmup_epochs <= branch):
            raise TinydynError(
                f"--branch-warmup-epochs {o.branch_warmup_epochs:g} is outside 0..--branch-epochs ({branch})"
            )
        return o


@dataclass
class UnitCost:
    """What one unit costs (in the chosen unit) by its gates' decisions."""

    run: float  # when it runs, whatever its channels (its channel gate, fixed parts)
    channels: float  # when it runs, with every channel of its channel gate active (scales with them)
    skip: float  # when it is skipped


@dataclass
class CostModel:
    const: float  # everything the gates do not decide (stem, LSTM gates, shortcuts, final head)
    units: list[UnitCost]
    static: float  # the static backbone

    def expected(self, layer_gates: list, channel_masks: list) -> torch.Tensor:
        """Per-image cost (N,) from the (straight-through) decisions."""
        total: torch.Tensor | float = self.const
        for cost, g, mask in zip(self.units, layer_gates, channel_masks, strict=True):
            share = mask.mean(dim=1) if mask is not None else 1.0
            run = cost.run + share * cost.channels
            total = total + (run if g is None else g * run + (1 - g) * cost.skip)
        return total  # type: ignore[return-value]


def op_costs(ir: IRModel, kind: str, table_path: str | None) -> tuple[dict[str, float], dict[str, float]]:
    """(cost of each op run in full, the part of it that scales with its gated channels)."""
    from tinydyn.cost import coefficients, op_traffic
    from tinydyn.cost.torch_cost import expected_energy_nj

    full: dict[str, float] = {}
    scaling: dict[str, float] = {}
    if kind == "profile":
        from tinydyn.cost.cost_table import read_cost_table

        table = read_cost_table(Path(str(table_path)))
        table.check_shapes(ir)
        for row in table.layers:
            full[row.name] = row.full
            if row.per_channel is not None:
                scaling[row.name] = max(row.per_channel, 0.0) * row.channels
        return full, scaling
    coeffs = coefficients(ENERGY_BOARD)
    for op in ir.walk():  # a skip branch's ops too (the cost package's full path has only `then`)
        if op.output is None:
            continue
        macs, t = op_traffic(ir, op, coeffs)
        if kind == "macs":
            full[op.name] = float(macs)
        else:
            counts = [torch.tensor([float(v)], dtype=torch.float64) for v in (macs, t.flash_bytes)]
            counts += [torch.tensor([float(t.sram_read_bytes)]), torch.tensor([float(t.sram_write_bytes)])]
            full[op.name] = float(expected_energy_nj(coeffs, *counts))
    return full, scaling


def cost_model(model: DDINet, kind: str, table_path: str | None) -> CostModel:
    """The cost of every unit's choices, read off the integer model a network of this config
    lowers to (a fresh one: costs depend on shapes only; op names are the lowering's)."""
    from tinydyn.models.ddi_lower import lower

    fresh = DDINet(model.config)
    ir = lower(fresh, "cost")
    full, scaling = op_costs(ir, kind, table_path)

    def cost(ops: list[Op]) -> float:
        return sum(full.get(op.name, 0.0) for op in ops)

    def gated(op: Op) -> bool:
        return bool(op.attrs.get("channel_gate") or op.attrs.get("input_mask"))

    def split(ops: list[Op]) -> tuple[float, float]:
        """(fixed, channel-scaled) cost of ops that run together."""
        chan = sum(scaling.get(op.name, full.get(op.name, 0.0)) for op in ops if gated(op))
        return cost(ops) - chan, chan

    units = [UnitCost(0.0, 0.0, 0.0) for _ in model.units]
    const = static = 0.0
    for op in ir.ops:
        if op.kind == "exit":
            if op.attrs.get("final"):
                const += cost(op.then)
                static += cost(op.then)
            continue  # RADI heads are not part of the IADI cost
        unit = int(op.name.split(".")[0][1:]) if op.name.startswith("u") else None
        if op.then or op.orelse:  # a unit's guard
            run, chan = split(op.then)
            units[unit].run += run  # type: ignore[index]
            units[unit].channels += chan  # type: ignore[index]
            units[unit].skip += cost(op.orelse)  # type: ignore[index]
            static += cost([o for o in op.then if o.attrs.get("role") != "gate"])
        elif unit is not None and gated(op):  # a dense block's first layer: channel gate, no layer gate
            run, chan = split([op])
            units[unit].run += run
            units[unit].channels += chan
            static += cost([op])
        else:
            const += cost([op])
            static += 0.0 if op.attrs.get("role") == "gate" else cost([op])
    if static <= 0:
        raise TinydynError(
            f"the {kind} cost of this model's backbone is 0: profile it with `tinydyn profile`"
        )
    return CostModel(const, units, static)


@dataclass
class Schedule:
    options: DDIOptions
    costs: CostModel
    open_steps: int  # IADI step 1
    branch_from: int  # first step of the DDI phase
    joint_from: int  # first step of the DDI phase where everything trains (after the branch warm-up)
    backbone: list[torch.nn.Parameter]
    branches: list[torch.nn.Parameter]
    gates: list[torch.nn.Parameter]


def start(model: DDINet, cfg: Any, steps_per_epoch: int, total_steps: int) -> None:
    """Check the DDI options and fix the schedule (before the first step; on resume too)."""
    if cfg.l1:
        raise TinydynError("--l1 is LC-Net's salience penalty: DDI's cost weight is --alpha")
    options = DDIOptions.from_extra(dict(cfg.extra), cfg.epochs)
    if not model.config.gates:  # the static backbone: plain training, nothing to schedule
        model._ddi_schedule = None  # type: ignore[attr-defined]
        return
    branch_epochs = cfg.epochs // 2 if options.branch_epochs is None else options.branch_epochs
    if not model.config.branches:
        branch_epochs = 0
    names = dict(model.named_parameters())
    branch_ids = {id(p) for n, p in names.items() if n.startswith("branches.")}
    from tinydyn.models.ddi_family import GATE_MODULES

    gate_ids = {id(p) for n, p in names.items() if any(g in f".{n}" for g in GATE_MODULES)}
    branch_from = total_steps - branch_epochs * steps_per_epoch
    warmup = round(options.branch_warmup_epochs * steps_per_epoch) if branch_epochs else 0
    model._ddi_schedule = Schedule(  # type: ignore[attr-defined]
        options=options,
        costs=cost_model(model, options.cost, options.cost_table),
        open_steps=round(float(cfg.gate_open_epochs or 0) * steps_per_epoch),
        branch_from=branch_from,
        joint_from=branch_from + warmup,
        backbone=[p for p in names.values() if id(p) not in gate_ids | branch_ids],
        branches=[p for p in names.values() if id(p) in branch_ids],
        gates=[p for p in names.values() if id(p) in gate_ids],
    )


def plan(model: DDINet, step: int) -> StepPlan | None:
    schedule: Schedule | None = getattr(model, "_ddi_schedule", None)
    if schedule is None:
        return None if model.config.gates else StepPlan([], 0.0)
    if step < schedule.open_steps:
        model._ddi_phase = ("step1", 0.0, False)  # type: ignore[attr-defined]
        frozen = schedule.backbone + schedule.branches
    elif step < schedule.branch_from:
        model._ddi_phase = ("step2", schedule.options.target_skip, False)  # type: ignore[attr-defined]
        frozen = schedule.branches
    elif step < schedule.joint_from:  # the branch warm-up: the network as IADI left it
        model._ddi_phase = ("branches", schedule.options.target_skip, True)  # type: ignore[attr-defined]
        frozen = schedule.backbone + schedule.gates
    else:
        model._ddi_phase = ("ddi", schedule.options.target_skip, True)  # type: ignore[attr-defined]
        frozen = []
    return StepPlan(frozen, schedule.options.alpha)


def outputs(model: DDINet, images: torch.Tensor, forward: Callable[..., Any] | None = None) -> TrainOutputs:
    """Exit logits (branches only in the DDI phase) and the signed cost ``±E / E_static``."""
    schedule: Schedule | None = getattr(model, "_ddi_schedule", None)
    phase = getattr(model, "_ddi_phase", None)
    with_branches = phase[2] if phase is not None else None
    if phase is None and model.config.branches and not model.config.gates:
        with_branches = True  # the gate-free model (--fold-gates): every exit trains (Eq. 4)
    if with_branches is False and not getattr(model, "_ddi_branch_scales", False):
        _start_branch_scales(model, images)
    out = (forward or model)(images, with_branches=with_branches)
    if schedule is None or phase is None or not model.training:
        return TrainOutputs(list(out.logits), torch.zeros((), device=images.device))
    cost = schedule.costs.expected(out.layer_gates, out.channel_masks) / schedule.costs.static
    mean = cost.mean()
    skip = 1.0 - float(mean.detach())
    sign = 1.0 if skip < phase[1] else -1.0
    shown = {
        "skip": skip,
        "layer_skip": _layer_skip(out.layer_gates),
        "channel_skip": _channel_skip(out.layer_gates, out.channel_masks),
    }
    return TrainOutputs(list(out.logits), sign * mean, shown)


def _start_branch_scales(model: DDINet, images: torch.Tensor) -> None:
    """Brevitas saves an activation scale only once it has seen one batch: a checkpoint written
    before the DDI phase (branches not run yet) would lack the branches' scales and not load.
    One no-grad pass with the branches, on the first batch, gives them their first statistics
    (collection goes on in the DDI phase)."""
    fresh = any(
        getattr(m, "counter", None) == 0 and hasattr(m, "collect_stats_steps")
        for m in model.branches.modules()
    )
    if fresh:
        with torch.no_grad():
            model(images, with_branches=True)
    model._ddi_branch_scales = True  # type: ignore[attr-defined]


def _channel_skip(gates: list, masks: list) -> float:
    """Share of the gated channels skipped in the units that ran (the reports' channel skip)."""
    run = skipped = 0.0
    for g, mask in zip(gates, masks, strict=True):
        if mask is None:
            continue
        ran = torch.ones(mask.shape[0]) if g is None else g.detach().cpu()
        closed = (1.0 - mask.detach().cpu()).sum(dim=1)
        run += float(ran.sum()) * mask.shape[1]
        skipped += float((ran * closed).sum())
    return skipped / run if run else 0.0


def _layer_skip(gates: list) -> float:
    decided = [g.detach() for g in gates if g is not None]
    return float(1.0 - torch.stack(decided).mean()) if decided else 0.0
