"""QONNX export of an LC-Net's static path, one stage per exit.

FINN builds fixed dataflow pipelines: it has no data-dependent control flow and no equivalent
of the L-Net/C-Net gates. So the FPGA build runs every block and every channel (salience 1,
the gate-open model) and realises early exit by partitioning: stage k is the backbone from
the input to the block after which exit k sits, plus exit head k; the last stage is the whole
backbone plus the final head. The Zynq PS runs stage k+1 only for images that did not leave.

Each stage is a small gate-free :class:`LCNet` (weights copied from the trained model: a
stage is exactly what the trained model computes with its gates forced open) wrapped in
:class:`FinnStage`, whose forward is written so that it exports to QONNX and maps to FINN:

* input: raw pixels 0..255 (float tensor, annotated UINT8 in the QONNX graph) times 1/255,
  a scalar multiply FINN streamlines into the first thresholds;
* GAP on the activation grid: ``AdaptiveAvgPool2d(1)`` (→ GlobalAveragePool → FINN's
  GlobalAccPool) followed by a QuantIdentity that *shares* the block's output quantizer,
  so it rounds to exactly the same grid as ``pooled_on_grid`` (Brevitas rounds ties to even,
  ``pooled_on_grid`` and the integer executor half up: the only arithmetic difference).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import brevitas.nn as qnn
import numpy as np
import torch
from brevitas.quant import Uint8ActPerTensorFloat
from torch import nn

from tinydyn.errors import TinydynError
from tinydyn.models.lcnet import LCNet, LCNetConfig

GATES_NOTE = (
    "L-Net/C-Net gates are not built on the FPGA: every block and channel runs; "
    "early exits are built as stage partitions"
)


class ExportError(TinydynError):
    """A stage that cannot be exported or does not match the model it came from."""


@dataclass(frozen=True)
class StageSpec:
    """Stage ``index``: blocks 0..``last_block`` then head ``head`` ('final' or an exit block)."""

    index: int
    last_block: int
    head: str  # key in model.exit_heads, or "final"

    @property
    def name(self) -> str:
        return f"stage{self.index}"


def stage_specs(config: LCNetConfig) -> list[StageSpec]:
    """One stage per early exit (in block order), then the final classifier."""
    specs = [StageSpec(i, b, str(b)) for i, b in enumerate(sorted(config.exits))]
    specs.append(StageSpec(len(specs), sum(config.blocks) - 1, "final"))
    return specs


def stage_config(config: LCNetConfig, last_block: int) -> LCNetConfig:
    """The gate-free, exit-free architecture of blocks 0..last_block."""
    widths, blocks, left = [], [], last_block + 1
    for width, count in zip(config.widths, config.blocks, strict=True):
        if left <= 0:
            break
        widths.append(width)
        blocks.append(min(count, left))
        left -= count
    return LCNetConfig(
        in_channels=config.in_channels,
        input_size=config.input_size,
        num_classes=config.num_classes,
        stem_width=config.stem_width,
        widths=tuple(widths),
        blocks=tuple(blocks),
        exits=(),
        gates=False,
        leak=config.leak,
        classes=config.classes,
    )


def stage_lcnet(model: LCNet, spec: StageSpec) -> LCNet:
    """A gate-free LCNet computing stage ``spec`` with the trained weights (eval mode)."""
    sub = LCNet(stage_config(model.config, spec.last_block))
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("blocks."):
            index = int(key.split(".")[1])
            if index > spec.last_block or ".lnet." in key or ".cnet." in key:
                continue  # gates are not built: salience 1 everywhere
            state[key] = value
        elif key.startswith("exit_heads.") or key.startswith("head."):
            continue
        else:
            state[key] = value
    head = model.head if spec.head == "final" else model.exit_heads[spec.head]
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    result = sub.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("zero_hw_sentinel", "counter"))]
    if missing or result.unexpected_keys:
        raise ExportError(
            f"stage {spec.name} does not match the model's weights "
            f"({(missing + result.unexpected_keys)[0]}): "
            "the checkpoint and this tinydyn disagree on the architecture"
        )
    sub.eval()
    return sub


class FinnStage(nn.Module):
    """Exportable forward of a gate-free stage: uint8 pixels (as float) → int16-grid logits."""

    def __init__(self, net: LCNet) -> None:
        super().__init__()
        self.net = net
        last = net.blocks[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        # a copy of last.out_relu's quantizer (same learned scale): the pooled vector lands on
        # the activation grid. Passing the proxy itself would re-initialise the shared scale.
        self.pool_quant = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat)
        self.pool_quant.load_state_dict(last.out_relu.state_dict())
        self.pool_quant.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.stem_relu(n.stem_bn(n.stem(pixels * (1.0 / 255.0))))
        for block in n.blocks:
            h = block.relu1(block.bn1(block.conv1(x)))
            f = block.bn2(block.conv2(h))
            short = block.short_quant(block.short_bn(block.short_conv(x))) if block.projection else x
            x = block.out_relu(short + f)
        pooled = self.pool_quant(self.pool(x).flatten(1))
        return n.head(pooled)


@contextlib.contextmanager
def forced_open(model: LCNet) -> Iterator[LCNet]:
    """The trained model with every gate's salience forced to 1 (for checks)."""
    saved = []
    for block in model.blocks:
        if block.gated:
            saved.append((block, block.lnet.forward, block.cnet.forward))
            block.lnet.forward = lambda p: torch.ones(p.shape[0], 1)
            cout = block.conv1.out_channels
            block.cnet.forward = lambda p, c=cout: torch.ones(p.shape[0], c)
    try:
        yield model
    finally:
        for block, lnet, cnet in saved:
            block.lnet.forward, block.cnet.forward = lnet, cnet


@dataclass
class ExportedStage:
    spec: StageSpec
    path: Path
    module: FinnStage
    net: LCNet


def export_stage(model: LCNet, spec: StageSpec, path: Path) -> ExportedStage:
    """Write stage ``spec`` as a cleaned-up QONNX model with a UINT8 input."""
    try:
        from brevitas.export import export_qonnx
        from qonnx.core.datatype import DataType
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.cleanup import cleanup_model
    except ImportError as exc:
        raise ExportError(
            f"QONNX export needs qonnx/onnx ({exc.name} missing): run scripts/setup.sh"
        ) from None
    net = stage_lcnet(model, spec)
    stage = FinnStage(net).eval()
    cfg = model.config
    example = torch.zeros(1, cfg.in_channels, cfg.input_size, cfg.input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        # dynamo=False: brevitas 0.13.4 defaults to the dynamo exporter, which ignores opset 13
        export_qonnx(stage, args=example, export_path=str(path), opset_version=13, dynamo=False)
    wrapper = cleanup_model(ModelWrapper(str(path)))
    wrapper.set_tensor_datatype(wrapper.graph.input[0].name, DataType["UINT8"])
    wrapper.save(str(path))
    return ExportedStage(spec, path, stage, net)


def run_qonnx(path: Path, images: np.ndarray) -> np.ndarray:
    """Logits of a QONNX model for uint8 images, via qonnx's python execution (one by one)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    wrapper = ModelWrapper(str(path))
    iname, oname = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    outs = [execute_onnx(wrapper, {iname: img[None].astype(np.float32)})[oname] for img in images]
    return np.concatenate(outs).reshape(len(images), -1)


def torch_logits(module: nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(images.astype(np.float32))).numpy()
