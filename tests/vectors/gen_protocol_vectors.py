"""Regenerate tests/vectors/protocol_vectors.json (run from the repo root; review the diff!).

The vectors freeze the wire format: the C and Python implementations are both tested against
them, and the hand-checked parts (CRC check value, COBS examples from the COBS paper /
Wikipedia) are asserted independently in tests/test_protocol.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.host_board import emulator as E  # noqa: E402
from tinydyn.host import protocol as P  # noqa: E402

OUT = ROOT / "tests" / "vectors" / "protocol_vectors.json"


def h(b: bytes) -> str:
    return b.hex()


def cobs_cases() -> list[dict]:
    r = bytes(range(1, 255))
    cases = [
        b"",
        b"\x00",
        b"\x00\x00",
        b"\x00\x11\x00",
        b"\x11\x22\x00\x33",
        b"\x11\x22\x33\x44",
        b"\x11\x00\x00\x00",
        r,
        b"\x00" + r,
        r + b"\xff",
        bytes(range(2, 256)) + b"\x00",
        bytes(range(3, 256)) + b"\x00\x01",
        bytes([7]) * 600,
    ]
    return [{"decoded": h(c), "encoded": h(P.cobs_encode(c))} for c in cases]


def message_cases() -> list[dict]:
    image16 = bytes(range(16))
    cfg_conf = P.Config("confidence", 58982, (3, -1, 0), 0, True, True)
    cfg_budget = P.Config("budget", 0, (0, 0, 0), 15000, True, False)
    res = P.Result(
        7,
        3,
        2,
        P.CounterKind.CYCLES,
        P.EnergyKind.MEASURED,
        30000,
        123456,
        1,
        40,
        300,
        1500,
        0xFFFF,
        (-136, -16, 104, 224, -168, -48, 72, 192, -200, -80),
    )
    res_nolog = P.Result(
        8, 9, 0, P.CounterKind.INSTRUCTIONS, P.EnergyKind.MODELLED, 10000, 0xFFFFFFFF, 0, 0, 100, 0, 4, None
    )
    cases: list[dict] = [
        {"name": "info_request", "kind": "INFO_REQ", "fields": {"seq": 1}, "wire": P.encode_info_request(1)},
        {
            "name": "config_confidence",
            "kind": "CONFIG",
            "fields": {"seq": 2, **cfg_conf.to_dict()},
            "wire": P.encode_config(2, cfg_conf),
        },
        {
            "name": "config_budget_nologits",
            "kind": "CONFIG",
            "fields": {"seq": 3, **cfg_budget.to_dict()},
            "wire": P.encode_config(3, cfg_budget),
        },
        {
            "name": "infer_16",
            "kind": "INFER",
            "fields": {"seq": 4, "image": h(image16)},
            "wire": P.encode_infer(4, image16),
        },
        {
            "name": "infer_zeros",
            "kind": "INFER",
            "fields": {"seq": 0x0100, "image": h(bytes(16))},
            "wire": P.encode_infer(0x0100, bytes(16)),
        },
        {
            "name": "infer_600",
            "kind": "INFER",
            "fields": {"seq": 0xFFFE, "image": h(bytes([0x55]) * 600)},
            "wire": P.encode_infer(0xFFFE, bytes([0x55]) * 600),
        },
        {
            "name": "info_reply",
            "kind": "INFO",
            "fields": {"seq": 1, **E.BOARD_INFO.to_dict()},
            "wire": P.encode_info(1, E.BOARD_INFO),
        },
        {"name": "config_ack", "kind": "CONFIG_ACK", "fields": {"seq": 2}, "wire": P.encode_config_ack(2)},
        {"name": "result_logits", "kind": "RESULT", "fields": res.to_dict(), "wire": P.encode_result(7, res)},
        {
            "name": "result_nologits",
            "kind": "RESULT",
            "fields": res_nolog.to_dict(),
            "wire": P.encode_result(8, res_nolog),
        },
    ]
    for code in P.ErrorCode:
        seq = P.SEQ_UNKNOWN if code <= P.ErrorCode.BAD_LENGTH else 5
        detail = {P.ErrorCode.BAD_IMAGE_SIZE: 16, P.ErrorCode.INFER_FAILED: 0xFFFFFFFD}.get(code, 0)
        cases.append(
            {
                "name": f"error_{code.name.lower()}",
                "kind": "ERROR",
                "fields": {"seq": seq, "code": code.name, "detail": detail},
                "wire": P.encode_error(seq, code, detail),
            }
        )
    for c in cases:
        c["wire"] = h(c["wire"])
    return cases


def board_cases() -> list[dict]:
    """Request bytes for a fresh vector-model board and the exact reply bytes it must send."""
    img = bytes(range(16))
    good = P.encode_infer(7, img)
    bad_crc = bytearray(P.build_payload(P.MsgType.INFER, 8, img))
    bad_crc[-1] ^= 0x01
    flipped = bytearray(P.build_payload(P.MsgType.INFER, 8, img))
    flipped[10] ^= 0x80
    cfg = E.raw_config_body
    cases = [
        ("info", "INFO_REQ answered with INFO", P.encode_info_request(1)),
        ("infer", "INFER with the default config", good),
        ("empty_frames", "lone delimiters are ignored", b"\x00\x00\x00" + good),
        (
            "garbage_then_good",
            "garbage between frames: one ERROR, then the good frame is served",
            b"\x00GARBAGE\x00" + good,
        ),
        (
            "cobs_ok_garbage",
            "COBS-valid garbage fails the CRC",
            b"\x00\x09\x01\x02\x03\x04\x05\x06\x07\x08\x00" + good,
        ),
        ("bad_crc", "CRC byte flipped", P.to_wire(bytes(bad_crc))),
        ("bad_crc_body", "a body bit flipped", P.to_wire(bytes(flipped))),
        ("too_short", "payload shorter than header + CRC", b"\x00\x03\x01\x02\x00"),
        ("cobs_overrun", "COBS block runs past the delimiter", b"\x00\x05\x01\x02\x00"),
        ("truncated_then_good", "the first 12 bytes of a frame, then a whole frame", good[:12] + good),
        (
            "oversized",
            "a frame longer than max_payload",
            P.encode_infer(9, bytes([1]) * (E.MAX_PAYLOAD + 1)) + good,
        ),
        ("info_with_body", "INFO_REQ with a body", P.encode_frame(P.MsgType.INFO_REQ, 3, b"\x01")),
        ("unknown_type", "type 0x42", P.encode_frame(0x42, 4, b"")),
        ("reply_type_sent", "a reply type sent to the board", P.encode_frame(P.MsgType.RESULT, 5, b"")),
        ("bad_version", "version 2 INFO_REQ", P.encode_frame(P.MsgType.INFO_REQ, 6, b"", version=2)),
        ("image_short", "15-byte image", P.encode_infer(10, img[:15])),
        ("image_long", "17-byte image", P.encode_infer(11, img + b"\x01")),
        ("image_empty", "empty image", P.encode_infer(12, b"")),
        ("infer_failed", "td_infer returns -3", P.encode_infer(13, b"\xee" + img[1:])),
        ("config_short", "CONFIG body of 5 bytes", P.encode_frame(P.MsgType.CONFIG, 14, bytes(5))),
        (
            "config_len_mismatch",
            "CONFIG says 3 margins, carries 2",
            P.encode_frame(P.MsgType.CONFIG, 15, cfg(0, 3, 0, 0, [0, 0, 0])[:-4]),
        ),
        ("config_bad_policy", "policy 4", P.encode_frame(P.MsgType.CONFIG, 16, cfg(4, 3, 0, 0, [0, 0, 0]))),
        (
            "config_bad_flags",
            "reserved flag bit",
            P.encode_frame(P.MsgType.CONFIG, 17, cfg(0, 7, 0, 0, [0, 0, 0])),
        ),
        (
            "config_bad_t16",
            "confidence_t16 65537",
            P.encode_frame(P.MsgType.CONFIG, 18, cfg(1, 3, 65537, 0, [0, 0, 0])),
        ),
        (
            "config_wrong_exits",
            "2 margins for 3 exits",
            P.encode_frame(P.MsgType.CONFIG, 19, cfg(2, 3, 0, 0, [1, 2])),
        ),
        (
            "config_gating_off",
            "gating off (the static network): accepted",
            P.encode_frame(P.MsgType.CONFIG, 20, cfg(0, 2, 0, 0, [0, 0, 0])),
        ),
        (
            "config_then_infer",
            "CONFIG budget 15000 without logits, then INFER: exit 1, tag 21",
            P.encode_config(21, P.Config("budget", 0, (0, 0, 0), 15000, True, False))
            + P.encode_infer(22, img),
        ),
        (
            "config_margin",
            "margin policy: exit 1 (margin[1] <= image[0] = 5)",
            P.encode_config(23, P.Config("margin", 0, (9, 5, 0))) + P.encode_infer(24, bytes([5]) + img[1:]),
        ),
        (
            "error_keeps_config",
            "a rejected CONFIG leaves the previous one in force",
            P.encode_config(25, P.Config("confidence", 100, (0, 0, 0)))
            + P.encode_frame(P.MsgType.CONFIG, 26, cfg(9, 3, 0, 0, [0, 0, 0]))
            + P.encode_infer(27, img),
        ),
    ]
    out = []
    for name, what, sent in cases:
        reply = E.Server().feed(sent)
        out.append(
            {
                "name": name,
                "what": what,
                "send": h(sent),
                "reply": h(reply),
                "replies": [
                    type(r).__name__ if not isinstance(r, P.ErrorReply) else f"ERROR {r.name}"
                    for r in P.decode_replies(reply)
                ],
            }
        )
    return out


def main() -> None:
    vectors = {
        "about": "tinydyn serial protocol v1 test vectors (docs/PROTOCOL.md). Hex strings. board_cases: "
        "bytes sent to a fresh board running the vector model (tests/host_board/stub_model.c) and "
        "the exact bytes it replies. Regenerate with tests/vectors/gen_protocol_vectors.py.",
        "version": P.VERSION,
        "vector_model": {**E.BOARD_INFO.to_dict()},
        "crc32": [
            {"data": h(b"123456789"), "crc": "cbf43926"},
            {"data": "", "crc": "00000000"},
            {"data": h(bytes(range(256))), "crc": f"{P.crc32(bytes(range(256))):08x}"},
        ],
        "cobs": cobs_cases(),
        "messages": message_cases(),
        "board_cases": board_cases(),
    }
    OUT.write_text(json.dumps(vectors, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
