"""The PS controller's generated Makefile cross-compiles under a plain `make`.

(Kept beside the checkpoint hardening tests because of the file layout of that change; it
belongs with the PS controller tests of tests/test_hw.py, which need a finn-plus build. This
one needs no build: it writes the controller for two synthetic stages.)

GNU make predefines CC=cc, so the old `CC ?= arm-none-eabi-gcc` never applied and a plain
`make` compiled the Cortex-A9 sources with the host compiler.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_tool
from tinydyn.hw.controller import ARCH_CFLAGS, StageHead, write_controller


def stage(name: str, seg: int, last: bool, classes: int = 10) -> StageHead:
    return StageHead(
        name=name,
        bias=np.arange(classes, dtype=np.int32),
        mult=np.full(classes, 1 << 20, dtype=np.int64),
        shift=np.full(classes, 30, dtype=np.int64),
        logit_scale=0.05,
        out_bits=24,
        out_per_word=2,
        out_word_bits=48,
        in_bytes=784,
        feat_bytes=0 if last else 1568,
        seg_macs=1000,
        head_macs=100,
        seg_partition=seg,
        head_weight=None if last else np.ones((classes, 2), dtype=np.int8),
        feat_c=0 if last else 2,
    )


@pytest.fixture()
def ps_dir(tmp_path: Path) -> Path:
    return write_controller(
        tmp_path / "ps", [stage("stage0", 0, False), stage("stage1", 1, True)], "0123456789abcdef",
        "zedboard", (1, 28, 28), 666_666_666,
    )  # fmt: skip


def make(ps_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CC", "CFLAGS", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(
        ["make", *args], cwd=ps_dir, capture_output=True, text=True, env={**base, **(env or {})}, timeout=120
    )


def compile_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if " -c " in line]
    # td_fpga.o td_fpga_zynq.o protocol.o td_zynq_mmu.o td_zynq_uart.o td_zynq_boot.o (start-up)
    assert len(lines) == 6, proc.stdout
    return lines


def test_plain_make_uses_the_arm_compiler(ps_dir: Path) -> None:
    require_tool("make")
    for line in compile_lines(make(ps_dir, "-n", "-B")):  # dry run: prints, compiles nothing
        assert line.startswith("arm-none-eabi-gcc "), line
        assert ARCH_CFLAGS in line and "-Werror" in line


def test_cc_and_cflags_still_override(ps_dir: Path) -> None:
    require_tool("make")
    for line in compile_lines(make(ps_dir, "-n", "-B", "CC=clang")):
        assert line.startswith("clang "), line
    for line in compile_lines(make(ps_dir, "-n", "-B", env={"CC": "my-cross-gcc"})):
        assert line.startswith("my-cross-gcc "), line
    # a user's CFLAGS replaces warnings/optimisation, never the Cortex-A9 target flags
    for line in compile_lines(make(ps_dir, "-n", "-B", "CFLAGS=-O0 -g")):
        assert line.startswith("arm-none-eabi-gcc ") and ARCH_CFLAGS in line and "-O0 -g" in line, line
        assert "-Werror" not in line
    for line in compile_lines(make(ps_dir, "-n", "-B", env={"CFLAGS": "-O1"})):
        assert ARCH_CFLAGS in line and "-O1" in line, line


def test_plain_make_builds_arm_objects(ps_dir: Path) -> None:
    """The real thing: a plain `make` writes ARM (EABI) objects for the synthetic model."""
    require_tool("make")
    require_tool("arm-none-eabi-gcc")
    proc = make(ps_dir)
    assert proc.returncode == 0, proc.stderr
    for obj in ("td_fpga.o", "td_fpga_zynq.o", "protocol.o", "td_zynq_boot.o", "td_fpga_ps.elf"):
        header = (ps_dir / obj).read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and header[18] == 40, obj  # e_machine 40 = EM_ARM
