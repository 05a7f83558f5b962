"""Build the C under test into shared libraries for ctypes (gcc, host)."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIRMWARE = HERE.parents[1] / "tinydyn" / "firmware"
DRIVERS = FIRMWARE / "drivers"
CFLAGS = ["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-Wconversion", "-shared", "-fPIC"]

WRITE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint8, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)
READ_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint8, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)


def _gcc(out: Path, sources: list[Path], extra: list[str]) -> ctypes.CDLL:
    cmd = ["gcc", *CFLAGS, f"-I{DRIVERS}", *extra, *map(str, sources), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(out))


def build_driver(directory: Path) -> ctypes.CDLL:
    """drivers/ina219.c + the ctypes I2C shim."""
    return _gcc(directory / "libina219.so", [DRIVERS / "ina219.c", HERE / "shim.c"], [])


def build_fake_l4(directory: Path, timeout_polls: int = 1000) -> ctypes.CDLL:
    """boards/nucleo-l4r5zi/i2c_stm32l4.c over a fake register file (fake_l4.h)."""
    source = FIRMWARE / "boards" / "nucleo-l4r5zi" / "i2c_stm32l4.c"
    extra = ["-include", str(HERE / "fake_l4.h"), f"-DTD_I2C_TIMEOUT_POLLS={timeout_polls}u"]
    return _gcc(directory / "libi2c_l4.so", [source, HERE / "fake_l4.c"], extra)
