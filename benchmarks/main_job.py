"""Wall time and results of the main job, `tinydyn run` (bundled checkpoint → QEMU → measure).

Runs the command as a user would (a fresh process, so imports count) and collects from its
runs/main/summary.json: wall time per stage, images measured, board accuracy and its agreement
with the integer reference, the Brevitas accuracy, mean MACs/instructions/latency, modelled
energy and the serial link rate.

    .venv/bin/python benchmarks/main_job.py [--limit 300] [--out-dir runs/main]
Writes benchmarks/results/main_job.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=None, help="images (default: tinydyn run's default)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "main")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "main_job.json")
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "tinydyn", "run", "--out", str(args.out_dir)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"tinydyn run failed ({proc.returncode}): {proc.stderr.strip()[-1000:]}")
    s = json.loads((args.out_dir / "summary.json").read_text())
    m = s["measurement"]
    result = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "command": " ".join(cmd[1:]),
        "wall_s_process": round(wall, 2),
        "wall_s_pipeline": s["wall_s"],
        "stages_s": s["stages_s"],
        "images": m["images"],
        "board_accuracy": m["accuracy"],
        "reference_accuracy": m["reference_accuracy"],
        "agreement_with_reference": m["agreement"],
        "mismatches": m["mismatches"],
        "brevitas_accuracy": s["brevitas_accuracy"],
        "exit_histogram": m["exit_histogram"],
        "mean_macs": m["mean_macs"],
        "static_backbone_macs": m["static_backbone_macs"],
        "mean_instructions": m["mean_counter"],
        "mean_latency_ms_at_25MHz": m.get("mean_latency_ms"),
        "energy_kind": m["energy_kind"],
        "mean_energy_uj": m["mean_energy_uj"],
        "mean_power_mw": m["mean_power_mw"],
        "link": m["session"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
