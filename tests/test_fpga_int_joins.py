"""Integer residual joins (LCNetConfig.int_joins): one shared quantiser requantises branch and
shortcut at every join, the integer reference lowers it exactly, and finn-plus maps the add to
integer hardware with no float ElementwiseAdd/Mul left (a tiny model, a few training batches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_hw import require_finn
from tinydyn.models.lcnet import ConfigError, LCNet, LCNetConfig, act_scale

FLOAT_JOIN_OPS = ("ElementwiseAdd", "ElementwiseMul", "Add", "Mul")


def test_config_option():
    with pytest.raises(ConfigError, match="integer residual joins are for gate-free models"):
        LCNetConfig(int_joins=True)
    data = LCNetConfig(gates=False).to_json()
    assert "int_joins" not in data  # older checkpoints and IR fingerprints stay as they were
    assert LCNetConfig.from_json(data).int_joins is False
    assert LCNetConfig.from_json({**data, "int_joins": True}).to_json()["int_joins"] is True
    with pytest.raises(ConfigError, match="int_joins must be true or false, got a str: retrain the model"):
        LCNetConfig.from_json({**data, "int_joins": "yes"})


@pytest.fixture(scope="module")
def int_join_model(fashion_test):
    from tinydyn.data import load_dataset

    torch.manual_seed(0)
    train = load_dataset("fashion-mnist", "train")
    cfg = LCNetConfig(
        widths=(8, 16), blocks=(1, 1), stem_width=8, exits=(0,), gates=False, int_joins=True,
        classes=fashion_test.classes,
    )  # fmt: skip
    model = LCNet(cfg)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    model.train()
    for i in range(6):  # a few batches: scales and weights that are not the initial ones
        x = torch.from_numpy(train.images[i * 64 : (i + 1) * 64].astype(np.float32) / 255)
        y = torch.from_numpy(train.labels[i * 64 : (i + 1) * 64]).long()
        loss = sum(torch.nn.functional.cross_entropy(z, y) for z in model(x).logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_blocks_share_one_join_quantiser(int_join_model):
    for block in int_join_model.blocks:
        assert block.int_joins and not hasattr(block, "short_quant")
    x = torch.rand(2, 8, 28, 28)
    block = int_join_model.blocks[0]
    scale = float(act_scale(block.join_quant))
    with torch.no_grad():
        joined = block.join(x, torch.randn(2, 8, 28, 28))
    # branch and shortcut on one int8 grid: their sum is an integer multiple of its scale
    q = joined.numpy() / scale
    assert np.abs(q - np.round(q)).max() < 1e-3 and np.abs(q).max() <= 256


def test_integer_reference_lowers_the_join(int_join_model, fashion_test):
    from tinydyn.hw.checks import reference_tensors
    from tinydyn.models.lcnet_lower import lower

    ir = lower(int_join_model, "int_joins")
    kinds = {op.name: op.kind for op in ir.walk()}
    assert kinds["b0.short"] == "rescale" and kinds["b1.short"] == "conv2d"  # identity / projection
    assert kinds["b0.join"] == kinds["b1.join"] == "conv2d"
    images = fashion_test.images[:16]
    ref = reference_tensors(ir, images)
    m = int_join_model
    with torch.no_grad():
        x = torch.from_numpy(images.astype(np.float32) / 255)
        b0, _, _ = m.blocks[0](m.stem_relu(m.stem_bn(m.stem(x))), act_scale(m.stem_relu))
        b1, _, _ = m.blocks[1](b0, act_scale(m.blocks[0].out_relu))
    for name, out, block in (("b0.out", b0, m.blocks[0]), ("b1.out", b1, m.blocks[1])):
        diff = np.abs(np.round(out.numpy() / float(act_scale(block.out_relu))) - ref[name])
        # Brevitas rounds ties to even, the integer reference half up (docs/FPGA.md)
        assert (diff == 0).mean() >= 0.99 and (diff <= 1).mean() >= 0.995, name


def test_finn_maps_the_join_to_integer_hardware(int_join_model, tmp_path):
    """seg1 (the projection block and the final head) through the finn-plus front end: the join
    is one integer add, and no float ElementwiseAdd/Mul (nor float Add/Mul) is left."""
    require_finn()
    from qonnx.core.modelwrapper import ModelWrapper

    from tinydyn.hw.boards import get_board, register_with_finn
    from tinydyn.hw.export import export_partition
    from tinydyn.hw.finn_shims import load_finn
    from tinydyn.hw.flow import run_front_end
    from tinydyn.models.lcnet_fpga import FinnPartition, partition_specs

    build_dataflow = load_finn(tmp_path)
    board = get_board("zedboard")
    register_with_finn(board)
    spec = partition_specs(int_join_model.config)[-1]  # exit heads run on the PS: seg0, seg1
    assert spec.name == "seg1"
    part = export_partition(
        FinnPartition(int_join_model, spec), spec, (8, 28, 28), tmp_path / "seg1" / "model.onnx"
    )
    est = run_front_end(build_dataflow, board, part.path, tmp_path / "seg1", 2000, False)
    assert est.max_cycles > 0
    models = tmp_path / "seg1" / "intermediate_models"
    hw = ModelWrapper(str(models / "step_generate_estimate_reports.onnx"))
    joins = [n for n in hw.graph.node if n.op_type.startswith(FLOAT_JOIN_OPS)]
    assert [n.op_type for n in joins] == ["ElementwiseAdd_hls"]
    add = joins[0]
    assert all(hw.get_tensor_datatype(t).is_integer() for t in (*add.input, *add.output))
    # tinydyn's fork streamlining already moved the shared scale past the join: it adds integers
    forks = ModelWrapper(str(models / "step_tinydyn_streamline_forks.onnx"))
    first_add = next(n for n in forks.graph.node if n.op_type == "Add")
    assert forks.get_tensor_datatype(first_add.output[0]).is_integer()


def test_checks_count_a_join_step_in_output_steps(int_join_model):
    """A float32 tie at the shared join quantiser moves the block output by ceil(s_j / s_out)
    output steps, not one: the FPGA checks measure it so (the trained model: s_j / s_out = 2.18,
    one join tie = 2-3 output steps)."""
    from tinydyn.hw.checks import join_steps, requantisations
    from tinydyn.models.lcnet_fpga import partition_specs

    block = int_join_model.blocks[0]
    s_j, s_out = float(act_scale(block.join_quant)), float(act_scale(block.out_relu))
    seg0 = partition_specs(int_join_model.config)[0]
    assert join_steps(seg0, int_join_model) == [int(np.ceil(s_j / s_out))]
    assert requantisations(seg0, int_join_model) == 3 + int(np.ceil(s_j / s_out))
    # the behaviour it rests on: two branch values one join step apart, the same shortcut
    branch = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1) * s_j
    with torch.no_grad():
        out = block.out_relu(torch.full_like(branch, 10 * s_j) + branch)
    steps = np.round(out.numpy() / s_out).astype(int).ravel()
    assert steps[1] - steps[0] in (int(np.floor(s_j / s_out)), int(np.ceil(s_j / s_out)))


def test_deeper_segments_may_differ_from_the_integer_reference_on_more_elements():
    """One step at a requantiser's rounding boundary feeds on along a segment: the equal share
    demanded falls 1 % per requantisation beyond three (never below 90 %, never above 97 %)."""
    from tinydyn.hw.checks import MIN_INTEGER_EQUAL, min_integer_equal

    assert min_integer_equal(1) == min_integer_equal(3) == MIN_INTEGER_EQUAL == 0.97
    assert min_integer_equal(9) == pytest.approx(0.91)  # the bundled DDI ResNet's seg0: 93.7 % measured
    assert min_integer_equal(40) == 0.9
