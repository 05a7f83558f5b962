"""Command-line options shared by several tinydyn commands (click only: no torch here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tinydyn.quantize.policy import POLICIES


def dataset_options(func: Any) -> Any:
    func = click.option(
        "--data-root",
        type=click.Path(path_type=Path),
        default=None,
        help="Directory with the dataset files (default: the Debian package for fashion-mnist).",
    )(func)
    return click.option(
        "--dataset", default="fashion-mnist", show_default=True, help="fashion-mnist, mnist or cifar10."
    )(func)


def policy_options(func: Any) -> Any:
    func = click.option(
        "--threshold",
        type=float,
        default=None,
        help="Confidence (0..1), margin (logits) or budget (MACs); default 0.9 / 2.0 / half the static MACs.",
    )(func)
    return click.option(
        "--policy",
        type=click.Choice(list(POLICIES)),
        default="confidence",
        show_default=True,
        help="Early-exit policy.",
    )(func)


def default_threshold(policy: str, threshold: float | None, static_macs: int) -> float:
    """The threshold a policy uses when the user gives none."""
    if threshold is not None:
        return threshold
    return {"confidence": 0.9, "margin": 2.0, "budget": static_macs / 2, "none": 0.0}[policy]
