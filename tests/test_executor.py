"""The integer reference executor: arithmetic rules, dynamic control and MAC accounting."""

from __future__ import annotations

import numpy as np
import pytest

from tinydyn.ir import IRModel, Op, TensorSpec
from tinydyn.ops.arith import global_average_pool, requantize, round_shift
from tinydyn.quantize.executor import InputShapeError, execute
from tinydyn.quantize.policy import ExitPolicy, PolicyError, confident, exp_lut, lut_multiplier


def test_round_shift_rounds_half_up_including_negatives():
    values = np.array([5, 6, 7, -5, -6, -7, 0])  # /4: 1.25 1.5 1.75 -1.25 -1.5 -1.75 0
    assert round_shift(values, np.int64(2)).tolist() == [1, 2, 2, -1, -1, -2, 0]


def test_requantize_applies_gate_residual_and_clamp_per_channel():
    acc = np.array([[1000, -1000]])  # (N=1, C=2)
    gate = np.array([[255, 0]])
    mult, shift = np.array([3, 3]), np.array([10, 10])
    residual, res_mult = np.array([[10, 10]]), np.array([1024, 2048])
    out = requantize(acc, gate, mult, shift, (-32768, 32767), residual, res_mult)
    # channel 0: (1000*255*3 + 10*1024 + 512) >> 10 = 757; channel 1: gate 0 → (20480+512)>>10 = 20
    assert out.tolist() == [[757, 20]]
    assert (
        requantize(
            np.array([[10**6]]), np.array([[1]]), np.array([1 << 20]), np.array([1]), (-128, 127)
        ).item()
        == 127
    )


def test_gap_is_rounded_mean():
    x = np.zeros((1, 2, 2, 2), dtype=np.int64)
    x[0, 0] = [[1, 2], [2, 1]]  # sum 6 / 4 = 1.5 → 2
    x[0, 1] = [[1, 1], [1, 2]]  # 5/4 = 1.25 → 1
    assert global_average_pool(x).tolist() == [[2, 1]]


def test_exp_lut_and_confidence_rule():
    lut = exp_lut()
    assert lut[0] == 65535 and lut[16] == round(65535 * np.exp(-1)) and lut[-1] == 0
    scale = 0.125  # one logit unit = 1/8 nat = 2 LUT steps
    mult = lut_multiplier(scale)
    # two classes 16 units (2 nats) apart: p_max = 1 / (1 + e^-2) = 0.881
    logits = np.array([[16, 0]])
    assert confident(logits, mult, int(0.88 * 65536)).item()
    assert not confident(logits, mult, int(0.89 * 65536)).item()


def test_policy_rejects_bad_thresholds():
    with pytest.raises(PolicyError, match="outside"):
        ExitPolicy("confidence", 1.5)
    with pytest.raises(PolicyError, match="unknown exit policy"):
        ExitPolicy("sometimes")


def _guard_model() -> IRModel:
    """input(1x2x2) → linear gate on GAP → guard{conv 1x1 with block gate + residual | rescale} → exit."""
    t = {
        "input": TensorSpec("input", (1, 2, 2), "uint8", 1 / 255),
        "input.pool": TensorSpec("input.pool", (1,), "uint8", 1 / 255, "vector"),
        "s": TensorSpec("s", (1,), "uint8", 1 / 255, "salience"),
        "y": TensorSpec("y", (1, 2, 2), "uint8", 1 / 255),
        "y.pool": TensorSpec("y.pool", (1,), "uint8", 1 / 255, "vector"),
        "logits": TensorSpec("logits", (2,), "int16", 1.0, "logits"),
    }
    gate = Op("linear", "gate", {"x": "input.pool"}, "s", {"out_range": [0, 255], "macs": 1, "role": "gate"})
    conv = Op(
        "conv2d",
        "conv",
        {"x": "input", "residual": "input"},
        "y",
        {"stride": 1, "padding": 0, "groups": 1, "out_range": [0, 255], "macs": 4, "block_gate": "s"},
    )
    skip = Op("rescale", "skip", {"x": "input"}, "y", {"out_range": [0, 255]})
    head = Op("linear", "head", {"x": "y.pool"}, "logits", {"out_range": [-32768, 32767], "macs": 2})
    ops = [
        Op("gap", "input.pool", {"x": "input"}, "input.pool"),
        gate,
        Op("guard", "guard", attrs={"gate": "s"}, then=[conv], orelse=[skip]),
        Op("gap", "y.pool", {"x": "y"}, "y.pool"),
        Op(
            "exit",
            "final",
            attrs={"index": 0, "final": True, "logits": "logits", "next_cost_max": 0},
            then=[head],
        ),
    ]
    arrays = {
        # salience = clamp(pool - 100): images with a mean below 100 skip the block
        "gate.weight": np.array([[1]], np.int8),
        "gate.bias": np.array([-100], np.int32),
        "gate.mult": np.array([2], np.int64),
        "gate.shift": np.array([1], np.int32),
        "conv.weight": np.array([[[[2]]]], np.int8),
        "conv.bias": np.array([0], np.int32),
        "conv.mult": np.array([1], np.int64),
        "conv.shift": np.array([8], np.int32),
        "conv.res_mult": np.array([256], np.int64),
        "skip.res_mult": np.array([256], np.int64),
        "skip.shift": np.array([8], np.int32),
        "head.weight": np.array([[1], [-1]], np.int8),
        "head.bias": np.array([0, 200], np.int32),
        "head.mult": np.array([2, 2], np.int64),
        "head.shift": np.array([1, 1], np.int32),
    }
    return IRModel("guard", "input", t, ops, arrays, ["a", "b"])


def test_guard_skips_block_and_counts_only_the_gate():
    model = _guard_model()
    dark = np.full((1, 1, 2, 2), 50, np.uint8)
    bright = np.full((1, 1, 2, 2), 120, np.uint8)
    res = execute(model, np.concatenate([dark, bright]))
    assert res.skipped_blocks.tolist() == [1, 0]
    assert res.macs.tolist() == [1 + 2, 1 + 4 + 2]  # skipped: gate + head only
    # bright: s = 20; y = (240*20*1 + 120*256 + 128) >> 8 = 35648 >> 8 = 139; logits = [139, -139+200]
    assert res.logits[1].tolist() == [139, 61]
    assert res.logits[0].tolist() == [50, 150]  # skipped: y = x
    assert res.predictions.tolist() == [1, 0]


def test_gating_off_runs_the_static_backbone(small_ir, fashion_test):
    images = fashion_test.images[:50]
    res = execute(small_ir, images, ExitPolicy("none", gating=False))
    assert (res.macs == small_ir.meta["static_backbone_macs"]).all()  # gates cost nothing, skip nothing
    assert res.skipped_blocks.sum() == 0 and res.skipped_channels.sum() == 0
    dynamic = execute(small_ir, images, ExitPolicy("none"))
    assert dynamic.skipped_channels.sum() > 0


def test_ir_roundtrip_and_version_check(tmp_path, small_ir):
    small_ir.save(tmp_path)
    loaded = IRModel.load(tmp_path)
    assert loaded.model_id() == small_ir.model_id()
    images = np.random.default_rng(0).integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
    a, b = execute(small_ir, images), execute(loaded, images)
    assert np.array_equal(a.logits, b.logits) and np.array_equal(a.macs, b.macs)
    text = (tmp_path / "model.json").read_text().replace('"version": 1', '"version": 99')
    (tmp_path / "model.json").write_text(text)
    with pytest.raises(Exception, match="version 99"):
        IRModel.load(tmp_path)


def test_wrong_input_shape_is_one_clear_line(small_ir):
    with pytest.raises(InputShapeError, match=r"does not match the model's input \(1, 28, 28\)"):
        execute(small_ir, np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(InputShapeError, match="raw dataset pixels"):
        execute(small_ir, np.zeros((2, 1, 28, 28), np.float32) + 0.5)
