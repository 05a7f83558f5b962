"""QONNX export of the static LC-Net as dataflow partitions: backbone segments and exit heads.

FINN builds fixed dataflow pipelines with no data-dependent control flow, so early exit is
realised by partitioning (DESIGN.md, "FPGA path"). With exits after blocks e_0 < e_1 < …:

* ``seg0``: input pixels → stem → blocks 0..e_0 → the integer (uint8) feature map of block e_0;
* ``head0``: that feature map → GAP → exit head 0 → the head's integer accumulators;
* ``seg1``: the feature map of block e_0 (read back from DDR) → blocks e_0+1..e_1 → features;
* … the last segment runs the remaining blocks and the final classifier in one partition.

The Zynq PS chains them: segment k, head k, exit policy, and segment k+1 on the stored features
only for images that did not leave. No partition recomputes another's work.

Each partition is a :class:`FinnPartition` over the modules of the *static* model (gates folded
into constant scales, :mod:`tinydyn.hw.static_model`), written so that it exports to QONNX and
maps to FINN:

* input: integers (pixels 0..255 or a uint8 feature map; float tensor annotated UINT8 in the
  QONNX graph) times their scale (1/255 or the producing block's activation scale), a scalar
  multiply FINN streamlines into the first thresholds;
* feature output: the last block's uint8 activation; the flow cuts the trailing scale multiply so
  that the partition streams the integers themselves (what the next segment reads);
* GAP on the activation grid: ``AdaptiveAvgPool2d(1)`` (→ FINN GlobalAccPool) followed by a copy
  of the block's output quantiser, so it rounds to the grid of ``pooled_on_grid`` (Brevitas rounds
  ties to even, ``pooled_on_grid`` and the integer executor half up: the only difference).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import brevitas.nn as qnn
import numpy as np
import torch
from brevitas.quant import Uint8ActPerTensorFloat
from torch import nn

from tinydyn.errors import TinydynError
from tinydyn.models.lcnet import LCNet, LCNetConfig, act_scale


class ExportError(TinydynError):
    """A partition that cannot be exported or does not match the model it came from."""


@dataclass(frozen=True)
class PartitionSpec:
    """One dataflow partition: optional stem, blocks ``first..last`` (may be none), optional head.

    ``stage`` is the exit index the partition belongs to (segment k and head k form stage k).
    """

    name: str
    kind: str  # "segment" or "head"
    stage: int
    first_block: int
    last_block: int
    stem: bool
    head: str | None  # key in model.exit_heads, "final", or None (feature output)

    @property
    def blocks(self) -> range:
        return range(self.first_block, self.last_block + 1) if self.kind == "segment" else range(0)

    @property
    def input_tensor(self) -> str:
        """Name of the partition's input in the integer IR."""
        if self.stem:
            return "input"
        source = self.first_block - 1 if self.kind == "segment" else self.last_block
        return f"b{source}.out" if source >= 0 else "stem"

    @property
    def output_tensor(self) -> str | None:
        """IR tensor of a feature output (None: the partition ends in head accumulators)."""
        return None if self.head is not None else f"b{self.last_block}.out"


def partition_specs(config: LCNetConfig) -> list[PartitionSpec]:
    """seg0, head0, seg1, head1, …, segN (the last segment holds the final classifier)."""
    specs, first = [], 0
    exits = sorted(config.exits)
    for k, block in enumerate(exits):
        specs.append(PartitionSpec(f"seg{k}", "segment", k, first, block, first == 0, None))
        specs.append(PartitionSpec(f"head{k}", "head", k, block, block, False, str(block)))
        first = block + 1
    last = sum(config.blocks) - 1
    specs.append(PartitionSpec(f"seg{len(exits)}", "segment", len(exits), first, last, first == 0, "final"))
    return specs


def whole_network_spec(config: LCNetConfig) -> PartitionSpec:
    """The static baseline: input → every block → final classifier as one partition."""
    return PartitionSpec("static", "segment", 0, 0, sum(config.blocks) - 1, True, "final")


def input_scale(net: LCNet, spec: PartitionSpec) -> float:
    if spec.stem:
        return 1.0 / 255.0
    source = spec.first_block - 1 if spec.kind == "segment" else spec.last_block
    relu = net.blocks[source].out_relu if source >= 0 else net.stem_relu
    return float(act_scale(relu))


def output_scale(net: LCNet, spec: PartitionSpec) -> float:
    return float(act_scale(net.blocks[spec.last_block].out_relu))


class FinnPartition(nn.Module):
    """Exportable forward of one partition of a gate-free LCNet: integers in (as float) →
    the last block's activation (on its grid) or int16-grid logits."""

    def __init__(self, net: LCNet, spec: PartitionSpec) -> None:
        super().__init__()
        if net.config.gates:
            raise ExportError(f"{spec.name}: export the static model (gates folded), not the gated one")
        self.net, self.spec = net, spec
        self.in_scale = input_scale(net, spec)
        self.head = None
        if spec.head is not None:
            self.head = net.head if spec.head == "final" else net.exit_heads[spec.head]
            self.pool = nn.AdaptiveAvgPool2d(1)
            # a copy of the block's output quantizer (same learned scale): the pooled vector lands
            # on the activation grid. Passing the proxy itself would re-initialise the shared scale.
            self.pool_quant = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat)
            self.pool_quant.load_state_dict(net.blocks[spec.last_block].out_relu.state_dict())
            self.pool_quant.eval()

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = q * self.in_scale
        if self.spec.stem:
            x = n.stem_relu(n.stem_bn(n.stem(x)))
        for i in self.spec.blocks:
            block = n.blocks[i]
            h = block.relu1(block.bn1(block.conv1(x)))
            f = block.bn2(block.conv2(h))
            short = block.short_quant(block.short_bn(block.short_conv(x))) if block.projection else x
            x = block.out_relu(short + f)
        if self.head is None:
            return x
        return self.head(self.pool_quant(self.pool(x).flatten(1)))


@dataclass
class ExportedPartition:
    spec: PartitionSpec
    path: Path
    module: FinnPartition
    in_shape: tuple[int, ...]  # (C, H, W) of the integer input


def export_partition(
    net: LCNet, spec: PartitionSpec, in_shape: tuple[int, ...], path: Path
) -> ExportedPartition:
    """Write partition ``spec`` of the static model as a cleaned-up QONNX model with a UINT8 input."""
    try:
        from brevitas.export import export_qonnx
        from qonnx.core.datatype import DataType
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.cleanup import cleanup_model
    except ImportError as exc:
        raise ExportError(
            f"QONNX export needs qonnx/onnx ({exc.name} missing): run scripts/setup.sh"
        ) from None
    module = FinnPartition(net, spec).eval()
    example = torch.zeros(1, *in_shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        # dynamo=False: brevitas 0.13.4 defaults to the dynamo exporter, which ignores opset 13
        export_qonnx(module, args=example, export_path=str(path), opset_version=13, dynamo=False)
    wrapper = cleanup_model(ModelWrapper(str(path)))
    wrapper.set_tensor_datatype(wrapper.graph.input[0].name, DataType["UINT8"])
    wrapper.save(str(path))
    return ExportedPartition(spec, path, module, tuple(in_shape))


def run_qonnx(path: Path, inputs: np.ndarray) -> np.ndarray:
    """Outputs of a QONNX model for integer inputs (N, C, H, W), via qonnx's python execution."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    wrapper = ModelWrapper(str(path))
    iname, oname = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    outs = [execute_onnx(wrapper, {iname: x[None].astype(np.float32)})[oname] for x in inputs]
    return np.concatenate(outs)


def torch_outputs(module: nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(inputs.astype(np.float32))).numpy()
