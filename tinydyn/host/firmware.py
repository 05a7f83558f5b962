"""Build the serial firmware (protocol server + model) of a board: ``make firmware`` in a project.

``tinydyn build`` and :func:`tinydyn.codegen.build_project` render a project whose default target
is the semihosting test harness; the same Makefile's ``firmware`` target links the protocol server
(td_server.c, protocol.c) with the board's ``serial_main.c`` instead (see tinydyn/codegen/boards.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tinydyn.cost.budget import BudgetCosts
from tinydyn.errors import TinydynError
from tinydyn.ir import IRModel

DEFAULT_ICOUNT_SHIFT = 6
_MARKER = re.compile(rb"tinydyn-icount-shift=(\d+);")


class FirmwareBuildError(TinydynError):
    """The serial firmware could not be built."""


def build_firmware(
    ir: IRModel,
    board: str,
    out_dir: Path,
    icount_shift: int = DEFAULT_ICOUNT_SHIFT,
    extra_cflags: str = "",
    costs: BudgetCosts | None = None,
) -> Path:
    """Render the project for ``board`` into ``out_dir`` and build its serial firmware.

    Returns the firmware file (``firmware.elf`` on Cortex-M boards, ``board_host`` on the host).
    ``icount_shift`` must equal QEMU's ``-icount shift`` (``tinydyn emulate`` reads it back).
    ``costs``: the budget cost model to bake in (tinydyn/cost/budget.py; default: the board's
    energy model, no cycles unit).
    """
    from tinydyn.codegen.boards import get_board
    from tinydyn.codegen.project import build_project

    target = get_board(board)
    if not target.firmware:
        raise FirmwareBuildError(
            f"board '{board}' has no serial firmware: use qemu-mps2-an386, nucleo-l4r5zi or host"
        )
    if shutil.which(target.cc) is None:
        raise FirmwareBuildError(f"compiler {target.cc} not found: install it (scripts/setup.sh installs it)")
    if not 0 <= icount_shift <= 10:
        raise FirmwareBuildError(f"icount shift {icount_shift} is outside 0..10: use e.g. 6")
    out_dir = Path(out_dir)
    build_project(ir, board, out_dir, costs=costs)
    write_energy_header(ir, board, out_dir / "board")
    firmware = out_dir / target.firmware
    for stale in (firmware, out_dir / "firmware.bin"):
        stale.unlink(missing_ok=True)  # make cannot see a changed ICOUNT_SHIFT: always relink
    cmd = ["make", "-s", "-C", str(out_dir), "firmware", f"ICOUNT_SHIFT={icount_shift}"]
    if extra_cflags:
        cmd.append(f"EXTRA_CFLAGS={extra_cflags}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not firmware.is_file():
        detail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise FirmwareBuildError(f"building the {board} serial firmware in {out_dir} failed: {detail}")
    return firmware


def write_energy_header(ir: IRModel, board: str, board_dir: Path) -> Path | None:
    """board/td_energy_model.h: the board's modelled-energy arithmetic for this model, rendered
    from templates/energy_model.h.j2 by :func:`tinydyn.cost.energy.c_header`, so that the firmware
    reports exactly what the host's model computes. None for boards the energy model does not
    know (their serial_main.c then uses its own stand-in)."""
    from tinydyn.cost import energy

    if board not in energy.COEFFICIENTS:
        return None
    path = Path(board_dir) / "td_energy_model.h"
    path.write_text(energy.c_header(board, energy.traffic_profile(ir, board)))
    return path


def icount_shift_of(elf: Path) -> int | None:
    """The ``-icount`` shift a QEMU serial firmware was built for (None if it carries none)."""
    match = _MARKER.search(Path(elf).read_bytes())
    return int(match.group(1)) if match else None
