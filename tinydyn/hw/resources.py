"""Resources of everything the Zynq design instantiates, not only what finn-plus's layer estimates
cover: the fit decision uses this total.

Per partition (docs/FPGA.md, "Resources: what is counted"):

* ``layers``: finn-plus's analytical estimates of its compute layers (``estimate_layer_resources``);
* ``dwc`` and ``fifo``: the stream width converters and FIFOs the Zynq build inserts, estimated by
  finn-plus itself: the partition's final folded model goes through ``InsertDWC`` and
  ``InsertFIFO`` as in ``ZynqBuild``, and each inserted node gives its own LUT/BRAM estimate. FIFO
  depths are finn-plus's folding defaults, except the FIFO on each residual shortcut (between a
  DuplicateStreams and its join), which must hold what arrives while the branch works: sized here
  for one whole feature map (an upper bound; ``step_set_fifo_depths`` sizes them by RTL
  simulation on a Vivado machine);
* ``unestimated``: layers finn-plus counts as 0 LUT (or counts only their memory): documented
  per-instance figures, :data:`PER_INSTANCE`;
* ``iodma``: one input and one output IODMA, measured per-instance figures (:data:`IODMA_IN`,
  :data:`IODMA_OUT`).

Once per design, ``shell``: what finn-plus 1.6.1's Zynq shell template
(``finn/transformation/fpgadataflow/templates.py``, the ``zynq_7000`` branch, with ``NUM_AXIMM``
and ``NUM_AXILITE`` = the number of IODMAs) instantiates around them: ``processing_system7``
(hard PS: no fabric), ``axi_interconnect_0`` (``NUM_MI`` = one AXI-lite window per IODMA, fed by
the PS's M_AXI_GP0: an AXI3→AXI-lite protocol converter and a crossbar), ``smartconnect_0``
(``NUM_SI`` = one AXI-MM port per IODMA, onto S_AXI_HP0), ``clk_wiz_0`` (one PLL: a clocking
primitive, a handful of LUTs, not counted) and ``proc_sys_reset_0`` (:func:`shell_resources`).

The shell and the IODMAs do not depend on the folding rate (:func:`fixed_resources`); the
automatic target search scales only the rest (``tinydyn.hw.build.next_target``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

KEYS = ("LUT", "FF", "BRAM_18K", "DSP")

# Vivado 2022.1 post-synthesis utilisation of a FINN Zynq build on the same die (xc7z020clg400-1,
# 100 MHz, 64-bit AXI-MM): github.com/bol-edu/2022-fall-ntu,
# Final/High_Accuracy_Image_Classifier_Inference_on_PYNQ-Z2/impl_result/resnet10_84.51%_vivado_zynq_proj/
# finn_zynq_link.runs/top_{idma0_0,odma0_0,smartconnect_0_0,xbar_0,auto_pc_0,rst_zynq_ps_100M_0}_synth_1/
IODMA_IN = {"LUT": 1084, "FF": 1617, "BRAM_18K": 2, "DSP": 0}  # top_idma0_0: 1 RAMB36
IODMA_OUT = {"LUT": 1397, "FF": 1910, "BRAM_18K": 2, "DSP": 0}  # top_odma0_0: 1 RAMB36
# measured with 2 slave interfaces (5,556 LUT, 6,863 FF: idma0's read-only and odma0's write-only
# AXI-MM port onto one HP port); scaled linearly per slave interface (one per IODMA): an
# assumption, likely an upper bound (the master-side exit pipeline to HP0 is shared by all SIs;
# one measured configuration cannot separate it)
SMARTCONNECT_PER_SI = {"LUT": 5556 / 2, "FF": 6863 / 2, "BRAM_18K": 0, "DSP": 0}
# AXI-lite: the crossbar measured with 2 master interfaces (135 LUT, 130 FF), scaled per interface;
# its protocol converter (421 LUT, 562 FF) and the reset block (19 LUT, 40 FF) once
AXI_LITE_PER_MI = {"LUT": 135 / 2, "FF": 130 / 2, "BRAM_18K": 0, "DSP": 0}
SHELL_FIXED = {"LUT": 421 + 19, "FF": 562 + 40, "BRAM_18K": 0, "DSP": 0}

# fp32 operators per PE, for the float residual joins (Xilinx Floating-Point Operator cores as
# Vitis HLS instantiates them on 7-series with DSP48E1): assumed round figures, not measured here
FP32_ADD = {"LUT": 300, "FF": 400, "BRAM_18K": 0, "DSP": 2}
FP32_MUL = {"LUT": 100, "FF": 150, "BRAM_18K": 0, "DSP": 3}
INT_TO_FP32 = {"LUT": 150, "FF": 200, "BRAM_18K": 0, "DSP": 0}
# the word/pixel counters and handshake of a streaming layer finn-plus does not estimate: an
# assumed round figure (two ~16-bit counters on carry chains)
COUNTERS = 32


def _zero() -> dict[str, float]:
    return {k: 0.0 for k in KEYS}


def _add(into: dict[str, float], res: dict[str, float], times: float = 1.0) -> None:
    for k in KEYS:
        into[k] = into.get(k, 0.0) + float(res.get(k, 0.0)) * times


def _bits(op: Any, which: str) -> int:
    from qonnx.core.datatype import DataType

    name = op.get_nodeattr(which) if which in op.get_nodeattr_types() else None
    return DataType[name].bitwidth() if name else 32


def _pe(op: Any) -> int:
    for attr in ("PE", "SIMD", "NumChannels"):
        if attr in op.get_nodeattr_types():
            return max(int(op.get_nodeattr(attr)), 1)
    return 1


def per_instance(node: Any, op: Any) -> dict[str, float] | None:
    """tinydyn's figure for a layer whose logic finn-plus does not estimate (None: finn-plus's own
    estimate covers it). Structural counts (7-series: ~1 LUT per compared/added bit on a carry
    chain, one register stage per stream word), see docs/FPGA.md."""
    kind = node.op_type.rsplit("_", 1)[0]
    width = float(op.get_instream_width()) if hasattr(op, "get_instream_width") else 32.0
    pe = _pe(op)
    if kind == "Thresholding":  # finn-plus counts the threshold memory only: add the comparators
        in_bits, out_bits = _bits(op, "inputDataType"), _bits(op, "outputDataType")
        return {"LUT": pe * out_bits * in_bits, "FF": pe * out_bits * (in_bits + out_bits)}
    if kind == "DuplicateStreams":
        outs = (
            int(op.get_nodeattr("NumOutputStreams")) if "NumOutputStreams" in op.get_nodeattr_types() else 2
        )
        return {"LUT": width * outs / 2, "FF": width * outs}
    if kind == "FMPadding":
        return {"LUT": 2 * width + 100, "FF": width + 64}
    if kind == "GlobalAccPool":
        acc = _bits(op, "outputDataType") if "outputDataType" in op.get_nodeattr_types() else 32
        return {"LUT": pe * acc, "FF": 2 * pe * acc}
    if kind == "StreamingConcat":  # DenseNet joins: an n-way mux per output bit, one LUT6 per 4:1
        n = len(op.get_nodeattr("ChannelsPerStream"))
        out_width = float(op.get_outstream_width())
        return {"LUT": out_width * math.ceil(max(n - 1, 1) / 3) + COUNTERS, "FF": out_width + COUNTERS}
    if kind == "Pool":  # window max or sum (DenseNet transitions, DDI branches' max pools)
        in_bits = _bits(op, "InputDataType")
        acc = int(op.get_nodeattr("AccumBits") or 0) or _bits(op, "OutputDataType")
        per_pe = 2 * in_bits if op.get_nodeattr("Function") == "MaxPool" else acc  # compare + select, or add
        # one running value per channel between the window's words, in LUT RAM (64 bits a LUT)
        state = math.ceil(int(op.get_nodeattr("Channels")) * max(acc, in_bits) / 64)
        return {"LUT": pe * per_pe + state + COUNTERS, "FF": pe * (acc + in_bits) + COUNTERS}
    if kind in ("ElementwiseAdd", "ElementwiseMul", "AddStreams"):
        out_dt = op.get_nodeattr("out_dtype") if "out_dtype" in op.get_nodeattr_types() else "INT32"
        if out_dt.startswith("FLOAT"):
            res = _zero()
            _add(res, FP32_ADD if kind == "ElementwiseAdd" else FP32_MUL, pe)
            _add(res, INT_TO_FP32, pe)  # integer stream operand converted to fp32 per PE
            return res
        bits = _bits(op, "outputDataType") if "outputDataType" in op.get_nodeattr_types() else 32
        return {"LUT": pe * bits, "FF": pe * bits}
    return None


def _estimate(op: Any, part: str) -> dict[str, float]:
    return {
        "LUT": float(op.lut_estimation(part) or 0),
        "FF": 0.0,
        "BRAM_18K": float(op.bram_estimation(part) or 0),
        "DSP": float(op.dsp_estimation(part) or 0) if hasattr(op, "dsp_estimation") else 0.0,
    }


BUFFERING = ("MVAU", "VVAU", "ConvolutionInputGenerator")  # layers that hold back a stream


def _path_to_join(model: Any, node: Any) -> tuple[list[Any], int]:
    """The nodes from ``node`` down to the next node with two dynamic inputs (the residual join),
    and how many buffering layers lie on the way."""
    path, buffering = [], 0
    while node is not None and len(path) < 64:
        dynamic = [i for i in node.input if i and model.get_initializer(i) is None]
        if path and len(dynamic) > 1:
            return path, buffering
        path.append(node)
        buffering += node.op_type.startswith(BUFFERING)
        node = model.find_consumer(node.output[0]) if node.output else None
    return path, buffering


def _size_skip_fifos(model: Any) -> int:
    """Give the first FIFO on every residual shortcut (the output of a DuplicateStreams with fewer
    buffering layers before the join) one whole feature map of depth, the upper bound of what
    arrives while the branch works; returns how many."""
    from qonnx.custom_op.registry import getCustomOp

    sized = 0
    for node in model.graph.node:
        if not node.op_type.startswith("DuplicateStreams"):
            continue
        paths = [_path_to_join(model, model.find_consumer(out)) for out in node.output]
        if len(paths) < 2:
            continue
        path, _ = min(paths, key=lambda p: p[1])
        fifo_node = next((n for n in path if n.op_type.startswith("StreamingFIFO")), None)
        if fifo_node is None:
            continue
        fifo = getCustomOp(fifo_node)
        words = int(math.prod(fifo.get_folded_output_shape()[:-1]))
        fifo.set_nodeattr("depth", max(int(fifo.get_nodeattr("depth")), words))
        # the Zynq-7000 has no URAM, which finn-plus's automatic choice would pick for a deep FIFO
        fifo.set_nodeattr("ram_style", "block")
        sized += 1
    return sized


def partition_resources(estimate_model: Path, part: str) -> dict[str, dict[str, float]]:
    """Everything one partition instantiates, by category (see the module docstring)."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveUniqueNodeNames

    model = ModelWrapper(str(estimate_model))
    out = {"dwc": _zero(), "fifo": _zero(), "unestimated": _zero(), "iodma": _zero()}
    for node in model.graph.node:
        extra = per_instance(node, getCustomOp(node))
        if extra is not None:
            _add(out["unestimated"], extra)
    model = model.transform(InsertDWC())
    model = model.transform(SpecializeLayers(part))
    model = model.transform(InsertFIFO(create_shallow_fifos=True))
    model = model.transform(SpecializeLayers(part))
    model = model.transform(GiveUniqueNodeNames())
    out["skip_fifos"] = {"count": float(_size_skip_fifos(model))}
    for node in model.graph.node:
        if node.op_type.startswith("StreamingDataWidthConverter"):
            _add(out["dwc"], _estimate(getCustomOp(node), part))
        elif node.op_type.startswith("StreamingFIFO"):
            _add(out["fifo"], _estimate(getCustomOp(node), part))
    _add(out["iodma"], IODMA_IN)
    _add(out["iodma"], IODMA_OUT)
    return out


def shell_resources(partitions: int) -> dict[str, float]:
    """The Zynq shell finn-plus's MakeZYNQProject builds around ``partitions`` IODMA pairs."""
    res = _zero()
    _add(res, SHELL_FIXED)
    _add(res, SMARTCONNECT_PER_SI, 2 * partitions)  # one AXI-MM port per IODMA
    _add(res, AXI_LITE_PER_MI, 2 * partitions)  # one register window per IODMA
    return res


def with_extras(layers: dict[str, float], extras: dict[str, dict[str, float]]) -> dict[str, float]:
    """A partition's total: finn-plus's layer estimate plus every category above."""
    total = {k: float(layers.get(k, 0.0)) for k in KEYS}
    for name in ("dwc", "fifo", "unestimated", "iodma"):
        _add(total, extras.get(name, {}))
    return total


def fixed_resources(
    breakdowns: list[dict[str, dict[str, float]]], shell: dict[str, float]
) -> dict[str, float]:
    """The part of a design's total that does not depend on the folding rate: every partition's
    IODMA pair and the shell."""
    res = _zero()
    for b in breakdowns:
        _add(res, b.get("iodma", {}))
    _add(res, shell)
    return res
