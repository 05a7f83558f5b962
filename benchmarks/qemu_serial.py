"""Serial link of the qemu-mps2-an386 firmware on a pty: image payload rate vs the raw link.

Builds the serial firmware of the bundled model, boots it under QEMU (-icount) and measures:

* raw host→board link: INFER frames with a wrong-sized body (3000 bytes) that the board receives
  in full and answers with a 5-byte ERROR without running the model: wire bytes/s into the guest;
* round trip of a small request (INFO) per second;
* INFER of real 28×28 images (784-byte payload, logits on): images/s, image payload bytes/s and
  wire bytes/s; and, from a wrong-sized frame of the same length, how much of each INFER is the
  link and how much the inference (QEMU executing ~16 M instructions).

    .venv/bin/python benchmarks/qemu_serial.py [-n 100] [--shift 6]
Writes benchmarks/results/qemu_serial.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinydyn.commands.board import load_reference  # noqa: E402
from tinydyn.data import load_dataset  # noqa: E402
from tinydyn.host import protocol as P  # noqa: E402
from tinydyn.host.client import BoardClient  # noqa: E402
from tinydyn.host.emulate import QemuBoard  # noqa: E402
from tinydyn.host.firmware import build_firmware  # noqa: E402


def raw_round_trip(client: BoardClient, frame: bytes, reps: int) -> list[float]:
    """Seconds per exchange of `frame` (any reply counts; the client drops nothing)."""
    ser = client._ser  # noqa: SLF001 - the benchmark times raw frames on the client's open port
    assert ser is not None
    times = []
    reader = P.FrameReader()
    for _ in range(reps):
        t0 = time.perf_counter()
        ser.write(frame)
        got = False
        while not got:
            got = bool(reader.feed(ser.read(max(1, ser.in_waiting))))
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=100, help="INFERs of real images")
    parser.add_argument("--shift", type=int, default=6, help="QEMU -icount shift")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "qemu_serial.json")
    args = parser.parse_args()
    ir = load_reference(None, None)
    data = load_dataset("fashion-mnist", "test").subset(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        fw = build_firmware(ir, "qemu-mps2-an386", Path(tmp) / "fw", icount_shift=args.shift)
        with (
            QemuBoard(fw) as board,
            BoardClient(board.port, timeout=5.0, expected_model_id=ir.model_id()) as c,
        ):
            c.configure("none")
            info = c.board_info
            assert info is not None
            big = P.encode_infer(1, bytes(range(256)) * 11 + bytes(3000 - 2816))  # wrong size: no inference
            raw = raw_round_trip(c, big, 20)
            small = raw_round_trip(c, P.encode_info_request(2), 50)
            same = P.encode_infer(3, bytes(range(1, 256)) * 3 + bytes(range(1, 21)))  # 785 B: wrong size
            same_t = raw_round_trip(c, same, 30)
            counters = []
            t0 = time.perf_counter()
            wire_out = wire_in = 0
            for i in range(len(data)):
                img = data.images[i].tobytes()
                r = c.infer(i, img)
                counters.append(r.counter)
                wire_out += len(P.encode_infer(i, img))
                wire_in += len(P.encode_result(i, r))
            elapsed = time.perf_counter() - t0
            retries = c.stats["retries"]
    per_image = elapsed / len(data)
    link_785 = statistics.median(same_t)
    result = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "qemu_icount_shift": args.shift,
        "image_bytes": info.image_bytes,
        "raw_host_to_board_wire_bytes_per_s": len(big) / statistics.median(raw),
        "small_request_round_trips_per_s": 1 / statistics.median(small),
        "images": len(data),
        "images_per_s": len(data) / elapsed,
        "image_payload_bytes_per_s": len(data) * info.image_bytes / elapsed,
        "wire_bytes_per_s_both_directions": (wire_out + wire_in) / elapsed,
        "framing_efficiency": len(data) * info.image_bytes / wire_out,
        "seconds_per_infer": per_image,
        "seconds_link_of_same_size_frame": link_785,
        "seconds_inference_estimate": max(per_image - link_785, 0.0),
        "mean_instructions": statistics.mean(counters),
        "emulated_instructions_per_s_estimate": statistics.mean(counters) / max(per_image - link_785, 1e-9),
        "retries": retries,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result.items():
        print(f"{k:42s} {v:,.3f}" if isinstance(v, float) else f"{k:42s} {v}")


if __name__ == "__main__":
    main()
