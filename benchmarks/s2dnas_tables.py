"""S2DNAS on Fashion-MNIST: the paper's Table 1 and Table 2, and PPO against random search.

Table 1, per backbone (the project's static ResNet and the VGG-style CNN): the original static
model, naive early exits (the static model with classifiers after its first resolutions:
``tinydyn train --model s2dnas --stages 1 --naive-exits 0,1``) and S2DNAS (the searched
transformation) — mean executed MACs, reduction against the static model, accuracy. Every
figure is the integer reference's over the Fashion-MNIST test images (the arithmetic the
firmware reproduces bit for bit), each dynamic model with its own per-exit thresholds, chosen
on 5,000 held-out training images when it was trained (reward ACC x COST^ω, ω = -0.06).
A second S2DNAS operating point takes the thresholds most accurate on those held-out images
within a MAC cap (``--max-cost``, default 0.4: the issue's "at least 60 % fewer MACs").

Table 2: per exit, the fraction of test images leaving there and their accuracy.

Search: best reward after each candidate evaluated, for ``tinydyn search --method ppo`` and
``--method random`` (their summary.json), at the same candidate budget.

Writes benchmarks/results/s2dnas_tables.json and s2dnas_tables.png.

    .venv/bin/python benchmarks/s2dnas_tables.py [--ppo runs/search_ppo --random runs/search_random]

Models: the bundled static ResNet and searched S2DNAS (tinydyn/checkpoints), the naive-exit and
VGG models in benchmarks/checkpoints (each records the command that trained it). The searches'
output directories hold checkpoints of every candidate: their summary.json files are copied to
benchmarks/results/search_{ppo,random}_summary.json and read from there by default.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tinydyn.data import load_dataset
from tinydyn.host.sweep import Probe
from tinydyn.models.checkpoint import bundled_static_checkpoint
from tinydyn.models.s2dnas_family import HELD_OUT_IMAGES, hold_out
from tinydyn.models.s2dnas_thresholds import choose as choose_thresholds
from tinydyn.models.s2dnas_thresholds import ir_probe, outcome
from tinydyn.pipeline import load_ir
from tinydyn.quantize.policy import ExitPolicy, confident

RESULTS = Path(__file__).parent / "results"
# the baselines and the VGG models the tables compare (trained by the commands docs/S2DNAS.md
# lists; each checkpoint records its own command)
MODELS = Path(__file__).parent / "checkpoints"
AIM_REDUCTION, AIM_DROP = 0.60, 0.005  # the aim: >= 60 % fewer MACs at <= 0.5 pt loss


def exit_table(pred: np.ndarray, exits: np.ndarray, labels: np.ndarray, count: int) -> dict[str, list]:
    fractions, accuracy = [], []
    for k in range(count):
        here = exits == k
        fractions.append(float(here.mean()))
        accuracy.append(float((pred[here] == labels[here]).mean()) if here.any() else None)
    return {"exit_fractions": fractions, "exit_accuracy": accuracy}


def point(
    pred: np.ndarray, exits: np.ndarray, macs: np.ndarray, labels: np.ndarray, count: int, static: dict
) -> dict[str, Any]:
    acc, mean_macs = float((pred == labels).mean()), float(macs.mean())
    out = {
        "accuracy": acc,
        "mean_macs": mean_macs,
        "reduction": 1.0 - mean_macs / static["mean_macs"] if static else 0.0,
        "accuracy_change_pt": 100 * (acc - static["accuracy"]) if static else 0.0,
    }
    return out | exit_table(pred, exits, labels, count)


def thresholds_of(ir: Any) -> list[float]:
    """The per-exit thresholds a dynamic model carries (every early exit must have its own)."""
    early = sorted((op for op in ir.exits() if not op.attrs["final"]), key=lambda op: op.attrs["index"])
    if any("confidence_t16" not in op.attrs for op in early):
        raise SystemExit("error: an early exit has no threshold of its own: train it with tinydyn train")
    return [op.attrs["confidence_t16"] / 65536 for op in early]


def evaluate(path: Path, test: Any, held: Any, static: dict | None, max_cost: float | None) -> dict[str, Any]:
    """One model's row(s): its own thresholds on the test images; with ``max_cost`` also the
    thresholds chosen on the held-out images for accuracy within that MAC cap."""
    loaded = load_ir(path)
    ir, payload = loaded.ir, loaded.payload
    t0 = time.time()
    pr, mults = ir_probe(ir, test.images)
    count = pr.num_exits
    policy = ExitPolicy("none") if count == 1 else ExitPolicy("confidence", 0.9)  # own thresholds decide
    pred, exits, macs = pr.outcome(ir, policy)
    row: dict[str, Any] = {
        "checkpoint": str(path),
        "family": payload.get("family"),
        "command": payload.get("command"),
        "exits": count,
        "thresholds": thresholds_of(ir) if count > 1 else [],
        "held_out_choice": (payload.get("train") or {}).get("tuned"),
    }
    row |= point(pred, exits, macs, test.labels, count, static or {})
    if static is None:  # the static model: its own figures are the baseline
        row["reduction"], row["accuracy_change_pt"] = 0.0, 0.0
    if max_cost is not None and count > 1:
        hpr, _ = ir_probe(ir, held.images)
        base = int(ir.meta["static_backbone_macs"])
        choice = choose_thresholds(hpr, held.labels, mults, base, max_cost=max_cost)
        capped = apply_thresholds(pr, mults, choice.thresholds)
        row["within_cap"] = {
            "max_cost": max_cost,
            "thresholds": list(choice.thresholds),
            "held_out": choice.to_json(),
        } | point(*capped, test.labels, count, static or {})
    row["seconds"] = time.time() - t0
    return row


def apply_thresholds(pr: Probe, mults: list[int], thresholds: tuple[float, ...]) -> tuple:
    """(predictions, exits, MACs) under per-exit thresholds: the firmware's integer test."""
    leave = [confident(pr.logits[k], mults[k], int(round(t * 65536))) for k, t in enumerate(thresholds)]
    return outcome(pr, leave)


def meets_aim(row: dict[str, Any]) -> bool:
    return row["reduction"] >= AIM_REDUCTION and row["accuracy_change_pt"] >= -100 * AIM_DROP


def search_curve(path: Path | None) -> dict[str, Any] | None:
    """A search's best-reward curve from its summary.json (or the --out directory holding it)."""
    if path is not None and path.is_dir():
        path = path / "summary.json"
    if path is None or not path.is_file():
        return None
    summary = json.loads(path.read_text())
    curve = [float(v) for v in summary["best_reward_curve"]]
    best = summary["best"]
    return {
        "summary": str(path),
        "method": summary["method"],
        "candidates": len(curve),
        "best_reward_curve": curve,
        "best": {k: best.get(k) for k in ("index", "splits", "concat", "accuracy", "cost", "reward")},
        "candidates_to_best": curve.index(max(curve)) + 1,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    from tinydyn.host.report import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    markers = {"original": "*", "naive early exits": "s", "S2DNAS": "o", "S2DNAS within cap": "D"}
    for ax, (name, rows) in zip(axes[:2], result["table1"].items(), strict=False):
        for label, row in rows.items():
            ax.plot(
                row["mean_macs"] / 1e6, 100 * row["accuracy"], markers.get(label, "x"), ms=10, label=label
            )
        static = rows["original"]
        ax.axhline(100 * static["accuracy"] - 100 * AIM_DROP, color="grey", ls=":", lw=1)
        ax.axvline(static["mean_macs"] * (1 - AIM_REDUCTION) / 1e6, color="grey", ls=":", lw=1)
        ax.set_title(f"{name}: Table 1 (dotted: the aim's corner)")
        ax.set_xlabel("mean executed MACs (M, integer reference)")
        ax.set_ylabel(f"accuracy % ({result['images']} Fashion-MNIST test images)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[2]
    for curve in result["search"].values():
        if curve:
            xs = range(1, curve["candidates"] + 1)
            ax.plot(xs, curve["best_reward_curve"], ".-", label=curve["method"])
    ax.set_title("search: best reward after each candidate (held-out images)")
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel("best reward ACC x COST^-0.06")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_tables(result: dict[str, Any]) -> None:
    print(f"\nTable 1 (integer reference, {result['images']} Fashion-MNIST test images; MACs counted)")
    print(f"{'backbone':8} {'model':20} {'mean MACs':>10} {'reduction':>9} {'accuracy':>9} {'change':>8}")
    for name, rows in result["table1"].items():
        for label, row in rows.items():
            print(
                f"{name:8} {label:20} {row['mean_macs'] / 1e6:9.2f}M {100 * row['reduction']:8.1f}% "
                f"{100 * row['accuracy']:8.2f}% {row['accuracy_change_pt']:+7.2f}pt"
            )
    print("\nTable 2 (per exit: fraction of test images leaving there / their accuracy)")
    for name, rows in result["table1"].items():
        for label, row in rows.items():
            if row["exits"] > 1:
                cells = " ".join(
                    f"{100 * f:5.1f}%/" + ("  -  " if a is None else f"{100 * a:5.1f}%")
                    for f, a in zip(row["exit_fractions"], row["exit_accuracy"], strict=True)
                )
                print(f"{name:8} {label:20} {cells}")
    print("\nSearch (held-out reward; same candidate budget)")
    for curve in result["search"].values():
        if curve:
            print(
                f"{curve['method']:7} {curve['candidates']} candidates: best reward "
                f"{max(curve['best_reward_curve']):.4f} (reached after {curve['candidates_to_best']}), "
                f"best {curve['best']}"
            )
    same = result.get("search_same_budget")
    if same:
        print(
            f"same budget ({same['candidates']} candidates): best reward ppo {same.get('ppo', 0):.4f}, "
            f"random {same.get('random', 0):.4f}"
        )
    for name, verdict in result["aim"].items():
        print(f"aim (>= 60 % fewer MACs at <= 0.5 pt loss), {name}: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    checkpoints = bundled_static_checkpoint().parent
    parser.add_argument("--resnet-static", type=Path, default=bundled_static_checkpoint())
    parser.add_argument("--resnet-naive", type=Path, default=MODELS / "fashion_resnet_naive.pt")
    parser.add_argument("--resnet-s2dnas", type=Path, default=checkpoints / "fashion_s2dnas.pt")
    parser.add_argument("--vgg-static", type=Path, default=MODELS / "fashion_vgg_static.pt")
    parser.add_argument("--vgg-naive", type=Path, default=MODELS / "fashion_vgg_naive.pt")
    parser.add_argument("--vgg-s2dnas", type=Path, default=MODELS / "fashion_vgg_s2dnas.pt")
    parser.add_argument("--ppo", type=Path, default=RESULTS / "search_ppo_summary.json")
    parser.add_argument("--random", type=Path, default=RESULTS / "search_random_summary.json")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--max-cost", type=float, default=1 - AIM_REDUCTION)
    parser.add_argument("--out", type=Path, default=RESULTS / "s2dnas_tables.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    full = load_dataset("fashion-mnist", "test")
    test = replace(full, images=full.images[: args.images], labels=full.labels[: args.images])
    _, held = hold_out(load_dataset("fashion-mnist", "train"), HELD_OUT_IMAGES)
    result: dict[str, Any] = {"images": len(test.labels), "held_out": len(held.labels), "table1": {}}
    for name in ("resnet", "vgg"):
        paths = {
            "original": getattr(args, f"{name}_static"),
            "naive early exits": getattr(args, f"{name}_naive"),
            "S2DNAS": getattr(args, f"{name}_s2dnas"),
        }
        if paths["original"] is None or not paths["original"].is_file():
            print(f"{name}: no static checkpoint given: backbone left out")
            continue
        static = evaluate(paths["original"], test, held, None, None)
        rows = {"original": static}
        for label in ("naive early exits", "S2DNAS"):
            if paths[label] is None or not paths[label].is_file():
                print(f"{name}: no {label} checkpoint: row left out")
                continue
            row = evaluate(paths[label], test, held, static, args.max_cost if label == "S2DNAS" else None)
            rows[label] = row
            if "within_cap" in row:
                rows["S2DNAS within cap"] = row.pop("within_cap") | {"exits": row["exits"]}
            print(f"{name} {label}: {100 * row['accuracy']:.2f}% at {row['mean_macs'] / 1e6:.2f} M MACs")
        result["table1"][name] = rows
    result["search"] = {"ppo": search_curve(args.ppo), "random": search_curve(args.random)}
    curves = [c for c in result["search"].values() if c]
    if len(curves) == 2:  # at the same candidate budget: the shorter search's length
        n = min(c["candidates"] for c in curves)
        result["search_same_budget"] = {"candidates": n} | {
            c["method"]: max(c["best_reward_curve"][:n]) for c in curves
        }
    result["aim"] = {
        f"{name} {label}": ("met" if meets_aim(row) else "not met")
        + f" ({100 * row['reduction']:.1f} % fewer MACs, {row['accuracy_change_pt']:+.2f} pt)"
        for name, rows in result["table1"].items()
        for label, row in rows.items()
        if label.startswith("S2DNAS")
    }
    print_tables(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
