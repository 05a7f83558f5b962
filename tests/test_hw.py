"""FPGA path on a small LC-Net: gates folded, backbone segments (exit heads on the PS),
export/integer/HW-graph checks, finn-plus front end (real), report, PS controller, package, errors.

The finn-plus build runs once per session (module fixture, ~1 minute on 2 cores); the tests
then read what it wrote. finn-plus is installed by scripts/setup_finn.sh (CI runs it).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import require
from tinydyn.hw.boards import BoardError, get_board
from tinydyn.hw.finn_shims import FinnMissingError, finn_available, load_finn
from tinydyn.hw.report import DoesNotFitError, check_fit
from tinydyn.quantize.policy import ExitPolicy


def require_finn() -> None:
    require(finn_available(), "finn-plus (scripts/setup_finn.sh)")


@pytest.fixture(scope="module")
def fpga_build(small_model, tmp_path_factory):
    require_finn()
    from tinydyn.hw.build import build_fpga

    out = tmp_path_factory.mktemp("fpga")
    messages: list[str] = []
    report = build_fpga(
        None,
        "zedboard",
        out,
        model=small_model,
        target_fps=3000,
        policy=ExitPolicy("confidence", 0.3),
        calibration_images=200,
        eval_images=200,
        check_images=6,
        static_sweep=(0.7, 1.0),
        progress=messages.append,
    )
    return report, out, messages


def test_logit_differences_are_traced_to_their_tie():
    """Each image beyond 1e-5 gets its cause; a difference no tie explains is flagged."""
    from tinydyn.hw.checks import explain_logit_differences, gap_ties

    scale = 1e-3
    brevitas = np.zeros((5, 3))
    qonnx = brevitas.copy()
    qonnx[1, 0] = scale  # one int16 step on one logit
    qonnx[2, :] = 5 * scale  # several steps: an exact pooling tie on this image
    qonnx[3, 1] = -4 * scale  # several steps: the partition's features differ on this image
    qonnx[4, 2] = 3 * scale  # several steps, no tie: a wrong export
    tie = np.array([False, False, True, False, False])
    step = np.array([False, False, False, True, False])
    causes = explain_logit_differences(qonnx, brevitas, scale, tie, step)
    assert {k: v.nonzero()[0].tolist() for k, v in causes.items()} == {
        "one_logit_step": [1],
        "gap_tie": [2],
        "feature_step": [3],
        "unexplained": [4],
    }
    # 2x2 pools: sums 2 and 6 are k + 1/2 on the grid (0.5, 1.5); 4 is not
    features = np.array([[[[1, 1], [0, 0]]], [[[1, 1], [1, 1]]], [[[3, 3], [0, 0]]]])
    assert gap_ties(features).tolist() == [True, False, True]


def test_gates_are_named_plainly(fpga_build):
    _, _, messages = fpga_build
    assert any(
        "L-Net/C-Net gates are not built on the FPGA: they are folded into static channel scales "
        "(their mean over 200 calibration images)" in m
        for m in messages
    )


def test_static_model_folds_mean_saliences(small_model, fashion_test):
    """Constant saliences folded into the BNs compute exactly the gated block with fixed gates."""
    import torch

    from tinydyn.models.lcnet import act_scale
    from tinydyn.models.lcnet_fpga import mean_saliences, static_model

    sal = mean_saliences(small_model, fashion_test.images[:32])
    assert set(sal.block) == {0, 1} and all(0.0 <= v <= 1.0 for v in sal.block.values())
    net = static_model(small_model, sal)
    assert not net.config.gates and net.config.exits == small_model.config.exits
    x = torch.from_numpy(fashion_test.images[:4].astype(np.float32) / 255.0)
    with torch.no_grad():
        stem = small_model.stem_relu(small_model.stem_bn(small_model.stem(x)))
        block = small_model.blocks[0]
        s_c = torch.as_tensor(sal.channel[0], dtype=torch.float32)[None, :, None, None]
        h = block.relu1(block.bn1(block.conv1(stem)) * s_c)
        f = block.bn2(block.conv2(h)) * sal.block[0]
        short = block.short_quant(block.short_bn(block.short_conv(stem))) if block.projection else stem
        want = block.out_relu(short + f)
        got, _, _ = net.blocks[0](net.stem_relu(net.stem_bn(net.stem(x))), act_scale(net.stem_relu))
    scale = float(act_scale(block.out_relu))
    assert np.abs(np.round(got.numpy() / scale) - np.round(want.numpy() / scale)).max() <= 1


def test_partitions_are_backbone_segments(small_model):
    from tinydyn.models.lcnet_fpga import partition_specs

    specs = partition_specs(small_model.config)  # blocks 0, 1; exit after block 0 (its head: on the PS)
    assert [(s.name, s.kind, list(s.blocks), s.stem, s.head) for s in specs] == [
        ("seg0", "segment", [0], True, None),
        ("seg1", "segment", [1], False, "final"),  # starts at the stored features: no recompute
    ]
    assert [s.input_tensor for s in specs] == ["input", "b0.out"]


def test_partitions_verify_against_brevitas_and_integer_reference(fpga_build):
    report, out, _ = fpga_build
    assert [s.name for s in report.stages] == ["seg0", "seg1"]
    seg0, seg1 = (s.check for s in report.stages)
    # segment 0 streams its uint8 feature map: HW graph = QONNX = Brevitas (but rare float ties),
    # and the integer reference's tensor to a step on nearly every element (see tinydyn.hw.checks)
    assert seg0["kind"] == "features"
    assert seg0["qonnx_vs_brevitas_max"] <= 2 and seg0["qonnx_vs_brevitas_equal"] >= 0.999
    assert seg0["hw_python_vs_qonnx_max"] <= 2 and seg0["hw_python_vs_qonnx_equal"] >= 0.999
    assert seg0["hw_python_vs_integer_equal"] >= 0.97  # another arithmetic: see tinydyn.hw.checks
    for c in (seg1,):
        assert c["kind"] == "logits"
        # within 1e-5 of Brevitas, or the difference traced to a rounding tie (none unexplained)
        assert c["images_unexplained"] == 0
        traced = c["images_one_logit_step"] + c["images_gap_tie"] + c["images_feature_step"]
        assert c["qonnx_vs_brevitas_equal"] + traced == c["images"]
        assert c["qonnx_class_vs_integer"] >= c["images"] - 1
        # finn-plus python execution of the HW-layer graph, finished in integers as on the PS
        assert (
            c["hw_python_vs_qonnx_equal"] >= c["images"] - c["images_gap_tie"] - c["images_feature_step"] - 1
        )
        assert c["hw_python_class_vs_qonnx"] >= c["images"] - 1
    for stage in report.stages:
        model = onnx.load(out / "stages" / stage.name / "model.onnx")
        assert any(n.op_type == "Quant" for n in model.graph.node)  # QONNX, not float ONNX


def test_hw_graph_is_fully_mapped_and_codegen_ran(fpga_build):
    _, out, _ = fpga_build
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    for stage in ("seg0", "seg1"):
        models = out / "stages" / stage / "intermediate_models"
        hw = ModelWrapper(str(models / "step_specialize_layers.onnx"))
        domains = {n.domain for n in hw.graph.node}
        assert all(d.startswith("finn.custom_op.fpgadataflow") for d in domains), domains
        assert (models / "step_hw_codegen.onnx").is_file()
    # segment 0 streams the uint8 NHWC feature map that the PS's head 0 and segment 1 read
    seg0 = ModelWrapper(str(out / "stages" / "seg0" / "intermediate_models" / "step_specialize_layers.onnx"))
    name = seg0.graph.output[0].name
    assert seg0.get_tensor_datatype(name) == DataType["UINT8"] and seg0.get_tensor_shape(name)[-1] == 8
    seg1 = ModelWrapper(str(out / "stages" / "seg1" / "intermediate_models" / "step_specialize_layers.onnx"))
    assert seg1.get_tensor_shape(seg1.graph.input[0].name) == [1, 28, 28, 8]


def test_estimates_reach_and_accuracy(fpga_build):
    report, out, _ = fpga_build
    data = json.loads((out / "report.json").read_text())
    assert data["part"] == "xc7z020clg484-1"
    reaches = [s["reach"] for s in data["stages"]]
    assert reaches[0] == 1.0 and 0.0 <= reaches[1] <= 1.0
    for s in data["stages"]:
        assert s["resources"]["LUT"] > 100 and s["resources"]["DSP"] >= 0
        assert s["max_cycles"] > 0 and s["latency_cycles"] >= s["max_cycles"]
        assert s["fps"] == pytest.approx(100e6 / s["max_cycles"])
        assert s["target_fps"] == pytest.approx(3000 * s["reach"])  # folded for the images reaching it
    # the throughput is the PS controller's batched schedule (tinydyn.hw.schedule) on these partitions
    from tinydyn.hw.schedule import Partition, PsCosts, Stage, closed_form
    from tinydyn.ir import IRModel

    sched = data["schedule"]
    batch, seg1_reach = sched["batch"], data["stages"][1]["reach"]
    # the schedule's stages: finn-plus's latency and II of each segment, the bytes its IODMAs move
    # (seg0: the 28x28x8 feature map; seg1: whole stream words of final accumulators), and exit
    # head 0's MACs on the PS (the integer IR's)
    ir = IRModel.load(out / "ir")
    exit0 = sorted(ir.exits(), key=lambda op: op.attrs["index"])[0].then[0]
    part = [Partition(s["name"], s["latency_cycles"], s["max_cycles"]) for s in data["stages"]]
    final_bytes = sched["stages"][1]["out_bytes"]  # 10 accumulators in whole stream words
    assert final_bytes >= 10
    stages = [
        Stage(part[0], 784, 28 * 28 * 8, 0, exit0.attrs["macs"]),
        Stage(part[1], 28 * 28 * 8, 0, final_bytes),
    ]
    assert sched["stages"][0] == {
        "segment": "seg0", "latency": stages[0].segment.latency, "ii": stages[0].segment.ii,
        "in_bytes": 784, "feat_bytes": 28 * 28 * 8, "out_bytes": 0, "head_macs": exit0.attrs["macs"],
    }  # fmt: skip
    costs = PsCosts(**sched["costs"])
    period = closed_form(stages, [batch, batch * seg1_reach], batch, costs)
    assert sched["early_exit"]["period_cycles"] == pytest.approx(period)
    # the PS (heads in software, decisions) is busy for less than a round: the fabric sets the rate
    assert sched["early_exit"]["ps_work_cycles"] < period
    assert data["early_exit_fps"] == pytest.approx(batch / period * 100e6)
    assert sched["early_exit"]["worst_case_fps"] <= data["early_exit_fps"] + 1e-6
    assert data["static_fps"] > 0 and data["speedup"] == pytest.approx(
        data["early_exit_fps"] / data["static_fps"]
    )
    for k in ("LUT", "BRAM_18K", "DSP"):
        assert data["static_resources"][k] <= data["total"][k] + 1e-9  # same budget at most
    # the total counts everything: every partition's layers, DWCs, FIFOs, unestimated layers and
    # IODMAs, and the shell once
    for s in data["stages"]:
        b = s["breakdown"]
        assert set(b) >= {"layers", "dwc", "fifo", "unestimated", "iodma"}
        assert b["iodma"]["LUT"] == 1084 + 1397 and b["iodma"]["BRAM_18K"] == 4
        assert b["unestimated"]["LUT"] > 0  # thresholds, GAP, joins: no longer 0
        assert s["resources"]["LUT"] == pytest.approx(
            sum(b[c]["LUT"] for c in ("layers", "dwc", "fifo", "unestimated", "iodma"))
        )
    assert data["stages"][0]["breakdown"]["skip_fifos"]["count"] == 1  # block 0's shortcut
    assert data["total"]["LUT"] == pytest.approx(
        sum(s["resources"]["LUT"] for s in data["stages"]) + data["shell"]["LUT"]
    )
    assert data["fits"] is True
    acc = data["accuracy"]
    assert set(acc) == {
        "FPGA model (gates folded), early exit",
        "FPGA model, final exit only",
        "dynamic model (gates, integer reference), early exit",
    }
    assert [e["exit"] for e in data["exit_table"]] == [0, "final"]
    assert sum(e["fpga_share"] for e in data["exit_table"]) == pytest.approx(1.0)
    text = (out / "report.txt").read_text()
    assert "early exit" in text and "FPGA model (gates folded)" in text
    run = json.loads((out / "run.json").read_text())
    assert run["versions"]["finn-plus"] == "1.6.1"
    assert "step_hw_codegen" in run["steps_run"]["seg0"]
    assert run["saliences"]["images"] == 200


def test_bitstream_package(fpga_build):
    _, out, _ = fpga_build
    script = out / "build_bitstream.sh"
    assert script.is_file() and script.stat().st_mode & 0o100
    meta = json.loads((out / "build.json").read_text())
    assert [p["name"] for p in meta["partitions"]] == ["seg0", "seg1"]
    assert meta["partition_steps"] == ["step_hw_codegen", "step_hw_ipgen", "step_set_fifo_depths"]
    # the script fetches finn-plus's pinned dependencies first; without network (proxies that refuse
    # every connection) it stops with one line naming what to fetch
    dead = "http://127.0.0.1:9"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(out),
        "TINYDYN_PYTHON": sys.executable,
        "GIT_TERMINAL_PROMPT": "0",
    }
    env |= {"https_proxy": dead, "http_proxy": dead, "HTTPS_PROXY": dead, "HTTP_PROXY": dead}
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"build_bitstream: cannot fetch finn-plus's pinned dependencies into {out / 'finn_deps'}: "
        "finn-hlslib (https://github.com/Xilinx/finn-hlslib.git @ 8d979e2bdced), attention-hlslib"
    )
    assert "avnet-bdf" in lines[0] and "nlohmann-json" in lines[0]
    # a python without tinydyn: one line naming the fix
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 1 and "cannot import tinydyn: set TINYDYN_PYTHON" in res.stderr


def test_ps_controller_compiles_for_cortex_a9(fpga_build):
    _, out, _ = fpga_build
    from tests.conftest import require_tool
    from tinydyn.hw.controller import CFLAGS

    gcc = require_tool("arm-none-eabi-gcc")
    ps = out / "ps"
    header = (ps / "td_fpga_model.h").read_text()
    # partitions seg0, seg1 in order: two IODMAs each; exit head 0 runs on the PS (its FC weights
    # in the header), the last stage's head is in its segment
    assert "TD_FPGA_STAGE0_IDMA TD_FPGA_IDMA0_BASE" in header
    assert "TD_FPGA_STAGE1_IDMA TD_FPGA_IDMA1_BASE" in header
    assert "TD_FPGA_STAGE1_ODMA TD_FPGA_ODMA1_BASE" in header
    assert "td_stage0_weight[" in header and "td_stage1_weight" not in header
    # predicted windows: 4 KiB each from 0x40000000, in the order finn-plus's shell assigns them
    addresses = (ps / "td_fpga_addresses.h").read_text()
    assert "TD_FPGA_IDMA0_BASE 0x40000000u" in addresses and "TD_FPGA_ODMA0_BASE 0x40001000u" in addresses
    assert "TD_FPGA_IDMA1_BASE 0x40002000u" in addresses and "TD_FPGA_ODMA1_BASE 0x40003000u" in addresses
    assert "IDMA2" not in addresses
    assert "td_exp_lut[256]" in header
    from tinydyn.ir import IRModel

    # the board reports the saved IR's fingerprint: tinydyn measure --ir DIR/ir accepts it
    assert f'#define TD_FPGA_MODEL_ID "{IRModel.load(out / "ir").model_id()}"' in header
    for src in ("td_fpga.c", "td_fpga_zynq.c", "protocol.c", "td_zynq_mmu.c", "td_zynq_uart.c"):
        res = subprocess.run(
            [gcc, *CFLAGS.split(), "-c", str(ps / src), "-o", str(ps / (src + ".o"))],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stderr


def test_ps_integer_head_matches_reference(tmp_path):
    """td_fpga_logit/td_fpga_unpack (host-compiled) equal the reference requantisation."""
    from tests.conftest import require_tool
    from tinydyn.hw.controller import ps_source_dir
    from tinydyn.ops.arith import requantize

    cc = require_tool("gcc")
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**20), 2**20, 64)
    bias = rng.integers(-5000, 5000, 64)
    mult = rng.integers(1, 2**30, 64)
    shift = rng.integers(20, 40, 64)
    main = tmp_path / "main.c"
    rows = ",".join(f"{{{a},{b},{m},{s}}}" for a, b, m, s in zip(acc, bias, mult, shift, strict=True))
    main.write_text(
        '#include <stdio.h>\n#include "td_fpga.h"\n'
        "uint32_t td_hal_cycles(void){return 0;}\n"
        "void td_hal_cache_flush(const void*a,size_t n){(void)a;(void)n;}\n"
        "void td_hal_cache_invalidate(const void*a,size_t n){(void)a;(void)n;}\n"
        "uintptr_t td_hal_phys(const void*a){return (uintptr_t)a;}\n"
        f"static const long long t[64][4]={{{rows}}};\n"
        'int main(void){for(int i=0;i<64;++i)printf("%d\\n",td_fpga_logit((int32_t)t[i][0],(int32_t)t[i][1],'
        "t[i][2],(uint8_t)t[i][3]));\n"
        "uint8_t buf[8]={0xff,0x0f,0x80,0x7f,0,0,0,0};\n"
        'for(int i=0;i<3;++i)printf("%d\\n",td_fpga_unpack(buf,(uint32_t)i,12,3,40));\n'
        "uint8_t pad[6]={0xff,0x0f,0x00,0x00,0x08,0x00};\n"
        'for(int i=0;i<2;++i)printf("%d\\n",td_fpga_unpack(pad,(uint32_t)i,12,1,24));'
        "\nreturn 0;}\n"
    )
    exe = tmp_path / "t"
    fw = Path(__file__).resolve().parents[1] / "tinydyn" / "firmware"
    res = subprocess.run(
        [
            cc,
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{ps_source_dir()}",
            f"-I{fw}",
            str(main),
            str(ps_source_dir() / "td_fpga.c"),
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    got = [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True).stdout.split()]
    total = (acc + bias).reshape(1, -1)
    want = requantize(total, np.ones_like(total), mult, shift, (-32768, 32767)).reshape(-1)
    assert got[:64] == want.tolist()
    # 12-bit fields of ff 0f 80 7f 00, LSB first: 0xfff (-1), 0x800 (-2048), 0x07f (127)
    # one 12-bit field per stream word padded to 24 bits: ff 0f 00 | 00 08 00 -> -1, -2048
    assert got[64:] == [-1, -2048, 127, -1, -2048]


def test_unknown_board_is_one_line():
    with pytest.raises(BoardError, match="unknown FPGA board 'pynq-z9': use one of zedboard"):
        get_board("pynq-z9")


def test_missing_finn_names_the_setup_script(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "finn.xsi", None)  # import finn.xsi now raises ImportError
    with pytest.raises(FinnMissingError, match="scripts/setup_finn.sh"):
        load_finn(tmp_path)


def test_design_that_does_not_fit_is_an_error(fpga_build):
    report, _, _ = fpga_build
    big = dataclasses.replace(report, total={"LUT": 90_000.0, "BRAM_18K": 10.0, "DSP": 1.0}, fits=False)
    with pytest.raises(DoesNotFitError, match=r"does not fit the xc7z020clg484-1 \(LUT 90000/53200\)"):
        check_fit(big, get_board("zedboard"))


def test_unsupported_layer_is_one_line(tmp_path):
    require_finn()
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    from tinydyn.hw.boards import register_with_finn
    from tinydyn.hw.flow import UnsupportedLayerError, run_front_end

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Cos", ["x"], ["y"])], "g", [x], [y])
    wrapper = ModelWrapper(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    wrapper.set_tensor_datatype("x", DataType["UINT8"])
    path = tmp_path / "cos.onnx"
    wrapper.save(str(path))
    build_dataflow = load_finn(tmp_path)
    board = get_board("zedboard")
    register_with_finn(board)
    with pytest.raises(UnsupportedLayerError, match="finn-plus cannot map cos") as info:
        run_front_end(build_dataflow, board, path, tmp_path / "cos", 100, False)
    assert "\n" not in str(info.value)


def test_link_graph_holds_every_partition(fpga_build):
    """`python -m tinydyn.hw.finish --link-only`: finn-plus's Zynq preparation (IODMAs, dataflow
    partitions) for every partition, merged into one link graph, as a user runs it."""
    _, out, _ = fpga_build
    res = subprocess.run(
        [sys.executable, "-m", "tinydyn.hw.finish", str(out), "--link-only"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from tinydyn.hw.link import iodma_instances

    merged = ModelWrapper(str(out / "zynq" / "link.onnx"))
    names = [n.name for n in merged.graph.node]
    assert names == [f"{p}_StreamingDataflowPartition_{i}" for p in ("seg0", "seg1") for i in range(3)]
    assert iodma_instances(merged) == ["idma0", "odma0", "idma1", "odma1"]
    # each chain: IODMA in → the partition's dataflow → IODMA out
    for p in ("seg0", "seg1"):
        kinds = []
        for i in range(3):
            node = merged.get_node_from_name(f"{p}_StreamingDataflowPartition_{i}")
            child = ModelWrapper(getCustomOp(node).get_nodeattr("model"))
            kinds.append({n.op_type for n in child.graph.node})
        assert kinds[0] == {"IODMA_hls"} and kinds[2] == {"IODMA_hls"}
        assert "IODMA_hls" not in kinds[1] and len(kinds[1]) > 1


def test_zynq_project_holds_every_partition(fpga_build, tmp_path, monkeypatch):
    """MakeZYNQProject's Vivado script for the merged link graph: every partition's IODMAs
    instantiated and given the register windows the PS controller expects. The stitched IPs are
    what Vitis HLS + Vivado would make (not installable here): the test stands them in with the
    metadata CreateStitchedIP records; Vivado itself is then missing, so the script is written
    and the run stops with a one-line error."""
    _, out, _ = fpga_build
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from tinydyn.hw.boards import register_with_finn
    from tinydyn.hw.link import LinkError, make_project, predicted_addresses

    load_finn(tmp_path)
    board = get_board("zedboard")
    register_with_finn(board)
    from tinydyn.hw.finish import link_only

    merged = ModelWrapper(str(link_only(out, progress=lambda m: None)))
    for node in merged.graph.node:
        child_path = getCustomOp(node).get_nodeattr("model")
        child = ModelWrapper(child_path)
        stitch = tmp_path / node.name
        (stitch / "ip").mkdir(parents=True)
        for inner in child.graph.node:
            getCustomOp(inner).set_nodeattr("ip_path", str(stitch / "ip"))
        iodma = child.graph.node[0].op_type == "IODMA_hls"
        child.set_metadata_prop("vivado_stitch_proj", str(stitch))
        child.set_metadata_prop("vivado_stitch_vlnv", f"xilinx_finn:finn:{node.name}:1.0")
        child.set_metadata_prop(
            "vivado_stitch_ifnames", repr({"axilite": ["s_axi_control_0"] if iodma else [], "aximm": []})
        )
        child.save(child_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises((LinkError, FileNotFoundError), match="vivado"):
        make_project(merged, board)
    tcl = (Path(merged.get_metadata_prop("vivado_pynq_proj")) / "ip_config.tcl").read_text()
    assert "set BOARD ZedBoard" in tcl and "set FPGA_PART xc7z020clg484-1" in tcl
    assert '$BOARD == "ZedBoard"' in tcl and "get_board_parts -quiet *zedboard*" in tcl
    assert "set NUM_AXILITE 4" in tcl and "set NUM_AXIMM 4" in tcl
    lines = tcl.splitlines()
    assigned = [ln.split()[1].split("/")[0] for ln in lines if ln.startswith("assign_axi_addr_proc ")]
    assert assigned == list(predicted_addresses(2))
    for p, part in enumerate(("seg0", "seg1")):
        assert (
            f"create_bd_cell -type ip -vlnv xilinx_finn:finn:{part}_StreamingDataflowPartition_0:1.0 idma{p}"
            in lines
        )
        compute = f"{part}_StreamingDataflowPartition_1"
        assert (
            f"connect_bd_intf_net [get_bd_intf_pins {compute}/s_axis_0] [get_bd_intf_pins idma{p}/m_axis_0]"
            in lines
        )
        assert (
            f"connect_bd_intf_net [get_bd_intf_pins odma{p}/s_axis_0] [get_bd_intf_pins {compute}/m_axis_0]"
            in lines
        )


def test_hardware_handoff_addresses(tmp_path):
    from tinydyn.hw.link import LinkError, addresses_header, read_hwh_addresses

    hwh = tmp_path / "top.hwh"
    hwh.write_text(
        '<MODULE INSTANCE="zynq_ps"><MEMORYMAP>\n'
        '<MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_BASEADDR" BASEVALUE="0x40000000" HIGHNAME="C_HIGHADDR" '
        'HIGHVALUE="0x40000FFF" INSTANCE="idma0" IS_DATA="TRUE" MEMTYPE="REGISTER"\n'
        'SLAVEBUSINTERFACE="s_axi_control_0"/>\n'
        '<MEMRANGE ADDRESSBLOCK="Reg" BASENAME="C_BASEADDR" BASEVALUE="0x40010000" HIGHNAME="C_HIGHADDR" '
        'HIGHVALUE="0x40010FFF" INSTANCE="odma0" IS_DATA="TRUE" MEMTYPE="REGISTER"\n'
        'SLAVEBUSINTERFACE="s_axi_control_0"/>\n'
        '<MEMRANGE BASEVALUE="0x41200000" INSTANCE="axi_gpio_0"/>\n'
        "</MEMORYMAP></MODULE>\n"
    )
    addresses = read_hwh_addresses(hwh)
    assert addresses == {"idma0": 0x40000000, "odma0": 0x40010000}
    header = addresses_header(addresses, "read from top.hwh")
    assert "#define TD_FPGA_ODMA0_BASE 0x40010000u" in header
    other = tmp_path / "other.hwh"
    other.write_text('<MEMRANGE BASEVALUE="0x41200000" INSTANCE="axi_gpio_0"/>')
    with pytest.raises(LinkError, match="no idma/odma address ranges"):
        read_hwh_addresses(other)


def test_finish_without_a_build_is_one_line(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "tinydyn.hw.finish", str(tmp_path), "--link-only"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1
    assert (
        res.stderr.strip()
        == f"finish: {tmp_path} has no build.json: run 'tinydyn fpga --out {tmp_path}' first"
    )


def test_bundled_fpga_checkpoint_is_the_folded_fine_tuned_model():
    from tinydyn.models.checkpoint import bundled_checkpoint, bundled_fpga_checkpoint, load_model

    model, payload = load_model(bundled_fpga_checkpoint())
    gated, _ = load_model(bundled_checkpoint())
    assert not model.config.gates and gated.config.gates
    assert model.config.exits == gated.config.exits and model.config.widths == gated.config.widths
    assert payload["train"]["folded_from"].endswith("fashion_lcnet.pt")
    assert model.config.int_joins  # one shared quantiser per residual join: integer adds on the FPGA
    assert payload["train"]["epochs_done"] == 4
    assert "--int-joins" in payload["train"]["commands"][-1]


def test_assumed_reach_must_name_every_stage(small_model, tmp_path):
    require_finn()
    from tinydyn.hw.build import build_fpga
    from tinydyn.hw.export import ExportError

    with pytest.raises(ExportError, match="assumed_reach needs 2 stage reaches, got 1"):
        build_fpga(
            None, "zedboard", tmp_path, model=small_model, calibration_images=32, eval_images=32,
            assumed_reach=[1.0], progress=lambda m: None,
        )  # fmt: skip


def test_post_hls_resources_are_read_with_ff(tmp_path):
    from tinydyn.hw.finish import hls_resources

    report = tmp_path / "report"
    report.mkdir()
    assert hls_resources(tmp_path) is None  # before step_hw_ipgen ran (no Vitis HLS here)
    (report / "estimate_layer_resources_hls.json").write_text(
        json.dumps(
            {"MVAU_hls_0": {"LUT": 10, "FF": 20}, "total": {"LUT": 10, "FF": 20, "BRAM_18K": 1, "DSP": 0}}
        )
    )
    assert hls_resources(tmp_path) == {"LUT": 10.0, "FF": 20.0, "BRAM_18K": 1.0, "DSP": 0.0}


def pack_fields(values: np.ndarray, bits: int, per_word: int, word_bits: int) -> bytes:
    """What finn-plus's output IODMA writes: stream words of ``per_word`` two's-complement fields
    of ``bits`` bits, LSB first, each word padded to ``word_bits``, words back to back."""
    total = 0
    for i, v in enumerate(values.tolist()):
        total |= (int(v) & ((1 << bits) - 1)) << ((i // per_word) * word_bits + (i % per_word) * bits)
    return total.to_bytes(-(-len(values) // per_word) * word_bits // 8, "little")


def c_bytes(name: str, rows: list[bytes]) -> str:
    body = ",".join(str(b) for row in rows for b in row)
    return f"static const uint8_t {name}[{sum(len(r) for r in rows)}] = {{{body}}};"


def test_ps_controller_runs_the_batched_schedule_like_the_integer_reference(
    fpga_build, fashion_test, tmp_path
):
    """td_fpga_run_batch on the host, its IODMA register accesses going to a register-level model
    (tests/iodma_model) whose partitions answer with what finn-plus's python execution of their
    HW graphs produced: every segment runs on whole batches (repeat count = images), exit head 0
    runs on the PS on segment 0's feature maps, the images that stay are compacted bit for bit
    into segment 1's input (the model finds each one's feature map among the known ones, in
    order), the runs, their repeat counts and buffer offsets are exactly the schedule of
    tinydyn.hw.schedule (the report's timing model), and every image gets the class, exit, logits
    and MACs of the integer policy and reference (head 0: the integer GAP + FC on those feature
    maps; final: the last segment's accumulators)."""
    from tests.conftest import require_tool
    from tinydyn.hw.build import accumulator_layout
    from tinydyn.hw.checks import finish_logits, run_hw_python
    from tinydyn.hw.controller import ps_source_dir
    from tinydyn.hw.schedule import (
        Partition,
        PsCosts,
        Stage,
        arena_layout,
        heads_for_policy,
        simulate,
        stage_regions,
    )
    from tinydyn.ir import IRModel
    from tinydyn.ops.arith import global_average_pool
    from tinydyn.quantize.executor import execute

    cc = require_tool("gcc")
    _, out, _ = fpga_build
    ir = IRModel.load(out / "ir")
    images = fashion_test.images[:16]
    n = len(images)
    hw = {p: out / "stages" / p / "intermediate_models" / "step_convert_to_hw.onnx" for p in ("seg0", "seg1")}
    feat = run_hw_python(hw["seg0"], images)  # NHWC, what segment 0 streams to DDR
    nchw = feat.transpose(0, 3, 1, 2)
    acc1 = run_hw_python(hw["seg1"], nchw).reshape(n, -1)
    layout1 = accumulator_layout(out / "stages" / "seg1")
    assert feat.min() >= 0 and feat.max() <= 255
    parts_in = [
        [im.transpose(1, 2, 0).tobytes() for im in images],
        [f.astype(np.uint8).tobytes() for f in feat],
    ]
    parts_out = [parts_in[1], [pack_fields(a, *layout1) for a in acc1]]
    vectors = [
        "#define TD_TEST_PARTITIONS 2",
        f"#define TD_TEST_IMAGES {n}",
        "static const uint32_t td_test_idma[2] = {TD_FPGA_IDMA0_BASE, TD_FPGA_IDMA1_BASE};",
        "static const uint32_t td_test_odma[2] = {TD_FPGA_ODMA0_BASE, TD_FPGA_ODMA1_BASE};",
        f"static const uint32_t td_test_in_bytes[2] = {{{', '.join(str(len(p[0])) for p in parts_in)}}};",
        f"static const uint32_t td_test_out_bytes[2] = {{{', '.join(str(len(p[0])) for p in parts_out)}}};",
    ]
    for p in range(2):
        vectors += [c_bytes(f"td_test_in{p}", parts_in[p]), c_bytes(f"td_test_out{p}", parts_out[p])]
    vectors += [
        "static const uint8_t *const td_test_in[2] = {td_test_in0, td_test_in1};",
        "static const uint8_t *const td_test_out[2] = {td_test_out0, td_test_out1};",
    ]
    (tmp_path / "vectors.h").write_text("\n".join(vectors) + "\n")
    header = (out / "ps" / "td_fpga_model.h").read_text()
    assert "#define TD_FPGA_BATCH 64u" in header  # the build's batch (build_fpga's default)
    exe = tmp_path / "ps_host"
    fw = Path(__file__).resolve().parents[1] / "tinydyn" / "firmware"
    model_dir = Path(__file__).resolve().parent / "iodma_model"
    res = subprocess.run(
        [cc, "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-DTD_FPGA_REG_HOOKS", f"-I{tmp_path}",
         f"-I{out / 'ps'}", f"-I{ps_source_dir()}", f"-I{fw}", str(model_dir / "iodma_model.c"),
         str(ps_source_dir() / "td_fpga.c"), "-o", str(exe)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr

    # the schedule model on the same partitions (timing is irrelevant here: runs and offsets are)
    t = Partition("-", 1, 1)
    stages = [
        Stage(t, len(parts_in[0][0]), len(parts_in[1][0]), 0, 1),
        Stage(t, len(parts_in[1][0]), 0, len(parts_out[1][0])),
    ]
    # exit head 0 as the integer reference computes it on these feature maps: GAP rounded half up,
    # the FC's integer accumulators, the requantisation
    exit0 = sorted(ir.exits(), key=lambda op: op.attrs["index"])[0].then[0]
    acc0 = global_average_pool(nchw.astype(np.int64)) @ ir.array(exit0, "weight").astype(np.int64).T
    logits0, logits1 = finish_logits(acc0, ir, "0"), finish_logits(acc1, ir, "final")
    macs_exit0 = execute(ir, images, ExitPolicy("confidence", 0.0)).macs  # every image leaves at 0
    macs_stay = execute(ir, images, ExitPolicy("margin", 1e9)).macs  # none leaves, head 0 computed
    macs_none = execute(ir, images, ExitPolicy("none")).macs  # head 0 not computed
    # thresholds at the median over these images: about half leave at exit 0, half stay
    scale = ir.tensors[sorted(ir.exits(), key=lambda op: op.attrs["index"])[0].attrs["logits"]].scale
    top2 = np.sort(logits0, axis=1)[:, -2:]
    margin = float(np.median(top2[:, 1] - top2[:, 0])) * scale
    z = np.exp((logits0 - logits0.max(axis=1, keepdims=True)) * scale)
    confidence = float(np.median(z.max(axis=1) / z.sum(axis=1)))
    policies = [ExitPolicy("none"), ExitPolicy("confidence", confidence), ExitPolicy("margin", margin)]
    left = {}
    for policy, batch in zip(policies * 2, (5, 5, 5, 1, 3, 16), strict=True):
        integer = policy.to_integer(ir)
        args = {
            "none": [],
            "confidence": [str(integer.confidence_t16)],
            "margin": [str(m) for m in integer.margins],
        }
        run = subprocess.run(
            [str(exe), str(batch), policy.kind, *args[policy.kind]],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        leave = integer.decide(logits0, 0) if policy.kind != "none" else np.zeros(n, dtype=bool)
        left[policy.kind] = int(leave.sum())
        count = 1 if batch == 1 else n  # batch 1: td_fpga_infer, one image
        exits = (~leave[:count]).astype(int)
        assert lines[0] == f"arena {arena_layout(stage_regions(stages), batch)[1]}"
        assert lines[1 + sum(ln.startswith("run ") for ln in lines)] == "rc 0"  # after every run
        sim = simulate(stages, exits, batch, PsCosts(), heads_for_policy(policy.kind, 2))
        want_runs = [
            f"run {r.partition} {len(r.images)} {int(r.partition > 0)}:{r.in_offset} 1:{r.out_offset} "
            + ",".join(map(str, r.images))
            for r in sim.runs
        ]
        assert [ln for ln in lines if ln.startswith("run ")] == want_runs, (policy.kind, batch)
        rows = [ln.split()[1:] for ln in lines if ln.startswith("img ")]
        assert len(rows) == count
        for i, row in enumerate(rows):
            logits = logits0[i] if leave[i] else logits1[i]
            macs = macs_exit0[i] if leave[i] else (macs_none[i] if policy.kind == "none" else macs_stay[i])
            want = [str(int(np.argmax(logits))), "0" if leave[i] else "1", str(int(macs))]
            assert row[:3] == want, (policy.kind, batch, i)
            assert [int(x) for x in row[3:]] == logits.tolist(), (policy.kind, batch, i)
    # the policies chosen make some images leave at exit 0 and some stay
    assert 0 < left["margin"] < n and 0 < left["confidence"] < n and left["none"] == 0
