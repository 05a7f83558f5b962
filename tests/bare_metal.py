"""Hand-written Thumb-2 programs run bare-metal under QEMU mps2-an386 with the cycle-model
plugin: shared by the cycle-model and profiler tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tinydyn.host.cycles import qemu_plugin_args, symbol_address


def assemble(source: str, tmp_path: Path, stem: str) -> Path:
    """``source`` (a complete .S file) linked at address 0 → its ELF."""
    src, elf = tmp_path / f"{stem}.S", tmp_path / f"{stem}.elf"
    src.write_text(source)
    cc = subprocess.run(
        ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-nostdlib", "-nostartfiles"]
        + ["-Wl,-Ttext=0", "-Wl,-e,0", "-o", str(elf), str(src)],
        capture_output=True,
        text=True,
    )
    assert cc.returncode == 0, cc.stderr
    return elf


def run_plugin(elf: Path, out: Path, model: Any, **plugin: Any) -> subprocess.CompletedProcess[str]:
    """Boot ``elf`` under QEMU (-icount shift 0) with the plugin delimiting ``bench``; the
    plugin writes its records to ``out`` (removed first)."""
    out.unlink(missing_ok=True)
    cmd = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "null"]
    cmd += ["-icount", "shift=0,align=off", "-kernel", str(elf), "-no-reboot"]
    cmd += qemu_plugin_args(out, symbol_address(elf, "bench"), model, **plugin)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
