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
    # the serial firmware (protocol server on the board's UART), besides the test harness:
    serial_files: tuple[str, ...] = ()  # its extra files (main, drivers), also in `files`
    firmware: str = ""  # what `make firmware` builds ("" = the board has no serial firmware)
    firmware_cflags: str = ""  # defaults for FW_CFLAGS (make variables allowed)
    objcopy: str = ""  # binary image for flashing (firmware.bin) when set
    boots_here: bool = False  # `tinydyn run` can start it on this machine (a process or QEMU)
    srcs: tuple[str, ...] = field(default=())  # harness build's board sources (set by get_board)
    serial_srcs: tuple[str, ...] = field(default=())  # firmware build's extra sources

    @property
    def extra_deps(self) -> str:
        return self.linker_script


_CM = ("cortex-m/startup.c", "cortex-m/semihost.c")
# Paths are relative to tinydyn/firmware/boards/; every file lands flat in the project's board/.
_QEMU_SERIAL = ("qemu-mps2-an386/serial_main.c",)
_NUCLEO_SERIAL = (
    "nucleo-l4r5zi/serial_main.c",
    "nucleo-l4r5zi/i2c_stm32l4.c",
    "../drivers/i2c.h",
    "../drivers/ina219.h",
    "../drivers/ina219.c",
)

# what the two Cortex-M4 boards share: compiler, flags, linker script, image names
_CORTEX_M4: dict[str, str] = {
    "cc": "arm-none-eabi-gcc",
    "cflags": f"-std=c99 -O2 {M4_FLAGS} {WARNINGS} -ffunction-sections -fdata-sections",
    "ldflags": "-T board/link.ld -nostartfiles --specs=nano.specs --specs=nosys.specs -Wl,--gc-sections",
    "target": "fw.elf",
    "linker_script": "board/link.ld",
    "size": "arm-none-eabi-size",
    "firmware": "firmware.elf",
}

BOARDS: dict[str, Board] = {
    "host": Board(
        name="host",
        cc="gcc",
        cflags=f"-std=c99 -O2 {WARNINGS}",
        ldflags="",
        target="fw",
        files=("host/board.c", "host/board_host.c"),
        description="native Linux process (tests, bit-exact checks)",
        serial_files=("host/board_host.c",),
        firmware="board_host",
        boots_here=True,
    ),
    "qemu-mps2-an386": Board(
        name="qemu-mps2-an386",
        **_CORTEX_M4,
        files=(*_CM, "qemu-mps2-an386/board.c", "qemu-mps2-an386/link.ld", *_QEMU_SERIAL),
        description="Cortex-M4 under QEMU (mps2-an386)",
        serial_files=_QEMU_SERIAL,
        # must equal QEMU's -icount shift; `tinydyn emulate` reads it back from the ELF
        firmware_cflags="-DTD_ICOUNT_SHIFT=$(ICOUNT_SHIFT)",
        boots_here=True,
    ),
    "nucleo-l4r5zi": Board(
        name="nucleo-l4r5zi",
        **_CORTEX_M4,
        files=(*_CM, "nucleo-l4r5zi/board.c", "nucleo-l4r5zi/link.ld", *_NUCLEO_SERIAL),
        description="STM32L4R5 Nucleo-144 (real board; compiled here)",
        serial_files=_NUCLEO_SERIAL,
        # the INA219 probe decides at boot whether energy is measured or modelled
        firmware_cflags="-DTD_SERIAL_RUNTIME_ENERGY_KIND",
        objcopy="arm-none-eabi-objcopy",
    ),
}


def boards_with_firmware() -> list[str]:
    """Boards whose project builds the serial firmware `tinydyn measure` talks to."""
    return [name for name, board in BOARDS.items() if board.firmware]


def boards_that_boot_here() -> list[str]:
    """Boards `tinydyn run` can start on this machine (a Linux process, QEMU)."""
    return [name for name, board in BOARDS.items() if board.boots_here]


def get_board(name: str) -> Board:
    try:
        board = BOARDS[name]
    except KeyError:
        raise CodegenError(f"unknown board '{name}': use one of {', '.join(BOARDS)}") from None

    def flat(files: tuple[str, ...]) -> tuple[str, ...]:
        return tuple("board/" + f.split("/")[-1] for f in files if f.endswith(".c"))

    srcs = flat(tuple(f for f in board.files if f not in board.serial_files))
    return Board(**{**board.__dict__, "srcs": srcs, "serial_srcs": flat(board.serial_files)})
