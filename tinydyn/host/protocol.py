"""tinydyn serial protocol v1 and v2, host side (docs/PROTOCOL.md). No torch, no numpy needed.

Wire: ``0x00 COBS(version type seq:u16 body crc32) 0x00``, little-endian, CRC-32/ISO-HDLC.
Version 2 adds budgets in three units and per-request budgets; a board answers each request in
the request's version, so a host negotiates by asking INFO in its newest version and falling back
to the version a BAD_VERSION error names (tinydyn/host/client.py).
Request encoders and reply decoders are what the client uses; the reverse directions (request
decoders, reply encoders) exist for tests, vector generation and host-side board emulators.
The C twin is ``tinydyn/firmware/protocol.[ch]``; both are tested against
``tests/vectors/protocol_vectors.json``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any

from tinydyn.errors import TinydynError

VERSION = 2  # the newest version this host speaks
MIN_VERSION = 1  # the oldest
HEADER_LEN = 4
CRC_LEN = 4
OVERHEAD = HEADER_LEN + CRC_LEN
SEQ_UNKNOWN = 0xFFFF  # ERROR seq for an untrusted header; config tag of the boot default
SEQ_MODULUS = 0xFFFF  # request seqs are 0 … 0xFFFE
MODEL_ID_LEN = 16
BOARD_NAME_MAX = 32
CONFIDENCE_ONE = 65536
INFO_BODY_FIXED = 44
RESULT_BODY_FIXED = 27
ERROR_BODY_LEN = 5
MAX_EXITS = 16  # wire limit on margins (TD_PROTO_MAX_EXITS)
INFO2_EXT_LEN = 6  # v2 INFO after the name: min_version:u8 budget_units:u8 cost_model_id:u32
RESULT2_EXT_LEN = 18  # v2 RESULT after the logits: policy unit budget energy_nj cycles gate_macs
INFER2_PREFIX = 5  # v2 INFER before the image: budget_unit:u8 budget:u32 (unit 0: no override)
BUDGET_UNITS = ("macs", "energy", "cycles")  # wire codes 1, 2, 3 (tinydyn/cost/budget.py)
U32_MAX = 0xFFFFFFFF

POLICIES = ("none", "confidence", "margin", "budget")
FLAG_GATING = 0x01
FLAG_LOGITS = 0x02


class MsgType(IntEnum):
    INFO_REQ = 0x01
    CONFIG = 0x02
    INFER = 0x03
    INFO = 0x81
    CONFIG_ACK = 0x82
    RESULT = 0x83
    ERROR = 0xFF


class ErrorCode(IntEnum):
    BAD_FRAME = 1
    BAD_CRC = 2
    BAD_LENGTH = 3
    UNKNOWN_TYPE = 4
    BAD_VERSION = 5
    BAD_IMAGE_SIZE = 6
    BAD_CONFIG = 7
    INFER_FAILED = 8


class CounterKind(IntEnum):
    NONE = 0
    CYCLES = 1
    INSTRUCTIONS = 2


class EnergyKind(IntEnum):
    NONE = 0
    MODELLED = 1
    MEASURED = 2


class BadConfigDetail(IntEnum):
    POLICY = 1
    FLAGS = 2
    T16 = 3
    EXITS = 4
    UNIT = 5  # v2: a budget unit unknown, or one the firmware has no costs for
    OVERRIDE = 6  # v2 INFER: no override (unit 0) but a non-zero budget


def unit_code(unit: str) -> int:
    return BUDGET_UNITS.index(unit) + 1


def unit_name(code: int) -> str:
    if not 1 <= code <= len(BUDGET_UNITS):
        raise ProtocolError(ErrorCode.BAD_CONFIG, f"budget unit {code} is not defined", BadConfigDetail.UNIT)
    return BUDGET_UNITS[code - 1]


def units_of_mask(mask: int) -> tuple[str, ...]:
    return tuple(u for i, u in enumerate(BUDGET_UNITS) if mask & (1 << i))


class ProtocolError(TinydynError):
    """Bytes that are not a valid protocol message; ``code`` is the matching ErrorCode."""

    def __init__(self, code: ErrorCode, message: str, detail: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


# ---- CRC and COBS ----


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC: ``crc32(b"123456789") == 0xCBF43926``."""
    return zlib.crc32(data) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """COBS without delimiters; a final full 254-byte block gets no trailing empty block."""
    out = bytearray([0])
    code_pos, code = 0, 1
    for i, b in enumerate(data):
        if b == 0:
            out[code_pos] = code
            code_pos, code = len(out), 1
            out.append(0)
            continue
        out.append(b)
        code += 1
        if code == 0xFF and i + 1 < len(data):
            out[code_pos] = code
            code_pos, code = len(out), 1
            out.append(0)
    out[code_pos] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        i += 1
        if code == 0 or i + code - 1 > n or 0 in data[i : i + code - 1]:
            raise ProtocolError(ErrorCode.BAD_FRAME, "malformed COBS block")
        out += data[i : i + code - 1]
        i += code - 1
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


# ---- frames ----


@dataclass(frozen=True)
class Frame:
    version: int
    type: int
    seq: int
    body: bytes


def build_payload(msg_type: int, seq: int, body: bytes = b"", version: int = VERSION) -> bytes:
    head = struct.pack("<BBH", version, msg_type, seq) + body
    return head + struct.pack("<I", crc32(head))


def to_wire(payload: bytes) -> bytes:
    return b"\x00" + cobs_encode(payload) + b"\x00"


def encode_frame(msg_type: int, seq: int, body: bytes = b"", version: int = VERSION) -> bytes:
    return to_wire(build_payload(msg_type, seq, body, version))


def parse_payload(payload: bytes) -> Frame:
    if len(payload) < OVERHEAD:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame of {len(payload)} bytes is shorter than {OVERHEAD}")
    (crc,) = struct.unpack_from("<I", payload, len(payload) - CRC_LEN)
    if crc != crc32(payload[:-CRC_LEN]):
        raise ProtocolError(ErrorCode.BAD_CRC, "frame CRC mismatch")
    version, msg_type, seq = struct.unpack_from("<BBH", payload)
    return Frame(version, msg_type, seq, bytes(payload[HEADER_LEN:-CRC_LEN]))


def decode_frame(chunk: bytes, max_payload: int | None = None) -> Frame:
    """One frame from the COBS bytes between two delimiters."""
    payload = cobs_decode(chunk)
    if max_payload is not None and len(payload) > max_payload:
        raise ProtocolError(ErrorCode.BAD_LENGTH, f"frame of {len(payload)} bytes exceeds {max_payload}")
    return parse_payload(payload)


class FrameReader:
    """Splits a byte stream at 0x00 and decodes each non-empty chunk.

    ``feed`` returns, in order, a Frame for each valid frame and a ProtocolError for each broken
    one; bytes after the last delimiter wait for the next call. Chunks longer than
    ``max_chunk`` are dropped (answered with BAD_LENGTH) so a stream without delimiters cannot
    grow memory without bound.
    """

    def __init__(self, max_chunk: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.max_chunk = max_chunk

    def feed(self, data: bytes) -> list[Frame | ProtocolError]:
        out: list[Frame | ProtocolError] = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._overflow:
                self._buf += piece
                if len(self._buf) > self.max_chunk:
                    self._overflow = True
                    self._buf.clear()
            if end < 0:
                return out
            if self._overflow:
                out.append(ProtocolError(ErrorCode.BAD_LENGTH, f"frame longer than {self.max_chunk} bytes"))
            elif self._buf:
                try:
                    out.append(decode_frame(bytes(self._buf)))
                except ProtocolError as e:
                    out.append(e)
            self._buf.clear()
            self._overflow = False
            start = end + 1

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held back."""
        return len(self._buf)


# ---- messages ----


@dataclass(frozen=True)
class InfoRequest:
    seq: int


@dataclass(frozen=True)
class Config:
    """CONFIG: integer exit-policy parameters (see tinydyn/quantize/policy.py)."""

    policy: str = "none"
    confidence_t16: int = 0
    margins: tuple[int, ...] = ()
    budget_macs: int = 0  # the budget, in budget_unit (MACs in a v1 CONFIG)
    gating: bool = True
    logits: bool = True
    budget_unit: str = "macs"

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ProtocolError(
                ErrorCode.BAD_CONFIG, f"unknown policy '{self.policy}': use one of {', '.join(POLICIES)}"
            )
        if not 0 <= self.confidence_t16 <= CONFIDENCE_ONE:
            raise ProtocolError(ErrorCode.BAD_CONFIG, f"confidence_t16 {self.confidence_t16} outside 0…65536")
        if not 0 <= self.budget_macs <= 0xFFFFFFFF:
            raise ProtocolError(ErrorCode.BAD_CONFIG, f"budget_macs {self.budget_macs} does not fit uint32")
        if len(self.margins) > MAX_EXITS or any(not -(2**31) <= m < 2**31 for m in self.margins):
            raise ProtocolError(ErrorCode.BAD_CONFIG, f"margins {self.margins}: at most 16 int32 values")
        if self.budget_unit not in BUDGET_UNITS:
            raise ProtocolError(
                ErrorCode.BAD_CONFIG,
                f"unknown budget unit '{self.budget_unit}': use one of {', '.join(BUDGET_UNITS)}",
            )

    @property
    def flags(self) -> int:
        return (FLAG_GATING if self.gating else 0) | (FLAG_LOGITS if self.logits else 0)

    @classmethod
    def from_policy(cls, policy: Any, num_exits: int, gating: bool = True, logits: bool = True) -> Config:
        """From a ``tinydyn.quantize.policy.IntegerPolicy`` (duck-typed: no quantize import)."""
        margins = list(policy.margins) or [0] * num_exits
        unit = getattr(policy, "budget_unit", "macs")
        return cls(policy.kind, policy.confidence_t16, tuple(margins), policy.budget, gating, logits, unit)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["margins"] = list(self.margins)
        return d


@dataclass(frozen=True)
class ConfigRequest:
    seq: int
    config: Config


@dataclass(frozen=True)
class InferRequest:
    seq: int
    image: bytes
    budget_unit: str | None = None  # v2: this image's own budget (None: the CONFIG applies)
    budget: int = 0
    version: int = VERSION


@dataclass(frozen=True)
class BoardInfo:
    version: int
    model_id: str
    in_c: int
    in_h: int
    in_w: int
    num_classes: int
    num_exits: int
    counter_kind: CounterKind
    energy_kind: EnergyKind
    clock_hz: int
    arena_bytes: int
    static_macs: int
    max_payload: int
    board_name: str
    seq: int = 0
    # v2 (a v1 board: its one version, MACs only, no cost model)
    min_version: int = 1
    budget_units: int = 1  # bit (code - 1) per unit with costs in the firmware
    cost_model_id: int = 0

    @property
    def image_bytes(self) -> int:
        return self.in_c * self.in_h * self.in_w

    @property
    def units(self) -> tuple[str, ...]:
        return units_of_mask(self.budget_units)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["counter_kind"] = self.counter_kind.name.lower()
        d["energy_kind"] = self.energy_kind.name.lower()
        d.pop("seq")
        return d


@dataclass(frozen=True)
class ConfigAck:
    seq: int


@dataclass(frozen=True)
class Result:
    seq: int
    predicted: int
    exit_index: int
    counter_kind: CounterKind
    energy_kind: EnergyKind
    macs: int
    counter: int
    skipped_blocks: int
    skipped_channels: int
    energy_nj: int
    power_uw: int
    config_tag: int
    logits: tuple[int, ...] | None = field(default=None)
    # v2 only (None in a v1 RESULT): the policy and budget that decided this image's exit, and
    # the modelled energy (nJ) and cycles of what ran and the gates' MACs (tinydyn/cost/budget.py)
    policy: str | None = None
    budget_unit: str | None = None
    budget: int | None = None
    energy_cost_nj: int | None = None
    cycles_cost: int | None = None
    gate_macs: int | None = None

    @property
    def version(self) -> int:
        return VERSION if self.policy is not None else 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the counter is named by its kind (cycles / instructions)."""
        d = asdict(self)
        d["counter_kind"] = self.counter_kind.name.lower()
        d["energy_kind"] = self.energy_kind.name.lower()
        d["logits"] = list(self.logits) if self.logits is not None else None
        return d


@dataclass(frozen=True)
class ErrorReply:
    seq: int
    code: ErrorCode | int
    detail: int

    @property
    def name(self) -> str:
        return self.code.name if isinstance(self.code, ErrorCode) else f"code {self.code}"


Reply = BoardInfo | ConfigAck | Result | ErrorReply
Request = InfoRequest | ConfigRequest | InferRequest


# ---- request encoders (host → board) ----


def _check_seq(seq: int) -> None:
    if not 0 <= seq < SEQ_UNKNOWN:
        raise ProtocolError(ErrorCode.BAD_LENGTH, f"request seq {seq} outside 0…0xFFFE")


def _check_version(version: int) -> None:
    if not MIN_VERSION <= version <= VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION, f"protocol v{version}: this host speaks v{MIN_VERSION}..v{VERSION}"
        )


def encode_info_request(seq: int, version: int = VERSION) -> bytes:
    _check_seq(seq)
    _check_version(version)
    return encode_frame(MsgType.INFO_REQ, seq, version=version)


def config_body(cfg: Config, version: int = VERSION) -> bytes:
    if version < 2 and cfg.budget_unit != "macs":
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"a budget in {cfg.budget_unit} needs protocol v2; the board speaks v1: rebuild its firmware",
            1,
        )
    body = struct.pack(
        "<BBIIB", POLICIES.index(cfg.policy), cfg.flags, cfg.confidence_t16, cfg.budget_macs, len(cfg.margins)
    )
    body += struct.pack(f"<{len(cfg.margins)}i", *cfg.margins)
    return body + (bytes([unit_code(cfg.budget_unit)]) if version >= 2 else b"")


def encode_config(seq: int, cfg: Config, version: int = VERSION) -> bytes:
    _check_seq(seq)
    _check_version(version)
    return encode_frame(MsgType.CONFIG, seq, config_body(cfg, version), version)


def infer_body(
    image: bytes, version: int = VERSION, budget_unit: str | None = None, budget: int = 0
) -> bytes:
    """v1: the image. v2: ``budget_unit:u8 budget:u32`` (unit 0 = the CONFIG applies), the image."""
    if version < 2:
        if budget_unit is not None:
            raise ProtocolError(
                ErrorCode.BAD_VERSION,
                "a per-request budget needs protocol v2; the board speaks v1: rebuild its firmware",
                1,
            )
        return bytes(image)
    if budget_unit is not None and budget_unit not in BUDGET_UNITS:
        raise ProtocolError(
            ErrorCode.BAD_CONFIG, f"unknown budget unit '{budget_unit}': use one of {', '.join(BUDGET_UNITS)}"
        )
    if not 0 <= budget <= U32_MAX or (budget_unit is None and budget):
        raise ProtocolError(
            ErrorCode.BAD_CONFIG, f"per-request budget {budget} needs a unit and must fit uint32"
        )
    code = 0 if budget_unit is None else unit_code(budget_unit)
    return struct.pack("<BI", code, budget) + bytes(image)


def encode_infer(
    seq: int, image: bytes, version: int = VERSION, budget_unit: str | None = None, budget: int = 0
) -> bytes:
    _check_seq(seq)
    _check_version(version)
    return encode_frame(MsgType.INFER, seq, infer_body(image, version, budget_unit, budget), version)


# ---- reply encoders (board → host; for tests and emulators) ----


def encode_info(seq: int, info: BoardInfo) -> bytes:
    """In ``info.version`` (the request's): v2 appends min_version, budget_units, cost_model_id."""
    name = info.board_name.encode("ascii")[:BOARD_NAME_MAX]
    model_id = info.model_id.encode("ascii")
    if len(model_id) != MODEL_ID_LEN:
        raise ProtocolError(ErrorCode.BAD_LENGTH, f"model id '{info.model_id}' is not 16 characters")
    body = struct.pack(
        "<B16sHHHBBBBIIIIB",
        info.version,
        model_id,
        info.in_c,
        info.in_h,
        info.in_w,
        info.num_classes,
        info.num_exits,
        info.counter_kind,
        info.energy_kind,
        info.clock_hz,
        info.arena_bytes,
        info.static_macs,
        info.max_payload,
        len(name),
    )
    ext = b""
    if info.version >= 2:
        ext = struct.pack("<BBI", info.min_version, info.budget_units, info.cost_model_id)
    return encode_frame(MsgType.INFO, seq, body + name + ext, info.version)


def encode_config_ack(seq: int, version: int = VERSION) -> bytes:
    return encode_frame(MsgType.CONFIG_ACK, seq, version=version)


def encode_result(seq: int, r: Result, version: int | None = None) -> bytes:
    """In ``version`` (default: v2 when ``r`` carries the v2 fields, else v1)."""
    version = r.version if version is None else version
    logits = r.logits or ()
    body = struct.pack(
        "<BBBBIIHHIIHB",
        r.predicted,
        r.exit_index,
        r.counter_kind,
        r.energy_kind,
        r.macs,
        r.counter,
        r.skipped_blocks,
        r.skipped_channels,
        r.energy_nj,
        r.power_uw,
        r.config_tag,
        len(logits),
    )
    body += struct.pack(f"<{len(logits)}h", *logits)
    if version >= 2:
        if r.policy is None or r.budget_unit is None:
            raise ProtocolError(ErrorCode.BAD_LENGTH, "a v2 RESULT needs its policy, budget and costs")
        body += struct.pack(
            "<BBIIII",
            POLICIES.index(r.policy),
            unit_code(r.budget_unit),
            r.budget or 0,
            r.energy_cost_nj or 0,
            r.cycles_cost or 0,
            r.gate_macs or 0,
        )
    return encode_frame(MsgType.RESULT, seq, body, version)


def encode_error(seq: int, code: int, detail: int = 0, version: int = VERSION) -> bytes:
    return encode_frame(MsgType.ERROR, seq, struct.pack("<BI", code, detail), version)


# ---- decoders ----


def _expect_len(frame: Frame, n: int, what: str) -> None:
    if len(frame.body) != n:
        raise ProtocolError(ErrorCode.BAD_LENGTH, f"{what} body is {len(frame.body)} bytes, expected {n}", n)


def _enum(kind: type[IntEnum], value: int, what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"{what} {value} is not defined") from None


def decode_reply(frame: Frame) -> Reply:
    """A board reply from a CRC-valid frame; ProtocolError for anything else."""
    if frame.type == MsgType.ERROR and len(frame.body) == ERROR_BODY_LEN:
        # Header and ERROR body are frozen across versions: readable from any board.
        code, detail = struct.unpack("<BI", frame.body)
        return ErrorReply(
            frame.seq, ErrorCode(code) if code in ErrorCode._value2member_map_ else code, detail
        )
    if not MIN_VERSION <= frame.version <= VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"board speaks protocol v{frame.version}, host v{MIN_VERSION}..v{VERSION}",
            frame.version,
        )
    v2 = frame.version >= 2
    if frame.type == MsgType.INFO:
        if len(frame.body) < INFO_BODY_FIXED:
            raise ProtocolError(ErrorCode.BAD_LENGTH, f"INFO body is {len(frame.body)} bytes, expected >= 44")
        f = struct.unpack_from("<B16sHHHBBBBIIIIB", frame.body)
        ext_len = INFO2_EXT_LEN if v2 else 0
        _expect_len(frame, INFO_BODY_FIXED + f[13] + ext_len, "INFO")
        if f[0] != frame.version:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"INFO says v{f[0]} in a v{frame.version} frame")
        try:
            model_id = f[1].decode("ascii")
            name = frame.body[INFO_BODY_FIXED : INFO_BODY_FIXED + f[13]].decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.BAD_LENGTH, "INFO model id or board name is not ASCII") from None
        ext = struct.unpack_from("<BBI", frame.body, INFO_BODY_FIXED + f[13]) if v2 else (frame.version, 1, 0)
        if not 1 <= ext[0] <= frame.version:
            raise ProtocolError(
                ErrorCode.BAD_FRAME, f"INFO min_version {ext[0]} is not in 1..{frame.version}"
            )
        return BoardInfo(
            f[0],
            model_id,
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            _enum(CounterKind, f[7], "counter kind"),
            _enum(EnergyKind, f[8], "energy kind"),
            f[9],
            f[10],
            f[11],
            f[12],
            name,
            frame.seq,
            min_version=ext[0],
            budget_units=ext[1],
            cost_model_id=ext[2],
        )
    if frame.type == MsgType.CONFIG_ACK:
        _expect_len(frame, 0, "CONFIG_ACK")
        return ConfigAck(frame.seq)
    if frame.type == MsgType.RESULT:
        if len(frame.body) < RESULT_BODY_FIXED:
            raise ProtocolError(
                ErrorCode.BAD_LENGTH, f"RESULT body is {len(frame.body)} bytes, expected >= 27"
            )
        f = struct.unpack_from("<BBBBIIHHIIHB", frame.body)
        n = f[11]
        _expect_len(frame, RESULT_BODY_FIXED + 2 * n + (RESULT2_EXT_LEN if v2 else 0), "RESULT")
        logits = struct.unpack_from(f"<{n}h", frame.body, RESULT_BODY_FIXED) if n else None
        ext: dict[str, Any] = {}
        if v2:
            policy, unit, budget, energy, cycles, gate_macs = struct.unpack_from(
                "<BBIIII", frame.body, RESULT_BODY_FIXED + 2 * n
            )
            if policy >= len(POLICIES):
                raise ProtocolError(ErrorCode.BAD_FRAME, f"RESULT policy {policy} is not defined")
            ext = {
                "policy": POLICIES[policy],
                "budget_unit": unit_name(unit),
                "budget": budget,
                "energy_cost_nj": energy,
                "cycles_cost": cycles,
                "gate_macs": gate_macs,
            }
        return Result(
            frame.seq,
            f[0],
            f[1],
            _enum(CounterKind, f[2], "counter kind"),
            _enum(EnergyKind, f[3], "energy kind"),
            f[4],
            f[5],
            f[6],
            f[7],
            f[8],
            f[9],
            f[10],
            logits,
            **ext,
        )
    if frame.type == MsgType.ERROR:
        _expect_len(frame, ERROR_BODY_LEN, "ERROR")
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"message type 0x{frame.type:02x} is not a reply", frame.type)


def decode_request(
    frame: Frame, image_bytes: int | None = None, min_version: int = MIN_VERSION, max_version: int = VERSION
) -> Request:
    """A host request (board side, for tests and emulators), with the board's error codes; the
    board speaks ``min_version`` … ``max_version``."""
    if not min_version <= frame.version <= max_version:
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"request is v{frame.version}, board v{min_version}..v{max_version}",
            max_version,
        )
    v2 = frame.version >= 2
    if frame.type == MsgType.INFO_REQ:
        _expect_len(frame, 0, "INFO_REQ")
        return InfoRequest(frame.seq)
    if frame.type == MsgType.CONFIG:
        b = frame.body
        ext = 1 if v2 else 0
        if len(b) < 11 + ext:
            raise ProtocolError(
                ErrorCode.BAD_LENGTH, f"CONFIG body is {len(b)} bytes, expected >= {11 + ext}", 11 + ext
            )
        policy, flags, t16, budget, n = struct.unpack_from("<BBIIB", b)
        _expect_len(frame, 11 + 4 * n + ext, "CONFIG")
        unit = b[11 + 4 * n] if v2 else 1
        for bad, field_no, what in (
            (policy >= len(POLICIES), BadConfigDetail.POLICY, f"policy {policy}"),
            (flags & ~(FLAG_GATING | FLAG_LOGITS), BadConfigDetail.FLAGS, f"flags 0x{flags:02x}"),
            (t16 > CONFIDENCE_ONE, BadConfigDetail.T16, f"confidence_t16 {t16}"),
            (n > MAX_EXITS, BadConfigDetail.EXITS, f"{n} margins"),
            (not 1 <= unit <= len(BUDGET_UNITS), BadConfigDetail.UNIT, f"budget unit {unit}"),
        ):
            if bad:
                raise ProtocolError(ErrorCode.BAD_CONFIG, f"CONFIG {what} is invalid", field_no)
        margins = struct.unpack_from(f"<{n}i", b, 11)
        return ConfigRequest(
            frame.seq,
            Config(
                POLICIES[policy],
                t16,
                tuple(margins),
                budget,
                bool(flags & FLAG_GATING),
                bool(flags & FLAG_LOGITS),
                BUDGET_UNITS[unit - 1],
            ),
        )
    if frame.type == MsgType.INFER:
        body, unit, budget = frame.body, None, 0
        if v2:
            if len(body) < INFER2_PREFIX:
                raise ProtocolError(
                    ErrorCode.BAD_LENGTH,
                    f"INFER body is {len(body)} bytes, expected >= {INFER2_PREFIX}",
                    INFER2_PREFIX,
                )
            code, budget = struct.unpack_from("<BI", body)
            body = body[INFER2_PREFIX:]
            if code > len(BUDGET_UNITS):
                raise ProtocolError(
                    ErrorCode.BAD_CONFIG, f"INFER budget unit {code} is invalid", BadConfigDetail.UNIT
                )
            if code == 0 and budget:
                raise ProtocolError(
                    ErrorCode.BAD_CONFIG, f"INFER budget {budget} without a unit", BadConfigDetail.OVERRIDE
                )
            unit = BUDGET_UNITS[code - 1] if code else None
        if image_bytes is not None and len(body) != image_bytes:
            raise ProtocolError(
                ErrorCode.BAD_IMAGE_SIZE,
                f"image is {len(body)} bytes, model takes {image_bytes}",
                image_bytes,
            )
        return InferRequest(frame.seq, body, unit, budget, frame.version)
    raise ProtocolError(
        ErrorCode.UNKNOWN_TYPE, f"message type 0x{frame.type:02x} is not a request", frame.type
    )


def decode_replies(data: bytes) -> list[Reply | ProtocolError]:
    """All replies in a byte string (tests): decoded messages, or the ProtocolError of each bad one."""
    out: list[Reply | ProtocolError] = []
    for item in FrameReader().feed(data):
        if isinstance(item, ProtocolError):
            out.append(item)
            continue
        try:
            out.append(decode_reply(item))
        except ProtocolError as e:
            out.append(e)
    return out


def hexstr(data: Iterable[int]) -> str:
    return bytes(data).hex(" ")
