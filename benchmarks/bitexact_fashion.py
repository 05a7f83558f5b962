"""Bit-exactness of the generated C on the whole Fashion-MNIST test set (10,000 images).

The host build (native gcc, portable kernels; with --dsp the DSP kernels' C emulation) of
the bundled LC-Net runs every test image under each exit policy and every per-image field
is compared with the integer executor: logits, class, exit, MACs, skipped blocks and
channels. With --qemu N the Cortex-M4 build (SMLAD path) also runs the first N images.

    .venv/bin/python benchmarks/bitexact_fashion.py [CHECKPOINT] [--dsp] [--qemu N]
Prints a table and writes benchmarks/results/bitexact_fashion.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tinydyn.codegen import build_project
from tinydyn.codegen.harness import run_host, run_qemu
from tinydyn.data import load_dataset
from tinydyn.models.checkpoint import bundled_checkpoint, load_model
from tinydyn.models.lcnet_lower import lower
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

FIELDS = ("logits", "predictions", "exits", "macs", "skipped_blocks", "skipped_channels")


def compare(ref, got) -> dict[str, int]:  # noqa: ANN001 - Results / HarnessResults
    return {
        f: int((getattr(ref, f) != getattr(got, f)).reshape(len(ref), -1).any(axis=1).sum()) for f in FIELDS
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", nargs="?", type=Path, default=None)
    parser.add_argument("--dsp", action="store_true", help="host build of the DSP path (C emulation)")
    parser.add_argument("--qemu", type=int, default=0, help="also run the first N images on the M4 build")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "bitexact_fashion.json"
    )
    args = parser.parse_args()
    path = args.checkpoint or bundled_checkpoint()
    model, _ = load_model(path)
    ir = lower(model, name=path.stem)
    images = load_dataset("fashion-mnist", "test").images
    static = int(ir.meta["static_backbone_macs"])
    policies = [
        ExitPolicy("none"),
        ExitPolicy("confidence", 0.9),
        ExitPolicy("margin", 4.0),
        ExitPolicy("budget", static * 0.5),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build_project(
            ir, "host", Path(tmp) / "host", compile=True, extra_cflags="-DTD_EMULATE_DSP" if args.dsp else ""
        )
        if args.qemu:
            build_project(ir, "qemu-mps2-an386", Path(tmp) / "m4", compile=True)
        for policy in policies:
            t0 = time.perf_counter()
            ref = execute(ir, images, policy)
            t1 = time.perf_counter()
            got = run_host(ir, Path(tmp) / "host" / "fw", images, policy)
            t2 = time.perf_counter()
            row = {
                "policy": policy.kind,
                "threshold": policy.threshold,
                "target": "host-dsp-emulated" if args.dsp else "host",
                "images": len(images),
                "mismatches": compare(ref, got),
                "accuracy": float((ref.predictions == load_dataset("fashion-mnist", "test").labels).mean()),
                "exits": np.bincount(ref.exits, minlength=len(ir.exits())).tolist(),
                "executor_s": t1 - t0,
                "firmware_s": t2 - t1,
            }
            rows.append(row)
            if args.qemu:
                sub = images[: args.qemu]
                t3 = time.perf_counter()
                got = run_qemu(ir, Path(tmp) / "m4" / "fw.elf", sub, policy)
                rows.append(
                    {
                        **row,
                        "target": "qemu-mps2-an386",
                        "images": len(sub),
                        "mismatches": compare(execute(ir, sub, policy), got),
                        "firmware_s": time.perf_counter() - t3,
                    }
                )
    print(f"{'target':<20}{'policy':<12}{'images':>7}{'mismatching images':>20}{'exec s':>8}{'C s':>7}")
    for row in rows:
        bad = max(row["mismatches"].values())
        print(
            f"{row['target']:<20}{row['policy']:<12}{row['images']:>7}{bad:>20}"
            f"{row['executor_s']:>8.1f}{row['firmware_s']:>7.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model_id": ir.model_id(), "runs": rows}, indent=2))
    print(f"written to {args.out}")
    if any(max(r["mismatches"].values()) for r in rows):
        raise SystemExit("the firmware differs from the executor")


if __name__ == "__main__":
    main()
