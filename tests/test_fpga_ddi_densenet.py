"""`tinydyn fpga` on a DDI DenseNet: gates not mapped (the FPGA model is the gating-off network),
segments cut after the dense layers RADI branches follow, each branch a partition of its own; the
dense concatenation as finn-plus StreamingConcat layers on UINT8 streams of one grid, the
transition's 2x2 average pool as an exact window sum (finn-plus Pool) and thresholds that round it
half up like the integer reference; through the real finn-plus front end, and the PS controller
(tinydyn/hw/ps/td_fpga.c) on the host against the IODMA register model. The helpers are those of
tests/test_fpga_ddi.py (the ResNet), imported.

The build (a tiny DenseNet, growth 4, dense blocks (2, 1): branches after units 0 and 1, of which it
builds branch 0 only: seg0 = stem, dense layer 0; branch0; seg1 = dense layer 1, whose input forks
into its conv and its concatenation, the transition, dense layer 2 and the final classifier; a few
training batches; no HLS/RTL code generation, one static baseline folding) runs once per module,
~2 minutes on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from tests.test_ddi_models import make_ddi, small_config
from tests.test_fpga_ddi import BUILT, check_gating_off, check_ps_controller, small_build, train_briefly


@pytest.fixture(scope="module")
def dense_model(fashion_test):
    """Gates that decide (make_ddi), the backbone and branches trained with every gate open (the
    gate-free model, loaded back): a tiny DenseNet learns slowly (40 % after 200 batches, ~20 s)."""
    from tinydyn.models.ddi_fpga import static_model

    model = make_ddi(small_config("densenet", blocks=(2, 1)), fashion_test.images, seed=1)
    torch.manual_seed(0)
    model.load_state_dict(train_briefly(static_model(model), 200).state_dict(), strict=False)
    return model.eval()


@pytest.fixture(scope="module")
def dense_build(dense_model, tmp_path_factory):
    return small_build(dense_model, tmp_path_factory.mktemp("fpga_ddi_densenet"), BUILT)


def test_partitions_of_a_densenet(dense_model):
    """Segments end at the concatenated feature map (u<i>.feat) of the dense layer a branch follows
    and run the transitions of the stages that start inside them; together they hold every
    backbone op of the integer reference exactly once (their MAC prefixes)."""
    from tinydyn.models.ddi_fpga import branch_subset, partition_specs, static_model, whole_network_spec
    from tinydyn.models.ddi_lower import lower
    from tinydyn.ops import op_kind

    cfg = small_config("densenet")  # dense blocks (3, 3, 2): branches after units 0, 1 | 3, 4 | 6
    rows = [
        (s.name, s.input_tensor, s.output_tensor, s.transitions, s.mac_prefixes) for s in partition_specs(cfg)
    ]
    assert rows == [
        ("seg0", "input", "u0.feat", (), ("stem", "u0")),
        ("branch0", "u0.feat", None, (), ()),
        ("seg1", "u0.feat", "u1.feat", (), ("u1",)),
        ("branch1", "u1.feat", None, (), ()),
        ("seg2", "u1.feat", "u3.feat", (1,), ("t1", "u2", "u3")),
        ("branch2", "u3.feat", None, (), ()),
        ("seg3", "u3.feat", "u4.feat", (), ("u4",)),
        ("branch3", "u4.feat", None, (), ()),
        ("seg4", "u4.feat", "u6.feat", (2,), ("t2", "u5", "u6")),
        ("branch4", "u6.feat", None, (), ()),
        ("seg5", "u6.feat", None, (), ("u7",)),
    ]
    assert [len(s.blocks) for s in partition_specs(cfg)] == [1, 1, 1, 1, 3, 1, 1, 1, 3, 1, 1]
    whole = whole_network_spec(cfg)
    assert (whole.transitions, whole.mac_prefixes[:3]) == ((1, 2), ("stem", "t1", "t2"))
    # a segment that starts with a transition (branch 1 after the last dense layer of stage 0)
    sub = partition_specs(branch_subset(cfg, (1,)))
    assert [(s.name, s.input_tensor, s.transitions) for s in sub] == [
        ("seg0", "input", ()),
        ("branch0", "u1.feat", ()),
        ("seg1", "u1.feat", (1, 2)),
    ]
    ir = lower(static_model(dense_model), "static")
    backbone = {}
    for op in ir.walk([op for op in ir.ops if op.kind != "exit"]):
        if op_kind(op.kind).macs(op):
            backbone[op.name] = op.name.split(".")[0]
    held = [p for s in partition_specs(dense_model.config) if s.kind == "segment" for p in s.mac_prefixes]
    assert len(held) == len(set(held)) and set(held) == set(backbone.values())


def test_fpga_model_is_the_gating_off_network(dense_model, fashion_test):
    check_gating_off(dense_model, fashion_test.images[:200], 3)


def test_build_report(dense_build, dense_model, fashion_test):
    """Three partitions, each checked against Brevitas and the integer reference; every dense
    concatenation is a StreamingConcat of UINT8 NHWC streams, the transition a sliding window and
    an accumulating Pool; no float layer and no Shuffle remain; the report says the gates are not
    mapped and gives the FPGA model's accuracy next to the gated model's."""
    import json

    from qonnx.core.modelwrapper import ModelWrapper

    report, out = dense_build
    assert [(r.name, r.stage) for r in report.stages] == [("seg0", 0), ("branch0", 0), ("seg1", 1)]
    assert any("gates are not mapped on the FPGA" in n for n in report.notes)
    assert any("dense concatenations join integer UINT8 streams" in n for n in report.notes)
    assert set(report.accuracy) == {
        "FPGA model (gates not mapped), early exit",
        "FPGA model, final exit only",
        "dynamic model (gates, integer reference), early exit",
    }
    assert report.accuracy["FPGA model, final exit only"] > 0.3  # trained: the partitions carry a model
    # the exit table's dynamic-model columns are the gated model's exits at the built branch and the final
    # one (its exits 0 and 2: branch 1 is not built)
    from tinydyn.models.ddi_lower import lower
    from tinydyn.quantize.executor import execute
    from tinydyn.quantize.policy import ExitPolicy

    gated = execute(lower(dense_model, "gated"), fashion_test.images[:200], ExitPolicy("confidence", 0.9))
    assert [row["exit"] for row in report.exit_table] == [0, "final"]
    assert [row["dynamic_share"] for row in report.exit_table] == [
        pytest.approx(float((gated.exits == k).mean())) for k in (0, 2)
    ]
    checks = json.loads((out / "run.json").read_text())["checks"]
    assert checks["seg0"]["kind"] == "features" and checks["seg0"]["hw_python_vs_qonnx_equal"] >= 0.999
    assert checks["seg0"]["hw_python_vs_integer_equal"] >= 0.97
    for name in ("branch0", "seg1"):
        assert checks[name]["kind"] == "logits" and checks[name]["images_unexplained"] == 0
        assert checks[name]["hw_python_class_vs_integer"] >= 5
    kinds = {}
    for name in ("seg0", "branch0", "seg1"):
        graph = ModelWrapper(str(out / "stages" / name / "intermediate_models" / "step_convert_to_hw.onnx"))
        kinds[name] = [node.op_type for node in graph.graph.node]
        concats = [n for n in graph.graph.node if n.op_type == "StreamingConcat"]
        for node in concats:
            assert {graph.get_tensor_datatype(i).name for i in node.input} == {"UINT8"}
        assert not {"Shuffle", "ElementwiseAdd", "ElementwiseMul", "Concat", "AveragePool"} & set(kinds[name])
        assert kinds[name].count("Transpose") <= 1  # only the layout at the input edge
    assert kinds["seg0"].count("StreamingConcat") == 1 and kinds["seg1"].count("StreamingConcat") == 2
    assert kinds["seg1"][:2] == ["Transpose", "DuplicateStreams"]  # dense layer 1's input: conv and concat
    assert "Pool" in kinds["seg1"] and "StreamingConcat" not in kinds["branch0"]
    assert report.early_exit_fps > 0 and report.static_fps > 0


def test_transition_rounds_half_up_like_the_integer_reference(dense_build, fashion_test):
    """The transition's 2x2 pool in finn-plus: an exact window sum (Pool, UINT10) and thresholds at
    4t + 2, so the pooled map is (sum + 2) // 4, the integer reference's avgpool, on every element
    of the map the HW graph pools, ties (sum = 4k + 2, where Brevitas's half-to-even alone would
    round down half the time) included."""
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    from tinydyn.hw.checks import reference_tensors
    from tinydyn.ir import IRModel
    from tinydyn.ops.arith import avg_pool

    _, out = dense_build
    graph = ModelWrapper(str(out / "stages" / "seg1" / "intermediate_models" / "step_convert_to_hw.onnx"))
    pool = next(n for n in graph.graph.node if n.op_type == "Pool")
    assert graph.get_tensor_datatype(pool.output[0]).name == "UINT10"
    window = graph.find_producer(pool.input[0])
    assert window.op_type == "ConvolutionInputGenerator"
    assert graph.find_producer(window.input[0]).op_type == "StreamingConcat"  # dense layer 1's output
    thresholding = graph.find_consumer(pool.output[0])
    assert thresholding.op_type == "Thresholding"
    thresholds = graph.get_initializer(thresholding.input[1])
    np.testing.assert_array_equal(thresholds, np.tile(4 * np.arange(255) + 2, (thresholds.shape[0], 1)))
    ir = IRModel.load(out / "ir")
    ref = reference_tensors(ir, fashion_test.images[:4])
    name = graph.graph.input[0].name
    maps, pooled = [], []
    for x in ref["u0.feat"]:
        ctx = execute_onnx(graph, {name: x[None].astype(np.float32)}, return_full_exec_context=True)
        maps.append(ctx[window.input[0]].transpose(0, 3, 1, 2).astype(np.int64))  # streamed NHWC
        pooled.append(ctx[thresholding.output[0]].transpose(0, 3, 1, 2))
    feat, got = np.concatenate(maps), np.concatenate(pooled)
    assert (feat == ref["u1.feat"]).mean() > 0.99  # the map is dense layer 1's output
    np.testing.assert_array_equal(got, avg_pool(feat, 2, 2, 0))
    sums = feat[:, :, 0::2, 0::2] + feat[:, :, 1::2, 0::2] + feat[:, :, 0::2, 1::2] + feat[:, :, 1::2, 1::2]
    assert (sums % 4 == 2).mean() > 0.05  # ties are common: half-to-even would differ on about half


def test_ps_controller_runs_the_densenet_partitions_like_the_integer_reference(
    dense_build, fashion_test, tmp_path
):
    check_ps_controller(dense_build[1], fashion_test.images[:16], tmp_path)


def test_a_pool_finn_plus_cannot_map_is_one_line(tmp_path):
    """A DenseNet transition pool the flow cannot turn into integers (here: its input scale also
    feeds another layer, so the pool sees floats) is left as it is and named in one line before
    finn-plus's later steps fail on it obscurely."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    from tinydyn.hw.steps import _sum_pools, step_tinydyn_check_mapped

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 6, 6])
    nodes = [
        helper.make_node("Mul", ["x", "s"], ["xs"], name="Mul_0"),
        helper.make_node(
            "AveragePool", ["xs"], ["y"], name="AveragePool_0", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Relu", ["xs"], ["z"], name="Relu_0"),
    ]
    graph = helper.make_graph(
        nodes, "g", [x], [y, z], initializer=[onnx.numpy_helper.from_array(np.array(0.5, np.float32), "s")]
    )
    model = ModelWrapper(helper.make_model(graph)).transform(InferShapes())
    model.set_tensor_datatype("x", DataType["UINT8"])
    model = _sum_pools(model)
    assert [n.op_type for n in model.graph.node] == ["Mul", "AveragePool", "Relu"]
    with pytest.raises(ValueError) as err:
        step_tinydyn_check_mapped(model, None)
    assert str(err.value) == (
        "unmapped layers with no finn-plus HW form: Mul (Mul_0), AveragePool (AveragePool_0), Relu (Relu_0)"
    )
    # the same pool on the integers themselves is mapped: QuantAvgPool2d (the exact sum) then 1/4
    path = Path(tmp_path) / "pool.onnx"
    nodes = [
        helper.make_node(
            "AveragePool", ["x"], ["p"], name="AveragePool_0", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Mul", ["p", "s"], ["y"], name="Mul_0"),
    ]
    graph = helper.make_graph(
        nodes, "g", [x], [y], initializer=[onnx.numpy_helper.from_array(np.array(0.5, np.float32), "s")]
    )
    onnx.save(helper.make_model(graph), path)
    model = ModelWrapper(str(path)).transform(InferShapes())
    model.set_tensor_datatype("x", DataType["UINT8"])
    model = _sum_pools(model)
    assert [n.op_type for n in model.graph.node] == ["Transpose", "QuantAvgPool2d", "Transpose", "Mul", "Mul"]
    from qonnx.core.onnx_exec import execute_onnx

    ints = np.random.default_rng(0).integers(0, 256, (1, 4, 6, 6)).astype(np.float32)
    sums = ints.reshape(1, 4, 3, 2, 3, 2).sum(axis=(3, 5))
    np.testing.assert_array_equal(execute_onnx(model, {"x": ints})["y"], sums / 4 * np.float32(0.5))
