"""Start a board that serves the protocol on a pseudo-terminal (host board, QEMU) and find its pty.

Both print the pty path on stdout once the port exists: the host board prints
``tinydyn-board: serving on /dev/pts/N``, QEMU prints ``char device redirected to /dev/pts/N``.
The process gets a pipe as stdin; the host board exits when that pipe closes, so a crashed test
never leaves a board behind.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Sequence

from tinydyn.errors import TinydynError

PTY_RE = re.compile(r"(?:serving on|redirected to) (/dev/pts/\d+)")


class BoardStartError(TinydynError):
    """The board process did not come up with a pty."""


class BoardProcess:
    """A running board process; ``port`` is the pty path to open with pyserial."""

    def __init__(self, argv: Sequence[str], start_timeout: float = 10.0) -> None:
        self.argv = list(argv)
        self.output: list[str] = []
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as e:
            raise BoardStartError(f"cannot start board {self.argv[0]}: {e}: build it first") from None
        self.port = self._find_port(start_timeout)
        # Keep draining stdout so that a chatty board never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _find_port(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        found: list[str] = []

        def scan() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                m = PTY_RE.search(line)
                if m:
                    found.append(m.group(1))
                    return

        t = threading.Thread(target=scan, daemon=True)
        t.start()
        t.join(timeout)
        if not found:
            self.stop()
            tail = "".join(self.output[-5:]).strip().replace("\n", " | ")
            raise BoardStartError(
                f"board {' '.join(self.argv)} printed no pty path within {timeout:g} s "
                f"(output: {tail or 'none'}): run it by hand to see why"
            )
        return found[0]

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        """Close stdin (the host board exits), then terminate, then kill; returns the exit code."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for signal_it in (None, self.proc.terminate, self.proc.kill):
            if signal_it is not None:
                signal_it()
            try:
                return self.proc.wait(max(0.1, deadline - time.monotonic()) if signal_it is None else 2.0)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.wait()

    def __enter__(self) -> BoardProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
