"""Each specialised conv path of td_conv2d (kernels/td_conv2d.h) bit-exact with the executor, on
the host (DSP path emulated, plain DSP-less C, and the default build) and under QEMU (the
Cortex-M4 assembly, SSAT/USAT, UXTB16/PKHBT widening): few-channel stems (1, 2 and 3 input
channels, strides 1 and 2), 1x1 with stride 1 and 2 (uint8 and int8 input, 4k and 6 channels),
k x k, a channel-gated conv and convs with masked input channels (input rows through the ring,
rows compacted; odd widths, stride 2, 5x5, 1x1 with stride 2, int8 and int16 input, several row
groups per call), unmasked convs through the int16 ring (stride 2, odd widths; kernel rows of
whole groups of 4, and of 5-7 channels whose rows are not), uint8 / int8 / int16
outputs, residuals of both 8-bit types and none, and extreme shifts (1, 62, per-channel
mixes below and above 33, a gated layer whose shift forces the general requantisation).
No instruction counts here: those are benchmark figures (benchmarks/mcu.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinydyn.codegen import build_project
from tinydyn.codegen.harness import run_host, run_qemu
from tinydyn.codegen.layers import describe
from tinydyn.ir import IRModel, Op, validate
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

from .codegen_support import assert_same
from .conftest import require_tool
from .test_codegen_property import NetBuilder

POLICIES = (ExitPolicy("none"), ExitPolicy("none", gating=False))


def paths_ir(seed: int = 11) -> IRModel:
    """A chain through every specialised path, each layer's output reaching the logits."""
    nb = NetBuilder(np.random.default_rng(seed))
    x = nb.tensor((3, 12, 12), "uint8", name="input")
    ops = []

    def conv(name, x, *args, **kw):
        out, op = nb.conv(name, x, *args, **kw)
        ops.append(op)
        return out

    a = conv("stem3", x, 3, 3, 1, 1)  # 3 input channels, stride 1
    b = conv("stem3s2", a, 2, 3, 2, 1)  # 3 channels, stride 2
    c = conv("stem2", b, 1, 3, 1, 1)  # 2 channels
    d = conv("stem1", c, 8, 3, 1, 1)  # 1 channel
    e = conv("pw1", d, 8, 1, 1, 0)  # 1x1 stride 1
    f = conv("pw2", e, 12, 1, 2, 0, dtype="int8")  # 1x1 stride 2, int8 out
    g = conv("k3s2", e, 12, 3, 2, 1)  # 3x3 stride 2
    pooled, gap = nb.gap(g)
    ops.append(gap)
    s_chan, cnet = nb.linear("cnet", pooled, 12, "salience", "gate")
    ops.append(cnet)
    h = conv("gated", g, 12, 3, 1, 1, channel_gate=s_chan, residual=f)  # int8 residual
    i = conv("masked", h, 8, 3, 1, 1, input_mask=s_chan)  # masked input channels
    j = conv("res_u8", i, 8, 3, 1, 1, residual=i)  # uint8 residual
    k = conv("out_s16", j, 6, 3, 1, 1, dtype="int16")  # int16 out
    m = conv("in_s16", k, 6, 3, 1, 1)  # int16 input (element path)
    pooled2, gap2 = nb.gap(m)
    ops.append(gap2)
    logits, fc = nb.linear("final.fc", pooled2, 4, "logits", "exit_head")
    ops.append(Op("exit", "final", attrs={"index": 0, "final": True, "logits": logits}, then=[fc]))
    ir = IRModel("paths", "input", nb.tensors, ops, nb.arrays, ["a", "b", "c", "d"], {})
    validate(ir)
    return ir


def shifts_ir(seed: int = 5) -> IRModel:
    """Extreme and mixed shifts: 1, 62, per-channel mixes around 33, and a gated layer whose
    small shift cannot be scaled into the high-word form (general requantisation)."""
    nb = NetBuilder(np.random.default_rng(seed))
    x = nb.tensor((4, 8, 8), "uint8", name="input")
    ops = []
    a, op = nb.conv("shift1", x, 8, 3, 1, 1)
    nb.arrays["shift1.mult"] = nb.rng.integers(1, 3, 8).astype(np.int64)
    nb.arrays["shift1.shift"] = np.full(8, 1, dtype=np.int32)  # saturates most outputs
    ops.append(op)
    b, op = nb.conv("shift62", a, 8, 3, 1, 1, residual=a)
    nb.arrays["shift62.shift"] = np.full(8, 62, dtype=np.int32)
    nb.arrays["shift62.res_mult"] = (nb.rng.uniform(0.5, 1.0, 8) * 2.0**53).astype(np.int64)
    ops.append(op)
    c, op = nb.conv("mixed", b, 8, 3, 1, 1)
    nb.arrays["mixed.mult"] = nb.rng.integers(1 << 10, 1 << 20, 8).astype(np.int64)
    nb.arrays["mixed.shift"] = np.array([24, 28, 31, 32, 33, 34, 40, 45], dtype=np.int32)
    ops.append(op)
    pooled, gap = nb.gap(c)
    ops.append(gap)
    s_chan, cnet = nb.linear("cnet", pooled, 8, "salience", "gate")
    ops.append(cnet)
    e, op = nb.conv("gated_mixed", c, 8, 3, 1, 1, channel_gate=s_chan, residual=c)
    # gated (mult' < 2^31 / 255 leaves no headroom), residual, shifts that share no common
    # shift': each channel keeps its own sh (rq_sh 0)
    nb.arrays["gated_mixed.mult"] = nb.rng.integers(1 << 22, 1 << 23, 8).astype(np.int64)
    nb.arrays["gated_mixed.shift"] = np.array([34, 35, 36, 37, 38, 39, 40, 41], dtype=np.int32)
    ops.append(op)
    d, op = nb.conv("gated_low", e, 8, 3, 1, 1, channel_gate=s_chan)
    nb.arrays["gated_low.mult"] = nb.rng.integers(1 << 21, 1 << 22, 8).astype(np.int64)
    nb.arrays["gated_low.shift"] = np.full(8, 30, dtype=np.int32)
    ops.append(op)
    pooled2, gap2 = nb.gap(d)
    ops.append(gap2)
    logits, fc = nb.linear("final.fc", pooled2, 4, "logits", "exit_head")
    ops.append(Op("exit", "final", attrs={"index": 0, "final": True, "logits": logits}, then=[fc]))
    ir = IRModel("shifts", "input", nb.tensors, ops, nb.arrays, ["a", "b", "c", "d"], {})
    validate(ir)
    return ir


def masked_ir(seed: int = 7) -> IRModel:
    """Masked input channels through every case of the compacted layout: odd output widths (pixel
    pairs within a row), stride 2, a 5x5 kernel, a 1x1 stride-2 conv (input rows no window reads),
    int8 and int16 input (the ring and the element path), and a wide layer whose compacted rows
    take several passes (the arena's peak, so the planner grants only the minimum)."""
    nb = NetBuilder(np.random.default_rng(seed))
    x = nb.tensor((3, 11, 11), "uint8", name="input")
    ops = []

    def conv(name, x, *args, **kw):
        out, op = nb.conv(name, x, *args, **kw)
        ops.append(op)
        return out

    a = conv("pre", x, 8, 3, 1, 1)
    pooled, gap = nb.gap(a)
    ops.append(gap)
    s8, cnet = nb.linear("cnet", pooled, 8, "salience", "gate")
    ops.append(cnet)
    s32, cnet2 = nb.linear("cnet32", pooled, 32, "salience", "gate")
    ops.append(cnet2)
    b = conv("m_odd", a, 8, 3, 1, 1, input_mask=s8)  # 11x11: a pixel alone per row
    c = conv("m_s2", b, 8, 3, 2, 1, input_mask=s8, residual=conv("pre_s2", b, 8, 1, 2, 0))
    d = conv("m_5x5", c, 6, 5, 1, 2, input_mask=s8)
    i8 = conv("pre_i8", a, 8, 3, 1, 1, dtype="int8")
    e = conv("m_i8", i8, 8, 1, 2, 0, input_mask=s8)  # int8 input, 1x1 stride 2
    i16 = conv("pre_i16", e, 8, 3, 1, 1, dtype="int16")
    f = conv("m_i16", i16, 8, 3, 1, 1, input_mask=s8)  # int16 input: element path
    w = conv("wide_in", f, 32, 3, 1, 1)
    g = conv("m_wide", w, 64, 3, 1, 1, input_mask=s32)  # compacted rows in several passes
    outs = []
    for t in (d, g):
        pooled_t, gap_t = nb.gap(t)
        ops.append(gap_t)
        outs.append(pooled_t)
    logits, fc = nb.linear("final.fc", outs[1], 4, "logits", "exit_head")
    ops.append(Op("exit", "final", attrs={"index": 0, "final": True, "logits": logits}, then=[fc]))
    ir = IRModel("masked", "input", nb.tensors, ops, nb.arrays, ["a", "b", "c", "d"], {})
    validate(ir)
    return ir


def handoff_ir(seed: int = 11) -> IRModel:
    """LC-Net's conv1 -> conv2: a channel-gated conv that writes its active channels only (compact
    output, uint8 and int8) read by convs masked with the same salience (compact input; an odd
    width, stride 2, a 5x5 kernel)."""
    nb = NetBuilder(np.random.default_rng(seed))
    x = nb.tensor((3, 9, 9), "uint8", name="input")
    ops = []

    def conv(name, x, *args, **kw):
        out, op = nb.conv(name, x, *args, **kw)
        ops.append(op)
        return out

    a = conv("pre", x, 8, 3, 1, 1)
    pooled, gap = nb.gap(a)
    ops.append(gap)
    s, cnet = nb.linear("cnet", pooled, 12, "salience", "gate")
    ops.append(cnet)
    b = conv("c1", a, 12, 3, 1, 1, channel_gate=s)
    c = conv("c2", b, 8, 3, 1, 1, input_mask=s)
    # 5x5: with 3 or 5 active channels a kernel row starts 3 elements into a group of 4
    c5 = conv("c2_5x5", b, 8, 5, 1, 2, input_mask=s, residual=c)
    d = conv("c1_i8", c5, 12, 3, 1, 1, channel_gate=s, dtype="int8")
    e = conv("c2_s2", d, 8, 3, 2, 1, input_mask=s)
    pooled2, gap2 = nb.gap(e)
    ops.append(gap2)
    logits, fc = nb.linear("final.fc", pooled2, 4, "logits", "exit_head")
    ops.append(Op("exit", "final", attrs={"index": 0, "final": True, "logits": logits}, then=[fc]))
    ir = IRModel("handoff", "input", nb.tensors, ops, nb.arrays, ["a", "b", "c", "d"], {})
    validate(ir)
    return ir


def stem1_ir(seed: int = 13) -> IRModel:
    """One-channel 3x3 stems (td_conv2d_stem3: taps read straight from the input, no im2col) with
    stride 2 and an int8 output on an odd-sized grey input (every border case), beside the paths
    IR's stride-1 uint8 one."""
    nb = NetBuilder(np.random.default_rng(seed))
    x = nb.tensor((1, 11, 9), "uint8", name="input")
    ops = []
    a, op = nb.conv("stem1s2", x, 6, 3, 2, 1, dtype="int8")
    ops.append(op)
    b, op = nb.conv("after", a, 4, 3, 1, 1)
    ops.append(op)
    pooled, gap = nb.gap(b)
    ops.append(gap)
    logits, fc = nb.linear("final.fc", pooled, 4, "logits", "exit_head")
    ops.append(Op("exit", "final", attrs={"index": 0, "final": True, "logits": logits}, then=[fc]))
    ir = IRModel("stem1", "input", nb.tensors, ops, nb.arrays, ["a", "b", "c", "d"], {})
    validate(ir)
    return ir


def pointwise_ir(seed: int = 17) -> IRModel:
    """1x1 convs on int8 input (td_im2col_1x1's per-column path): 8 channels with stride 2 and an
    odd output width (pixel pairs spanning two output rows, the last pixel alone), and 6 channels;
    then a masked conv with an odd output count (the last compacted weight row gathered alone)."""
    nb = NetBuilder(np.random.default_rng(seed))
    x = nb.tensor((3, 9, 9), "uint8", name="input")
    ops = []
    a, op = nb.conv("pre", x, 8, 3, 1, 1, dtype="int8")
    ops.append(op)
    b, op = nb.conv("pw_s8", a, 6, 1, 2, 0, dtype="int8")
    ops.append(op)
    c, op = nb.conv("pw_c6", b, 8, 1, 1, 0)
    ops.append(op)
    pooled, gap = nb.gap(c)
    ops.append(gap)
    s8, cnet = nb.linear("cnet", pooled, 8, "salience", "gate")
    ops.append(cnet)
    d, op = nb.conv("m_out7", c, 7, 3, 1, 1, input_mask=s8)
    ops.append(op)
    pooled2, gap2 = nb.gap(d)
    ops.append(gap2)
    logits, fc = nb.linear("final.fc", pooled2, 4, "logits", "exit_head")
    ops.append(Op("exit", "final", attrs={"index": 0, "final": True, "logits": logits}, then=[fc]))
    ir = IRModel("pointwise", "input", nb.tensors, ops, nb.arrays, ["a", "b", "c", "d"], {})
    validate(ir)
    return ir


def narrow_ir(seed: int = 19) -> IRModel:
    """Unmasked 8-bit k x k convs whose kernel rows are not whole groups of 4 (k*in_c of 18, 15,
    35): through the int16 ring by td_ring_cols_rows (S2DNAS's 6-channel stage convs): 6 channels
    with an odd output width (pixel pairs spanning two output rows), 6 channels of int8 input with
    stride 2 (even width), 5 channels (odd count: one column of a pair off a word), a 5x5 over 7
    channels with a residual."""
    nb = NetBuilder(np.random.default_rng(seed))
    x = nb.tensor((1, 10, 11), "uint8", name="input")
    ops = []

    def conv(name, x, *args, **kw):
        out, op = nb.conv(name, x, *args, **kw)
        ops.append(op)
        return out

    a = conv("pre", x, 6, 3, 1, 1)
    b = conv("c6_odd", a, 6, 3, 1, 1, dtype="int8")  # 10 x 11 out
    c = conv("c6_s2", b, 5, 3, 2, 1)  # int8 input, 5 x 6 out
    d = conv("c5", c, 7, 3, 1, 1)
    e = conv("c7_5x5", d, 7, 5, 1, 2, residual=d)
    f = conv("wide", e, 96, 1, 1, 0)  # the arena's peak: room for the rings above
    pooled, gap = nb.gap(f)
    ops.append(gap)
    logits, fc = nb.linear("final.fc", pooled, 4, "logits", "exit_head")
    ops.append(Op("exit", "final", attrs={"index": 0, "final": True, "logits": logits}, then=[fc]))
    ir = IRModel("narrow", "input", nb.tensors, ops, nb.arrays, ["a", "b", "c", "d"], {})
    validate(ir)
    return ir


ALL_IRS = [paths_ir, shifts_ir, masked_ir, handoff_ir, stem1_ir, pointwise_ir, narrow_ir]


def images_for(ir: IRModel, n: int = 24) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, *ir.input_spec.shape)).astype(np.uint8)


def test_paths_are_the_specialised_ones():
    """The IRs exercise what they claim: the high-word table where exact, the general form where not."""
    layers = describe(paths_ir()).layers
    exact = ("stem3", "pw2", "gated", "masked", "res_u8", "out_s16")
    assert all(layers[n]["quant"]["rq"] != "NULL" for n in exact)
    assert layers["stem1"]["in_c"] == 1 and layers["stem2"]["in_c"] == 2 and layers["stem3s2"]["stride"] == 2
    assert layers["pw2"]["kernel"] == 1 and layers["pw2"]["stride"] == 2
    layers = describe(shifts_ir()).layers
    assert layers["shift1"]["quant"]["rq"] == "NULL"  # mult * 2^32 leaves int32: general form
    assert layers["shift62"]["quant"]["rq"] != "NULL"
    assert layers["mixed"]["quant"]["rq"] != "NULL"
    assert layers["gated_low"]["quant"]["rq"] == "NULL"  # 255 * mult * 2^3 exceeds int32
    # both forms of the high-word rounding: one shift for the layer (ADD + USAT/SSAT with its
    # shift) and one per channel, the latter gated with a residual
    assert layers["shift62"]["quant"]["rq_sh"] == 30
    assert layers["mixed"]["quant"]["rq_sh"] == 0
    assert layers["gated_mixed"]["quant"]["rq"] != "NULL" and layers["gated_mixed"]["quant"]["rq_sh"] == 0
    assert layers["gated_low"]["skipped_dead"] == 0  # its switched-off outputs reach a pool
    paths = describe(paths_ir()).layers
    assert all(paths[n]["quant"]["rq_sh"] > 0 for n in ("stem3", "pw2", "res_u8", "out_s16"))
    # the one-channel stems take td_conv2d_stem3 (no gates, no residual, shared shift, even out_c)
    stems = {"stem1": paths["stem1"], "stem1s2": describe(stem1_ir()).layers["stem1s2"]}
    for layer in stems.values():
        assert layer["in_c"] == 1 and layer["kernel"] == 3 and layer["out_c"] % 2 == 0
        assert layer["quant"]["rq_sh"] > 0 and layer["residual"] == "NULL"
        assert set(layer["gates"].values()) == {"NULL"}
    assert stems["stem1s2"]["stride"] == 2 and stems["stem1s2"]["out_type"] == "TD_S8"
    # "gated"'s only reader masks its input with the same salience: skipped outputs unwritten
    assert paths["gated"]["skipped_dead"] == 1 and paths["k3s2"]["skipped_dead"] == 0
    # unmasked 8-bit convs with kernel rows of whole groups of 4 get the int16 ring where the
    # planner has room: stride 2, a channel gate with a residual, odd widths (pixel pairs spanning
    # two output rows), int16 output
    from tinydyn.codegen.project import plan

    ir = paths_ir()
    desc = describe(ir)
    plan(ir, desc)
    assert all(desc.layers[n]["ring"] == 1 for n in ("k3s2", "gated", "res_u8", "out_s16"))
    assert all(desc.layers[n]["out_w"] % 2 == 1 for n in ("k3s2", "gated"))
    assert desc.layers["stem1"]["ring"] == 0 and desc.layers["pw1"]["ring"] == 0
    # compact hand-off: "gated" has a residual (written in full), handoff_ir's convs do not
    assert paths["gated"]["compact_out"] == 0 and paths["masked"]["compact_in"] == 0
    handoff = describe(handoff_ir()).layers
    assert handoff["c1"]["compact_out"] == 1 and handoff["c1_i8"]["compact_out"] == 1
    assert handoff["c2"]["compact_in"] == 1 and handoff["c2_s2"]["compact_in"] == 1
    assert handoff["c2_5x5"]["compact_in"] == 1 and handoff["c2_5x5"]["kernel"] == 5
    assert handoff["c2"]["out_w"] % 2 == 1 and handoff["c2_s2"]["stride"] == 2
    pw = describe(pointwise_ir()).layers
    assert pw["pw_s8"]["in_type"] == "TD_S8" and pw["pw_s8"]["in_c"] % 4 == 0
    assert pw["pw_s8"]["out_w"] % 2 == 1 and pw["pw_s8"]["stride"] == 2
    assert pw["pw_c6"]["in_c"] == 6 and pw["pw_c6"]["kernel"] == 1
    assert pw["m_out7"]["out_c"] % 2 == 1 and pw["m_out7"]["gates"]["input_mask"] != "NULL"
    # unmasked convs of 5-7 channels (kernel rows not whole groups of 4) take the ring too
    ir = narrow_ir()
    desc = describe(ir)
    plan(ir, desc)
    narrow = {n: desc.layers[n] for n in ("c6_odd", "c6_s2", "c5", "c7_5x5")}
    assert all(n["ring"] == 1 and n["kernel"] * n["in_c"] % 4 for n in narrow.values())
    assert narrow["c6_odd"]["out_w"] % 2 == 1 and narrow["c6_s2"]["out_w"] % 2 == 0
    assert narrow["c6_s2"]["in_type"] == "TD_S8" and narrow["c6_s2"]["stride"] == 2
    assert narrow["c7_5x5"]["residual"] != "NULL" and desc.layers["pre"]["ring"] == 0


@pytest.mark.parametrize("flags", ["", "-DTD_EMULATE_DSP", "-DTD_PORTABLE"])
@pytest.mark.parametrize("make_ir", ALL_IRS)
def test_host_bit_exact(make_ir, flags, tmp_path: Path):
    require_tool("gcc")
    ir = make_ir()
    build_project(ir, "host", tmp_path, compile=True, extra_cflags=flags)
    images = images_for(ir)
    for policy in POLICIES:
        assert_same(execute(ir, images, policy), run_host(ir, tmp_path / "fw", images, policy))


@pytest.mark.parametrize("make_ir", ALL_IRS)
def test_qemu_bit_exact(make_ir, tmp_path: Path):
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    ir = make_ir()
    build_project(ir, "qemu-mps2-an386", tmp_path, compile=True)
    images = images_for(ir, 12)
    for policy in POLICIES:
        assert_same(execute(ir, images, policy), run_qemu(ir, tmp_path / "fw.elf", images, policy))


def test_masked_and_gated_paths_really_skip(tmp_path: Path):
    """Guard against a vacuous comparison: some channels are skipped and some inputs masked (an
    odd and an even number active: both alignments of the ring's pixels)."""
    for ir, gated_convs in ((paths_ir(), 1), (handoff_ir(), 2)):
        ref = execute(ir, images_for(ir), ExitPolicy("none"))
        assert ref.skipped_channels.sum() > 0
        assert (ref.skipped_channels < 12 * gated_convs).any()
    # the images QEMU runs: every active count mod 4, so kernel rows of k*n elements start 0-3
    # elements into a group (td_ring_cols_rows' partial first groups; 3 only in the 5x5 conv, at
    # n = 3 or 5) with each column on a word or not
    handoff = handoff_ir()
    active = 12 - execute(handoff, images_for(handoff, 12), ExitPolicy("none")).skipped_channels // 2
    assert set((active % 4).tolist()) == {0, 1, 2, 3} and ({3, 5} & set(active.tolist()))


def test_masked_ir_takes_several_row_groups():
    """m_wide's granted rows hold fewer than its 64 outputs at the 15-17 active inputs of 32 its
    images have (the kernel's run-time row count, td_conv2d_begin)."""
    from tinydyn.codegen.project import plan

    desc = describe(masked_ir())
    plan(masked_ir(), desc)
    layer = desc.layers["m_wide"]
    for n_in in (15, 16, 17):
        compacted = (9 * n_in + 3) // 4 * 4
        assert 2 <= (layer["row_group"] * layer["masked_len"] // compacted) & ~1 < 64
