"""The parts of the output directory a Vivado user finishes: ``build_bitstream.sh``, which runs
:mod:`tinydyn.hw.finish` (every partition's IP generation, one Zynq design holding all of them,
the bitstream and ``deploy/``), and ``build.json``, what it reads."""

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
command -v vivado >/dev/null || die "vivado not on PATH: source Vivado's settings64.sh"
command -v vitis-run >/dev/null || command -v vitis_hls >/dev/null || die "Vitis HLS not on PATH"
PY=${{TINYDYN_PYTHON:-python3}}
"$PY" -c "import tinydyn.hw.finish" 2>/dev/null ||
    die "$PY cannot import tinydyn: set TINYDYN_PYTHON to the .venv's python"
"$PY" -m tinydyn.hw.finish "$(pwd)"
"""


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
    return script
