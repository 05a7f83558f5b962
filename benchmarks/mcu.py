"""Firmware figures on the Cortex-M4 (QEMU mps2-an386): flash, arena vs its liveness lower
bound, MACs and retired instructions per inference, per run mode, and the savings ratios.

Models: the MLPerf Tiny ResNet-8 reference topology (static, random int8 weights, CIFAR
shape 3x32x32, 12.5 M MACs) and the bundled Fashion-MNIST LC-Net (dynamic). Modes:
  static       gating off, no early exits (every block and channel computed)
  gated        gating on, no early exits
  gated+conf   gating on, confidence policy 0.9
  conf         gating off, confidence policy 0.9
Instructions are counted exactly: QEMU runs with -icount (one instruction = 2^3 ns of
virtual time) and the board reads its 25 MHz timer around td_infer(), so ticks x 5 = retired
instructions (resolution 5). Every run is also checked bit for bit against the integer
executor (logits, class, exit, MACs, skipped blocks and channels). Cycles are modelled: the
Cortex-M4 cycle-model plugin (docs/CYCLES.md, default parameters) charges each executed
instruction of td_infer its Technical Reference Manual cost; they are labelled modelled.

Savings are relative to the static mode: MAC saving = 1 - MACs/static MACs, instruction
saving likewise, ratio = instruction saving / MAC saving (1.0: every skipped MAC is a skipped
instruction at the static instructions-per-MAC rate).

CMSIS-NN reference: ResNet-8 with CMSIS-NN v7 kernels called the TFLM way retired 29.85 M
instructions per inference, measured earlier on this same emulator (QEMU mps2-an386, -icount);
it is quoted here, not re-run.

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
CMSIS_NN_RESNET8_INSTR = 29.85e6  # CMSIS-NN v7, TFLM-style calls, same emulator (quoted, not re-run)
TARGET_INSTR = 16.0e6  # issue 15
TARGET_ARENA = 50_048
TARGET_FLASH = 100 * 1024
TARGET_RATIO = 0.9

MODES = {
    "static": ExitPolicy("none", gating=False),
    "gated": ExitPolicy("none"),
    "gated+conf0.9": ExitPolicy("confidence", 0.9),
    "conf0.9": ExitPolicy("confidence", 0.9, gating=False),
}


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


def measure(ir: IRModel, images: np.ndarray, modes: list[str], workdir: Path) -> dict:
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
    for mode in modes:
        policy = MODES[mode]
        started = time.perf_counter()
        got = run_qemu(ir, workdir / "fw.elf", images, policy, icount_shift=ICOUNT_SHIFT, cycle_model=True)
        wall = time.perf_counter() - started
        ref = execute(ir, images, policy)
        exact = all(
            np.array_equal(getattr(ref, f), getattr(got, f))
            for f in ("logits", "predictions", "exits", "macs", "skipped_blocks", "skipped_channels")
        )
        instr = instructions(got.counter, ICOUNT_SHIFT)
        cycles = got.cycles_modelled
        row["runs"].append(
            {
                "mode": mode,
                "policy": policy.kind,
                "threshold": policy.threshold,
                "gating": policy.gating,
                "images": len(images),
                "bit_exact": bool(exact),
                "instructions_mean": float(instr.mean()),
                "instructions_min": float(instr.min()),
                "instructions_max": float(instr.max()),
                "macs_mean": float(got.macs.mean()),
                "instructions_per_mac": float(instr.sum() / max(got.macs.sum(), 1)),
                "macs_per_instruction": float(got.macs.sum() / instr.sum()),
                "cycles_modelled_mean": float(cycles.mean()),
                "cycles_modelled_per_mac": float(cycles.sum() / max(got.macs.sum(), 1)),
                "macs_per_cycle_modelled": float(got.macs.sum() / cycles.sum()),
                "exits": np.bincount(got.exits, minlength=len(ir.exits())).tolist(),
                "qemu_wall_s": wall,
            }
        )
    static = next((r for r in row["runs"] if r["mode"] == "static"), None)
    for run in row["runs"]:
        if static is None:
            break
        mac_saving = 1 - run["macs_mean"] / static["macs_mean"]
        instr_saving = 1 - run["instructions_mean"] / static["instructions_mean"]
        run["mac_saving"] = mac_saving
        run["instruction_saving"] = instr_saving
        run["saving_ratio"] = instr_saving / mac_saving if mac_saving > 0 else None
        cycle_saving = 1 - run["cycles_modelled_mean"] / static["cycles_modelled_mean"]
        run["cycle_saving_modelled"] = cycle_saving
        run["cycle_saving_ratio_modelled"] = cycle_saving / mac_saving if mac_saving > 0 else None
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
        rows.append(measure(resnet8_ir(), images, ["static"], Path(tmp) / "resnet8"))
        from tinydyn.data import load_dataset
        from tinydyn.models.checkpoint import bundled_checkpoint, load_model

        path = args.checkpoint or bundled_checkpoint()
        if path.is_file():
            model, _ = load_model(path)
            ir = lower(model, name=path.stem)
            data = load_dataset("fashion-mnist", "test").images[: args.images]
            rows.append(measure(ir, data, list(MODES), Path(tmp) / "lcnet"))
    header = f"{'model':<14}{'mode':<15}{'flash B':>8}{'arena B':>8}{'MACs M':>8}{'instr M':>9}"
    header += (
        f"{'instr/MAC':>10}{'cyc M*':>8}{'MAC sav':>8}{'ins sav':>8}{'ratio':>7}{'cyc r*':>7}{'exact':>6}"
    )
    print(header)
    for row in rows:
        for run in row["runs"]:
            ratio, cratio = run.get("saving_ratio"), run.get("cycle_saving_ratio_modelled")
            print(
                f"{row['model']:<14}{run['mode']:<15}{row['flash_bytes']:>8}{row['arena_bytes']:>8}"
                f"{run['macs_mean'] / 1e6:>8.3f}{run['instructions_mean'] / 1e6:>9.3f}"
                f"{run['instructions_per_mac']:>10.3f}{run['cycles_modelled_mean'] / 1e6:>8.3f}"
                f"{run.get('mac_saving', 0):>8.1%}"
                f"{run.get('instruction_saving', 0):>8.1%}{'' if ratio is None else f'{ratio:.3f}':>7}"
                f"{'' if cratio is None else f'{cratio:.3f}':>7}{run['bit_exact']!s:>6}"
            )
    print("instructions: measured (exact under -icount); * cycles: modelled (Cortex-M4 cycle model)")
    resnet = rows[0]
    r8 = resnet["runs"][0]["instructions_mean"]
    print(
        f"ResNet-8: {r8 / 1e6:.2f} M instructions (target <= {TARGET_INSTR / 1e6:.1f} M; CMSIS-NN v7 "
        f"{CMSIS_NN_RESNET8_INSTR / 1e6:.2f} M measured earlier on the same emulator, quoted: "
        f"{CMSIS_NN_RESNET8_INSTR / r8:.2f}x), {resnet['static_macs'] / r8:.3f} MAC/instruction, "
        f"{resnet['runs'][0]['cycles_modelled_mean'] / 1e6:.2f} M cycles (modelled), arena "
        f"{resnet['arena_bytes']} B (target <= {TARGET_ARENA}), flash {resnet['flash_bytes']} B "
        f"(target <= {TARGET_FLASH})"
    )
    if len(rows) > 1:
        ratios = {r["mode"]: r.get("saving_ratio") for r in rows[1]["runs"]}
        print(
            f"LC-Net saving ratios (target >= {TARGET_RATIO}): gated {ratios.get('gated')}, "
            f"gated+conf0.9 {ratios.get('gated+conf0.9')}, conf0.9 {ratios.get('conf0.9')}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "icount_shift": ICOUNT_SHIFT,
                "cmsis_nn_resnet8_instructions": CMSIS_NN_RESNET8_INSTR,
                "cmsis_nn_note": "CMSIS-NN v7 called the TFLM way, measured earlier on the same QEMU "
                "mps2-an386 emulator with -icount; quoted, not re-run",
                "models": rows,
            },
            indent=2,
        )
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
