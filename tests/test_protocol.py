"""Serial protocol: Python and C implementations against the shared vectors, and fuzzing.

The C side runs through tests/host_board/vector_driver.c (compiled with gcc here); the board
cases run through the real td_server.c. Hand-checked facts (CRC check value, COBS examples from
the COBS paper / Wikipedia) are asserted without the vectors, so that the vectors are not the
only witness of the format.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinydyn.errors import TinydynError
from tinydyn.host import protocol as P

from .conftest import require_tool
from .host_board import emulator as E
from .host_board.build import build_driver

ROOT = Path(__file__).resolve().parents[1]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "protocol_vectors.json").read_text())
MESSAGES = {c["name"]: c for c in VECTORS["messages"]}


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("gcc")
    return build_driver(tmp_path_factory.mktemp("vector_driver"))


def run_driver(exe: Path, lines: list[str]) -> list[str]:
    """One process for many commands: one output line per input line."""
    out = subprocess.run(
        [str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = out.stdout.splitlines()
    assert len(result) == len(lines)
    return result


# ---- hand-checked facts ----


def test_crc32_check_value() -> None:
    assert P.crc32(b"123456789") == 0xCBF43926  # CRC-32/ISO-HDLC catalogue check value


@pytest.mark.parametrize(
    ("decoded", "encoded"),
    [
        ("00", "0101"),
        ("0000", "010101"),
        ("001100", "01021101"),
        ("11220033", "0311220233"),
        ("11223344", "0511223344"),
        ("11000000", "0211010101"),
        (bytes(range(1, 255)).hex(), "ff" + bytes(range(1, 255)).hex()),
        ("00" + bytes(range(1, 255)).hex(), "01ff" + bytes(range(1, 255)).hex()),
        (bytes(range(1, 256)).hex(), "ff" + bytes(range(1, 255)).hex() + "02ff"),
        (bytes(range(2, 256)).hex() + "00", "ff" + bytes(range(2, 256)).hex() + "0101"),
        (bytes(range(3, 256)).hex() + "0001", "fe" + bytes(range(3, 256)).hex() + "0201"),
    ],
)
def test_cobs_published_examples(decoded: str, encoded: str) -> None:
    assert P.cobs_encode(bytes.fromhex(decoded)).hex() == encoded
    assert P.cobs_decode(bytes.fromhex(encoded)).hex() == decoded


@pytest.mark.parametrize("version", [1, 2])
def test_frame_layout_by_hand(version: int) -> None:
    """INFO_REQ seq 0x0201: version, type 1, seq LE, CRC-32 LE of those 4 bytes, COBS, delimiters."""
    head = bytes([version, 1, 0x01, 0x02])
    payload = head + struct.pack("<I", P.crc32(head))
    assert P.build_payload(P.MsgType.INFO_REQ, 0x0201, version=version) == payload
    assert P.encode_info_request(0x0201, version) == b"\x00" + P.cobs_encode(payload) + b"\x00"
    assert b"\x00" not in P.encode_info_request(0x0201, version)[1:-1]


def test_info_body_offsets_by_hand() -> None:
    """The INFO layout of docs/PROTOCOL.md, field by field; v2 appends 6 bytes after the name."""
    frame = P.decode_frame(bytes.fromhex(MESSAGES["info_reply"]["wire"])[1:-1])
    b = frame.body
    assert frame.version == 1 and b[0] == 1 and b[1:17] == b"0123456789abcdef"
    assert struct.unpack_from("<HHH", b, 17) == (1, 4, 4)
    assert (b[23], b[24], b[25], b[26]) == (10, 3, 0, 1)
    assert struct.unpack_from("<IIII", b, 27) == (0, 1234, 30000, 3085)
    assert b[43] == 4 and b[44:] == b"host" and len(b) == 48
    v2 = P.decode_frame(bytes.fromhex(MESSAGES["info_reply_v2"]["wire"])[1:-1])
    assert v2.version == 2 and v2.body[0] == 2 and v2.body[:44] == bytes([2]) + b[1:44]
    assert v2.body[44:48] == b"host" and len(v2.body) == 54
    assert (v2.body[48], v2.body[49]) == (1, 7)  # min_version 1; units MACs | energy | cycles
    assert struct.unpack_from("<I", v2.body, 50) == (0x12345678,)


def test_v2_infer_and_result_bytes_by_hand() -> None:
    """INFER v2: unit, budget, image; RESULT v2: the v1 body, logits, then the 18-byte extension."""
    frame = P.decode_frame(bytes.fromhex(MESSAGES["infer_budget_energy_v2"]["wire"])[1:-1])
    assert (frame.version, frame.type, frame.seq) == (2, 3, 12)
    assert frame.body == bytes([2, 0xFF, 0xFF, 0xFF, 0xFF]) + bytes(range(16))
    frame = P.decode_frame(bytes.fromhex(MESSAGES["infer_16_v2"]["wire"])[1:-1])
    assert frame.body == bytes(5) + bytes(range(16))  # unit 0: no override
    frame = P.decode_frame(bytes.fromhex(MESSAGES["config_energy_v2"]["wire"])[1:-1])
    assert frame.body == struct.pack("<BBIIB3iB", 3, 3, 0, 250, 3, 0, 0, 0, 2)
    frame = P.decode_frame(bytes.fromhex(MESSAGES["result_logits_v2"]["wire"])[1:-1])
    assert len(frame.body) == 27 + 20 + 18 and frame.body[26] == 10
    assert struct.unpack_from("<BBIIII", frame.body, 47) == (3, 2, 250, 245, 1_234_567, 321)
    v1 = P.decode_frame(bytes.fromhex(MESSAGES["result_logits"]["wire"])[1:-1])
    assert frame.body[:47] == v1.body


# ---- Python against the vectors ----


def test_python_crc_and_cobs_vectors() -> None:
    for c in VECTORS["crc32"]:
        assert f"{P.crc32(bytes.fromhex(c['data'])):08x}" == c["crc"]
    for c in VECTORS["cobs"]:
        assert P.cobs_encode(bytes.fromhex(c["decoded"])).hex() == c["encoded"]
        assert P.cobs_decode(bytes.fromhex(c["encoded"])).hex() == c["decoded"]


def _config(fields: dict) -> P.Config:
    return P.Config(
        fields["policy"],
        fields["confidence_t16"],
        tuple(fields["margins"]),
        fields["budget_macs"],
        fields["gating"],
        fields["logits"],
        fields["budget_unit"],
    )


def _info(fields: dict) -> P.BoardInfo:
    f = dict(fields)
    f["counter_kind"] = P.CounterKind[f["counter_kind"].upper()]
    f["energy_kind"] = P.EnergyKind[f["energy_kind"].upper()]
    return P.BoardInfo(**f)


def _result(fields: dict) -> P.Result:
    f = dict(fields)
    f["counter_kind"] = P.CounterKind[f["counter_kind"].upper()]
    f["energy_kind"] = P.EnergyKind[f["energy_kind"].upper()]
    f["logits"] = tuple(f["logits"]) if f["logits"] is not None else None
    return P.Result(**f)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_python_message_vectors(name: str) -> None:
    c = MESSAGES[name]
    wire = bytes.fromhex(c["wire"])
    f = c["fields"]
    frame = P.decode_frame(wire[1:-1])
    assert wire[0] == 0 and wire[-1] == 0 and b"\x00" not in wire[1:-1]
    v = c["version"]
    assert frame.seq == f["seq"] and frame.version == v
    kind = c["kind"]
    if kind == "INFO_REQ":
        assert P.encode_info_request(f["seq"], v) == wire
        assert P.decode_request(frame) == P.InfoRequest(f["seq"])
    elif kind == "CONFIG":
        cfg = _config(f)
        assert P.encode_config(f["seq"], cfg, v) == wire
        assert P.decode_request(frame) == P.ConfigRequest(f["seq"], cfg)
    elif kind == "INFER":
        image = bytes.fromhex(f["image"])
        assert P.encode_infer(f["seq"], image, v, f["budget_unit"], f["budget"]) == wire
        want = P.InferRequest(f["seq"], image, f["budget_unit"], f["budget"], v)
        assert P.decode_request(frame, len(image)) == want
    elif kind == "INFO":
        info = _info({k: v for k, v in f.items() if k != "seq"} | {"seq": f["seq"]})
        assert P.encode_info(f["seq"], info) == wire
        assert P.decode_reply(frame) == info
    elif kind == "CONFIG_ACK":
        assert P.encode_config_ack(f["seq"], v) == wire
        assert P.decode_reply(frame) == P.ConfigAck(f["seq"])
    elif kind == "RESULT":
        res = _result(f)
        assert P.encode_result(f["seq"], res, v) == wire
        assert P.decode_reply(frame) == res
    else:
        code = P.ErrorCode[f["code"]]
        assert P.encode_error(f["seq"], code, f["detail"], v) == wire
        assert P.decode_reply(frame) == P.ErrorReply(f["seq"], code, f["detail"])


def test_python_emulator_matches_board_vectors() -> None:
    """The Python twin of the board produces the vector replies (it generated them; this pins it)."""
    for c in VECTORS["board_cases"]:
        assert E.Server().feed(bytes.fromhex(c["send"])).hex() == c["reply"], c["name"]


def test_board_vector_replies_decode_as_listed() -> None:
    for c in VECTORS["board_cases"]:
        replies = P.decode_replies(bytes.fromhex(c["reply"]))
        names = [f"ERROR {r.name}" if isinstance(r, P.ErrorReply) else type(r).__name__ for r in replies]
        assert names == c["replies"], c["name"]


def test_specific_error_outcomes() -> None:
    """Spot-check error codes, seqs and details of malformed input (the spec's table)."""
    cases = {c["name"]: P.decode_replies(bytes.fromhex(c["reply"])) for c in VECTORS["board_cases"]}
    assert cases["bad_crc"] == [P.ErrorReply(P.SEQ_UNKNOWN, P.ErrorCode.BAD_CRC, 0)]
    assert cases["too_short"] == [P.ErrorReply(P.SEQ_UNKNOWN, P.ErrorCode.BAD_FRAME, 0)]
    assert cases["oversized"][0] == P.ErrorReply(P.SEQ_UNKNOWN, P.ErrorCode.BAD_LENGTH, 3085)
    assert cases["oversized"][1].seq == 7  # the board kept serving
    assert cases["unknown_type"] == [P.ErrorReply(4, P.ErrorCode.UNKNOWN_TYPE, 0x42)]
    assert cases["bad_version"] == [P.ErrorReply(6, P.ErrorCode.BAD_VERSION, 2)]  # its newest
    assert cases["image_short"] == [P.ErrorReply(10, P.ErrorCode.BAD_IMAGE_SIZE, 16)]
    assert cases["config_len_mismatch"] == [P.ErrorReply(15, P.ErrorCode.BAD_LENGTH, 23)]
    assert cases["config_bad_t16"] == [P.ErrorReply(18, P.ErrorCode.BAD_CONFIG, 3)]
    assert cases["config_wrong_exits"] == [P.ErrorReply(19, P.ErrorCode.BAD_CONFIG, 4)]
    assert cases["infer_failed"] == [P.ErrorReply(13, P.ErrorCode.INFER_FAILED, 0xFFFFFFFD)]
    ack, result = cases["config_then_infer"]
    assert ack == P.ConfigAck(21)
    assert (result.seq, result.exit_index, result.macs, result.config_tag, result.logits) == (
        22,
        1,
        20000,
        21,
        None,
    )
    assert cases["error_keeps_config"][2].config_tag == 25 and cases["error_keeps_config"][2].exit_index == 0
    # version 2: replies in the request's version, budgets in every unit, per-request budgets
    (info,) = cases["info_v2"]
    assert (info.version, info.min_version, info.units) == (2, 1, ("macs", "energy", "cycles"))
    assert cases["info"][0].version == 1 and cases["info"][0].units == ("macs",)
    assert cases["infer"][0].policy is None and cases["infer_v2"][0].policy == "none"
    ack, r = cases["config_energy_then_infer_v2"]
    assert (r.exit_index, r.policy, r.budget_unit, r.budget, r.config_tag) == (1, "budget", "energy", 150, 30)
    assert (r.energy_cost_nj, r.cycles_cost, r.gate_macs) == (200, 60000, 200)
    once, after = cases["infer_override_v2"]
    assert (once.exit_index, once.policy, once.budget_unit, once.budget) == (2, "budget", "cycles", 2500)
    assert (after.exit_index, after.policy, after.budget) == (2, "none", 0)
    ack, r = cases["override_over_confidence_v2"]
    assert (r.exit_index, r.policy, r.budget, r.config_tag) == (1, "budget", 15000, 34)
    ack, r = cases["v1_config_then_v2_infer"]
    assert (r.exit_index, r.policy, r.budget_unit, r.budget, r.config_tag) == (1, "budget", "macs", 15000, 36)
    assert cases["infer_v2_bad_unit"] == [P.ErrorReply(38, P.ErrorCode.BAD_CONFIG, 5)]
    assert cases["infer_v2_budget_without_unit"] == [P.ErrorReply(39, P.ErrorCode.BAD_CONFIG, 6)]
    assert cases["infer_v2_short"] == [P.ErrorReply(40, P.ErrorCode.BAD_LENGTH, 5)]
    assert cases["infer_v2_image_short"] == [P.ErrorReply(41, P.ErrorCode.BAD_IMAGE_SIZE, 16)]
    assert cases["config_v2_bad_unit"] == [P.ErrorReply(42, P.ErrorCode.BAD_CONFIG, 5)]
    assert cases["config_v2_v1_length"] == [P.ErrorReply(43, P.ErrorCode.BAD_LENGTH, 24)]


# ---- C against the vectors ----


def test_c_crc_and_cobs_vectors(driver: Path) -> None:
    lines = [f"crc {c['data']}" for c in VECTORS["crc32"]]
    lines += [f"cobs_enc {c['decoded']}" for c in VECTORS["cobs"]]
    lines += [f"cobs_dec {c['encoded']}" for c in VECTORS["cobs"]]
    lines += ["cobs_dec 0500", "cobs_dec 0311", "cobs_dec 00"]  # zero inside, overrun, zero code
    out = run_driver(driver, lines)
    expected = [c["crc"] for c in VECTORS["crc32"]]
    expected += [c["encoded"] for c in VECTORS["cobs"]]
    expected += [f"ok {c['decoded']}".rstrip() for c in VECTORS["cobs"]]
    expected += ["err 1", "err 1", "err 1"]
    assert [line.rstrip() for line in out] == expected


def test_c_reply_encoders_match_vectors(driver: Path) -> None:
    lines, expected = [], []
    for c in VECTORS["messages"]:
        f, v = c["fields"], c["version"]
        if c["kind"] == "ERROR":
            lines.append(f"enc_error {v} {f['seq']} {int(P.ErrorCode[f['code']])} {f['detail']}")
        elif c["kind"] == "CONFIG_ACK":
            lines.append(f"enc_ack {v} {f['seq']}")
        elif c["kind"] == "RESULT":
            r = _result(f)
            logits = r.logits or ()
            ext = []
            if v >= 2:
                ext = [P.POLICIES.index(r.policy), P.unit_code(r.budget_unit), r.budget]
                ext += [r.energy_cost_nj, r.cycles_cost, r.gate_macs]
            lines.append(
                " ".join(
                    map(
                        str,
                        [
                            "enc_result",
                            v,
                            r.seq,
                            r.predicted,
                            r.exit_index,
                            int(r.counter_kind),
                            int(r.energy_kind),
                            r.macs,
                            r.counter,
                            r.skipped_blocks,
                            r.skipped_channels,
                            r.energy_nj,
                            r.power_uw,
                            r.config_tag,
                            len(logits),
                            *logits,
                            *ext,
                        ],
                    )
                )
            )
        elif c["kind"] == "INFO":
            i = _info({k: v for k, v in f.items()})
            lines.append(
                " ".join(
                    map(
                        str,
                        [
                            "enc_info",
                            v,
                            i.seq,
                            i.model_id,
                            i.in_c,
                            i.in_h,
                            i.in_w,
                            i.num_classes,
                            i.num_exits,
                            int(i.counter_kind),
                            int(i.energy_kind),
                            i.clock_hz,
                            i.arena_bytes,
                            i.static_macs,
                            i.max_payload,
                            *([i.min_version, i.budget_units, i.cost_model_id] if v >= 2 else []),
                            i.board_name,
                        ],
                    )
                )
            )
        else:
            continue
        expected.append(c["wire"])
    assert len(lines) >= 24
    assert run_driver(driver, lines) == expected


def test_c_config_decoder_matches_vectors(driver: Path) -> None:
    configs = [c for c in VECTORS["messages"] if c["kind"] == "CONFIG"]
    out = run_driver(driver, [f"dec_config {c['wire']}" for c in configs])
    for c, line in zip(configs, out, strict=True):
        cfg = _config(c["fields"])
        want = [
            "ok",
            P.POLICIES.index(cfg.policy),
            cfg.flags,
            cfg.confidence_t16,
            cfg.budget_macs,
            len(cfg.margins),
            *cfg.margins,
            "unit",
            P.unit_code(cfg.budget_unit),
        ]
        assert line == " ".join(map(str, want))
    bad = [c for c in VECTORS["board_cases"] if c["name"].startswith("config_") and "infer" not in c["name"]]
    out = run_driver(driver, [f"dec_config {c['send']}" for c in bad])
    got = dict(zip((c["name"] for c in bad), out, strict=True))
    assert got["config_short"] == "err 3 11"
    assert got["config_bad_policy"] == "err 7 1"
    assert got["config_bad_flags"] == "err 7 2"
    assert got["config_wrong_exits"].startswith("ok 2 3 0 0 2")  # the model check is the server's
    assert got["config_v2_bad_unit"] == "err 7 5"
    assert got["config_v2_v1_length"] == "err 3 24"


def test_c_infer_decoder_matches_vectors(driver: Path) -> None:
    infers = [c for c in VECTORS["messages"] if c["kind"] == "INFER"]
    out = run_driver(driver, [f"dec_infer {c['wire']}" for c in infers])
    for c, line in zip(infers, out, strict=True):
        f = c["fields"]
        unit = P.unit_code(f["budget_unit"]) if f["budget_unit"] else 0
        assert line == f"ok {unit} {f['budget']} {len(f['image']) // 2}", c["name"]
    cases = {c["name"]: c["send"] for c in VECTORS["board_cases"]}
    names = ["infer_v2_bad_unit", "infer_v2_budget_without_unit", "infer_v2_short"]
    out = run_driver(driver, [f"dec_infer {cases[n]}" for n in names])
    assert out == ["err 7 5", "err 7 6", "err 3 5"]


def test_c_server_board_cases(driver: Path) -> None:
    cases = VECTORS["board_cases"]
    out = run_driver(driver, [f"serve {c['send']}" for c in cases])
    for c, got in zip(cases, out, strict=True):
        assert got == c["reply"], f"{c['name']}: {c['what']}"


def test_c_server_matches_python_twin_on_mutated_streams(driver: Path) -> None:
    """Differential: 400 seeded random/mutated streams; C and the Python twin reply identically."""
    rng = random.Random(1234)
    img = bytes(range(16))
    seeds = [
        P.encode_info_request(1),
        P.encode_infer(2, img),
        P.encode_config(3, P.Config("margin", 0, (4, 9, 0))),
        P.encode_infer(4, bytes(16)),
        P.encode_frame(0x42, 5),
        P.encode_infer(6, bytes(range(40))),
        P.encode_info_request(7, 1),
        P.encode_infer(8, img, 1),
        P.encode_config(9, P.Config("budget", 0, (0, 0, 0), 250, budget_unit="energy")),
        P.encode_infer(10, img, 2, "cycles", 1500),
        P.encode_config(11, P.Config("budget", 0, (0, 0, 0), 15000), 1),
    ]
    streams = []
    for _ in range(400):
        s = bytearray(b"".join(rng.choice(seeds) for _ in range(rng.randint(1, 4))))
        for _ in range(rng.randint(0, 4)):
            if not s:
                break
            pos = rng.randrange(len(s))
            op = rng.randrange(4)
            if op == 0:
                s[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                s.insert(pos, rng.choice([0, rng.randrange(256)]))
            elif op == 2:
                del s[pos]
            else:
                s = s[:pos]
        streams.append(bytes(s))
    out = run_driver(driver, [f"serve {s.hex()}" for s in streams])
    for s, got in zip(streams, out, strict=True):
        assert got == E.Server().feed(s).hex(), s.hex()


# ---- Python decoder robustness ----


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_python_decoders_raise_only_protocol_errors(data: bytes) -> None:
    for item in P.decode_replies(data):
        assert isinstance(item, P.ProtocolError | P.BoardInfo | P.ConfigAck | P.Result | P.ErrorReply)
    for decode in (P.cobs_decode, P.decode_frame):
        try:
            decode(data)
        except P.ProtocolError:
            pass


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=80))
def test_python_reply_and_request_decoders_on_crc_valid_frames(
    version: int, msg_type: int, seq: int, body: bytes
) -> None:
    """Frames that pass the CRC but carry arbitrary headers and bodies: only ProtocolError."""
    frame = P.decode_frame(P.encode_frame(msg_type, seq, body, version)[1:-1])
    assert (frame.version, frame.type, frame.seq, frame.body) == (version, msg_type, seq, body)
    for decode in (P.decode_reply, P.decode_request):
        try:
            decode(frame)
        except P.ProtocolError as e:
            assert isinstance(e, TinydynError) and isinstance(e.code, P.ErrorCode)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=700))
def test_cobs_roundtrip(data: bytes) -> None:
    enc = P.cobs_encode(data)
    assert b"\x00" not in enc and len(enc) <= len(data) + len(data) // 254 + 1
    assert P.cobs_decode(enc) == data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=4), st.integers(1, 7))
def test_frame_reader_resyncs_after_garbage(garbage: list[bytes], split: int) -> None:
    """Garbage before a frame never costs the frame, however the stream is chunked."""
    frame = P.encode_result(9, E.expected_result(9, E.stub_infer(bytes(range(16)), P.Config())[1], 0xFFFF))
    stream = b"".join(garbage) + frame
    reader = P.FrameReader()
    items: list = []
    for i in range(0, len(stream), split):
        items += reader.feed(stream[i : i + split])
    frames = [x for x in items if isinstance(x, P.Frame)]
    assert frames and P.decode_reply(frames[-1]).seq == 9
    assert all(isinstance(x, P.Frame | P.ProtocolError) for x in items)


def test_frame_reader_bounds_memory() -> None:
    reader = P.FrameReader(max_chunk=100)
    out = reader.feed(b"\x01" * 1000)
    assert out == [] and reader.pending == 0
    out = reader.feed(b"\x00" + P.encode_config_ack(3))
    assert isinstance(out[0], P.ProtocolError) and out[0].code == P.ErrorCode.BAD_LENGTH
    assert P.decode_reply(out[1]) == P.ConfigAck(3)


def test_version_mismatch_and_error_frozen_layout() -> None:
    v3_info = P.decode_frame(P.encode_frame(P.MsgType.INFO, 1, bytes(48), version=3)[1:-1])
    with pytest.raises(P.ProtocolError) as e:
        P.decode_reply(v3_info)
    assert e.value.code == P.ErrorCode.BAD_VERSION and "v3" in str(e.value)
    # an ERROR from a v3 board is still readable
    v3_err = P.decode_frame(P.encode_frame(P.MsgType.ERROR, 1, struct.pack("<BI", 5, 3), version=3)[1:-1])
    assert P.decode_reply(v3_err) == P.ErrorReply(1, P.ErrorCode.BAD_VERSION, 3)
    # a v1 INFO with the v2 extension (or a v2 INFO without it) is refused by length
    info_v1 = bytes.fromhex(MESSAGES["info_reply"]["wire"])
    body = P.decode_frame(info_v1[1:-1]).body
    for version, b in ((1, body + bytes(6)), (2, bytes([2]) + body[1:])):
        with pytest.raises(P.ProtocolError) as e:
            P.decode_reply(P.decode_frame(P.encode_frame(P.MsgType.INFO, 1, b, version)[1:-1]))
        assert e.value.code == P.ErrorCode.BAD_LENGTH


def test_host_side_validation() -> None:
    with pytest.raises(P.ProtocolError, match="unknown policy 'fast'"):
        P.Config("fast")
    with pytest.raises(P.ProtocolError, match="confidence_t16 70000"):
        P.Config("confidence", 70000)
    with pytest.raises(P.ProtocolError, match="seq 65535"):
        P.encode_info_request(0xFFFF)
    with pytest.raises(P.ProtocolError, match="unknown budget unit 'joules'"):
        P.Config("budget", budget_unit="joules")
    with pytest.raises(P.ProtocolError, match="a budget in energy needs protocol v2"):
        P.encode_config(1, P.Config("budget", budget_unit="energy"), 1)
    with pytest.raises(P.ProtocolError, match="a per-request budget needs protocol v2"):
        P.encode_infer(1, bytes(16), 1, "macs", 5)
    with pytest.raises(P.ProtocolError, match="per-request budget 5 needs a unit"):
        P.encode_infer(1, bytes(16), 2, None, 5)


# ---- fuzzing the C parser ----


def test_c_fuzz_short(tmp_path: Path) -> None:
    """100k generated inputs through the C receiver, server and COBS under ASan + UBSan."""
    require_tool("gcc")
    proc = subprocess.run(
        ["bash", str(ROOT / "tests" / "fuzz" / "run_fuzz.sh"), "100000", "standalone"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "FUZZ_OUT": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "fuzz: 100000 inputs, no crash" in proc.stdout


def test_c_ring_buffer(driver: Path) -> None:
    out = run_driver(driver, ["ring 4 pppppoooo", "ring 8 popopoooppo", "ring 2 ppopo"])
    assert out == ["000102-- dropped 2", "000102----03 dropped 0", "0002 dropped 1"]


@pytest.mark.parametrize("source", ["protocol.c", "td_server.c"])
def test_c_compiles_for_cortex_m4(source: str, tmp_path: Path) -> None:
    """The board-side code builds warning-free for the MCU (and its size stays small)."""
    cc = require_tool("arm-none-eabi-gcc")
    fw = ROOT / "tinydyn" / "firmware"
    obj = tmp_path / "out.o"
    cmd = [cc, "-mcpu=cortex-m4", "-mthumb", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Os",
           f"-I{fw}", "-c", str(fw / source), "-o", str(obj)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    size = subprocess.run([cc.replace("gcc", "size"), str(obj)], capture_output=True, text=True).stdout
    text, data, bss = map(int, size.splitlines()[1].split()[:3])
    assert text < 2048 and data == 0 and bss == 0  # no hidden state: every buffer is the caller's


def test_config_from_integer_policy() -> None:
    from tinydyn.quantize.policy import IntegerPolicy

    cfg = P.Config.from_policy(IntegerPolicy("margin", margins=[7, 3], lut_mults=[1, 1]), num_exits=2)
    assert cfg == P.Config("margin", 0, (7, 3), 0, True, True)
    cfg = P.Config.from_policy(IntegerPolicy("confidence", confidence_t16=58982), num_exits=3, logits=False)
    assert cfg == P.Config("confidence", 58982, (0, 0, 0), 0, True, False)
    assert P.decode_request(P.decode_frame(P.encode_config(1, cfg)[1:-1])) == P.ConfigRequest(1, cfg)
