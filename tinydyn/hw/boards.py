"""FPGA boards tinydyn builds for, and their registration with finn-plus at run time.

finn-plus knows boards through ``pynq_part_map``/``part_map`` (part names),
``pynq_native_port_width`` (AXI HP width) and ``platforms`` (resource model), all in its
``finn.util`` modules. The ZedBoard is not among them; it carries the same Zynq-7020 die as
the Pynq-Z1/Z2 (different package, clg484 instead of clg400), so it reuses their platform.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinydyn.errors import TinydynError


class BoardError(TinydynError):
    """A board tinydyn has no FPGA build for."""


@dataclass(frozen=True)
class FpgaBoard:
    name: str  # tinydyn's name (CLI)
    finn_name: str  # key in finn-plus's board maps
    part: str
    platform_like: str  # existing finn-plus board whose platform model is reused
    port_width: int  # AXI HP port width in bits
    luts: int
    ffs: int
    bram18: int
    dsps: int
    clock_mhz: float = 100.0
    cpu: str = "Cortex-A9"

    @property
    def resources(self) -> dict[str, int]:
        return {"LUT": self.luts, "FF": self.ffs, "BRAM_18K": self.bram18, "DSP": self.dsps}


BOARDS: dict[str, FpgaBoard] = {
    "zedboard": FpgaBoard(
        name="zedboard",
        finn_name="ZedBoard",
        part="xc7z020clg484-1",
        platform_like="Pynq-Z1",
        port_width=64,
        luts=53_200,
        ffs=106_400,
        bram18=280,
        dsps=220,
    ),
}


def get_board(name: str) -> FpgaBoard:
    board = BOARDS.get(name.lower())
    if board is None:
        raise BoardError(f"unknown FPGA board '{name}': use one of {', '.join(sorted(BOARDS))}")
    return board


def register_with_finn(board: FpgaBoard) -> None:
    """Make finn-plus resolve ``board.finn_name`` (idempotent; finn must be importable)."""
    from finn.util import basic, platforms

    basic.pynq_part_map[board.finn_name] = board.part
    basic.part_map[board.finn_name] = board.part
    basic.pynq_native_port_width[board.finn_name] = board.port_width
    platforms.platforms[board.finn_name] = platforms.platforms[board.platform_like]
