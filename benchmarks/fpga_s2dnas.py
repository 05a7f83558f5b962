"""FPGA estimates for an S2DNAS model: one dataflow partition per stage (finn-plus analytical
models, ZedBoard; docs/FPGA.md, "S2DNAS: one partition per stage").

Builds the `tinydyn fpga` front end (no Vivado) for an S2DNAS checkpoint, folded by the automatic
search (or --target-fps), and prints/saves per stage partition its LUT/BRAM18/DSP (everything it
instantiates), cycles, its MACs (finn-plus's count of what it computes, recomputed channels and
masked connections included) against the integer reference's, the fit on the xc7z020, and the
modelled throughput of the PS schedule: early exit (the checkpoint's own per-stage thresholds),
every image through every stage (worst case), and the last stage's network alone at no more
resources (static). Every figure is modelled (finn-plus estimates, tinydyn's PS cost assumptions);
accuracy is the integer reference's on Fashion-MNIST test images. Writes
benchmarks/results/fpga_s2dnas.json (--out-json to change).

    .venv/bin/python benchmarks/fpga_s2dnas.py --checkpoint runs/s2dnas.pt [--target-fps 400]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from tinydyn.hw.build import build_fpga


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="an S2DNAS checkpoint (tinydyn train)")
    parser.add_argument("--target-fps", type=float, default=None, help="default: automatic search")
    parser.add_argument("--eval-images", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64, help="images per batch of the PS schedule")
    parser.add_argument(
        "--static-sweep",
        default="0.5,0.6,0.7,0.8,0.9,1.0,1.2",
        help="static baseline targets tried, relative to the early-exit rate (comma-separated)",
    )
    parser.add_argument("--out", type=Path, default=Path("build/fpga_s2dnas"))
    parser.add_argument("--out-json", type=Path, default=Path("benchmarks/results/fpga_s2dnas.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    t0 = time.time()
    report = build_fpga(
        args.checkpoint,
        "zedboard",
        args.out,
        target_fps=args.target_fps,
        eval_images=args.eval_images,
        batch=args.batch,
        static_sweep=tuple(float(f) for f in args.static_sweep.split(",")),
        allow_overfit=True,  # a design that does not fit is a result too: the report says so
        codegen=False,
        progress=lambda m: print(m, flush=True),
    )
    seconds = time.time() - t0
    print(f"\n== {args.checkpoint} ({seconds:.0f} s; every figure modelled)\n{report.text()}")
    ee, sched = report.schedule["early_exit"], report.schedule
    print(
        f"\nthroughput (modelled, img/s): early exit {ee['fps']:.0f}, every stage for every image "
        f"{ee['worst_case_fps']:.0f}, static (last stage alone, <= the same resources) "
        f"{sched['static']['fps']:.0f}; fits the xc7z020: {'yes' if report.fits else 'NO'}"
    )
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": str(args.checkpoint), "seconds": round(seconds, 1), **report.to_json()}
    args.out_json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out_json}")


if __name__ == "__main__":
    main()
