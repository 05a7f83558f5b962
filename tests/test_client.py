"""Host client and results files against the real host board on a real pseudo-terminal.

The board is tinydyn/firmware/boards/host/board_host.c with the protocol server, compiled with
gcc here and linked with the stand-in model tests/host_board/stub_model.c (whose Python twin
predicts every result). pyserial opens the pty the board prints, as it would a USB UART.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from tinydyn.host import protocol as P
from tinydyn.host.boardproc import BoardProcess, BoardStartError
from tinydyn.host.client import (
    BoardClient,
    BoardError,
    BoardNotAnsweringError,
    BoardResetError,
    ModelMismatchError,
    ProtocolVersionError,
)
from tinydyn.host.results import ResultsFileError, ResultsWriter, done_seqs, load_records

from .conftest import require_tool
from .host_board import emulator as E
from .host_board.build import build_board

ROOT = Path(__file__).resolve().parents[1]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "protocol_vectors.json").read_text())
IMG = bytes(range(16))


@pytest.fixture(scope="module")
def boards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_tool("gcc")
    out = tmp_path_factory.mktemp("boards")
    return {
        "v2": build_board(out),  # speaks v1 and v2
        "v1": build_board(out, ["TD_PROTO_VERSION=1u"], name="board_host_v1"),  # a v1-only board
        "v3": build_board(out, ["TD_PROTO_VERSION=3u", "TD_PROTO_VERSION_MIN=3u"], name="board_host_v3"),
        "macs_only": build_board(out, ["STUB_BUDGET_UNITS=1u"], name="board_host_macs"),
    }


@pytest.fixture
def board(boards: dict[str, Path]) -> Iterator[BoardProcess]:
    with BoardProcess([str(boards["v2"])]) as b:
        yield b


def expected(seq: int, image: bytes, cfg: P.Config, tag: int, version: int = 2) -> P.Result:
    rc, r = E.stub_infer(image, cfg)
    assert rc == 0
    return E.expected_result(seq, r, tag, cfg.logits, version, cfg)


def read_exactly(port: serial.Serial, n: int, timeout: float = 3.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < n and time.monotonic() < deadline:
        data += port.read(n - len(data))
    return data


# ---- the board over the pty: exact bytes for every vector case ----


def test_board_answers_vector_cases_over_pty(boards: dict[str, Path]) -> None:
    """Every board case (good frames, garbage, bad CRC/length/type/version/size, truncation) on a
    fresh board: the exact reply bytes; then the board keeps serving an INFER, answered exactly
    as the Python twin predicts from the state the case left (e.g. a config in force)."""
    after = P.encode_infer(500, IMG)
    for c in VECTORS["board_cases"]:
        with BoardProcess([str(boards["v2"])]) as b, serial.Serial(b.port, 115200, timeout=0.05) as port:
            port.write(bytes.fromhex(c["send"]))
            want = bytes.fromhex(c["reply"])
            assert read_exactly(port, len(want)).hex() == c["reply"], f"{c['name']}: {c['what']}"
            twin = E.Server()
            twin.feed(bytes.fromhex(c["send"]))
            want_after = twin.feed(after)
            port.write(after)
            assert read_exactly(port, len(want_after)) == want_after, c["name"]
            assert port.read(100) == b""  # nothing unexpected, nothing late
            assert b.alive()


def test_config_tag_in_results_is_the_vector_default(board: BoardProcess) -> None:
    with serial.Serial(board.port, 115200, timeout=0.05) as port:
        port.write(P.encode_infer(3, IMG, 1))
        want = P.encode_result(3, expected(3, IMG, P.Config(margins=(0, 0, 0)), P.SEQ_UNKNOWN, 1))
        assert read_exactly(port, len(want)) == want


# ---- the client ----


def test_client_info_configure_infer(board: BoardProcess) -> None:
    with BoardClient(board.port, timeout=1.0, expected_model_id=E.MODEL_ID) as client:
        info = client.board_info
        assert info == P.BoardInfo(**{**E.BOARD_INFO.__dict__, "seq": info.seq})
        assert client.info().model_id == E.MODEL_ID
        images = [bytes((i * 37 + k) % 256 for k in range(16)) for i in range(20)]
        for i, img in enumerate(images):
            assert client.infer(i, img) == expected(i, img, P.Config(), P.SEQ_UNKNOWN)
        cfg = client.configure("budget", budget_macs=15000, logits=False)
        for i, img in enumerate(images):
            seq = 70000 + i  # beyond the 16-bit wire seq: the client keeps the caller's number
            r = client.infer(seq, img)
            assert r.seq == seq and r.exit_index == 1 and r.logits is None
            assert r == expected(seq, img, cfg, r.config_tag)
        client.configure("margin", margins=[200, 5, 0])
        assert client.infer(1, bytes([5]) + IMG[1:]).exit_index == 1
        assert client.infer(2, bytes([4]) + IMG[1:]).exit_index == 2
        assert client.infer(3, bytes([250]) + IMG[1:]).exit_index == 0
        assert client.stats["retries"] == 0


def test_client_accepts_numpy_uint8(board: BoardProcess) -> None:
    np = pytest.importorskip("numpy")
    with BoardClient(board.port, timeout=1.0) as client:
        img = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
        assert client.infer(0, img).predicted == expected(0, IMG, P.Config(), 0xFFFF).predicted
        with pytest.raises(TypeError, match="uint8"):
            client.infer(0, img.astype(np.float32))


def test_client_retries_a_dropped_reply(boards: dict[str, Path]) -> None:
    # reply 1 answers the connect ping, reply 2 (the first INFER) is never sent
    with BoardProcess([str(boards["v2"]), "--drop-reply", "2"]) as b:
        with BoardClient(b.port, timeout=0.3, retries=2) as client:
            t0 = time.monotonic()
            assert client.infer(5, IMG) == expected(5, IMG, P.Config(), P.SEQ_UNKNOWN)
            assert time.monotonic() - t0 >= 0.3  # it waited out one timeout, then resent
            assert client.stats["retries"] == 1
            assert client.infer(6, IMG).seq == 6


def test_client_resends_after_line_corruption_and_drops_stale_replies(board: BoardProcess) -> None:
    with BoardClient(board.port, timeout=1.0) as client:
        # half a frame on the line: the board answers ERROR(0xFFFF) for it, then our request
        assert client._ser is not None
        client._ser.write(P.encode_infer(77, IMG)[:9])
        t0 = time.monotonic()
        assert client.infer(8, IMG).seq == 8
        assert time.monotonic() - t0 < 0.9  # resent at once, no timeout
        assert client.stats["retries"] == 1
        # the duplicate reply to the resend is stale and must not be taken for the next seq
        assert client.infer(9, bytes(16)) == expected(9, bytes(16), P.Config(), P.SEQ_UNKNOWN)
        assert client.stats["stale"] == 1


def test_client_detects_reset_and_reconfigures(boards: dict[str, Path]) -> None:
    # frames: INFO ping, CONFIG, INFER -> then the board "resets" (config back to boot default)
    with BoardProcess([str(boards["v2"]), "--reset-after", "3"]) as b:
        with BoardClient(b.port, timeout=1.0) as client:
            client.configure("budget", budget_macs=0)
            assert client.infer(1, IMG).exit_index == 0
            r = client.infer(2, IMG)  # board answers with tag 0xFFFF: client re-INFOs, re-CONFIGs, repeats
            assert r.exit_index == 0 and r.config_tag != P.SEQ_UNKNOWN
            assert client.stats["resets"] == 1


def test_client_gives_up_on_a_board_that_keeps_resetting(boards: dict[str, Path]) -> None:
    with BoardProcess([str(boards["v2"]), "--reset-after", "3"]) as b:
        with BoardClient(b.port, timeout=1.0, max_resets=0) as client:
            client.configure("budget", budget_macs=0)
            client.infer(1, IMG)
            with pytest.raises(BoardResetError, match=f"board on {b.port} reset 1 times during INFER seq 2"):
                client.infer(2, IMG)


def test_client_model_mismatch(board: BoardProcess) -> None:
    with pytest.raises(ModelMismatchError) as e:
        BoardClient(board.port, timeout=1.0, expected_model_id="ffffffffffffffff").open()
    msg = str(e.value)
    assert "\n" not in msg and E.MODEL_ID in msg and "ffffffffffffffff" in msg and board.port in msg


def test_client_protocol_version_mismatch(boards: dict[str, Path]) -> None:
    """A board that speaks only a newer version: one clear error (no version in common)."""
    with BoardProcess([str(boards["v3"])]) as b:
        with pytest.raises(ProtocolVersionError) as e:
            BoardClient(b.port, timeout=1.0, connect_timeout=3.0).open()
        assert str(e.value) == (
            f"board on {b.port} speaks protocol up to v3, this host v1..v2: rebuild the firmware with "
            "this tinydyn version"
        )
    with BoardProcess([str(boards["v1"])]) as b:  # a host pinned to v2 and a v1 board
        with pytest.raises(ProtocolVersionError, match=r"up to v1, this host v1..v2 \(pinned to v2\)"):
            BoardClient(b.port, timeout=1.0, connect_timeout=3.0, protocol_version=2).open()


# ---- version negotiation and budgets (protocol v2) ----


def test_negotiation_bytes_v2_host_and_v1_board(boards: dict[str, Path]) -> None:
    """The exact exchange: v2 INFO_REQ -> v1 board's BAD_VERSION (detail 1, in v1) -> v1 INFO_REQ
    -> v1 INFO; a v2 board answers the v2 INFO_REQ with a v2 INFO at once."""
    v1_info = E.Server()._handle(P.decode_frame(P.encode_info_request(2, 1)[1:-1]))
    with BoardProcess([str(boards["v1"])]) as b, serial.Serial(b.port, 115200, timeout=0.05) as port:
        port.write(P.encode_info_request(1, 2))
        want = P.encode_error(1, P.ErrorCode.BAD_VERSION, 1, version=1)
        assert read_exactly(port, len(want)) == want
        port.write(P.encode_info_request(2, 1))
        # the v1-only build's INFO: version 1, and its receive buffer (max_payload) is the same
        assert read_exactly(port, len(v1_info)) == v1_info
    with BoardProcess([str(boards["v2"])]) as b, serial.Serial(b.port, 115200, timeout=0.05) as port:
        port.write(P.encode_info_request(1, 2))
        want = P.encode_info(1, E.BOARD_INFO)
        assert read_exactly(port, len(want)) == want


def test_v2_client_with_v1_board(boards: dict[str, Path]) -> None:
    """Negotiated down to v1: everything v1 has works; v2-only requests fail before sending."""
    with BoardProcess([str(boards["v1"])]) as b, BoardClient(b.port, timeout=1.0) as client:
        assert client.version == 1 and client.board_info is not None and client.board_info.units == ("macs",)
        cfg = client.configure("budget", budget_macs=15000)
        r = client.infer(1, IMG)
        assert r == expected(1, IMG, cfg, r.config_tag, 1) and r.exit_index == 1 and r.policy is None
        msg = f"board on {b.port} speaks protocol v1 only: a budget in energy needs v2; rebuild its firmware"
        with pytest.raises(ProtocolVersionError, match=msg):
            client.configure("budget", budget_macs=100, budget_unit="energy")
        with pytest.raises(ProtocolVersionError, match="a per-request budget needs v2"):
            client.infer(2, IMG, budget=100)
        assert client.infer(3, IMG).exit_index == 1  # nothing was sent: the CONFIG still holds


def test_v1_host_with_v2_board(board: BoardProcess) -> None:
    """A host pinned to v1 (as an old host) gets v1 replies from a v2 board, byte for byte."""
    with BoardClient(board.port, timeout=1.0, protocol_version=1) as client:
        assert client.board_info is not None and client.board_info.version == 1
        for i in range(5):
            img = bytes((i * 31 + k) % 256 for k in range(16))
            assert client.infer(i, img) == expected(i, img, P.Config(), P.SEQ_UNKNOWN, 1)
        cfg = client.configure("margin", margins=[9, 5, 0])
        r = client.infer(9, bytes([5]) + IMG[1:])
        assert r == expected(9, bytes([5]) + IMG[1:], cfg, r.config_tag, 1) and r.exit_index == 1


def test_per_request_budgets_in_every_unit(board: BoardProcess) -> None:
    """A time-varying budget: each INFER carries its own; the CONFIG holds between them."""
    with BoardClient(board.port, timeout=1.0) as client:
        assert client.version == 2 and client.board_info is not None
        assert client.board_info.units == ("macs", "energy", "cycles")
        cfg = client.configure("confidence", confidence_t16=100)  # the stub: exit 0
        schedule = [("macs", 15000, 1), ("energy", 250, 2), ("cycles", 0, 0), ("cycles", 1999, 1)]
        for i, (unit, budget, exit_index) in enumerate(schedule):
            r = client.infer(i, IMG, budget=budget, budget_unit=unit)
            want_cfg = P.Config("budget", 100, cfg.margins, budget, True, True, unit)
            assert r == expected(i, IMG, want_cfg, r.config_tag) and r.exit_index == exit_index
            assert (r.policy, r.budget_unit, r.budget) == ("budget", unit, budget)
            plain = client.infer(100 + i, IMG)
            assert plain == expected(100 + i, IMG, cfg, plain.config_tag) and plain.policy == "confidence"
        client.configure("budget", budget_macs=150, budget_unit="energy")
        assert client.infer(7, IMG).exit_index == 1


def test_budget_units_the_firmware_lacks(boards: dict[str, Path]) -> None:
    """A firmware without energy/cycle costs: the client refuses before sending; a host that
    sends anyway gets BAD_CONFIG detail 5, exactly as the twin predicts."""
    with BoardProcess([str(boards["macs_only"])]) as b:
        with BoardClient(b.port, timeout=1.0) as client:
            assert client.board_info is not None and client.board_info.units == ("macs",)
            with pytest.raises(BoardError, match=r"has no costs in cycles .* \(--cost-table\)"):
                client.configure("budget", budget_macs=5, budget_unit="cycles")
            with pytest.raises(BoardError, match="has no costs in energy"):
                client.infer(1, IMG, budget=5, budget_unit="energy")
            assert client.infer(2, IMG, budget=15000).exit_index == 1
        twin = E.Server(budget_units=1)
        sent = P.encode_config(5, P.Config("budget", 0, (0, 0, 0), 5, budget_unit="energy"))
        sent += P.encode_infer(6, IMG, 2, "cycles", 5)
        want = twin.feed(sent)
        assert P.decode_replies(want) == [
            P.ErrorReply(5, P.ErrorCode.BAD_CONFIG, 5),
            P.ErrorReply(6, P.ErrorCode.BAD_CONFIG, 5),
        ]
        with serial.Serial(b.port, 115200, timeout=0.05) as port:
            port.write(sent)
            assert read_exactly(port, len(want)) == want


def test_client_board_errors_are_one_line(board: BoardProcess) -> None:
    with BoardClient(board.port, timeout=1.0) as client:
        with pytest.raises(BoardError, match="rejected INFER seq 4: INFER_FAILED") as e:
            client.infer(4, b"\xee" + IMG[1:])
        assert e.value.code == P.ErrorCode.INFER_FAILED and "\n" not in str(e.value)
        with pytest.raises(P.ProtocolError, match="confidence_t16 65537 outside"):
            client.configure("confidence", confidence_t16=65537)  # caught before it is sent
        with pytest.raises(P.ProtocolError, match="2 margins given but the model .* has 3 exits"):
            client.configure("margin", margins=[1, 2])
        with pytest.raises(P.ProtocolError, match="image of 15 bytes but the model .* takes 1x4x4 = 16"):
            client.infer(5, IMG[:15])
        assert client.infer(6, IMG).seq == 6  # still serving


def test_client_board_not_answering_names_the_port() -> None:
    master, slave = os.openpty()  # a real pty with nobody behind it
    try:
        port = os.ttyname(slave)
        t0 = time.monotonic()
        with pytest.raises(BoardNotAnsweringError) as e:
            BoardClient(port, timeout=0.2, connect_timeout=0.6).open()
        assert 0.5 < time.monotonic() - t0 < 3.0
        msg = str(e.value)
        assert msg.startswith(f"no answer from a tinydyn board on {port} within 0.6 s") and "baud rate" in msg
        assert len(os.read(master, 4096)) >= 2 * len(P.encode_info_request(0))  # it kept pinging
    finally:
        os.close(master)
        os.close(slave)


def test_client_missing_port() -> None:
    with pytest.raises(BoardNotAnsweringError, match="cannot open serial port /dev/tinydyn-nope"):
        BoardClient("/dev/tinydyn-nope").open()


def test_client_pings_until_a_late_board_answers(boards: dict[str, Path]) -> None:
    """Opening the port before the board serves (as when QEMU boots): pings are retried."""
    with BoardProcess([str(boards["v2"]), "--drop-reply", "1"]) as b:
        with BoardClient(b.port, timeout=0.2, connect_timeout=3.0) as client:
            assert client.board_info is not None and client.board_info.model_id == E.MODEL_ID


def test_board_process_reports_a_board_without_pty(tmp_path: Path) -> None:
    with pytest.raises(BoardStartError, match="printed no pty path"):
        BoardProcess([sys.executable, "-c", "print('hello')"], start_timeout=2.0)


# ---- results files ----


def test_results_writer_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "run" / "results.jsonl"
    with ResultsWriter(path) as w:
        for i in range(5):
            w.write({"seq": i, "predicted": i % 3})
    assert done_seqs(path) == {0, 1, 2, 3, 4}
    with open(path, "ab") as f:  # a kill in the middle of a write
        f.write(b'{"seq": 5, "predi')
    assert done_seqs(path) == {0, 1, 2, 3, 4}
    with ResultsWriter(path) as w:  # resume: the torn tail is cut, appends start a fresh line
        w.write({"seq": 5, "predicted": 2})
    assert [r["seq"] for r in load_records(path)] == [0, 1, 2, 3, 4, 5]
    assert path.read_bytes().endswith(b'{"predicted":2,"seq":5}\n')
    with open(path, "ab") as f:
        f.write(b"{}")  # a complete JSON object but no newline: still torn
    assert len(load_records(path)) == 6


def test_results_file_damaged_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"seq": 0}\nnot json\n{"seq": 2}\n')
    with pytest.raises(ResultsFileError, match=r"r.jsonl:2 is not a JSON object line"):
        done_seqs(path)


_WRITER = """
import sys
from tinydyn.host.results import ResultsWriter
w = ResultsWriter(sys.argv[1])
i = 0
while True:
    w.write({"seq": i, "logits": list(range(100))})
    i += 1
"""


def test_results_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)])
    try:
        deadline = time.monotonic() + 20
        while (not path.exists() or path.stat().st_size < 20000) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = done_seqs(path)
    assert done == set(range(len(done))) and len(done) > 10  # a gap-free prefix
    with ResultsWriter(path) as w:
        w.write({"seq": len(done)})
    assert done_seqs(path) == set(range(len(done) + 1))


def test_measurement_loop_with_resume(board: BoardProcess, tmp_path: Path) -> None:
    """What a measurement run does: write each result as it arrives; a rerun skips done images."""
    path = tmp_path / "results.jsonl"
    images = {i: bytes((i + k) % 256 for k in range(16)) for i in range(12)}
    with BoardClient(board.port, timeout=1.0) as client, ResultsWriter(path) as w:
        for i in range(7):
            w.write(client.infer(i, images[i]).to_dict())
    with BoardClient(board.port, timeout=1.0) as client, ResultsWriter(path) as w:
        todo = [i for i in images if i not in done_seqs(path)]
        assert todo == list(range(7, 12))
        for i in todo:
            w.write(client.infer(i, images[i]).to_dict())
    records = load_records(path)
    assert [r["seq"] for r in records] == list(range(12))
    assert records[3] == expected(3, images[3], P.Config(), P.SEQ_UNKNOWN).to_dict()
    assert records[3]["counter_kind"] == "none" and records[3]["energy_kind"] == "modelled"
