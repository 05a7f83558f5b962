"""Regenerate tests/vectors/protocol_vectors.json (run from the repo root; review the diff!).

The vectors freeze the wire format: the C and Python implementations are both tested against
them, and the hand-checked parts (CRC check value, COBS examples from the COBS paper /
Wikipedia) are asserted independently in tests/test_protocol.py.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from functools import partial
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
    # v2: the same messages plus budgets in every unit and per-request budgets
    cfg_energy = P.Config("budget", 0, (0, 0, 0), 250, True, True, "energy")
    cfg_cycles = P.Config("confidence", 58982, (0, 0, 0), 0, False, True, "cycles")
    res_v2 = replace(
        res,
        policy="budget",
        budget_unit="energy",
        budget=250,
        energy_cost_nj=245,
        cycles_cost=1_234_567,
        gate_macs=321,
    )
    res_nolog_v2 = replace(
        res_nolog,
        policy="none",
        budget_unit="macs",
        budget=0,
        energy_cost_nj=0xFFFFFFFF,
        cycles_cost=0,
        gate_macs=0,
    )
    info_v1 = replace(E.BOARD_INFO, version=1, budget_units=1, cost_model_id=0)  # what v1 carries
    cases: list[dict] = []

    def add(name: str, kind: str, version: int, fields: dict, wire: bytes) -> None:
        cases.append({"name": name, "kind": kind, "version": version, "fields": fields, "wire": wire})

    for v, suffix in ((1, ""), (2, "_v2")):
        add(f"info_request{suffix}", "INFO_REQ", v, {"seq": 1}, P.encode_info_request(1, v))
        add(
            f"config_confidence{suffix}",
            "CONFIG",
            v,
            {"seq": 2, **cfg_conf.to_dict()},
            P.encode_config(2, cfg_conf, v),
        )
        add(
            f"config_budget_nologits{suffix}",
            "CONFIG",
            v,
            {"seq": 3, **cfg_budget.to_dict()},
            P.encode_config(3, cfg_budget, v),
        )
        for name, seq, image in (
            ("infer_16", 4, image16),
            ("infer_zeros", 0x0100, bytes(16)),
            ("infer_600", 0xFFFE, bytes([0x55]) * 600),
        ):
            add(
                f"{name}{suffix}",
                "INFER",
                v,
                {"seq": seq, "image": h(image), "budget_unit": None, "budget": 0},
                P.encode_infer(seq, image, v),
            )
        info = E.BOARD_INFO if v == 2 else info_v1
        add(f"info_reply{suffix}", "INFO", v, {"seq": 1, **info.to_dict()}, P.encode_info(1, info))
        add(f"config_ack{suffix}", "CONFIG_ACK", v, {"seq": 2}, P.encode_config_ack(2, v))
        r1, r2 = (res, res_nolog) if v == 1 else (res_v2, res_nolog_v2)
        add(f"result_logits{suffix}", "RESULT", v, r1.to_dict(), P.encode_result(7, r1))
        add(f"result_nologits{suffix}", "RESULT", v, r2.to_dict(), P.encode_result(8, r2))
        for code in P.ErrorCode:
            seq = P.SEQ_UNKNOWN if code <= P.ErrorCode.BAD_LENGTH else 5
            detail = {P.ErrorCode.BAD_IMAGE_SIZE: 16, P.ErrorCode.INFER_FAILED: 0xFFFFFFFD}.get(code, 0)
            add(
                f"error_{code.name.lower()}{suffix}",
                "ERROR",
                v,
                {"seq": seq, "code": code.name, "detail": detail},
                P.encode_error(seq, code, detail, v),
            )
    add("config_energy_v2", "CONFIG", 2, {"seq": 9, **cfg_energy.to_dict()}, P.encode_config(9, cfg_energy))
    add("config_cycles_v2", "CONFIG", 2, {"seq": 10, **cfg_cycles.to_dict()}, P.encode_config(10, cfg_cycles))
    for name, seq, unit, budget in (
        ("infer_budget_macs_v2", 11, "macs", 15000),
        ("infer_budget_energy_v2", 12, "energy", 0xFFFFFFFF),
        ("infer_budget_cycles_v2", 13, "cycles", 0),
    ):
        add(
            name,
            "INFER",
            2,
            {"seq": seq, "image": h(image16), "budget_unit": unit, "budget": budget},
            P.encode_infer(seq, image16, 2, unit, budget),
        )
    for c in cases:
        c["wire"] = h(c["wire"])
    return cases


def board_cases() -> list[dict]:
    """Request bytes for a fresh vector-model board and the exact reply bytes it must send: the
    version-1 cases (a v2 board serves a v1 host unchanged), then version 2."""
    infer1 = partial(P.encode_infer, version=1)
    config1 = partial(P.encode_config, version=1)
    info1 = partial(P.encode_info_request, version=1)

    def frame1(msg_type: int, seq: int, body: bytes = b"", version: int = 1) -> bytes:
        return P.encode_frame(msg_type, seq, body, version)

    def payload1(msg_type: int, seq: int, body: bytes = b"") -> bytes:
        return P.build_payload(msg_type, seq, body, 1)

    img = bytes(range(16))
    good = infer1(7, img)
    bad_crc = bytearray(payload1(P.MsgType.INFER, 8, img))
    bad_crc[-1] ^= 0x01
    flipped = bytearray(payload1(P.MsgType.INFER, 8, img))
    flipped[10] ^= 0x80
    cfg = E.raw_config_body
    cases = [
        ("info", "INFO_REQ answered with INFO", info1(1)),
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
            infer1(9, bytes([1]) * (E.MAX_PAYLOAD + 1)) + good,
        ),
        ("info_with_body", "INFO_REQ with a body", frame1(P.MsgType.INFO_REQ, 3, b"\x01")),
        ("unknown_type", "type 0x42", frame1(0x42, 4, b"")),
        ("reply_type_sent", "a reply type sent to the board", frame1(P.MsgType.RESULT, 5, b"")),
        ("bad_version", "version 3 INFO_REQ", frame1(P.MsgType.INFO_REQ, 6, b"", version=3)),
        ("image_short", "15-byte image", infer1(10, img[:15])),
        ("image_long", "17-byte image", infer1(11, img + b"\x01")),
        ("image_empty", "empty image", infer1(12, b"")),
        ("infer_failed", "td_infer returns -3", infer1(13, b"\xee" + img[1:])),
        ("config_short", "CONFIG body of 5 bytes", frame1(P.MsgType.CONFIG, 14, bytes(5))),
        (
            "config_len_mismatch",
            "CONFIG says 3 margins, carries 2",
            frame1(P.MsgType.CONFIG, 15, cfg(0, 3, 0, 0, [0, 0, 0])[:-4]),
        ),
        ("config_bad_policy", "policy 4", frame1(P.MsgType.CONFIG, 16, cfg(4, 3, 0, 0, [0, 0, 0]))),
        (
            "config_bad_flags",
            "reserved flag bit",
            frame1(P.MsgType.CONFIG, 17, cfg(0, 7, 0, 0, [0, 0, 0])),
        ),
        (
            "config_bad_t16",
            "confidence_t16 65537",
            frame1(P.MsgType.CONFIG, 18, cfg(1, 3, 65537, 0, [0, 0, 0])),
        ),
        (
            "config_wrong_exits",
            "2 margins for 3 exits",
            frame1(P.MsgType.CONFIG, 19, cfg(2, 3, 0, 0, [1, 2])),
        ),
        (
            "config_gating_off",
            "gating off (the static network): accepted",
            frame1(P.MsgType.CONFIG, 20, cfg(0, 2, 0, 0, [0, 0, 0])),
        ),
        (
            "config_then_infer",
            "CONFIG budget 15000 without logits, then INFER: exit 1, tag 21",
            config1(21, P.Config("budget", 0, (0, 0, 0), 15000, True, False)) + infer1(22, img),
        ),
        (
            "config_margin",
            "margin policy: exit 1 (margin[1] <= image[0] = 5)",
            config1(23, P.Config("margin", 0, (9, 5, 0))) + infer1(24, bytes([5]) + img[1:]),
        ),
        (
            "error_keeps_config",
            "a rejected CONFIG leaves the previous one in force",
            config1(25, P.Config("confidence", 100, (0, 0, 0)))
            + frame1(P.MsgType.CONFIG, 26, cfg(9, 3, 0, 0, [0, 0, 0]))
            + infer1(27, img),
        ),
    ]
    cases += [
        ("info_v2", "v2 INFO_REQ answered with a v2 INFO", P.encode_info_request(1)),
        ("infer_v2", "v2 INFER with the default config", P.encode_infer(7, img)),
        (
            "config_energy_then_infer_v2",
            "CONFIG budget 150 nJ, then INFER: exit 1 (the stub: 100 nJ per exit)",
            P.encode_config(30, P.Config("budget", 0, (0, 0, 0), 150, True, True, "energy"))
            + P.encode_infer(31, img),
        ),
        (
            "infer_override_v2",
            "a per-request budget of 2500 cycles under policy none: exit 2; the next INFER without one: "
            "the CONFIG (none) again",
            P.encode_infer(32, img, 2, "cycles", 2500) + P.encode_infer(33, img),
        ),
        (
            "override_over_confidence_v2",
            "CONFIG confidence, then an INFER with a 15000-MAC budget: the budget decides (exit 1)",
            P.encode_config(34, P.Config("confidence", 100, (0, 0, 0)))
            + P.encode_infer(35, img, 2, "macs", 15000),
        ),
        (
            "v1_config_then_v2_infer",
            "a v1 CONFIG (budget in MACs) then a v2 INFER: one board, both versions",
            P.encode_config(36, P.Config("budget", 0, (0, 0, 0), 15000), 1) + P.encode_infer(37, img),
        ),
        (
            "infer_v2_bad_unit",
            "INFER budget unit 4",
            P.encode_frame(P.MsgType.INFER, 38, bytes([4]) + bytes(4) + img),
        ),
        (
            "infer_v2_budget_without_unit",
            "INFER unit 0 (no override) with budget 5",
            P.encode_frame(P.MsgType.INFER, 39, bytes([0, 5, 0, 0, 0]) + img),
        ),
        ("infer_v2_short", "v2 INFER body of 3 bytes", P.encode_frame(P.MsgType.INFER, 40, bytes(3))),
        ("infer_v2_image_short", "v2 INFER with a 15-byte image", P.encode_infer(41, img[:15])),
        (
            "config_v2_bad_unit",
            "v2 CONFIG budget unit 0",
            P.encode_frame(P.MsgType.CONFIG, 42, cfg(3, 3, 0, 0, [0, 0, 0], 0)),
        ),
        (
            "config_v2_v1_length",
            "a v1-length CONFIG body in a v2 frame",
            P.encode_frame(P.MsgType.CONFIG, 43, cfg(3, 3, 0, 0, [0, 0, 0])),
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
        "about": "tinydyn serial protocol v1 and v2 test vectors (docs/PROTOCOL.md). Hex strings. "
        "board_cases: bytes sent to a fresh board running the vector model "
        "(tests/host_board/stub_model.c) and the exact bytes it replies. "
        "Regenerate with tests/vectors/gen_protocol_vectors.py.",
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
