"""Python twin of the host test board: td_rx_feed, td_server.c and stub_model.c, byte for byte.

Used to generate tests/vectors/protocol_vectors.json and to predict the replies of the compiled
board for inputs the vectors do not list (e.g. random images). If this file and the C disagree,
the vector tests fail.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

from tinydyn.host import protocol as P

# The vector model (tests/host_board/stub_model.c) and the host board (boards/host/board_host.c).
MODEL_ID = "0123456789abcdef"
IN_C, IN_H, IN_W = 1, 4, 4
NUM_CLASSES, NUM_EXITS = 10, 3
ARENA_BYTES, STATIC_MACS = 1234, 30000
MAX_PAYLOAD = 8 + 5 + 3072  # TD_PROTO_OVERHEAD + TD_INFER2_PREFIX + TD_MAX_IMAGE_BYTES default
PJ_PER_MAC = 10
BUDGET_UNITS = 7  # stub_model.c's STUB_BUDGET_UNITS: MACs, energy and cycles
COST_MODEL_ID = 0x12345678
UNIT_STEP = {"macs": 10000, "energy": 100, "cycles": 1000}  # the stub's budget per exit

BOARD_INFO = P.BoardInfo(
    P.VERSION,
    MODEL_ID,
    IN_C,
    IN_H,
    IN_W,
    NUM_CLASSES,
    NUM_EXITS,
    P.CounterKind.NONE,
    P.EnergyKind.MODELLED,
    0,
    ARENA_BYTES,
    STATIC_MACS,
    MAX_PAYLOAD,
    "host",
    min_version=1,
    budget_units=BUDGET_UNITS,
    cost_model_id=COST_MODEL_ID,
)


def stub_infer(image: bytes, cfg: P.Config) -> tuple[int, dict[str, int | list[int]]]:
    """stub_model.c's td_infer: (return code, result fields)."""
    if image[0] == 0xEE:
        return -3, {}
    s = sum(image)
    logits = [((s * (i + 1)) % 512) - 256 for i in range(NUM_CLASSES)]
    predicted = 0
    for i, v in enumerate(logits):
        if v > logits[predicted]:
            predicted = i
    last = NUM_EXITS - 1
    if cfg.policy == "confidence":
        exit_index = 0 if cfg.confidence_t16 < 32768 else last
    elif cfg.policy == "margin":
        exit_index = next((i for i in range(last) if cfg.margins[i] <= image[0]), last)
    elif cfg.policy == "budget":
        exit_index = min(cfg.budget_macs // UNIT_STEP[cfg.budget_unit], last)
    else:
        exit_index = last
    macs = 10000 * (exit_index + 1)
    return 0, {
        "logits": logits,
        "predicted": predicted,
        "exit_index": exit_index,
        "macs": macs,
        "skipped_blocks": image[0] % 3,
        "skipped_channels": 2 * image[1],
        "energy_cost_nj": macs // 100,
        "cycles_cost": 3 * macs,
        "gate_macs": 100 * (exit_index + 1),
    }


@dataclass
class Rx:
    """td_rx_t / td_rx_feed."""

    cap: int = MAX_PAYLOAD
    buf: bytearray = field(default_factory=bytearray)
    code: int = 0xFF
    left: int = 0
    active: bool = False
    overflow: bool = False

    def _put(self, b: int) -> None:
        if len(self.buf) < self.cap:
            self.buf.append(b)
        else:
            self.overflow = True

    def feed(self, byte: int) -> P.Frame | P.ErrorCode | None:
        if byte == 0:
            if not self.active:
                return None
            result: P.Frame | P.ErrorCode
            if self.overflow:
                result = P.ErrorCode.BAD_LENGTH
            elif self.left != 0 or len(self.buf) < P.OVERHEAD:
                result = P.ErrorCode.BAD_FRAME
            else:
                try:
                    result = P.parse_payload(bytes(self.buf))
                except P.ProtocolError as e:
                    result = e.code
            self.buf.clear()
            self.code, self.left, self.active, self.overflow = 0xFF, 0, False, False
            return result
        self.active = True
        if self.overflow:
            return None
        if self.left == 0:
            if self.code != 0xFF:
                self._put(0)
            self.code, self.left = byte, byte - 1
        else:
            self._put(byte)
            self.left -= 1
        return None


@dataclass
class Server:
    """td_server.c with the stub model; ``feed`` returns the wire bytes the board sends."""

    rx: Rx = field(default_factory=Rx)
    config: P.Config = field(default_factory=lambda: P.Config(margins=(0,) * NUM_EXITS))
    config_tag: int = P.SEQ_UNKNOWN
    budget_units: int = BUDGET_UNITS

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            item = self.rx.feed(b)
            if item is None:
                continue
            if isinstance(item, P.ErrorCode):
                detail = MAX_PAYLOAD if item == P.ErrorCode.BAD_LENGTH else 0
                out += P.encode_error(P.SEQ_UNKNOWN, item, detail, P.VERSION)
                continue
            out += self._handle(item)
        return bytes(out)

    def _supported(self, unit: str) -> bool:
        return unit == "macs" or bool(self.budget_units & (1 << P.BUDGET_UNITS.index(unit)))

    def _handle(self, f: P.Frame) -> bytes:
        v = f.version
        try:
            req = P.decode_request(f)
        except P.ProtocolError as e:
            version = P.VERSION if e.code == P.ErrorCode.BAD_VERSION else v
            return P.encode_error(f.seq, e.code, e.detail, version)
        if isinstance(req, P.InfoRequest):
            info = replace(BOARD_INFO, version=v, budget_units=self.budget_units)
            return P.encode_info(f.seq, info)
        if isinstance(req, P.ConfigRequest):
            if len(req.config.margins) != NUM_EXITS:
                return P.encode_error(f.seq, P.ErrorCode.BAD_CONFIG, 4, v)
            if not self._supported(req.config.budget_unit):
                return P.encode_error(f.seq, P.ErrorCode.BAD_CONFIG, P.BadConfigDetail.UNIT, v)
            self.config, self.config_tag = req.config, f.seq
            return P.encode_config_ack(f.seq, v)
        image = req.image
        if len(image) != IN_C * IN_H * IN_W:
            return P.encode_error(f.seq, P.ErrorCode.BAD_IMAGE_SIZE, IN_C * IN_H * IN_W, v)
        cfg = self.config
        if req.budget_unit is not None:
            if not self._supported(req.budget_unit):
                return P.encode_error(f.seq, P.ErrorCode.BAD_CONFIG, P.BadConfigDetail.UNIT, v)
            cfg = replace(cfg, policy="budget", budget_unit=req.budget_unit, budget_macs=req.budget)
        rc, r = stub_infer(image, cfg)
        if rc != 0:
            return P.encode_error(f.seq, P.ErrorCode.INFER_FAILED, rc & 0xFFFFFFFF, v)
        return P.encode_result(f.seq, expected_result(f.seq, r, self.config_tag, cfg.logits, v, cfg), v)


def expected_result(
    seq: int, r: dict, config_tag: int, logits: bool = True, version: int = 1, cfg: P.Config | None = None
) -> P.Result:
    """The RESULT the stub board sends; in v2 with the policy and budget of ``cfg``."""
    macs = int(r["macs"])
    ext = {}
    if version >= 2:
        cfg = cfg or P.Config(margins=(0,) * NUM_EXITS)
        ext = {
            "policy": cfg.policy,
            "budget_unit": cfg.budget_unit,
            "budget": cfg.budget_macs if cfg.policy == "budget" else 0,
            "energy_cost_nj": int(r["energy_cost_nj"]),
            "cycles_cost": int(r["cycles_cost"]),
            "gate_macs": int(r["gate_macs"]),
        }
    return P.Result(
        seq,
        int(r["predicted"]),
        int(r["exit_index"]),
        P.CounterKind.NONE,
        P.EnergyKind.MODELLED,
        macs,
        0,
        int(r["skipped_blocks"]),
        int(r["skipped_channels"]),
        macs * PJ_PER_MAC // 1000,
        0,
        config_tag,
        tuple(r["logits"]) if logits else None,
        **ext,
    )


def raw_config_body(
    policy: int, flags: int, t16: int, budget: int, margins: list[int], unit: int | None = None
) -> bytes:
    """A CONFIG body without the host-side validation of P.Config (to send invalid configs);
    ``unit`` appends a v2 budget unit byte."""
    body = struct.pack("<BBIIB", policy, flags, t16, budget, len(margins))
    body += struct.pack(f"<{len(margins)}i", *margins)
    return body + (bytes([unit]) if unit is not None else b"")
