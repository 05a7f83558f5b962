"""The Cortex-M4 cycle model: a QEMU TCG plugin that charges each executed instruction its
Cortex-M4 cost (docs/CYCLES.md). Figures it gives are MODELLED cycles, never measured ones.

The plugin's C source is ``tinydyn/firmware/qemu_plugin/m4cycles.c``; :func:`plugin_path` builds
it with the host C compiler (``gcc -shared -fPIC -O2``) into a cache directory the first time it
is needed (``scripts/setup.sh`` does it ahead: ``python -m tinydyn.host.cycles --build``). The
file name carries a hash of the source, so an edited plugin is rebuilt, never stale.

Under QEMU the plugin is told the address of ``td_infer`` (read here from the ELF symbol table)
and writes one JSON line per call of it: modelled cycles, the instructions it counted, taken and
not-taken branches. :class:`CycleLog` follows that file so that each RESULT is paired with the
line the plugin wrote for it.

``COSTS`` is the cost table the plugin implements (for tests and docs): cycles per instruction
class from the Cortex-M4 TRM r0p1, section 3.3 "Instruction set summary" / Table 3-1 "Cortex-M4
instruction set summary" and 3.3.2 "Load/store timings". ``P`` (pipeline refill), the divide
time and flash wait states are parameters of :class:`CycleModel`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tinydyn.errors import TinydynError

SOURCE = Path(__file__).resolve().parents[1] / "firmware" / "qemu_plugin" / "m4cycles.c"
PLUGIN_NAME = "m4cycles"
ENTRY_SYMBOL = "td_infer"
LABEL = "modelled"  # every figure from this module is modelled, never measured

# cycles per instruction class (the plugin's tables; docs/CYCLES.md gives each source)
COSTS: dict[str, int] = {
    "alu": 1,  # data processing, shifts, bit-field, extend, SSAT/USAT, SXTB16, IT, NOP, MOVW/MOVT
    "mul": 1,  # MUL(S), SMUL*, SMLA<x><y>, SMLAD/SMUAD/SMLSD, SMMUL/SMMLA, USAD8
    "mla": 2,  # MLA, MLS
    "long_mul": 1,  # SMULL, UMULL, SMLAL, UMLAL, UMAAL, SMLALD, SMLSLD
    "load": 2,  # LDR/LDRB/LDRH/LDRSB/LDRSH, LDREX (single)
    "load_pipelined": 1,  # a single load right after a single load whose result it does not address with
    "store_imm": 1,  # STR/STRB/STRH with an immediate offset (write buffer)
    "store_reg": 2,  # ... with a register offset; 1 right after a single load (pipelined)
    "ldrd": 3,  # LDRD/STRD: 1 + N, N = 2
    "ldm_base": 1,  # LDM/STM/PUSH/POP: 1 + N registers
    "branch_not_taken": 1,  # B<cond>, CBZ/CBNZ falling through
    "branch_taken": 1,  # + P: B, B<cond>, BL, BX, BLX, CBZ/CBNZ when taken; ADD/MOV PC
    "ldr_pc": 2,  # + P
    "tbb": 2,  # TBB/TBH: + P
}
DEFAULT_REFILL = 2  # P: the TRM's pipeline refill, 1..3 (alignment and width of the target)
DEFAULT_DIV = 12  # SDIV/UDIV: the TRM's 2..12 (early termination on operand size): worst case
FLASH_END = 0x0040_0000  # mps2-an386 code memory [0, 4 MB): where wait states apply


class CycleModelError(TinydynError):
    """The cycle-model plugin cannot be built, loaded or read."""


@dataclass(frozen=True)
class CycleModel:
    """Parameters of the modelled Cortex-M4 (plugin arguments)."""

    refill: int = DEFAULT_REFILL  # P cycles after a taken branch, 1..3
    div: int = DEFAULT_DIV  # SDIV/UDIV cycles, 2..12
    flash_ws: int = 0  # wait states per 32-bit instruction fetch from flash (mps2-an386: 0)
    flash_end: int = FLASH_END

    def __post_init__(self) -> None:
        if not 1 <= self.refill <= 3:
            raise CycleModelError(f"refill P = {self.refill} is outside the TRM's 1..3")
        if not 2 <= self.div <= 12:
            raise CycleModelError(f"divide time {self.div} is outside the TRM's 2..12 cycles")
        if not 0 <= self.flash_ws <= 15:
            raise CycleModelError(f"flash wait states {self.flash_ws} are outside 0..15")

    def args(self) -> list[str]:
        return [
            f"refill={self.refill}",
            f"div={self.div}",
            f"flash_ws={self.flash_ws}",
            f"flash_end={self.flash_end:#x}",
        ]

    def to_json(self) -> dict[str, Any]:
        return {"plugin": PLUGIN_NAME, "kind": LABEL, **asdict(self)}


@dataclass(frozen=True)
class CycleRecord:
    """One region (one td_infer call) as the plugin wrote it. With a symbol file (``syms``, the
    per-layer attribution of ``tinydyn profile``) it also carries (instructions, cycles) per bucket
    of that file (``layers``) and of everything else in the region (``control``); they sum to
    ``insns`` and ``cycles`` exactly."""

    n: int
    cycles: int
    insns: int
    taken: int = 0
    not_taken: int = 0
    layers: tuple[tuple[int, int], ...] | None = None
    control: tuple[int, int] | None = None
    stack_overflow: int = 0


# ---------------------------------------------------------------------------- the plugin
def cache_dir() -> Path:
    """Where built plugins live: $TINYDYN_PLUGIN_DIR, else <venv>/lib/tinydyn-plugins when writable,
    else ~/.cache/tinydyn/plugins."""
    env = os.environ.get("TINYDYN_PLUGIN_DIR")
    if env:
        return Path(env)
    if sys.prefix != sys.base_prefix:  # inside a virtual environment (.venv)
        venv = Path(sys.prefix) / "lib" / "tinydyn-plugins"
        if os.access(venv.parent, os.W_OK):
            return venv
    return Path.home() / ".cache" / "tinydyn" / "plugins"


def _source_hash() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]


def plugin_path(build: bool = True) -> Path:
    """The built plugin (.so) for the current source; built on demand unless ``build`` is False."""
    if not SOURCE.is_file():
        raise CycleModelError(f"plugin source {SOURCE} is missing: reinstall tinydyn")
    path = cache_dir() / f"{PLUGIN_NAME}-{_source_hash()}.so"
    if path.is_file() or not build:
        return path
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise CycleModelError(
            "no host C compiler (gcc) to build the cycle-model plugin: run scripts/setup.sh"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{PLUGIN_NAME}-", suffix=".so", dir=path.parent)
    os.close(fd)
    cmd = [
        cc,
        "-shared",
        "-fPIC",
        "-O2",
        "-std=gnu11",
        "-Wall",
        "-fvisibility=hidden",
        "-o",
        tmp,
        str(SOURCE),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        Path(tmp).unlink(missing_ok=True)
        raise CycleModelError(
            f"building the cycle-model plugin failed: {(proc.stderr or proc.stdout)[-1500:]}"
        )
    os.replace(tmp, path)  # atomic: concurrent builders never load a half-written file
    return path


def plugin_option(
    out: Path,
    entry: int | None,
    model: CycleModel | None = None,
    plugin: Path | None = None,
    syms: Path | None = None,
) -> str:
    """The value of QEMU's ``-plugin`` option: the plugin writes to ``out``; ``entry`` delimits the
    measured function (None: the whole run is one region); ``syms`` is a code-range file for the
    per-layer attribution (:func:`write_syms`)."""
    model = model or CycleModel()
    so = plugin or plugin_path()
    parts = [str(so), f"out={Path(out).resolve()}", *model.args()]
    if entry is not None:
        parts.append(f"entry={entry:#x}")
    paths = [str(so), str(Path(out).resolve())]
    if syms is not None:
        parts.append(f"syms={Path(syms).resolve()}")
        paths.append(str(Path(syms).resolve()))
    for p in paths:
        if "," in p:
            raise CycleModelError(f"QEMU cannot take a plugin path with a comma: {p}")
    return ",".join(parts)


def qemu_plugin_args(
    out: Path,
    entry: int | None,
    model: CycleModel | None = None,
    plugin: Path | None = None,
    syms: Path | None = None,
) -> list[str]:
    return ["-plugin", plugin_option(out, entry, model, plugin, syms)]


# ---------------------------------------------------------------------------- ELF symbols
def symbol_address(elf: Path, name: str = ENTRY_SYMBOL) -> int:
    """Address of a function symbol in a 32-bit little-endian ELF (Thumb bit cleared)."""
    data = Path(elf).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise CycleModelError(f"{elf} is not a 32-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x2E)
    sections = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    for sh in sections:
        if sh[1] != 2:  # SHT_SYMTAB
            continue
        strtab = sections[sh[6]]
        for off in range(sh[4], sh[4] + sh[5], 16):
            st_name, st_value, _size, st_info = struct.unpack_from("<IIIB", data, off)
            start = strtab[4] + st_name
            sym = data[start : data.index(b"\0", start)].decode(errors="replace")
            if sym == name and st_info & 0xF == 2:  # STT_FUNC
                return st_value & ~1
    raise CycleModelError(f"{elf} has no function symbol {name!r} (was it stripped?)")


@dataclass(frozen=True)
class ElfSymbol:
    """A function symbol: its address (Thumb bit cleared), size, and the source file whose local
    symbols it follows in the symbol table ("" for global symbols or without STT_FILE entries)."""

    name: str
    address: int
    size: int
    file: str
    local: bool


def function_symbols(elf: Path) -> list[ElfSymbol]:
    """Every function symbol (STT_FUNC) of a 32-bit little-endian ELF, in symbol-table order.
    Local symbols follow the STT_FILE entry of the source they come from (GCC and GNU ld keep
    that order), so two static functions of the same name in different files can be told apart."""
    data = Path(elf).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise CycleModelError(f"{elf} is not a 32-bit little-endian ELF file")
    try:
        (shoff,) = struct.unpack_from("<I", data, 0x20)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x2E)
        sections = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
        out: list[ElfSymbol] = []
        for sh in sections:
            if sh[1] != 2:  # SHT_SYMTAB
                continue
            strtab = sections[sh[6]]
            current = ""
            for off in range(sh[4], sh[4] + sh[5] - 15, 16):
                st_name, st_value, st_size, st_info = struct.unpack_from("<IIIB", data, off)
                start = strtab[4] + st_name
                sym = data[start : data.index(b"\0", start)].decode(errors="replace")
                kind, bind = st_info & 0xF, st_info >> 4
                if kind == 4:  # STT_FILE
                    current = sym
                elif kind == 2:  # STT_FUNC
                    local = bind == 0
                    out.append(ElfSymbol(sym, st_value & ~1, st_size, current if local else "", local))
        return out
    except (struct.error, ValueError, IndexError):
        raise CycleModelError(f"{elf}: its symbol table is truncated or malformed") from None


# ---------------------------------------------------------------------------- output
def _pair(v: Any) -> tuple[int, int]:
    if not isinstance(v, list) or len(v) != 2:
        raise TypeError("want [insns, cycles]")
    return int(v[0]), int(v[1])


def parse_line(line: str) -> CycleRecord:
    try:
        d = json.loads(line)
        layers = d.get("layers")
        return CycleRecord(
            int(d["n"]),
            int(d["cycles"]),
            int(d["insns"]),
            int(d["taken"]),
            int(d["not_taken"]),
            None if layers is None else tuple(_pair(x) for x in layers),
            None if d.get("control") is None else _pair(d["control"]),
            int(d.get("stack_overflow", 0)),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CycleModelError(f"cycle-model plugin wrote a line it should not: {line!r} ({e})") from None


def read_records(path: Path) -> list[CycleRecord]:
    """All complete lines of a plugin output file."""
    p = Path(path)
    if not p.exists():
        return []
    text = p.read_text()
    lines = text.split("\n")
    return [parse_line(x) for x in lines[:-1] if x.strip()]  # the last piece has no newline yet


class CycleLog:
    """Follows the plugin's output file of a running QEMU. ``take()`` after each RESULT returns
    the newest record written since the previous ``take()`` (the plugin writes it before the
    firmware sends the RESULT; a retried INFER that ran twice leaves two lines, both the same)."""

    def __init__(self, path: Path, model: CycleModel) -> None:
        self.path = Path(path)
        self.model = model
        self._pos = 0

    def take(self) -> CycleRecord | None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return None
        end = data.rfind(b"\n")
        if end < 0:
            return None
        self._pos += end + 1
        lines = [x for x in data[:end].decode().split("\n") if x.strip()]
        return parse_line(lines[-1]) if lines else None


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build (or locate) the Cortex-M4 cycle-model QEMU plugin.")
    parser.add_argument("--build", action="store_true", help="build it if missing, print its path")
    args = parser.parse_args(argv)
    try:
        print(plugin_path(build=args.build))
    except CycleModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
