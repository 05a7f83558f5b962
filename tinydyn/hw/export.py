"""QONNX export of dataflow partitions and their execution checks, for any model family.

What the partitions are (backbone segments and exit heads, run by the Zynq PS in turn) is the
family's decision (``ModelFamily.fpga_partitions`` / ``fpga_module``; LC-Net's in
:mod:`tinydyn.models.lcnet_fpga`). Here: writing one partition as a cleaned-up QONNX model with
a UINT8 input, and running it with qonnx or torch for the checks.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinydyn.errors import TinydynError


class ExportError(TinydynError):
    """A partition that cannot be exported or does not match the model it came from."""


@dataclass
class ExportedPartition:
    spec: Any  # the family's partition description (name, kind, stage, input/output tensors)
    path: Path
    module: nn.Module
    in_shape: tuple[int, ...]  # (C, H, W) of the integer input


def export_partition(
    module: nn.Module, spec: Any, in_shape: tuple[int, ...], path: Path
) -> ExportedPartition:
    """Write one partition (its torch module from the model family's ``fpga_module``) as a
    cleaned-up QONNX model with a UINT8 input."""
    try:
        from brevitas.export import export_qonnx
        from qonnx.core.datatype import DataType
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.cleanup import cleanup_model
    except ImportError as exc:
        raise ExportError(
            f"QONNX export needs qonnx/onnx ({exc.name} missing): run scripts/setup.sh"
        ) from None
    module = module.eval()
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
