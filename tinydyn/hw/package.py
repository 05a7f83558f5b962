"""The parts of the output directory a Vivado user finishes: ``build_bitstream.sh``, which runs
:mod:`tinydyn.hw.finish` (every partition's IP generation, one Zynq design holding all of them,
the bitstream and ``deploy/``), ``build.json``, what it reads, and ``boot/``: the recipe that
turns the bitstream and the PS application into a ZedBoard boot image (FSBL + bitstream + app,
bootgen) or loads them over JTAG."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tinydyn.hw.boards import FpgaBoard
from tinydyn.hw.finish import LINK_STEPS, PARTITION_STEPS

BUILD_SH = """#!/usr/bin/env bash
# Finish the FPGA build: one bitstream holding every partition + deploy/ (needs Vivado and Vitis HLS
# {vivado} on PATH, i.e. `source <Xilinx>/Vivado/<ver>/settings64.sh`, and the tinydyn .venv
# with finn-plus: scripts/setup_finn.sh). Run from anywhere: ./build_bitstream.sh
set -euo pipefail
cd "$(dirname "$0")"
die() {{ echo "build_bitstream: $1" >&2; exit 1; }}
PY=${{TINYDYN_PYTHON:-python3}}
"$PY" -c "import tinydyn.hw.finish" 2>/dev/null ||
    die "$PY cannot import tinydyn: set TINYDYN_PYTHON to the .venv's python"
# finn-plus's pinned dependencies (finn-hlslib, ZedBoard board files, ...) by its own mechanism;
# without network this stops with one line naming what to fetch
"$PY" -m tinydyn.hw.deps "$(pwd)"
command -v vivado >/dev/null || die "vivado not on PATH: source Vivado's settings64.sh"
command -v vitis-run >/dev/null || command -v vitis_hls >/dev/null || die "Vitis HLS not on PATH"
"$PY" -m tinydyn.hw.finish "$(pwd)"
"""


BIF = """/* ZedBoard boot image: the FSBL (DDR, clocks, MIO, UART), the bitstream, the PS application.
 * bootgen -arch zynq -image boot.bif -o BOOT.bin -w on   (make_boot_image.sh runs it) */
the_ROM_image:
{
    [bootloader] fsbl/executable.elf
    ../deploy/bitfile/tinydyn_zynq.bit
    ../deploy/ps/td_fpga_ps.elf
}
"""

BOOT_SH = """#!/usr/bin/env bash
# Make BOOT.bin for the ZedBoard's SD card (boot-mode jumpers MIO2..6 on SD: JP7-JP11 = 0,0,1,1,0)
# from the finished build (run ./build_bitstream.sh first). Needs Vivado and Vitis (xsct, bootgen)
# on PATH, i.e. `source <Xilinx>/Vitis/<ver>/settings64.sh`, and arm-none-eabi-gcc (or
# CC=<cross gcc>). Steps, each also runnable by hand:
#   1. Vivado: the hardware platform (XSA, bitstream inside) from the project tinydyn.hw.finish built
#   2. xsct: the FSBL for ps7_cortexa9_0 from that XSA (Xilinx's zynq_fsbl template)
#   3. make: the PS application deploy/ps/td_fpga_ps.elf (start-up, linker script, MMU, UART1)
#   4. bootgen: BOOT.bin from boot.bif
# Then: copy BOOT.bin to a FAT32 SD card, boot, and talk to the board over its USB-UART (UART1,
# 921600 8N1): tinydyn measure --port /dev/ttyACM0 --baud 921600 --ir ../ir
set -euo pipefail
cd "$(dirname "$0")"
die() {{ echo "make_boot_image: $1" >&2; exit 1; }}
[ -f ../deploy/finish.json ] || die "no ../deploy/finish.json: run ../build_bitstream.sh first"
for tool in vivado xsct bootgen make; do command -v "$tool" >/dev/null || die "$tool not on PATH"; done
PROJECT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vivado_project"])' \\
    ../deploy/finish.json)
XPR=$(ls "$PROJECT"/*.xpr | head -n 1)
cat > write_xsa.tcl <<TCL
open_project $XPR
open_run impl_1
write_hw_platform -fixed -include_bit -force -file [pwd]/tinydyn_zynq.xsa
TCL
vivado -mode batch -nojournal -nolog -source write_xsa.tcl
cat > fsbl.tcl <<TCL
hsi open_hw_design [pwd]/tinydyn_zynq.xsa
hsi generate_app -os standalone -proc ps7_cortexa9_0 -app zynq_fsbl -compile -sw fsbl -dir [pwd]/fsbl
TCL
xsct fsbl.tcl
make -C ../deploy/ps
bootgen -arch zynq -image boot.bif -o BOOT.bin -w on
echo "make_boot_image: wrote $(pwd)/BOOT.bin"
"""

JTAG_TCL = """# Load the design over JTAG instead of an SD card (xsct jtag_run.tcl, from this directory, after
# make_boot_image.sh's steps 1-3; boot-mode jumpers on JTAG: all 0). ps7_init.tcl comes with the XSA.
connect
targets -set -nocase -filter {{name =~ "APU*"}}
rst -system
after 1000
fpga ../deploy/bitfile/tinydyn_zynq.bit
targets -set -nocase -filter {{name =~ "APU*"}}
loadhw -hw tinydyn_zynq.xsa
source fsbl/ps7_init.tcl
ps7_init
ps7_post_config
targets -set -nocase -filter {{name =~ "*A9*#0"}}
dow ../deploy/ps/td_fpga_ps.elf
con
"""


def write_boot_recipe(out_dir: Path) -> Path:
    """``boot/``: boot.bif, make_boot_image.sh (XSA, FSBL, app, bootgen) and jtag_run.tcl."""
    boot = out_dir / "boot"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "boot.bif").write_text(BIF)
    (boot / "jtag_run.tcl").write_text(JTAG_TCL.format())
    script = boot / "make_boot_image.sh"
    script.write_text(BOOT_SH.format())
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def write_package(out_dir: Path, board: FpgaBoard, stages: list[dict]) -> Path:
    (out_dir / "build.json").write_text(
        json.dumps(
            {
                "board": board.name,
                "part": board.part,
                "partitions": stages,
                "partition_steps": PARTITION_STEPS,
                "link_steps": LINK_STEPS,
            },
            indent=2,
        )
    )
    script = out_dir / "build_bitstream.sh"
    script.write_text(BUILD_SH.format(vivado="2022.2 or later"))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    write_boot_recipe(out_dir)
    return script
