"""tinydyn's per-instance figures for the finn-plus layers whose own estimate is 0 LUT
(tinydyn.hw.resources.per_instance): built on real finn-plus custom ops, checked against the
structural counts docs/FPGA.md states, and checked to be what finn-plus leaves out."""

from __future__ import annotations

import math

import pytest
from onnx import helper

from tinydyn.hw.finn_shims import finn_available, load_finn
from tinydyn.hw.resources import COUNTERS, per_instance

from .conftest import require


@pytest.fixture(scope="module", autouse=True)
def finn(tmp_path_factory):
    require(finn_available(), "finn-plus (scripts/setup_finn.sh)")
    load_finn(tmp_path_factory.mktemp("finn"))


def hw_op(op_type: str, inputs: int = 1, **attrs):
    from qonnx.custom_op.registry import getCustomOp

    node = helper.make_node(
        op_type,
        [f"in{i}" for i in range(inputs)],
        ["out"],
        domain="finn.custom_op.fpgadataflow.hls",
        backend="fpgadataflow",
        **attrs,
    )
    return node, getCustomOp(node)


def concat(streams: list[int], simd: int = 4):
    return hw_op(
        "StreamingConcat_hls",
        inputs=len(streams),
        SIMD=simd,
        ChannelsPerStream=streams,
        inputDataTypes=["UINT8"] * len(streams),
        numInputVectors=[1, 8, 8],
    )


def pool(
    function: str, channels: int = 36, pe: int = 4, in_dt: str = "UINT8", out_dt: str = "UINT8", acc: int = 0
):
    return hw_op(
        "Pool_hls",
        Channels=channels,
        PE=pe,
        KernelSize=[2, 2],
        Function=function,
        OutImgDims=[7, 7],
        InputDataType=in_dt,
        OutputDataType=out_dt,
        AccumBits=acc,
    )


def test_finn_plus_estimates_these_at_zero():
    """The reason for tinydyn's figures: finn-plus 1.6.1 has no LUT estimate for either."""
    for node, op in (concat([12, 12]), pool("MaxPool")):
        assert op.lut_estimation("xc7z020clg400-1") == 0, node.op_type


@pytest.mark.parametrize(
    ("streams", "mux_luts"), [([12, 12], 1), ([24, 12, 12, 12], 1), ([24] + [12] * 5, 2)]
)
def test_concat_is_a_mux_per_output_bit(streams, mux_luts):
    node, op = concat(streams, simd=4)
    width = 8 * 4  # UINT8 x SIMD 4
    assert op.get_outstream_width() == width
    assert per_instance(node, op) == {"LUT": width * mux_luts + COUNTERS, "FF": width + COUNTERS}


def test_pools_count_their_lanes_and_channel_state():
    node, op = pool("MaxPool", channels=36, pe=4)
    # per lane an 8-bit compare and select; 36 channels x 8 bits of running maxima in LUT RAM
    assert per_instance(node, op) == {
        "LUT": 4 * 16 + math.ceil(36 * 8 / 64) + COUNTERS,
        "FF": 4 * (8 + 8) + COUNTERS,
    }
    # the DenseNet transition's window sum (tinydyn's _sum_pools): a 10-bit adder per lane
    node, op = pool("AccPool", channels=36, pe=2, out_dt="UINT10", acc=10)
    assert per_instance(node, op) == {
        "LUT": 2 * 10 + math.ceil(36 * 10 / 64) + COUNTERS,
        "FF": 2 * (10 + 8) + COUNTERS,
    }
    # more lanes cost more LUTs at the same channel count
    wide, narrow = per_instance(*pool("MaxPool", pe=12)), per_instance(*pool("MaxPool", pe=1))
    assert wide["LUT"] > narrow["LUT"] and wide["FF"] > narrow["FF"]
