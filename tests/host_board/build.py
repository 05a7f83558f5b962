"""Compile the protocol C code for tests: the host board, the vector driver, the fuzzer."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "tinydyn" / "firmware"
HERE = Path(__file__).resolve().parent
WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror"]

# protocol + server + the host board's td_board.h counter + the stand-in model
CORE = [FW / "protocol.c", FW / "td_server.c", FW / "boards" / "host" / "board.c", HERE / "stub_model.c"]


def compile_c(out: Path, sources: Sequence[Path], extra: Sequence[str] = (), cc: str = "gcc") -> Path:
    compiler = shutil.which(cc)
    if compiler is None:
        raise FileNotFoundError(cc)
    cmd = [compiler, *WARN, "-O1", f"-I{FW}", *extra, *map(str, sources), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"compile failed: {' '.join(cmd)}\n{proc.stderr}")
    return out


def build_board(out_dir: Path, defines: Sequence[str] = (), name: str = "board_host") -> Path:
    return compile_c(
        out_dir / name, [*CORE, FW / "boards" / "host" / "board_host.c"], [f"-D{d}" for d in defines]
    )


def build_driver(out_dir: Path) -> Path:
    return compile_c(out_dir / "vector_driver", [*CORE, HERE / "vector_driver.c"])
