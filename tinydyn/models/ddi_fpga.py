"""DDI on an FPGA: the gate-free model and its dataflow partitions (backbone segments and RADI
branches) — the family's FPGA hooks.

**Gates are not mapped.** FINN builds fixed streaming pipelines with no data-dependent control
flow. DDI's gates are hard {0, 1} decisions (not scales, as LC-Net's saliences are), and with every
gate open a DDI network computes exactly its static backbone: the integer model's gating-off mode
(``tinydyn eval --no-gating``). So the FPGA model is the DDI network with its LSTM layer gates and
channel gates left out (every unit and every channel computed) and its RADI branches kept: the
gates and their savings are MCU-only; on the FPGA the savings come from the early exits.

**Partitions, in the order the PS runs them.** With branches after units p_0 < p_1 < …:

* ``seg0``: input pixels → stem → units 0..p_0 → the uint8 feature map of unit p_0;
* ``branch0``: that feature map (read back from DDR) → the branch's stride-2 max pools → 3×3 conv
  → BN → ReLU → GAP → FC: the integer accumulators of exit 0, which the PS finishes like the
  integer reference and decides on by confidence. A branch has a 3×3 conv of up to ~0.5 M MACs,
  which is fabric work, unlike LC-Net's GAP→FC heads that the PS runs in software;
* ``seg1``: the feature maps of the images that stay (compacted by the PS) → units p_0+1..p_1; …
* the last segment runs the remaining units and the final classifier.

**A subset of the branches** (:class:`BranchSubset`, ``tinydyn fpga --branches``): every partition
costs its IODMA pair and shell ports whatever its size, so all six branches of a (3,3,3) ResNet (13
partitions) cannot fit an xc7z020. The unbuilt branches are removed from the gate-free model
(:func:`keep_branches`): no partition, no exit; its lowering has exits only at the built ones.

No partition repeats another's work; each has an input and an output IODMA. Each partition is
a module over the gate-free model, written so that it exports to QONNX and maps to FINN as
LC-Net's segments do (:mod:`tinydyn.models.lcnet_fpga`): integer input × its scale, float residual
joins (finn-plus ElementwiseMul/Add), GAP as ``AdaptiveAvgPool2d`` + a copy of the pooled map's
quantiser, feature outputs on the activation grid.

**DenseNet.** The units are dense layers; a segment ends after the dense layer a branch follows
(its output is the concatenated feature map ``u<i>.feat``) and runs the transitions of the stages
that start inside it. The dense concatenation joins maps on ONE grid: every map of a dense block
(the stem or transition output and each layer's new maps) goes through the block's one feature
quantiser, so the integer ``concat`` joins the integers as they are, and in the streamlined graph
the identical scale multiplies move past the ``Concat`` (finn-plus ``MoveMulPastJoinConcat``),
which then joins UINT8 NHWC streams along the channel axis: finn-plus's ``StreamingConcat``. A
transition's 2×2 average pool is rounded half up to its input grid by the integer reference
(``avgpool``: (sum + 2) // 4); Brevitas and QONNX round half to even, so the partition adds an
eighth of a step before the grid copy of the input quantiser: round_half_even(sum/4 + 1/8) =
(sum + 2) // 4 for every integer sum, with 1/8 step of margin for float rounding. finn-plus maps
the pool as an accumulating ``Pool`` (the exact window sum, ``tinydyn.hw.steps._sum_pools``)
followed by thresholds that round those integer sums exactly (4t + 2 for the t-th step). A layer
finn-plus still cannot map stops the build with one line naming it (``step_tinydyn_check_mapped``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import accumulate

import brevitas.nn as qnn
import torch
import torch.nn.functional as F
from brevitas.quant import Uint8ActPerTensorFloat
from torch import nn

from tinydyn.errors import TinydynError
from tinydyn.models.ddi import DDIConfig, DDINet, branch_points
from tinydyn.quantize.builder import act_scale

GATE_KEYS = (".layer_gate.", ".channel_gate.", ".lstm.")  # state-dict keys of the gates (with a leading .)
TIE_OFFSET = 0.125  # steps added before a half-to-even grid quantiser: round half up (module docstring)
GATES_NOTE = (
    "DDI's LSTM layer gates and channel gates are not mapped on the FPGA: they are hard {0, 1} decisions "
    "with no dataflow form, and with every gate open the network is its static backbone (the integer "
    "model's gating-off mode, tinydyn eval --no-gating), so every unit and channel runs and the gates' "
    "savings are MCU-only; on the FPGA the savings come from the RADI early exits, each branch a "
    "partition of its own that reads its segment's feature map"
)


class DDIFpgaError(TinydynError):
    """A DDI model the FPGA path cannot build, or a gate-free model that does not match it."""


@dataclass(frozen=True)
class DDIPartitionSpec:
    """One dataflow partition: a backbone segment (optional stem, units ``first_unit..last_unit``,
    the final classifier in the last one) or RADI branch ``stage`` (reading the feature map of
    unit ``last_unit``). Segment k and branch k form stage k."""

    name: str
    kind: str  # "segment" or "branch"
    stage: int
    first_unit: int
    last_unit: int
    stem: bool
    head: str | None  # segment: "final" or None (feature map out); branch: "stage<k>" (exit k)
    features: bool = False  # a branch's conv output instead of its logits (for the checks)
    dense: bool = False  # DenseNet: units are dense layers, their feature maps u<i>.feat (concatenated)
    # DenseNet: the stages whose transition the segment runs (before their first unit)
    transitions: tuple[int, ...] = ()

    reads_image = False  # a segment k > 0 reads segment k-1's feature map, not the image

    @property
    def units(self) -> range:
        return range(self.first_unit, self.last_unit + 1) if self.kind == "segment" else range(0)

    @property
    def blocks(self) -> range:
        """What the checks count as blocks (their feature export and requantisations, two each):
        the units of a segment and a DenseNet segment's transitions (pool grid, conv), a branch's
        one conv."""
        return range(len(self.units) + len(self.transitions)) if self.kind == "segment" else range(1)

    @property
    def _suffix(self) -> str:
        return "feat" if self.dense else "out"  # a unit's output in the IR (ddi_lower)

    @property
    def input_tensor(self) -> str:
        """Name of the partition's input in the integer IR of the gate-free model."""
        if self.stem:
            return "input"
        return f"u{self.first_unit - 1 if self.kind == 'segment' else self.last_unit}.{self._suffix}"

    @property
    def output_tensor(self) -> str | None:
        """IR tensor of a feature output (None: the partition ends in an exit's accumulators)."""
        return f"u{self.last_unit}.{self._suffix}" if self.head is None and self.kind == "segment" else None

    @property
    def mac_prefixes(self) -> tuple[str, ...]:
        """IR op-name prefixes of the layers this partition runs besides its exit head."""
        return (
            *(("stem",) if self.stem else ()),
            *(f"t{s}" for s in self.transitions),
            *(f"u{i}" for i in self.units),
        )

    @property
    def head_prefix(self) -> str:
        return "final" if self.head == "final" else f"exit{self.stage}"


def stage_starts(config: DDIConfig) -> list[int]:
    """The first unit of every stage."""
    return [0, *accumulate(config.blocks)][:-1]


def _transitions(config: DDIConfig, first: int, last: int) -> tuple[int, ...]:
    """DenseNet: the stages whose transition runs before a unit in first..last."""
    if config.backbone != "densenet":
        return ()
    return tuple(s for s, start in enumerate(stage_starts(config)) if s > 0 and first <= start <= last)


def _segment(
    config: DDIConfig, name: str, stage: int, first: int, last: int, head: str | None
) -> DDIPartitionSpec:
    dense = config.backbone == "densenet"
    return DDIPartitionSpec(
        name, "segment", stage, first, last, first == 0, head, dense=dense,
        transitions=_transitions(config, first, last),
    )  # fmt: skip


@dataclass(frozen=True)
class BranchSubset:
    """What a build partitions: the DDI config and the RADI branches it builds (indices into
    :func:`branch_points`, ascending). The others are left out of the FPGA model: no partition,
    no exit, so the PS never decides there (their images go on to the next built exit)."""

    config: DDIConfig
    built: tuple[int, ...]

    @property
    def units(self) -> list[int]:
        """The units the built branches follow."""
        points = all_branch_units(self.config)
        return [points[k] for k in self.built]


def all_branch_units(config: DDIConfig) -> list[int]:
    """The units the model's RADI branches follow (branch k after unit ``[k]``)."""
    return branch_points(config.blocks) if config.branches else []


def branch_subset(config: DDIConfig, built: tuple[int, ...]) -> BranchSubset:
    """``built`` checked against the model's branches (one line naming the valid indices)."""
    count = len(all_branch_units(config))
    bad = [k for k in built if not 0 <= k < count]
    if bad or len(set(built)) != len(built):
        valid = f"0..{count - 1}" if count else "none: the model has no RADI branches"
        raise DDIFpgaError(
            f"--branches {','.join(map(str, built))}: give distinct RADI branch indices ({valid})"
        )
    return BranchSubset(config, tuple(sorted(built)))


def keep_branches(model: DDINet, subset: BranchSubset) -> DDINet:
    """The gate-free ``model`` without the branches the build leaves out (its lowering then has
    exits only at the built ones, numbered 0.. in order, and the final classifier)."""
    if model.config.gates:
        raise DDIFpgaError("keep_branches takes the gate-free model (static_model), not the gated one")
    keep = {str(u) for u in subset.units}
    for key in [k for k in model.branches if k not in keep]:
        del model.branches[key]
    return model


def partition_specs(config: DDIConfig | BranchSubset) -> list[DDIPartitionSpec]:
    """seg0, branch0, seg1, branch1, …, segN: a segment ends at each unit a built branch
    follows; the last segment holds the final classifier. Stage k is the k-th built branch."""
    if isinstance(config, BranchSubset):
        points, config = config.units, config.config
    else:
        points = all_branch_units(config)
    dense = config.backbone == "densenet"
    specs, first = [], 0
    for k, unit in enumerate(points):
        specs.append(_segment(config, f"seg{k}", k, first, unit, None))
        specs.append(DDIPartitionSpec(f"branch{k}", "branch", k, unit, unit, False, f"stage{k}", dense=dense))
        first = unit + 1
    k = len(points)
    specs.append(_segment(config, f"seg{k}", k, first, config.units - 1, "final"))
    return specs


def whole_network_spec(config: DDIConfig | BranchSubset) -> DDIPartitionSpec:
    """The static baseline: input → every unit → final classifier as one partition."""
    if isinstance(config, BranchSubset):
        config = config.config
    return _segment(config, "static", 0, 0, config.units - 1, "final")


def fpga_config(config: DDIConfig) -> DDIConfig:
    """The gate-free config of the FPGA model, branches kept (what `tinydyn train --fold-gates`
    fine-tunes)."""
    cfg = DDIConfig.from_json(config.to_json())
    cfg.gates = False
    return cfg


def static_model(model: DDINet) -> DDINet:
    """The DDI network without its gates (every unit and channel computed), branches kept, with
    the trained weights and activation scales (eval mode)."""
    net = DDINet(fpga_config(model.config))
    state = {k: v for k, v in model.state_dict().items() if not any(g in f".{k}" for g in GATE_KEYS)}
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("zero_hw_sentinel", "counter"))]
    if missing or result.unexpected_keys:
        raise DDIFpgaError(
            f"the gate-free model does not match the checkpoint ({(missing or result.unexpected_keys)[0]}): "
            "the checkpoint and this tinydyn disagree on the architecture"
        )
    return net.eval()


def _grid_copy(relu: qnn.QuantReLU) -> qnn.QuantIdentity:
    """A copy of an activation quantiser (same learned scale): a pooled vector lands on its grid
    (FINN GlobalAccPool + thresholds). The proxy itself would re-initialise the shared scale."""
    quant = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat)
    quant.load_state_dict(relu.state_dict())
    return quant.eval()


class DDIPartition(nn.Module):
    """Exportable forward of one partition of the gate-free DDI network: integers in (as float) →
    a unit's activation (on its grid; DenseNet: the concatenated feature map), a branch's conv
    output (``spec.features``), or int16-grid logits (the flow cuts them to the accumulators)."""

    def __init__(self, model: DDINet, spec: DDIPartitionSpec) -> None:
        super().__init__()
        if model.config.gates:
            raise DDIFpgaError(f"{spec.name}: export the gate-free model (static_model), not the gated one")
        self.ddi, self.spec = model, spec
        self.net = None  # tinydyn.hw.checks: no integer joins to account for (LC-Net's int_joins)
        self.in_scale = 1.0 / 255.0 if spec.stem else float(act_scale(self._unit_quant(_source(spec))))
        # DenseNet transitions: a grid copy of the pooled map's quantiser (round half up, see above)
        self.pool_grids = nn.ModuleDict(
            {str(s): _grid_copy(model.feat_quants[s - 1]) for s in spec.transitions}
        )
        self.branch = model.branches[str(spec.last_unit)] if spec.kind == "branch" else None
        self.pools = nn.ModuleList(nn.MaxPool2d(2, 2) for _ in range(self.branch.pools if self.branch else 0))
        self.head = None
        if spec.head is not None and not spec.features:
            self.head = self.branch.head if self.branch is not None else model.head
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.pool_quant = _grid_copy(self._last_relu())

    def _unit_quant(self, unit: int) -> qnn.QuantReLU:
        """The quantiser of a unit's output (DenseNet: its dense block's feature quantiser)."""
        n = self.ddi
        return n.feat_quants[n.stage_of[unit]] if n.config.backbone == "densenet" else n.units[unit].out_relu

    def _last_relu(self) -> qnn.QuantReLU:
        return self.branch.relu if self.branch is not None else self._unit_quant(self.spec.last_unit)

    def output_scale(self) -> float:
        """Scale of the feature map a partition without a head streams out."""
        return float(act_scale(self._last_relu()))

    def feature_output(self) -> DDIPartition:
        """The same partition ending in its last feature map (no head): to check a head's input."""
        s = self.spec
        if s.kind == "branch":  # the branch's conv output (before its GAP)
            return DDIPartition(self.ddi, replace(s, name=f"{s.name}_features", features=True))
        return DDIPartition(self.ddi, replace(s, name=f"{s.name}_features", head=None))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        n = self.ddi
        for pool in self.pools:  # on the integers themselves: FINN maps max pools of integer streams
            q = pool(q)  # (the same as pooling the scaled values: the scale is positive)
        x = q * self.in_scale
        if n.config.backbone == "densenet":
            x = self._dense(x)
        else:
            if self.spec.stem:
                x = n.stem_relu(n.stem_bn(n.stem(x)))
            for i in self.spec.units:  # no gate: every channel, float residual join
                x = n.units[i](x, None, None)
        if self.branch is not None:
            x = self.branch.relu(self.branch.bn(self.branch.conv(x)))
        if self.head is None:
            return x
        return self.head(self.pool_quant(self.pool(x).flatten(1)))

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, transitions and dense layers (no gate: every layer, every channel); every map of
        a dense block on the block's one grid, so the concatenation joins integers."""
        n = self.ddi
        if self.spec.stem:
            x = n.feat_quants[0](n.stem_bn(n.stem(x)))
        starts = stage_starts(n.config)
        for i in self.spec.units:
            stage = n.stage_of[i]
            if stage in self.spec.transitions and i == starts[stage]:
                x = self._transition(stage, x)
            x = torch.cat([x, n.units[i](x, None, n.feat_quants[stage])], dim=1)
        return x

    def _transition(self, stage: int, x: torch.Tensor) -> torch.Tensor:
        """The transition into ``stage``: 2x2 average pool rounded half up to its input grid (the
        integer ``avgpool``), 1x1 conv, BN, the stage's feature quantiser."""
        n, t = self.ddi, self.ddi.transitions[stage - 1]
        step = float(act_scale(n.feat_quants[stage - 1]))
        pooled = self.pool_grids[str(stage)](F.avg_pool2d(x, 2, 2) + TIE_OFFSET * step)
        return n.feat_quants[stage](t.bn(t.conv(pooled)))


def _source(spec: DDIPartitionSpec) -> int:
    """The unit whose feature map a partition without the stem reads."""
    return spec.first_unit - 1 if spec.kind == "segment" else spec.last_unit


def partition_module(model: DDINet, spec: DDIPartitionSpec) -> DDIPartition:
    return DDIPartition(model, spec)
