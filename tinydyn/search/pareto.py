"""The accuracy-cost plot of a search: every candidate, its Pareto front, the best reward."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pareto_front(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Candidates no other beats on both accuracy (higher) and cost (lower), by cost."""
    front = [
        r
        for r in records
        if not any(
            o["accuracy"] >= r["accuracy"]
            and o["cost"] <= r["cost"]
            and (o["accuracy"], o["cost"]) != (r["accuracy"], r["cost"])
            for o in records
        )
    ]
    return sorted(
        (
            {"key": r["key"], "accuracy": r["accuracy"], "cost": r["cost"], "reward": r["reward"]}
            for r in front
        ),
        key=lambda r: r["cost"],
    )


def plot(records: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    if records:
        ax.scatter(
            [r["cost"] for r in records],
            [100 * r["accuracy"] for r in records],
            s=18,
            alpha=0.6,
            label="candidates (held-out images, integer model)",
        )
        front = pareto_front(records)
        ax.plot(
            [r["cost"] for r in front], [100 * r["accuracy"] for r in front], "k-", lw=1, label="Pareto front"
        )
        best = max(records, key=lambda r: r["reward"])
        ax.scatter([best["cost"]], [100 * best["accuracy"]], marker="*", s=160, c="red", label="best reward")
    ax.set_xlabel("mean executed MACs / static model's MACs (dynamic inference)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
