"""Boards a firmware project can target: compiler, flags and board-support files."""

from __future__ import annotations

from dataclasses import dataclass, field

from tinydyn.codegen.errors import CodegenError

WARNINGS = "-Wall -Wextra -Werror"
M4_FLAGS = "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16"


@dataclass(frozen=True)
class Board:
    name: str
    cc: str
    cflags: str
    ldflags: str
    target: str  # what `make` builds
    files: tuple[str, ...]  # board-support files, relative to tinydyn/firmware/boards/
    linker_script: str = ""
    size: str = ""  # size tool to print the footprint
    description: str = ""
    srcs: tuple[str, ...] = field(default=())

    @property
    def extra_deps(self) -> str:
        return self.linker_script


_CM = ("cortex-m/startup.c", "cortex-m/semihost.c")

BOARDS: dict[str, Board] = {
    "host": Board(
        name="host",
        cc="gcc",
        cflags=f"-std=c99 -O2 {WARNINGS}",
        ldflags="",
        target="fw",
        files=("host/board.c",),
        description="native Linux process (tests, bit-exact checks)",
    ),
    "qemu-mps2-an386": Board(
        name="qemu-mps2-an386",
        cc="arm-none-eabi-gcc",
        cflags=f"-std=c99 -O2 {M4_FLAGS} {WARNINGS} -ffunction-sections -fdata-sections",
        ldflags="-T board/link.ld -nostartfiles --specs=nano.specs --specs=nosys.specs -Wl,--gc-sections",
        target="fw.elf",
        files=(*_CM, "qemu-mps2-an386/board.c", "qemu-mps2-an386/link.ld"),
        linker_script="board/link.ld",
        size="arm-none-eabi-size",
        description="Cortex-M4 under QEMU (mps2-an386)",
    ),
    "nucleo-l4r5zi": Board(
        name="nucleo-l4r5zi",
        cc="arm-none-eabi-gcc",
        cflags=f"-std=c99 -O2 {M4_FLAGS} {WARNINGS} -ffunction-sections -fdata-sections",
        ldflags="-T board/link.ld -nostartfiles --specs=nano.specs --specs=nosys.specs -Wl,--gc-sections",
        target="fw.elf",
        files=(*_CM, "nucleo-l4r5zi/board.c", "nucleo-l4r5zi/link.ld"),
        linker_script="board/link.ld",
        size="arm-none-eabi-size",
        description="STM32L4R5 Nucleo-144 (real board; compiled here)",
    ),
}


def get_board(name: str) -> Board:
    try:
        board = BOARDS[name]
    except KeyError:
        raise CodegenError(f"unknown board '{name}': use one of {', '.join(BOARDS)}") from None
    srcs = tuple("board/" + f.split("/")[-1] for f in board.files if f.endswith(".c"))
    return Board(**{**board.__dict__, "srcs": srcs})
