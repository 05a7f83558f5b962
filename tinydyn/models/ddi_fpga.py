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

The DenseNet backbone is not mapped (:data:`NO_DENSENET`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import brevitas.nn as qnn
import torch
from brevitas.quant import Uint8ActPerTensorFloat
from torch import nn

from tinydyn.errors import TinydynError
from tinydyn.models.ddi import DDIConfig, DDINet, branch_points
from tinydyn.quantize.builder import act_scale

GATE_KEYS = (".layer_gate.", ".channel_gate.", ".lstm.")  # state-dict keys of the gates (with a leading .)
NO_DENSENET = (
    "tinydyn fpga builds DDI ResNets only: a DenseNet's growing concatenation of feature maps is not "
    "mapped to finn-plus dataflow partitions yet; deploy DDI DenseNets on an MCU board with 'tinydyn run'"
)
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

    reads_image = False  # a segment k > 0 reads segment k-1's feature map, not the image

    @property
    def units(self) -> range:
        return range(self.first_unit, self.last_unit + 1) if self.kind == "segment" else range(0)

    @property
    def blocks(self) -> range:
        """What the checks count as blocks (their feature export and requantisations): the units
        of a segment, a branch's one conv."""
        return self.units if self.kind == "segment" else range(1)

    @property
    def input_tensor(self) -> str:
        """Name of the partition's input in the integer IR of the gate-free model."""
        if self.stem:
            return "input"
        return f"u{self.first_unit - 1 if self.kind == 'segment' else self.last_unit}.out"

    @property
    def output_tensor(self) -> str | None:
        """IR tensor of a feature output (None: the partition ends in an exit's accumulators)."""
        return f"u{self.last_unit}.out" if self.head is None and self.kind == "segment" else None

    @property
    def mac_prefixes(self) -> tuple[str, ...]:
        """IR op-name prefixes of the layers this partition runs besides its exit head."""
        return (*(("stem",) if self.stem else ()), *(f"u{i}" for i in self.units))

    @property
    def head_prefix(self) -> str:
        return "final" if self.head == "final" else f"exit{self.stage}"


def check_mappable(config: DDIConfig) -> None:
    if config.backbone != "resnet":
        raise DDIFpgaError(NO_DENSENET)


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
    check_mappable(config)
    specs, first = [], 0
    for k, unit in enumerate(points):
        specs.append(DDIPartitionSpec(f"seg{k}", "segment", k, first, unit, first == 0, None))
        specs.append(DDIPartitionSpec(f"branch{k}", "branch", k, unit, unit, False, f"stage{k}"))
        first = unit + 1
    k = len(points)
    specs.append(DDIPartitionSpec(f"seg{k}", "segment", k, first, config.units - 1, first == 0, "final"))
    return specs


def whole_network_spec(config: DDIConfig | BranchSubset) -> DDIPartitionSpec:
    """The static baseline: input → every unit → final classifier as one partition."""
    if isinstance(config, BranchSubset):
        config = config.config
    check_mappable(config)
    return DDIPartitionSpec("static", "segment", 0, 0, config.units - 1, True, "final")


def fpga_config(config: DDIConfig) -> DDIConfig:
    """The gate-free config of the FPGA model, branches kept. DDIConfig refuses branches without
    gates from a checkpoint (training never makes that model); this one is derived from a
    validated gated config, so it is built valid and the gates switched off afterwards."""
    cfg = DDIConfig.from_json(config.to_json())
    cfg.gates = False
    return cfg


def static_model(model: DDINet) -> DDINet:
    """The DDI network without its gates (every unit and channel computed), branches kept, with
    the trained weights and activation scales (eval mode)."""
    check_mappable(model.config)
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
    """Exportable forward of one partition of the gate-free DDI ResNet: integers in (as float) →
    a unit's activation (on its grid), a branch's conv output (``spec.features``), or int16-grid
    logits (the flow cuts them to the accumulators)."""

    def __init__(self, model: DDINet, spec: DDIPartitionSpec) -> None:
        super().__init__()
        if model.config.gates:
            raise DDIFpgaError(f"{spec.name}: export the gate-free model (static_model), not the gated one")
        check_mappable(model.config)
        self.ddi, self.spec = model, spec
        self.net = None  # tinydyn.hw.checks: no integer joins to account for (LC-Net's int_joins)
        self.in_scale = 1.0 / 255.0 if spec.stem else float(act_scale(model.units[_source(spec)].out_relu))
        self.branch = model.branches[str(spec.last_unit)] if spec.kind == "branch" else None
        self.pools = nn.ModuleList(nn.MaxPool2d(2, 2) for _ in range(self.branch.pools if self.branch else 0))
        self.head = None
        if spec.head is not None and not spec.features:
            self.head = self.branch.head if self.branch is not None else model.head
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.pool_quant = _grid_copy(self._last_relu())

    def _last_relu(self) -> qnn.QuantReLU:
        return self.branch.relu if self.branch is not None else self.ddi.units[self.spec.last_unit].out_relu

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
        if self.spec.stem:
            x = n.stem_relu(n.stem_bn(n.stem(x)))
        for i in self.spec.units:  # no gate: every channel, float residual join
            x = n.units[i](x, None, None)
        if self.branch is not None:
            x = self.branch.relu(self.branch.bn(self.branch.conv(x)))
        if self.head is None:
            return x
        return self.head(self.pool_quant(self.pool(x).flatten(1)))


def _source(spec: DDIPartitionSpec) -> int:
    """The unit whose feature map a partition without the stem reads."""
    return spec.first_unit - 1 if spec.kind == "segment" else spec.last_unit


def partition_module(model: DDINet, spec: DDIPartitionSpec) -> DDIPartition:
    return DDIPartition(model, spec)
