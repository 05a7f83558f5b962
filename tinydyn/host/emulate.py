"""Boot a serial firmware under QEMU (mps2-an386, Cortex-M4) with UART0 on a pseudo-terminal.

    with QemuBoard(Path("runs/main/firmware/firmware.elf")) as board:
        client = BoardClient(board.port)

QEMU runs with ``-icount shift=S,align=off``: every guest instruction advances virtual time by
2^S ns, so the firmware's Timer0 counts retired instructions deterministically. S is read from
the firmware (it was built with ``-DTD_ICOUNT_SHIFT=S``), so the count is never scaled wrongly.
QEMU prints ``char device redirected to /dev/pts/N``; :class:`BoardProcess` finds that line.
Stopping sends SIGTERM, on which QEMU shuts down cleanly (and closes the pty).

With ``cycle_model`` (the default) QEMU also loads the Cortex-M4 cycle-model plugin
(tinydyn/host/cycles.py, docs/CYCLES.md), told the address of ``td_infer``: ``board.cycles`` then
yields the MODELLED cycles (and the plugin's instruction count) of each inference.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tinydyn.errors import TinydynError
from tinydyn.host.boardproc import BoardProcess, BoardStartError
from tinydyn.host.cycles import CycleLog, CycleModel, CycleModelError, qemu_plugin_args, symbol_address
from tinydyn.host.firmware import icount_shift_of

MACHINE = "mps2-an386"


class EmulatorError(TinydynError):
    """QEMU is missing, or the firmware cannot be emulated."""


def qemu_binary() -> str:
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise EmulatorError(
            "qemu-system-arm not found: apt-get install qemu-system-arm (or run scripts/setup.sh)"
        )
    return qemu


def qemu_serial_command(elf: Path, icount_shift: int | None, plugin: list[str] | None = None) -> list[str]:
    """QEMU command line serving ``elf``'s UART0 on a new pty (no monitor, no reboot); ``plugin``
    is a ``-plugin`` option pair (the cycle model) or None."""
    cmd = [qemu_binary(), "-M", MACHINE, "-nographic", "-monitor", "none", "-serial", "pty"]
    if icount_shift is not None:
        cmd += ["-icount", f"shift={icount_shift},align=off"]
    return cmd + list(plugin or []) + ["-kernel", str(Path(elf).resolve()), "-no-reboot"]


def firmware_shift(elf: Path) -> int:
    """The -icount shift the firmware was built for; refuses files that are not our firmware."""
    elf = Path(elf)
    if not elf.is_file():
        raise EmulatorError(
            f"firmware {elf} not found: build it with `make -C PROJECT firmware` or `tinydyn run`"
        )
    if elf.read_bytes()[:4] != b"\x7fELF":
        raise EmulatorError(f"{elf} is not an ELF file: give the firmware.elf of a qemu-mps2-an386 build")
    shift = icount_shift_of(elf)
    if shift is None:
        raise EmulatorError(
            f"{elf} is not a tinydyn serial firmware for qemu-mps2-an386 (no icount marker): "
            "build it with `make -C PROJECT firmware`"
        )
    return shift


class QemuBoard:
    """A QEMU process serving ``elf`` on a pty; a context manager that always stops QEMU."""

    def __init__(self, elf: Path, start_timeout: float = 20.0, cycle_model: bool | CycleModel = True) -> None:
        self.elf = Path(elf)
        self.icount_shift = firmware_shift(self.elf)
        self.cycles: CycleLog | None = None  # modelled cycles per inference (None: no cycle model)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        plugin = None
        if cycle_model:
            model = cycle_model if isinstance(cycle_model, CycleModel) else CycleModel()
            try:
                entry = symbol_address(self.elf)
                self._tmp = tempfile.TemporaryDirectory(prefix="td_cycles_")
                log = Path(self._tmp.name) / "cycles.jsonl"
                plugin = qemu_plugin_args(log, entry, model)
            except CycleModelError as e:
                self._cleanup()
                raise EmulatorError(f"cycle model: {e}") from None
            self.cycles = CycleLog(log, model)
        self.argv = qemu_serial_command(self.elf, self.icount_shift, plugin)
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            # QEMU gets SIGTERM if this process dies, even by SIGKILL: no orphaned emulators
            self.argv = [setpriv, "--pdeathsig", "TERM", *self.argv]
        try:
            self._proc = BoardProcess(self.argv, start_timeout=start_timeout)
        except BoardStartError as e:
            self._cleanup()
            raise EmulatorError(str(e)) from None
        self.port = self._proc.port

    @property
    def cycle_log(self) -> Path | None:
        """The plugin's output file (one JSON line per td_infer call) while QEMU runs."""
        return None if self.cycles is None else self.cycles.path

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def pid(self) -> int:
        return self._proc.proc.pid

    def alive(self) -> bool:
        return self._proc.alive()

    @property
    def output(self) -> str:
        return "".join(self._proc.output)

    def wait(self, timeout: float | None = None) -> int:
        return self._proc.proc.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM (QEMU exits cleanly), then SIGKILL if it hangs; returns QEMU's exit status."""
        proc = self._proc.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            return self._proc.stop(timeout=1.0)
        finally:
            self._cleanup()

    def __enter__(self) -> QemuBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
