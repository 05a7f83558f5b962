"""One table, one row per model family (and its static baseline), same dataset and board.

Rows (Fashion-MNIST test images 0..N-1, QEMU mps2-an386 Cortex-M4):
* ``static``: the bundled static int8 ResNet (``fashion_static.pt``, trained without gates
  or exits) — the accuracy and cost every dynamic model is measured against;
* ``lcnet``: the bundled LC-Net, gates on, confidence 0.9 early exits;
* ``lcnet (gates folded, FPGA)``: the bundled gate-free FPGA model, confidence 0.9 exits;
* ``ddi resnet`` / ``ddi densenet``: the bundled DDI checkpoints (``--ddi-resnet`` /
  ``--ddi-densenet``), MGL2S gates on, confidence 0.9 at the RADI branches; a missing file is
  said in one line and its row left out;
* ``s2dnas resnet``: the bundled searched S2DNAS model (``--s2dnas``), transformed from the static
  row's model, confidence with its own per-stage thresholds;
* ``s2dnas resnet (within cap C)``: the same weights with the thresholds ``tinydyn thresholds
  --max-cost C`` chooses on its held-out training images (``--s2dnas-max-cost``, default 0.4: the
  issue's "at least 60 % fewer MACs" operating point; 0 leaves the row out);
* ``static vgg`` / ``s2dnas vgg`` (``--vgg-static`` / ``--s2dnas-vgg``, default the models in
  benchmarks/checkpoints): the VGG-style backbone and its S2DNAS transformation.

Per row: accuracy (integer reference = board, checked bit for bit), mean executed MACs,
mean retired instructions on the board (measured: QEMU -icount, exact), modelled energy per
inference (tinydyn.cost.energy; modelled, never measured), and the exit histogram. An S2DNAS row
also gives its savings against its static model's row on the same images: MAC saving,
instruction saving and their ratio (instruction saving / MAC saving; 1.0: every MAC not
executed is an instruction not retired at the static model's instructions-per-MAC rate).

    .venv/bin/python benchmarks/families.py [--images N] [--ddi-resnet PATH] [--ddi-densenet PATH]
        [--s2dnas PATH] [--s2dnas-max-cost C] [--vgg-static PATH] [--s2dnas-vgg PATH]
Prints a table and writes benchmarks/results/families.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinydyn.codegen import build_project
from tinydyn.codegen.harness import instructions, run_qemu
from tinydyn.cost.energy import energy_from_macs, traffic_profile
from tinydyn.data import load_dataset
from tinydyn.ir import IRModel
from tinydyn.models.checkpoint import bundled_checkpoint, bundled_fpga_checkpoint, bundled_static_checkpoint
from tinydyn.pipeline import load_ir
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

BOARD = "qemu-mps2-an386"
ICOUNT_SHIFT = 3
FIELDS = ("logits", "predictions", "exits", "macs", "skipped_blocks", "skipped_channels")


def row(
    label: str,
    family: str,
    ir: IRModel,
    policy: ExitPolicy,
    images: np.ndarray,
    labels: np.ndarray,
    work: Path,
) -> dict:
    build_project(ir, BOARD, work, compile=True)
    got = run_qemu(ir, work / "fw.elf", images, policy, icount_shift=ICOUNT_SHIFT)
    ref = execute(ir, images, policy)
    mismatches = int(sum(not np.array_equal(getattr(ref, f), getattr(got, f)) for f in FIELDS))
    instr = instructions(got.counter, ICOUNT_SHIFT)
    profile = traffic_profile(ir, BOARD)
    energy = [
        energy_from_macs(BOARD, profile, int(m), int(c)).energy_nj
        for m, c in zip(ref.macs, instr, strict=True)
    ]
    return {
        "row": label,
        "family": family,
        "model_id": ir.model_id(),
        "policy": f"{policy.kind} {policy.threshold:g}" + ("" if policy.gating else ", gating off"),
        "images": len(images),
        "accuracy": float((ref.predictions == labels).mean()),
        "mean_macs": float(ref.macs.mean()),
        "mean_instructions_measured": float(instr.mean()),
        "mean_energy_nj_modelled": float(np.mean(energy)),
        "exit_histogram": np.bincount(ref.exits, minlength=len(ir.exits())).tolist(),
        "board_equals_reference": mismatches == 0,
    }


def savings(dynamic: dict, static: dict) -> dict:
    """MAC and instruction savings of ``dynamic`` against its static model (same images)."""
    mac = 1 - dynamic["mean_macs"] / static["mean_macs"]
    instr = 1 - dynamic["mean_instructions_measured"] / static["mean_instructions_measured"]
    return {
        "static_row": static["row"],
        "mac_saving": mac,
        "instruction_saving": instr,
        "ratio": instr / mac if mac > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100)
    checkpoints = bundled_checkpoint().parent
    for backbone in ("resnet", "densenet"):
        parser.add_argument(
            f"--ddi-{backbone}",
            type=Path,
            default=checkpoints / f"fashion_ddi_{backbone}.pt",
            help=f"the {backbone} DDI checkpoint (default: the bundled one)",
        )
    parser.add_argument(
        "--s2dnas",
        type=Path,
        default=checkpoints / "fashion_s2dnas.pt",
        help="the S2DNAS checkpoint of the static ResNet (default: the bundled one)",
    )
    parser.add_argument(
        "--s2dnas-max-cost",
        type=float,
        default=0.4,
        help="also the S2DNAS model at the thresholds tinydyn thresholds --max-cost C chooses (0: no)",
    )
    models = Path(__file__).parent / "checkpoints"
    parser.add_argument(
        "--vgg-static",
        type=Path,
        default=models / "fashion_vgg_static.pt",
        help="a static VGG (s2dnas --stages 1)",
    )
    parser.add_argument(
        "--s2dnas-vgg", type=Path, default=models / "fashion_vgg_s2dnas.pt", help="its S2DNAS transformation"
    )
    args = parser.parse_args()
    data = load_dataset("fashion-mnist", "test")
    images, labels = data.images[: args.images], data.labels[: args.images]
    static = load_ir(bundled_static_checkpoint()).ir
    lcnet = load_ir(bundled_checkpoint()).ir
    fpga = load_ir(bundled_fpga_checkpoint()).ir
    runs = [
        ("static ResNet (no gates, no exits)", "static", static, ExitPolicy("none")),
        ("lcnet (gates + exits)", "lcnet", lcnet, ExitPolicy("confidence", 0.9)),
        ("lcnet (gates folded, FPGA model)", "lcnet", fpga, ExitPolicy("confidence", 0.9)),
    ]
    for backbone in ("resnet", "densenet"):
        path = getattr(args, f"ddi_{backbone}")
        if not path.is_file():
            print(f"ddi {backbone}: no checkpoint at {path} (train it: docs/DDI.md): row left out")
            continue
        label = f"ddi {backbone} (MGL2S gates + RADI branches)"
        runs.append((label, "ddi", load_ir(path).ir, ExitPolicy("confidence", 0.9)))
    # S2DNAS exits carry their own thresholds: under confidence they replace 0.9
    extra = [
        ("s2dnas resnet (searched, own thresholds)", "s2dnas", args.s2dnas, "static ResNet"),
        ("static VGG (no exits)", "static", args.vgg_static, None),
        ("s2dnas vgg (own thresholds)", "s2dnas", args.s2dnas_vgg, "static VGG"),
    ]
    baseline_of: dict[str, str] = {}
    for label, family, path, baseline in extra:
        if path is None:
            continue
        if not path.is_file():
            print(f"{label}: no checkpoint at {path} (docs/S2DNAS.md): row left out")
            continue
        policy = ExitPolicy("none") if family == "static" else ExitPolicy("confidence", 0.9)
        runs.append((label, family, load_ir(path).ir, policy))
        if baseline is not None:
            baseline_of[label] = baseline
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.s2dnas_max_cost > 0 and args.s2dnas.is_file():
            cap = args.s2dnas_max_cost
            capped = Path(tmp) / "s2dnas_cap.pt"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tinydyn",
                    "thresholds",
                    str(args.s2dnas),
                    "--out",
                    str(capped),
                    "--max-cost",
                    f"{cap:g}",
                ],
                check=True,
            )
            label = f"s2dnas resnet (within cap {cap:g})"
            runs.append((label, "s2dnas", load_ir(capped).ir, ExitPolicy("confidence", 0.9)))
            baseline_of[label] = "static ResNet"
        for i, (label, family, ir, policy) in enumerate(runs):
            rows.append(row(label, family, ir, policy, images, labels, Path(tmp) / str(i)))
    by_label = {r["row"]: r for r in rows}
    for label, baseline in baseline_of.items():
        static = next((r for name, r in by_label.items() if name.startswith(baseline)), None)
        if static is not None and label in by_label:
            by_label[label]["savings_vs"] = savings(by_label[label], static)
    print(f"{'row':56} {'acc':>7} {'MACs':>10} {'instr (meas.)':>14} {'nJ (model)':>11}  exits")
    for r in rows:
        print(
            f"{r['row']:56} {100 * r['accuracy']:6.2f}% {r['mean_macs'] / 1e6:9.2f}M "
            f"{r['mean_instructions_measured'] / 1e6:13.2f}M {r['mean_energy_nj_modelled']:11.0f}  "
            f"{r['exit_histogram']}{'' if r['board_equals_reference'] else '  BOARD != REFERENCE'}"
        )
    for r in rows:
        if "savings_vs" in r:
            v = r["savings_vs"]
            print(
                f"{r['row']}: vs {v['static_row']}: MACs -{100 * v['mac_saving']:.1f} %, instructions "
                f"-{100 * v['instruction_saving']:.1f} % (measured), ratio "
                + ("n/a" if v["ratio"] is None else f"{v['ratio']:.3f}")
            )
    out = Path(__file__).parent / "results" / "families.json"
    out.write_text(
        json.dumps({"board": BOARD, "dataset": "fashion-mnist test", "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
