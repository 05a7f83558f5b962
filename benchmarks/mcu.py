"""Firmware figures on the Cortex-M4 (QEMU mps2-an386): flash, arena vs its liveness lower
bound, retired instructions per inference and MACs per instruction.

Models: the MLPerf Tiny ResNet-8 reference topology (static, random int8 weights, CIFAR
shape 3x32x32, 12.5 M MACs) and the bundled Fashion-MNIST LC-Net (dynamic: gates on, run
without early exits and with a confidence policy). Instructions are counted exactly:
QEMU runs with -icount (one instruction = 2^3 ns of virtual time) and the board reads its
25 MHz timer around td_infer(), so ticks x 5 = retired instructions (resolution 5).
Every run is also checked bit for bit against the integer executor.

    .venv/bin/python benchmarks/mcu.py [--images N] [--checkpoint PATH]
Prints a table and writes benchmarks/results/mcu.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from tinydyn.codegen import build_project
from tinydyn.codegen.harness import instructions, run_qemu
from tinydyn.ir import IRModel
from tinydyn.models.lcnet import LCNet, LCNetConfig
from tinydyn.models.lcnet_lower import lower
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

ICOUNT_SHIFT = 3
RESNET8 = LCNetConfig(
    in_channels=3, input_size=32, stem_width=16, widths=(16, 32, 64), blocks=(1, 1, 1), exits=(), gates=False
)
TARGET_INSTR = 26.9e6  # MLPerf Tiny ResNet-8 reference figures on the M4 (issue #3)
TARGET_ARENA = 51.5 * 1024


def resnet8_ir(seed: int = 0) -> IRModel:
    """ResNet-8 with random weights; Brevitas scales initialised by three training passes."""
    warnings.filterwarnings("ignore")
    torch.manual_seed(seed)
    model = LCNet(RESNET8)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32))
    model.eval()
    return lower(model, name="resnet8")


def measure(ir: IRModel, images: np.ndarray, policies: list[ExitPolicy], workdir: Path) -> dict:
    report = build_project(ir, "qemu-mps2-an386", workdir, compile=True)
    row = {
        "model": ir.name,
        "model_id": ir.model_id(),
        "flash_bytes": report.flash_bytes,
        "weight_bytes": report.weight_bytes,
        "arena_bytes": report.arena_bytes,
        "arena_lower_bound": report.arena_lower_bound,
        "activation_lower_bound": report.activation_lower_bound,
        "arena_ratio": report.arena_bytes / report.arena_lower_bound,
        "static_macs": report.static_macs,
        "runs": [],
    }
    for policy in policies:
        started = time.perf_counter()
        got = run_qemu(ir, workdir / "fw.elf", images, policy, icount_shift=ICOUNT_SHIFT)
        wall = time.perf_counter() - started
        ref = execute(ir, images, policy)
        exact = all(
            np.array_equal(getattr(ref, f), getattr(got, f))
            for f in ("logits", "predictions", "exits", "macs", "skipped_blocks", "skipped_channels")
        )
        instr = instructions(got.counter, ICOUNT_SHIFT)
        row["runs"].append(
            {
                "policy": policy.kind,
                "threshold": policy.threshold,
                "images": len(images),
                "bit_exact": bool(exact),
                "instructions_mean": float(instr.mean()),
                "instructions_min": float(instr.min()),
                "instructions_max": float(instr.max()),
                "macs_mean": float(got.macs.mean()),
                "macs_per_instruction": float(got.macs.sum() / instr.sum()),
                "exits": np.bincount(got.exits, minlength=len(ir.exits())).tolist(),
                "qemu_wall_s": wall,
            }
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--checkpoint", type=Path, default=None, help="LC-Net checkpoint (default: bundled)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mcu.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = rng.integers(0, 256, (args.images, 3, 32, 32)).astype(np.uint8)
        rows.append(measure(resnet8_ir(), images, [ExitPolicy("none")], Path(tmp) / "resnet8"))
        from tinydyn.data import load_dataset
        from tinydyn.models.checkpoint import bundled_checkpoint, load_model

        path = args.checkpoint or bundled_checkpoint()
        if path.is_file():
            model, _ = load_model(path)
            ir = lower(model, name=path.stem)
            data = load_dataset("fashion-mnist", "test").images[: args.images]
            policies = [ExitPolicy("none"), ExitPolicy("confidence", 0.9)]
            rows.append(measure(ir, data, policies, Path(tmp) / "lcnet"))
    header = f"{'model':<14}{'policy':<12}{'flash B':>9}{'arena B':>9}{'bound B':>9}{'ratio':>7}"
    header += f"{'MACs':>11}{'instr/inf':>12}{'MAC/instr':>10}{'exact':>7}"
    print(header)
    for row in rows:
        for run in row["runs"]:
            print(
                f"{row['model']:<14}{run['policy']:<12}{row['flash_bytes']:>9}{row['arena_bytes']:>9}"
                f"{row['arena_lower_bound']:>9}{row['arena_ratio']:>7.3f}{run['macs_mean']:>11.0f}"
                f"{run['instructions_mean']:>12.0f}{run['macs_per_instruction']:>10.3f}{run['bit_exact']!s:>7}"
            )
    resnet = rows[0]
    print(
        f"ResNet-8 targets: <= {TARGET_INSTR / 1e6:.1f} M instructions (got "
        f"{resnet['runs'][0]['instructions_mean'] / 1e6:.2f} M), activations+scratch <= {TARGET_ARENA:.0f} B "
        f"(got {resnet['arena_bytes']} B, activation lower bound {resnet['activation_lower_bound']} B)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"icount_shift": ICOUNT_SHIFT, "models": rows}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
