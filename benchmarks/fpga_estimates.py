"""FPGA estimates: per-partition resources and throughput (finn-plus analytical models, ZedBoard).

Runs the tinydyn FPGA front end (no Vivado) for
  * the default model (the bundled FPGA checkpoint: the bundled LC-Net's gates folded into their
    mean saliences and fine-tuned 4 epochs, `tinydyn train --fold-gates`; or --checkpoint), with
    the accuracy of the same fold *without* fine-tuning beside it, and
  * a ResNet-8-class LC-Net (3×32×32, widths 16/32/64, exits after blocks 0 and 1, no gates)
    with random weights and random images (resources and cycles depend on the architecture,
    not the weights; an untrained model is never confident, so all its images reach the last
    stage and its early-exit ratio is the worst case), once with its measured reach and once
    folded for the default model's measured reach (a modelled what-if: a trained ResNet-8 whose
    images leave like the Fashion-MNIST model's),
each as backbone segments + exit heads, folded by the automatic search (or --target-fps), and
prints/saves per-partition LUT/BRAM/DSP, cycles, images/s, accuracy and the early-exit vs static
throughput ratio at equal resources. Writes benchmarks/results/fpga_estimates.json.

    .venv/bin/python benchmarks/fpga_estimates.py [--checkpoint runs/base.pt] [--target-fps 2000]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from tinydyn.hw.build import build_fpga
from tinydyn.models.lcnet import LCNet, LCNetConfig
from tinydyn.quantize.policy import ExitPolicy


def resnet8(seed: int = 0) -> LCNet:
    torch.manual_seed(seed)
    cfg = LCNetConfig(
        in_channels=3, input_size=32, widths=(16, 32, 64), blocks=(1, 1, 1), exits=(0, 1), gates=False
    )
    model = LCNet(cfg)
    model.train()
    with torch.no_grad():  # a few passes initialise the Brevitas activation scales
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32))
    return model.eval()


def fold_only_accuracy(policy: ExitPolicy, images: int) -> dict:
    """The bundled gated model with its gates folded into mean saliences, no fine-tuning
    (integer reference, the same test images as the FPGA report)."""
    from tinydyn.data import load_dataset
    from tinydyn.models.checkpoint import load_model
    from tinydyn.models.lcnet_fpga import mean_saliences, static_model
    from tinydyn.models.lcnet_lower import lower
    from tinydyn.quantize.executor import execute

    gated, _ = load_model(None)
    calib = load_dataset("fashion-mnist", "train").images[:1000]
    test = load_dataset("fashion-mnist", "test")
    ir = lower(static_model(gated, mean_saliences(gated, calib)), name="folded")
    labels = test.labels[:images]
    out = {}
    for name, pol in (("early exit", policy), ("final exit only", ExitPolicy("none"))):
        res = execute(ir, test.images[:images], pol)
        out[name] = float((res.predictions == labels).mean())
    return out


def summarise(name: str, report, seconds: float) -> dict:
    print(f"\n== {name} ({seconds:.0f} s)\n{report.text()}")
    return {"model": name, "seconds": round(seconds, 1), **report.to_json()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--target-fps", type=float, default=None, help="default: automatic search")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=Path("build/fpga_estimates"))
    parser.add_argument("--batch", type=int, default=64, help="images per batch of the PS schedule")
    parser.add_argument(
        "--models", default="default,resnet8,resnet8_reach", help="which builds (comma-separated)"
    )
    args = parser.parse_args()
    chosen = set(args.models.split(","))
    warnings.filterwarnings("ignore")
    results = []
    policy = ExitPolicy("confidence", args.threshold)
    t0 = time.time()
    report = build_fpga(
        args.checkpoint,
        "zedboard",
        args.out / "default",
        target_fps=args.target_fps,
        policy=policy,
        allow_overfit=True,
        batch=args.batch,
        progress=lambda m: print(m, flush=True),  # the automatic search's tries and verdict
    )
    results.append(summarise("default", report, time.time() - t0))
    results[-1]["folded_without_finetune"] = fold_only_accuracy(policy, report.eval_images)
    print(
        "accuracy, bundled LC-Net with gates folded but not fine-tuned:",
        results[-1]["folded_without_finetune"],
    )
    # random weights: measured reach (nobody leaves early), then the default model's reach
    # assumed (what a trained ResNet-8 whose images left like the Fashion model's would get)
    reach = [r for _, r in sorted({row["stage"]: row["reach"] for row in results[0]["stages"]}.items())]
    for name, sub, assumed in (
        ("resnet8 (random weights, random images)", "resnet8", None),
        ("resnet8 (random weights; reach assumed = the default model's)", "resnet8_reach", reach),
    ):
        if sub not in chosen:
            continue
        t0 = time.time()
        report = build_fpga(
            None,
            "zedboard",
            args.out / sub,
            model=resnet8(),
            target_fps=args.target_fps,
            policy=policy,
            calibration_images=256,
            check_images=8,
            allow_overfit=True,
            assumed_reach=assumed,
            batch=args.batch,
            progress=lambda m: None,
        )
        results.append(summarise(name, report, time.time() - t0))
    path = Path("benchmarks/results/fpga_estimates.json")
    if chosen != {"default", "resnet8", "resnet8_reach"}:  # a partial run keeps the other results
        path = path.with_name(f"fpga_estimates_{'_'.join(sorted(chosen))}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
