"""Protocol throughput over the host board's pseudo-terminal: image payload vs bytes on the link.

Builds the host board (tinydyn/firmware/boards/host/) with the stand-in model at the given input
shape, runs N INFERs through BoardClient and reports images/s, image payload bytes/s, wire
bytes/s (both directions) and the framing efficiency payload / wire. A pty has no baud rate, so
this measures the protocol stack (pyserial, COBS, CRC, client) on this machine, not a UART; for
a UART at B baud (10 bits per byte) the link bound is B / 10 wire bytes/s.

    .venv/bin/python benchmarks/serial_throughput.py [--shape 3 32 32] [-n 500]
Writes benchmarks/results/serial_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.host_board.build import build_board  # noqa: E402
from tinydyn.host import protocol as P  # noqa: E402
from tinydyn.host.boardproc import BoardProcess  # noqa: E402
from tinydyn.host.client import BoardClient  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", type=int, nargs=3, default=[3, 32, 32], metavar=("C", "H", "W"))
    parser.add_argument("-n", type=int, default=500, help="number of INFERs")
    parser.add_argument("--no-logits", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "serial_throughput.json"
    )
    args = parser.parse_args()
    c, h, w = args.shape
    size = c * h * w
    with tempfile.TemporaryDirectory() as tmp:
        defines = [
            f"STUB_IN_C={c}",
            f"STUB_IN_H={h}",
            f"STUB_IN_W={w}",
            f"TD_MAX_IMAGE_BYTES={max(size, 64)}",
        ]
        exe = build_board(Path(tmp), defines)
        with BoardProcess([str(exe)]) as board, BoardClient(board.port, timeout=2.0) as client:
            client.configure(logits=not args.no_logits)
            images = [bytes((i * 7 + k) % 251 + 1 for k in range(size)) for i in range(16)]
            client.infer(0, images[0])  # warm-up
            t0 = time.perf_counter()
            for i in range(args.n):
                r = client.infer(i, images[i % len(images)])
            elapsed = time.perf_counter() - t0
    request_wire = len(P.encode_infer(0, images[0]))
    reply_wire = len(P.encode_result(0, r))
    result = {
        "shape": [c, h, w],
        "inferences": args.n,
        "seconds": round(elapsed, 4),
        "images_per_s": round(args.n / elapsed, 1),
        "payload_bytes_per_s": round(args.n * size / elapsed),
        "wire_bytes_per_s": round(args.n * (request_wire + reply_wire) / elapsed),
        "request_wire_bytes": request_wire,
        "reply_wire_bytes": reply_wire,
        "efficiency_payload_over_wire": round(size / (request_wire + reply_wire), 4),
        "retries": client.stats["retries"],
        "logits": not args.no_logits,
        "machine": platform.platform(),
        "uart_115200_images_per_s_bound": round(11520 / (request_wire + reply_wire), 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for k, v in result.items():
        print(f"{k:32s} {v}")


if __name__ == "__main__":
    main()
