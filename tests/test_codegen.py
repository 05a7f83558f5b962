"""Codegen: planner, packing, and generated C equal to the integer executor bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tinydyn.codegen import CodegenError, build_project
from tinydyn.codegen.harness import run_host
from tinydyn.codegen.packing import pack_conv, pack_rows, packed_positions, prove_accumulators, unpack_rows
from tinydyn.codegen.planner import check_plan, plan_memory
from tinydyn.commands.build import build as build_command
from tinydyn.ir import IRError, IRModel
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

from .codegen_support import assert_same
from .codegen_support import gated_ir as gated_model_ir
from .conftest import make_model, require_tool


@pytest.fixture(scope="module")
def gated_ir(fashion_test) -> IRModel:
    return gated_model_ir(fashion_test, make_model)


@pytest.fixture(scope="module")
def host_fw(gated_ir, tmp_path_factory) -> Path:
    require_tool("gcc")
    out = tmp_path_factory.mktemp("host")
    build_project(gated_ir, "host", out, compile=True)
    return out / "fw"


def policies(ir: IRModel) -> list[ExitPolicy]:
    static = int(ir.meta["static_backbone_macs"])
    return [
        ExitPolicy("none"),
        ExitPolicy("confidence", 0.3),
        ExitPolicy("margin", 0.7),
        ExitPolicy("budget", static * 0.45),
        ExitPolicy("budget", static * 0.6),
        ExitPolicy("confidence", 0.3, gating=False),  # the static network: gates not run
    ]


# ----------------------------------------------------------------------------- packing
def test_packing_interleaves_groups_of_four_and_round_trips():
    rows = np.arange(1, 11, dtype=np.int8).reshape(1, 10)
    packed = pack_rows(rows)
    assert packed.shape == (1, 12)
    assert packed[0, :4].tolist() == [1, 3, 2, 4]  # [w0 w2 w1 w3]: SXTB16 gives (w0,w1), ROR 8 (w2,w3)
    assert packed[0, 8:].tolist() == [9, 0, 10, 0]  # padding is zero
    assert packed_positions(8).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert np.array_equal(unpack_rows(packed, 10), rows)


def test_conv_rows_are_hwc_ordered():
    weight = np.arange(2 * 3 * 2 * 2, dtype=np.int8).reshape(2, 3, 2, 2)  # OIHW
    packed, row_len = pack_conv(weight, groups=1)
    assert row_len == 12
    rows = unpack_rows(packed.reshape(2, row_len), 12)
    assert np.array_equal(rows[1], weight[1].transpose(1, 2, 0).reshape(-1))


def test_accumulator_proof_names_the_layer():
    packed = np.full((1, 1 << 17), 127, dtype=np.int8).reshape(-1)
    with pytest.raises(CodegenError, match="'big.conv'.*int32"):
        prove_accumulators("big.conv", packed, 1 << 17, np.zeros(1, dtype=np.int32), "uint8")
    assert prove_accumulators("ok", packed[:64], 64, np.array([5]), "uint8") == 64 * 127 * 255 + 5


def test_codegen_rejects_an_overflowing_layer(gated_ir, tmp_path):
    arrays = dict(gated_ir.arrays)
    arrays["b1.conv2.bias"] = np.full_like(arrays["b1.conv2.bias"], 2**31 - 10)  # no headroom left
    ir = IRModel(gated_ir.name, gated_ir.input, gated_ir.tensors, gated_ir.ops, arrays, gated_ir.classes)
    # refused before any file is written: the IR schema re-proves the lowering's bounds
    with pytest.raises(IRError, match="'b1.conv2'.*int32 accumulator"):
        build_project(ir, "host", tmp_path)
    assert not (tmp_path / "model.c").exists()


# ----------------------------------------------------------------------------- planner
def test_plan_never_shares_bytes_between_live_tensors(gated_ir):
    from tinydyn.codegen.layers import describe

    desc = describe(gated_ir)
    plan = plan_memory(gated_ir, desc.tensor_bytes, desc.scratch, {gated_ir.input})
    check_plan(plan)
    assert plan.lower_bound <= plan.arena_bytes <= 1.1 * plan.lower_bound
    # the arena is far below the sum of all tensors: lifetimes are really reused
    assert plan.arena_bytes < 0.6 * sum(b.size for b in plan.buffers.values())


def test_build_report_and_json(gated_ir, tmp_path):
    report = build_project(gated_ir, "host", tmp_path)
    data = json.loads((tmp_path / "build.json").read_text())
    assert data == report.to_json()
    assert report.arena_lower_bound <= report.arena_bytes
    assert report.static_macs == int(gated_ir.meta["static_backbone_macs"])
    source = (tmp_path / "model.c").read_text()
    # readable: one call per layer, gate checks and exit checks in td_infer
    assert "b1_conv1(&ctx);" in source and "if (t_b1_s_block[0] != 0) {" in source
    assert "exit_leaves(cfg, 1, t_exit1_logits)" in source and "ctx.skipped_blocks++;" in source
    assert f'.model_id = "{gated_ir.model_id()}"' in source


# ----------------------------------------------------------------------------- bit-exact
def test_host_build_equals_executor_under_every_policy(gated_ir, host_fw, fashion_test):
    images = fashion_test.images[:500]
    seen_exits: set[int] = set()
    skipped = [0, 0]
    for policy in policies(gated_ir):
        ref = execute(gated_ir, images, policy)
        got = run_host(gated_ir, host_fw, images, policy)
        assert_same(ref, got)
        seen_exits |= set(ref.exits.tolist())
        skipped[0] += int(ref.skipped_blocks.sum())
        skipped[1] += int(ref.skipped_channels.sum())
    # the comparison is only meaningful if the dynamic paths were exercised
    assert seen_exits == {0, 1, 2} and skipped[0] > 0 and skipped[1] > 0


def test_two_thousand_test_images_bit_exact(gated_ir, host_fw, fashion_test):
    """The whole test set runs in benchmarks/bitexact_fashion.py; here a larger slice."""
    images = fashion_test.images[2000:4000]
    policy = ExitPolicy("confidence", 0.3)
    assert_same(execute(gated_ir, images, policy), run_host(gated_ir, host_fw, images, policy))


def test_dsp_path_emulated_under_sanitizers(gated_ir, fashion_test, tmp_path):
    """The DSP kernels' C emulation, with ASan + UBSan: same results, no undefined behaviour."""
    require_tool("gcc")
    flags = "-DTD_EMULATE_DSP -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all"
    build_project(gated_ir, "host", tmp_path, compile=True, extra_cflags=flags)
    images = fashion_test.images[500:800]
    for policy in (
        ExitPolicy("margin", 0.5),
        ExitPolicy("budget", gated_ir.meta["static_backbone_macs"] * 0.6),
    ):
        assert_same(execute(gated_ir, images, policy), run_host(gated_ir, tmp_path / "fw", images, policy))


def test_comparison_detects_a_perturbed_multiplier(gated_ir, host_fw, fashion_test, tmp_path):
    """Guard against a vacuous comparison: C built from a model with one multiplier changed
    must disagree with the reference of the unchanged model."""
    ir = IRModel(
        gated_ir.name, gated_ir.input, gated_ir.tensors, gated_ir.ops, dict(gated_ir.arrays), gated_ir.classes
    )
    mult = ir.arrays["final.fc.mult"].copy()
    mult[3] = mult[3] * 5 // 4  # one class's multiplier 25% larger
    ir.arrays["final.fc.mult"] = mult
    build_project(ir, "host", tmp_path, compile=True)
    images = fashion_test.images[:50]
    ref = execute(gated_ir, images, ExitPolicy("none"))
    got = run_host(ir, tmp_path / "fw", images, ExitPolicy("none"))
    assert not np.array_equal(ref.logits, got.logits)


def test_cortex_m_builds_compile_warning_free(gated_ir, tmp_path):
    require_tool("arm-none-eabi-gcc")
    for board in ("qemu-mps2-an386", "nucleo-l4r5zi"):
        report = build_project(gated_ir, board, tmp_path / board, compile=True)
        assert report.flash_measured and report.flash_bytes > report.weight_bytes
        assert report.size["bss"] >= report.arena_bytes


def test_build_command_writes_json(gated_ir, tmp_path):
    ir_dir = gated_ir.save(tmp_path / "ir")
    result = CliRunner().invoke(
        build_command, ["--ir", str(ir_dir), "--board", "host", "--out", str(tmp_path / "fw"), "--no-compile"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["arena_bytes"] > 0 and printed["static_macs"] > 0
    assert (tmp_path / "fw" / "build.json").is_file()


def test_unknown_board_is_a_one_line_error(gated_ir, tmp_path):
    with pytest.raises(CodegenError, match="unknown board 'esp32'"):
        build_project(gated_ir, "esp32", tmp_path)
