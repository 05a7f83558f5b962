"""FPGA path: LC-Net stages → QONNX → finn-plus dataflow builds for a Zynq board (docs/FPGA.md).

Heavy imports (torch, qonnx, finn-plus) happen inside the functions, so ``import tinydyn.hw``
is cheap and a missing finn-plus is reported as a one-line error when a build starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinydyn.hw.report import FpgaReport


def build_fpga(checkpoint: Path | None, board: str, out_dir: Path, **kwargs: Any) -> FpgaReport:
    from tinydyn.hw.build import build_fpga as _build

    return _build(checkpoint, board, out_dir, **kwargs)


__all__ = ["build_fpga"]
