"""Host client for a board speaking the tinydyn protocol over a serial port (pyserial).

    with BoardClient("/dev/ttyACM0", expected_model_id="0123456789abcdef") as board:
        board.configure(policy="confidence", confidence_t16=58982, margins=[0, 0, 0])
        result = board.infer(seq=0, image=image_bytes)
        tight = board.infer(seq=1, image=image_bytes, budget=2_000_000, budget_unit="cycles")

Version negotiation (docs/PROTOCOL.md): the client asks INFO in its newest version; a board that
speaks only older ones answers BAD_VERSION naming its newest, and the client continues in that
one. A v1 board then serves everything v1 has; a budget in energy or cycles, or a per-request
budget, is refused with one clear error before anything is sent.

Robustness rules (docs/PROTOCOL.md, "Host behaviour"): connect by pinging INFO until answered
(never wait for a banner: output sent before the host opened the port is lost); resend a
request on timeout or when the board reports a corrupted frame, a bounded number of times; drop
stale replies by seq; detect a reset board through the RESULT config tag.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from typing import Any

import serial

from tinydyn.errors import TinydynError
from tinydyn.host import protocol as P


class BoardError(TinydynError):
    """The board answered a well-formed request with an ERROR."""

    def __init__(self, message: str, code: P.ErrorCode | int, detail: int) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


class BoardNotAnsweringError(TinydynError):
    """No (valid) answer within the time and retries allowed."""


class ModelMismatchError(TinydynError):
    """The board runs another model than expected (wrong firmware, or reset into other firmware)."""


class ProtocolVersionError(TinydynError):
    """Board and host speak different protocol versions."""


class BoardResetError(TinydynError):
    """The board kept losing its configuration (resetting) during a run."""


# Corruption on the line: the board could not read our request, so sending it again may work.
_TRANSIENT = (P.ErrorCode.BAD_FRAME, P.ErrorCode.BAD_CRC, P.ErrorCode.BAD_LENGTH)

_FIX = {
    P.ErrorCode.BAD_IMAGE_SIZE: "send images of the model's input shape (see INFO)",
    P.ErrorCode.BAD_CONFIG: "give one margin per exit, a known policy, confidence_t16 <= 65536 and a "
    "budget unit the firmware has costs for (INFO lists them)",
    P.ErrorCode.UNKNOWN_TYPE: "update the firmware or tinydyn so that both speak the same protocol",
    P.ErrorCode.INFER_FAILED: "the model code failed on this image; rebuild the firmware and check its log",
}


def _image_bytes(image: Any) -> bytes:
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    dtype = getattr(image, "dtype", None)
    if dtype is not None and str(dtype) == "uint8" and hasattr(image, "tobytes"):
        return image.tobytes(order="C")  # CHW as laid out by the caller
    raise TypeError(f"image must be bytes or a uint8 array, got {type(image).__name__} {dtype or ''}".strip())


class BoardClient:
    """One board on one serial port. Not thread-safe: one request at a time, as the protocol."""

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        timeout: float = 2.0,
        retries: int = 3,
        connect_timeout: float = 10.0,
        expected_model_id: str | None = None,
        max_resets: int = 3,
        protocol_version: int | None = None,
    ) -> None:
        """``protocol_version`` pins the version (default: negotiate, newest first)."""
        self.port = port
        self.baudrate = baudrate
        self.timeout = timeout
        self.retries = retries
        self.connect_timeout = connect_timeout
        self.expected_model_id = expected_model_id
        self.max_resets = max_resets
        if protocol_version is not None and not P.MIN_VERSION <= protocol_version <= P.VERSION:
            raise ProtocolVersionError(
                f"protocol v{protocol_version} is not one this host speaks (v{P.MIN_VERSION}..v{P.VERSION})"
            )
        self.version = protocol_version or P.VERSION  # the version in use; negotiation may lower it
        self._pinned = protocol_version is not None
        self.board_info: P.BoardInfo | None = None
        self.stats = {"retries": 0, "garbage": 0, "stale": 0, "resets": 0}
        self._config: P.Config | None = None
        self._config_tag = P.SEQ_UNKNOWN
        self._next_seq = 0
        self._reader = P.FrameReader()
        self._pending: deque[P.Frame | P.ProtocolError] = deque()  # decoded, not yet examined
        self._ser: serial.Serial | None = None

    # ---- connection ----

    def open(self) -> P.BoardInfo:
        """Open the port and ping INFO until the board answers (or connect_timeout passes)."""
        if self._ser is None:
            try:
                # A short read timeout: reads return as soon as bytes arrive; deadlines are ours.
                self._ser = serial.Serial(self.port, self.baudrate, timeout=0.02, write_timeout=self.timeout)
            except (serial.SerialException, OSError) as e:
                raise BoardNotAnsweringError(
                    f"cannot open serial port {self.port}: {e}: check the port name and permissions"
                ) from None
        deadline = time.monotonic() + self.connect_timeout
        while True:
            seq = self._take_seq()
            self._write(P.encode_info_request(seq, self.version))
            # Ping often: a board that boots while we wait answers the next ping without delay.
            reply = self._await(seq, min(deadline, time.monotonic() + min(self.timeout, 0.5)))
            if isinstance(reply, P.BoardInfo):
                self._check_info(reply)
                return reply
            if isinstance(reply, P.ErrorReply) and reply.seq == seq:
                if reply.code == P.ErrorCode.BAD_VERSION and self._fall_back(reply.detail):
                    continue  # ask again, at once, in the board's newest version
                self._raise_board_error(reply, "INFO", seq)
            if time.monotonic() >= deadline:
                raise BoardNotAnsweringError(
                    f"no answer from a tinydyn board on {self.port} within {self.connect_timeout:g} s: "
                    f"check that the firmware is running on that port and the baud rate is {self.baudrate}"
                )

    def close(self) -> None:
        if self._ser is not None:
            self._ser.close()
            self._ser = None

    def __enter__(self) -> BoardClient:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests ----

    def info(self) -> P.BoardInfo:
        """Ask INFO again and check it against the expected (and previously seen) model."""
        seq = self._take_seq()
        reply = self._transact(lambda: P.encode_info_request(seq, self.version), seq, "INFO")
        if not isinstance(reply, P.BoardInfo):
            raise BoardNotAnsweringError(f"board on {self.port} answered INFO with {type(reply).__name__}")
        self._check_info(reply)
        return reply

    def configure(
        self,
        policy: str = "none",
        confidence_t16: int = 0,
        margins: list[int] | tuple[int, ...] | None = None,
        budget_macs: int = 0,
        gating: bool = True,
        logits: bool = True,
        budget_unit: str = "macs",
    ) -> P.Config:
        """Send CONFIG; margins default to 0 for every exit of the connected model. The budget
        (``budget_macs``) is in ``budget_unit``: MACs, nJ (modelled energy) or cycles."""
        info = self._require_info()
        cfg = P.Config(
            policy,
            confidence_t16,
            tuple(margins if margins is not None else [0] * info.num_exits),
            budget_macs,
            gating,
            logits,
            budget_unit,
        )
        self._check_unit(budget_unit, "a budget in " + budget_unit)
        if len(cfg.margins) != info.num_exits:
            raise P.ProtocolError(
                P.ErrorCode.BAD_CONFIG,
                f"{len(cfg.margins)} margins given but the model on "
                f"{self.port} has {info.num_exits} exits: give one margin per exit",
            )
        self._send_config(cfg)
        return cfg

    def infer(self, seq: int, image: Any, budget: int | None = None, budget_unit: str = "macs") -> P.Result:
        """Run one image; the Result carries the caller's seq (any int >= 0). With ``budget``
        this image alone runs under the budget policy with that budget in ``budget_unit``
        (a time-varying resource limit; the CONFIG stays in force for the next images)."""
        info = self._require_info()
        if budget is not None:
            self._check_unit(budget_unit, "a per-request budget")
            if not 0 <= budget <= P.U32_MAX:
                raise P.ProtocolError(
                    P.ErrorCode.BAD_CONFIG,
                    f"budget {budget} {budget_unit} does not fit the firmware's uint32",
                )
        data = _image_bytes(image)
        if len(data) != info.image_bytes:
            raise P.ProtocolError(
                P.ErrorCode.BAD_IMAGE_SIZE,
                f"image of {len(data)} bytes but the model on "
                f"{self.port} takes {info.in_c}x{info.in_h}x{info.in_w} = {info.image_bytes}",
                info.image_bytes,
            )
        wire_seq = seq % P.SEQ_MODULUS
        frame = P.encode_infer(
            wire_seq, data, self.version, budget_unit if budget is not None else None, budget or 0
        )
        resets = 0
        while True:
            reply = self._transact(lambda: frame, wire_seq, "INFER")
            if not isinstance(reply, P.Result):
                raise BoardNotAnsweringError(
                    f"board on {self.port} answered INFER with {type(reply).__name__}"
                )
            if self._config is None or reply.config_tag == self._config_tag:
                return replace(reply, seq=seq)
            # The board forgot our CONFIG: it was reset. Re-check who it is, reconfigure, repeat.
            resets += 1
            self.stats["resets"] += 1
            if resets > self.max_resets:
                raise BoardResetError(
                    f"board on {self.port} reset {resets} times during INFER seq {seq}: check its power "
                    "supply and watchdog, then resume the run"
                )
            self.info()
            self._send_config(self._config)

    # ---- internals ----

    def _require_info(self) -> P.BoardInfo:
        if self.board_info is None:
            self.open()
        assert self.board_info is not None
        return self.board_info

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq = (self._next_seq + 1) % P.SEQ_MODULUS
        return seq

    def _fall_back(self, board_newest: int) -> bool:
        """After BAD_VERSION naming the board's newest version: speak it, if this host can."""
        if self._pinned or not P.MIN_VERSION <= board_newest < self.version:
            return False
        self.version = board_newest
        return True

    def _check_unit(self, unit: str, what: str) -> None:
        """Refuse, before sending, what the connected board cannot do: one clear error."""
        info = self._require_info()
        if unit == "macs" and what.startswith("a budget"):
            return
        if self.version < 2:
            raise ProtocolVersionError(
                f"board on {self.port} speaks protocol v{self.version} only: {what} needs v2; "
                "rebuild its firmware with this tinydyn (`tinydyn firmware`)"
            )
        if unit not in info.units:
            fix = (
                "build the firmware with a cost table from `tinydyn profile` (--cost-table)"
                if unit == "cycles"
                else "build the firmware for a board with an energy model (docs/ENERGY.md)"
            )
            raise BoardError(
                f"the firmware on {self.port} has no costs in {unit} "
                f"(it offers {', '.join(info.units)}): {fix}",
                P.ErrorCode.BAD_CONFIG,
                P.BadConfigDetail.UNIT,
            )

    def _send_config(self, cfg: P.Config) -> None:
        seq = self._take_seq()
        frame = P.encode_config(seq, cfg, self.version)
        reply = self._transact(lambda: frame, seq, "CONFIG")
        if not isinstance(reply, P.ConfigAck):
            raise BoardNotAnsweringError(f"board on {self.port} answered CONFIG with {type(reply).__name__}")
        self._config, self._config_tag = cfg, seq

    def _check_info(self, info: P.BoardInfo) -> None:
        if info.version != self.version:
            raise ProtocolVersionError(
                f"board on {self.port} answered protocol v{self.version} with v{info.version}: "
                "rebuild the firmware with this tinydyn version"
            )
        expected = self.expected_model_id or (self.board_info.model_id if self.board_info else None)
        if expected is not None and info.model_id != expected:
            raise ModelMismatchError(
                f"board on {self.port} runs model {info.model_id}, expected {expected}: flash the firmware "
                "built for this model (or the board was reset into other firmware)"
            )
        self.board_info = info

    def _transact(self, make_frame: Any, seq: int, what: str) -> P.Reply:
        """Send a request and return its reply, resending on timeout or line corruption."""
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self._write(make_frame())
            reply = self._await(seq, time.monotonic() + self.timeout)
            if reply is None:
                continue
            if isinstance(reply, P.ErrorReply):
                if reply.seq == P.SEQ_UNKNOWN and reply.code in _TRANSIENT:
                    continue
                self._raise_board_error(reply, what, seq)
            return reply
        raise BoardNotAnsweringError(
            f"board on {self.port} did not answer {what} (seq {seq}) after {self.retries + 1} tries of "
            f"{self.timeout:g} s: check that the firmware is still running (reset it and resume the run)"
        )

    def _raise_board_error(self, reply: P.ErrorReply, what: str, seq: int) -> None:
        if reply.code == P.ErrorCode.BAD_VERSION:
            raise ProtocolVersionError(
                f"board on {self.port} speaks protocol up to v{reply.detail}, this host "
                f"v{P.MIN_VERSION}..v{P.VERSION}"
                + (f" (pinned to v{self.version})" if self._pinned else "")
                + ": rebuild the firmware with this tinydyn version"
            )
        fix = (
            _FIX.get(reply.code, "see docs/PROTOCOL.md")
            if isinstance(reply.code, P.ErrorCode)
            else "update tinydyn"
        )
        raise BoardError(
            f"board on {self.port} rejected {what} seq {seq}: {reply.name} (detail {reply.detail}): {fix}",
            reply.code,
            reply.detail,
        )

    def _write(self, data: bytes) -> None:
        assert self._ser is not None
        try:
            self._ser.write(data)
        except (serial.SerialException, OSError) as e:
            raise BoardNotAnsweringError(
                f"cannot write to {self.port}: {e}: check the cable and port"
            ) from None

    def _await(self, seq: int, deadline: float) -> P.Reply | None:
        """The reply to seq (or an anonymous ERROR) before the deadline; None on timeout."""
        assert self._ser is not None
        while True:
            while self._pending:
                reply = self._examine(self._pending.popleft(), seq)
                if reply is not None:
                    return reply  # frames read after it stay queued for the next call
            if time.monotonic() >= deadline:
                return None
            try:
                data = self._ser.read(max(1, self._ser.in_waiting))
            except (serial.SerialException, OSError) as e:
                raise BoardNotAnsweringError(
                    f"cannot read from {self.port}: {e}: check the cable and port"
                ) from None
            self._pending.extend(self._reader.feed(data))

    def _examine(self, item: P.Frame | P.ProtocolError, seq: int) -> P.Reply | None:
        if isinstance(item, P.ProtocolError):
            self.stats["garbage"] += 1  # line noise from the board side: resynchronised at 0x00
            return None
        try:
            reply = P.decode_reply(item)
        except P.ProtocolError as e:
            if e.code == P.ErrorCode.BAD_VERSION:
                raise ProtocolVersionError(
                    f"board on {self.port} speaks protocol v{e.detail}, this host "
                    f"v{P.MIN_VERSION}..v{P.VERSION}: rebuild the firmware with this tinydyn version"
                ) from None
            self.stats["garbage"] += 1
            return None
        if reply.seq == seq or (isinstance(reply, P.ErrorReply) and reply.seq == P.SEQ_UNKNOWN):
            return reply
        self.stats["stale"] += 1  # a late reply to an earlier (resent) request
        return None
