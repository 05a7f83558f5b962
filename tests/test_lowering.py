"""Lowering Brevitas LC-Nets to the IR: the integer model computes what Brevitas computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tinydyn.cost.torch_cost import static_backbone_macs
from tinydyn.models.lcnet import LCNetConfig
from tinydyn.models.lcnet_lower import lower
from tinydyn.quantize.builder import OverflowRiskError, UnsupportedLayerError
from tinydyn.quantize.executor import execute, trace
from tinydyn.quantize.policy import ExitPolicy
from tinydyn.train.loop import to_float

from .conftest import make_model


def _trace(ir, images):
    return trace(ir, images, ExitPolicy()).tensors


def test_integer_tensors_match_brevitas_within_one_step(small_model, small_ir, fashion_test):
    images = fashion_test.images[:200]
    env = _trace(small_ir, images)
    m = small_model
    with torch.no_grad():
        x = m.stem_relu(m.stem_bn(m.stem(to_float(images))))
        stem = x.numpy() / small_ir.tensors["stem"].scale
        y, s_block, s_chan = m.blocks[0](x, m.stem_relu.act_quant.scale())
        out = m(to_float(images))
    # identical up to rare rounding ties (Brevitas rounds half to even, the spec half up)
    assert np.abs(stem - env["stem"]).max() <= 1.0001
    assert np.mean(np.abs(stem - env["stem"]) > 0.01) < 0.01
    for salience, name in ((s_block, "b0.s_block"), (s_chan, "b0.s_chan")):
        diff = np.abs(np.round(salience.numpy() * 255) - env[name])
        assert diff.max() <= 1 and np.mean(diff > 0) < 0.05  # float vs int32 bias rounding
    block_out = y.numpy() / small_ir.tensors["b0.out"].scale
    assert np.mean(np.abs(block_out - env["b0.out"]) > 1.0001) < 0.01
    final = out.logits[-1].numpy().argmax(axis=1)
    assert np.mean(final == execute(small_ir, images).predictions) >= 0.97


def test_gates_really_skip_work(small_ir, fashion_test):
    res = execute(small_ir, fashion_test.images[:300])
    static = small_ir.meta["static_backbone_macs"]
    assert res.skipped_blocks.sum() > 0 and res.skipped_channels.sum() > 0
    # an image with a skipped block executed fewer MACs than one with every block running
    assert res.macs[res.skipped_blocks > 0].max() < res.macs[res.skipped_blocks == 0].min()
    assert res.macs.min() < static


def test_static_macs_of_resnet8_topology():
    cfg = LCNetConfig(
        in_channels=3,
        input_size=32,
        stem_width=16,
        widths=(16, 32, 64),
        blocks=(1, 1, 1),
        exits=(),
        gates=False,
    )
    model = make_model(cfg)
    # MLPerf Tiny ResNet-8, 12.50 M MACs: stem 442,368 + stage1 4,718,592 + stage2 3,670,016
    # + stage3 3,670,016 (convs and 1x1 shortcuts) + FC 640
    assert static_backbone_macs(model) == 12_501_632
    ir = lower(model)
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    assert execute(ir, images).macs.tolist() == [12_501_632] * 4


def test_budget_policy_respects_exits(small_ir, fashion_test):
    images = fashion_test.images[:100]
    first_exit = small_ir.exits()[0]
    tight = execute(small_ir, images, ExitPolicy("budget", 1))
    assert set(tight.exits.tolist()) == {0}
    loose = execute(small_ir, images, ExitPolicy("budget", 10**9))
    assert set(loose.exits.tolist()) == {1}
    # the final exit is reached only when the rest of the network fits in the budget
    assert first_exit.attrs["next_cost_max"] > 0


def test_unsupported_module_is_named(small_model):
    small_model.blocks[0].extra = nn.Dropout(0.1)
    try:
        with pytest.raises(UnsupportedLayerError, match=r"'blocks\.0\.extra' of type Dropout"):
            lower(small_model)
    finally:
        del small_model.blocks[0].extra


def test_overflow_risk_is_refused_naming_the_layer():
    cfg = LCNetConfig(widths=(8,), blocks=(1,), stem_width=8, exits=(), gates=False)
    model = make_model(cfg)
    with torch.no_grad():
        model.head.fc.bias.fill_(1e9)  # a bias no int32 holds after scaling
    with pytest.raises(OverflowRiskError, match="final.fc"):
        lower(model)
