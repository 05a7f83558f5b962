"""PS bring-up for the ZedBoard (tinydyn/hw/ps): the generated Makefile cross-compiles start-up,
linker script, MMU/cache and UART code with the controller into a bare-metal ELF laid out for the
Zynq-7000's DDR, and that ELF boots on QEMU's xilinx-zynq-a9 machine (the Zynq-7000 PS model:
Cortex-A9, PL310, Cadence UARTs) to serve the serial protocol on UART1. No finn-plus build
needed: the controller is written for two synthetic stages.

QEMU does not model caches, so it checks the start-up, the translation table (a read outside the
mapped sections faults into the abort vector), the L2 controller's register sequence and the
UART set-up, not cache coherency itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_tool
from tinydyn.hw.controller import StageHead, write_controller

MODEL_ID = "0123456789abcdef"


def stage(name: str, partition: int, last: bool) -> StageHead:
    return StageHead(
        name=name,
        bias=np.arange(10, dtype=np.int32),
        mult=np.full(10, 1 << 20, dtype=np.int64),
        shift=np.full(10, 30, dtype=np.int64),
        logit_scale=0.05,
        out_bits=24,
        out_per_word=2,
        out_word_bits=48,
        in_bytes=784 if partition == 0 else 1568,
        feat_bytes=0 if last else 1568,
        seg_macs=1000,
        head_macs=80,
        seg_partition=partition,
        head_weight=None if last else np.ones((10, 8), dtype=np.int8),
        feat_c=0 if last else 8,
    )


def build_elf(out: Path, *make_args: str) -> Path:
    require_tool("make")
    require_tool("arm-none-eabi-gcc")
    ps = write_controller(
        out, [stage("stage0", 0, False), stage("stage1", 1, True)], MODEL_ID, "zedboard", (1, 28, 28),
        666_666_666, batch=16,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "CFLAGS", "MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run(["make", *make_args], cwd=ps, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return ps / "td_fpga_ps.elf"


@pytest.fixture(scope="module")
def elf(tmp_path_factory) -> Path:
    return build_elf(tmp_path_factory.mktemp("ps") / "ps")


def sections(elf: Path) -> dict[str, tuple[int, int, int]]:
    """name -> (address, size, alignment) from arm-none-eabi-readelf."""
    out = subprocess.run(
        [require_tool("arm-none-eabi-readelf"), "-SW", str(elf)], capture_output=True, text=True
    )
    found = {}
    for line in out.stdout.splitlines():
        m = re.match(
            r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]{8})\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+\S*\s+\d+\s+\d+\s+(\d+)",
            line,
        )
        if m:
            found[m[1]] = (int(m[2], 16), int(m[3], 16), int(m[4]))
    return found


def symbols(elf: Path) -> dict[str, int]:
    out = subprocess.run([require_tool("arm-none-eabi-nm"), str(elf)], capture_output=True, text=True)
    return {
        parts[2]: int(parts[0], 16)
        for parts in (ln.split() for ln in out.stdout.splitlines())
        if len(parts) == 3
    }


def test_elf_is_laid_out_for_the_zedboard_ddr(elf):
    sec = sections(elf)
    ddr = (0x00100000, 0x20000000)  # the linker script's DDR: above the first MiB, 512 MiB in all
    for name in (".vectors", ".text", ".rodata", ".data", ".bss", ".mmu_tbl", ".stack", ".td_dma"):
        addr, size, _ = sec[name]
        assert ddr[0] <= addr and addr + size <= ddr[1], name
    assert sec[".vectors"][0] == 0x00100000 and sec[".vectors"][0] % 32 == 0  # VBAR: 32-byte aligned
    assert sec[".mmu_tbl"][0] % 16384 == 0 and sec[".mmu_tbl"][1] == 4096 * 4  # TTBR0: 16 KiB, 4096 sections
    # the DMA buffers on whole 1 MiB sections of their own, holding the batched schedule's arena
    addr, size, _ = sec[".td_dma"]
    assert addr % 0x100000 == 0 and size % 0x100000 == 0
    sym = symbols(elf)
    header = (elf.parent / "td_fpga_model.h").read_text()
    arena = int(re.search(r"#define TD_FPGA_BATCH_DMA_BYTES (\d+)u", header)[1])
    assert addr <= sym["dma_arena"] and sym["dma_arena"] + arena <= addr + size
    assert sym["dma_arena"] % 64 == 0
    # the entry is the start-up code; stacks and .bss come from the linker script's symbols
    readelf = subprocess.run(
        [require_tool("arm-none-eabi-readelf"), "-h", str(elf)], capture_output=True, text=True
    )
    assert f"Entry point address:               {hex(sym['_start'])}" in readelf.stdout
    assert sym["__bss_start"] == sec[".bss"][0] and sym["__bss_end"] == sec[".bss"][0] + sec[".bss"][1]
    assert sym["__svc_stack"] == sec[".stack"][0] + sec[".stack"][1]  # main's stack on top


def test_vector_table_branches_to_the_handlers(elf):
    dump = subprocess.run(
        [require_tool("arm-none-eabi-objdump"), "-d", "-j", ".vectors", str(elf)],
        capture_output=True,
        text=True,
    ).stdout
    loads = re.findall(r"ldr\s+pc, \[pc, #\d+\]", dump)
    assert len(loads) == 8  # reset, undefined, SVC, prefetch abort, data abort, reserved, IRQ, FIQ
    sym = symbols(elf)
    words = subprocess.run(
        [require_tool("arm-none-eabi-objdump"), "-s", "-j", ".vectors", str(elf)],
        capture_output=True,
        text=True,
    ).stdout
    literal = [w for ln in words.splitlines()[4:] for w in ln.split()[1:5] if re.fullmatch(r"[0-9a-f]{8}", w)]
    targets = [int.from_bytes(bytes.fromhex(w), "little") for w in literal[8:]]
    assert targets[:1] == [sym["_start"]]
    assert sym["td_data_abort"] in targets and sym["td_prefetch_abort"] in targets


def start_qemu(elf: Path, tmp: Path) -> tuple[subprocess.Popen, str]:
    from tinydyn.host.boardproc import BoardProcess

    qemu = require_tool("qemu-system-arm")
    machines = subprocess.run([qemu, "-M", "help"], capture_output=True, text=True).stdout
    assert "xilinx-zynq-a9" in machines, "this QEMU has no Zynq-7000 machine"
    # UART0 to nowhere, UART1 (the ZedBoard's USB-UART) on a pty, as on the board
    argv = [qemu, "-M", "xilinx-zynq-a9", "-m", "512M", "-nographic", "-monitor", "none",
            "-serial", "null", "-serial", "pty", "-kernel", str(elf), "-no-reboot"]  # fmt: skip
    proc = BoardProcess(argv, start_timeout=20)
    return proc, proc.port


def test_elf_boots_on_qemu_zynq_and_serves_the_protocol_on_uart1(elf, tmp_path):
    """Start-up, MMU + L1/L2 enable and UART1 set-up run, then the protocol server answers INFO
    and CONFIG over UART1 at the host link's 921600 baud."""
    from tinydyn.host.client import BoardClient

    proc, port = start_qemu(elf, tmp_path)
    try:
        client = BoardClient(port, baudrate=921600, connect_timeout=20)
        info = client.open()
        assert info.model_id == MODEL_ID and info.board_name == "zedboard"
        assert (info.in_c, info.in_h, info.in_w, info.num_classes, info.num_exits) == (1, 28, 28, 10, 2)
        assert info.clock_hz == 666_666_666 and info.static_macs == 2 * 1000 + 80
        assert client.configure("confidence", confidence_t16=32768).policy == "confidence"  # acknowledged
        client.close()
    finally:
        proc.stop(timeout=2)


def test_unmapped_read_faults_into_the_abort_vector(tmp_path):
    """The translation table is live: a read of 0x30000000 (above the 512 MiB DDR, mapped by no
    section) takes the data abort vector, whose handler reports on UART1. Without the MMU, QEMU
    would read 0 there and go on."""
    import serial

    flags = "-Wall -Wextra -Werror -std=c99 -O2 -DTD_ZYNQ_FAULT_PROBE=0x30000000u"
    elf = build_elf(tmp_path / "ps", f"CFLAGS={flags}")
    proc, port = start_qemu(elf, tmp_path)
    try:
        with serial.Serial(port, 921600, timeout=0.2) as ser:
            text, deadline = b"", time.time() + 20
            while b"\r\n" not in text.partition(b"fault:")[2] and time.time() < deadline:
                text += ser.read(256)
        assert b"td_zynq fault: data abort at 0x30000000 pc 0x" in text, text
    finally:
        proc.stop(timeout=2)


def test_boot_recipe_names_what_bootgen_packs(tmp_path):
    """boot/: the .bif packs the FSBL, the bitstream build_bitstream.sh writes and the ELF the PS
    Makefile links; the script stops with one line before anything is built."""
    from tinydyn.hw.package import write_boot_recipe

    script = write_boot_recipe(tmp_path)
    bif = (tmp_path / "boot" / "boot.bif").read_text()
    assert "[bootloader] fsbl/executable.elf" in bif
    lines = [ln.strip() for ln in bif.splitlines()]
    assert lines.index("../deploy/bitfile/tinydyn_zynq.bit") < lines.index("../deploy/ps/td_fpga_ps.elf")
    text = script.read_text()
    assert "bootgen -arch zynq -image boot.bif -o BOOT.bin -w on" in text
    assert "write_hw_platform -fixed -include_bit" in text and "-app zynq_fsbl" in text
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 1
    assert res.stderr.strip() == "make_boot_image: no ../deploy/finish.json: run ../build_bitstream.sh first"
