"""The Cortex-M4 build (SMLAD path) under QEMU equals the executor bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinydyn.codegen import build_project
from tinydyn.codegen.harness import instructions, run_qemu
from tinydyn.ir import IRModel
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

from .codegen_support import assert_same
from .codegen_support import gated_ir as gated_model_ir
from .conftest import make_model, require_tool


@pytest.fixture(scope="module")
def gated_ir(fashion_test) -> IRModel:
    return gated_model_ir(fashion_test, make_model)


@pytest.fixture(scope="module")
def m4_elf(gated_ir, tmp_path_factory) -> Path:
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    out = tmp_path_factory.mktemp("m4")
    build_project(gated_ir, "qemu-mps2-an386", out, compile=True)
    return out / "fw.elf"


def test_dsp_path_is_compiled_in(m4_elf):
    import subprocess

    disasm = subprocess.run(
        ["arm-none-eabi-objdump", "-d", str(m4_elf)], capture_output=True, text=True
    ).stdout
    assert "smlad" in disasm and "sxtb16" in disasm


@pytest.mark.parametrize("kind,threshold", [("confidence", 0.3), ("budget", 0.5), ("none", 0.0)])
def test_m4_build_equals_executor(gated_ir, m4_elf, fashion_test, kind, threshold):
    if kind == "budget":
        threshold *= gated_ir.meta["static_backbone_macs"]
    images = fashion_test.images[:300]
    policy = ExitPolicy(kind, threshold)
    got = run_qemu(gated_ir, m4_elf, images, policy, icount_shift=3)
    assert_same(execute(gated_ir, images, policy), got)
    instr = instructions(got.counter, 3)
    # deterministic counting: more MACs cost more instructions, and never fewer than MACs/2
    assert np.all(instr > got.macs / 2)
    assert np.corrcoef(instr, got.macs)[0, 1] > 0.9 or np.ptp(got.macs) == 0
