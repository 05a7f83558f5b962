"""Summary JSON and PNG plots of a measurement (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on build machines
    import matplotlib.pyplot as plt

    return plt


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    tmp.replace(path)  # never a half-written summary
    return path


def plot_exit_histogram(summary: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    board = np.array(summary["exit_histogram"])
    ref = np.array(summary["reference_exit_histogram"])
    x = np.arange(len(board))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.bar(x - 0.2, board, width=0.4, label=f"board ({summary['board']})")
    ax.bar(x + 0.2, ref, width=0.4, label="integer reference", alpha=0.7)
    names = [f"exit {i}" for i in x[:-1]] + ["final"]
    ax.set_xticks(x, names)
    ax.set_ylabel("images")
    ax.set_title(f"Exits taken: {summary['policy']} {summary['threshold']:g}, {summary['images']} images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_vs_macs(summary: dict[str, Any], points: list[dict[str, Any]], path: Path) -> Path:
    """The reference's threshold sweep as a curve, the board's measured point on it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if points:
        pts = sorted(points, key=lambda p: p["mean_macs"])
        ax.plot(
            [p["mean_macs"] / 1e6 for p in pts],
            [100 * p["accuracy"] for p in pts],
            "o-",
            ms=3,
            label=f"reference, {pts[0]['policy']} sweep",
        )
        for p in pts:
            ax.annotate(
                f"{p['threshold']:g}",
                (p["mean_macs"] / 1e6, 100 * p["accuracy"]),
                fontsize=6,
                textcoords="offset points",
                xytext=(3, -8),
            )
    ax.plot(
        [summary["mean_macs"] / 1e6],
        [100 * summary["accuracy"]],
        "r*",
        ms=12,
        label=f"measured on {summary['board']} ({summary['policy']} {summary['threshold']:g})",
    )
    ax.axvline(summary["static_backbone_macs"] / 1e6, color="grey", ls=":", label="static backbone")
    ax.set_xlabel("mean executed MACs per image (millions)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"Accuracy vs MACs ({summary['images']} test images)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_cost_vs_macs(summary: dict[str, Any], records: list[dict[str, Any]], path: Path) -> Path:
    """Per image: the board's counter (retired instructions under QEMU, measured; DWT cycles on a
    real board, measured) and, where the cycle model ran, modelled Cortex-M4 cycles, against MACs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    macs = np.array([r["macs"] for r in records], dtype=np.float64) / 1e6
    kind = summary.get("counter_kind", "counter")
    if kind in ("cycles", "instructions"):
        counter = np.array([r["counter"] for r in records], dtype=np.float64) / 1e6
        ax.scatter(macs, counter, s=8, label=f"{kind} (measured)")
    modelled = [r for r in records if "cycles_modelled" in r]
    if modelled:
        ax.scatter(
            [r["macs"] / 1e6 for r in modelled],
            [r["cycles_modelled"] / 1e6 for r in modelled],
            s=8,
            marker="^",
            label=f"cycles (modelled, CPI {summary.get('modelled_cpi', float('nan')):.2f})",
        )
    ax.set_xlabel("executed MACs per image (millions)")
    ax.set_ylabel("millions per image")
    ax.set_title(f"Cost per image on {summary['board']} ({len(records)} images)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
