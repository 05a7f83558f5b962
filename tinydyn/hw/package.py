"""The parts of the output directory a Vivado user finishes: one script that resumes each
partition's finn-plus build (backbone segments, exit heads) from its saved estimate step
through the bitfile steps."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tinydyn.hw.boards import FpgaBoard
from tinydyn.hw.flow import VIVADO_STEPS

RESUME_PY = '''"""Resume every partition's finn-plus build through bitfile + deploy package (needs Vivado)."""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
from tinydyn.hw.boards import get_board, register_with_finn  # noqa: E402
from tinydyn.hw.finn_shims import load_finn  # noqa: E402
from tinydyn.hw.flow import FRONT_END_STEPS, VIVADO_STEPS, make_config  # noqa: E402

meta = json.loads((HERE / "build.json").read_text())
build_dataflow = load_finn(HERE)
board = get_board(meta["board"])
register_with_finn(board)
from finn.builder.build_dataflow_config import DataflowOutputType  # noqa: E402

failed = 0
for stage in meta["partitions"]:
    stage_dir = HERE / "stages" / stage["name"]
    cfg = make_config(board, stage_dir, stage["target_fps"], FRONT_END_STEPS + VIVADO_STEPS, None)
    cfg.start_step = VIVADO_STEPS[0]
    cfg.generate_outputs = [DataflowOutputType.ESTIMATE_REPORTS, DataflowOutputType.STITCHED_IP,
                            DataflowOutputType.BITFILE, DataflowOutputType.PYNQ_DRIVER,
                            DataflowOutputType.DEPLOYMENT_PACKAGE]
    print(f"== {stage['name']}: finn-plus {', '.join(VIVADO_STEPS)}")
    failed |= build_dataflow.build_dataflow_cfg(str(HERE / "stages" / stage["name"] / "model.onnx"), cfg) != 0
sys.exit(1 if failed else 0)
'''

BUILD_SH = """#!/usr/bin/env bash
# Finish the FPGA build: bitstream + deploy package for every partition (needs Vivado and Vitis HLS
# {vivado} on PATH, i.e. `source <Xilinx>/Vivado/<ver>/settings64.sh`, and the tinydyn .venv
# with finn-plus: scripts/setup_finn.sh). Run from anywhere: ./build_bitstream.sh
set -euo pipefail
cd "$(dirname "$0")"
die() {{ echo "build_bitstream: $1" >&2; exit 1; }}
command -v vivado >/dev/null || die "vivado not on PATH: source Vivado's settings64.sh"
command -v vitis-run >/dev/null || command -v vitis_hls >/dev/null || die "Vitis HLS not on PATH"
PY=${{TINYDYN_PYTHON:-python3}}
"$PY" resume_vivado.py
echo "build_bitstream: bitfiles and deploy packages under stages/*/deploy; PS controller sources in ps/"
"""


def write_package(out_dir: Path, board: FpgaBoard, stages: list[dict]) -> Path:
    (out_dir / "build.json").write_text(
        json.dumps(
            {"board": board.name, "part": board.part, "partitions": stages, "vivado_steps": VIVADO_STEPS},
            indent=2,
        )
    )
    (out_dir / "resume_vivado.py").write_text(RESUME_PY)
    script = out_dir / "build_bitstream.sh"
    script.write_text(BUILD_SH.format(vivado="2022.2 or later"))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script
