"""Command-line options shared by several tinydyn commands, and the thresholds they default to
(click and numpy only at import: torch and the executor are imported where needed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tinydyn.data.dataset import VALIDATION_OFFSET  # run/measure report the images before it
from tinydyn.errors import TinydynError
from tinydyn.quantize.policy import POLICIES

if TYPE_CHECKING:
    import numpy as np

    from tinydyn.data import Dataset
    from tinydyn.ir import IRModel

DEFAULT_DATASET = "fashion-mnist"  # what `tinydyn train` trains on without --dataset
DEFAULT_CONFIDENCE = 0.9
DEFAULT_MARGIN = 2.0
VALIDATION_IMAGES = 1000  # enough for a stable mean; one probe pass over them takes seconds


def dataset_options(func: Any) -> Any:
    func = click.option(
        "--data-root",
        type=click.Path(path_type=Path),
        default=None,
        help="Directory with the dataset files (default: the Debian package for fashion-mnist).",
    )(func)
    return click.option(
        "--dataset",
        default=None,
        help="fashion-mnist, mnist or cifar10 (default: train: fashion-mnist; other commands: the "
        "dataset the model was trained on).",
    )(func)


def policy_options(func: Any) -> Any:
    func = click.option(
        "--threshold",
        type=float,
        default=None,
        help="Confidence (0..1), margin (logits) or budget (MACs); default 0.9 / 2.0 / the budget "
        "spending on average what confidence 0.9 spends on validation images.",
    )(func)
    return click.option(
        "--policy",
        type=click.Choice(list(POLICIES)),
        default="confidence",
        show_default=True,
        help="Early-exit policy.",
    )(func)


@dataclass(frozen=True)
class Threshold:
    """A policy's threshold and, for the summary, what it means and where it came from."""

    value: float
    note: str


def validation_images(data: Dataset, load_train: Callable[[], Dataset]) -> tuple[np.ndarray, str]:
    """Images that tune defaults without being the ones reported: test images from
    VALIDATION_OFFSET on; for a test split too small for that, the train split; failing that
    (no train files), the test images themselves, said so."""
    if len(data) > VALIDATION_OFFSET:
        end = min(len(data), VALIDATION_OFFSET + VALIDATION_IMAGES)
        return data.images[VALIDATION_OFFSET:end], f"{data.name} test images {VALIDATION_OFFSET}..{end - 1}"
    try:
        train = load_train()
    except TinydynError:  # no train files: fall back to the test images, said so
        return data.images[:VALIDATION_IMAGES], f"the {data.name} test images themselves (no train split)"
    count = min(len(train), VALIDATION_IMAGES)
    return train.images[:count], f"{data.name} train images 0..{count - 1} (test split too small)"


def default_budget(ir: IRModel, images: np.ndarray) -> tuple[int, float]:
    """The largest MAC budget whose mean executed MACs on ``images`` stay within what the
    confidence policy (threshold DEFAULT_CONFIDENCE) spends on them; and that mean.

    A budget is a per-image cap (an image leaves early when going on could exceed it), so a
    budget equal to a mean would send nearly every image to the first exit; matching the mean
    instead makes the budget policy as costly on average as the default confidence policy.
    Never below what the dearest image spends at the first exit, which every image reaches: a
    smaller budget could not be honoured (when every larger one spends more than the target,
    as with a model whose worst case past exit 0 is dear, this floor is the default)."""
    import numpy as np

    from tinydyn.host.sweep import probe
    from tinydyn.quantize.policy import ExitPolicy

    pr = probe(ir, images)
    target = float(pr.outcome(ir, ExitPolicy("confidence", DEFAULT_CONFIDENCE))[2].mean())
    # the budgets where some image's decision flips: the cost of going on past each early exit
    floor = int(pr.macs[0].max())  # exit 0 with its head: no image can spend less
    candidates, heads = {floor}, 0
    for k in range(pr.num_exits - 1):
        candidates |= set((pr.macs[k] - heads - pr.head_macs[k] + pr.next_cost_max[k]).tolist())
        heads += pr.head_macs[k]
    ordered = np.array(sorted(c for c in candidates if c >= floor), dtype=np.int64)

    def mean_macs(index: int) -> float:
        return float(pr.outcome(ir, ExitPolicy("budget", float(ordered[index])))[2].mean())

    lo, hi = 0, len(ordered) - 1  # mean MACs grow with the budget: bisect
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mean_macs(mid) <= target:
            lo = mid
        else:
            hi = mid - 1
    return int(ordered[lo]), target


def default_threshold(
    policy: str,
    threshold: float | None,
    ir: IRModel,
    validation: Callable[[], tuple[np.ndarray, str]] | None = None,
) -> Threshold:
    """The threshold a policy uses, the user's when given. ``validation`` supplies the images
    (and their description) the default budget is tuned on; only called for that default."""
    rules = {
        "confidence": "an image leaves at the first early exit whose softmax top-1 reaches it",
        "margin": "an image leaves at the first early exit whose top-1 minus top-2 logit reaches it",
        "budget": "an image leaves at an early exit when going on to the next could exceed it",
    }
    if policy == "none":
        return Threshold(0.0, "policy none: every image runs to the final classifier")
    exits = sorted(ir.exits(), key=lambda op: op.attrs["index"])
    own = [op.attrs["confidence_t16"] / 65536 for op in exits if "confidence_t16" in op.attrs]
    if policy == "confidence" and own and len(own) == len(exits) - 1:  # S2DNAS: per stage or naive exit
        return Threshold(
            DEFAULT_CONFIDENCE if threshold is None else threshold,
            f"the model's own per-exit confidences {', '.join(f'{t:.4g}' for t in own)} (tuned when it "
            f"was trained; --threshold does not apply): {rules[policy]}",
        )
    if threshold is not None:
        unit = " MACs" if policy == "budget" else ""
        return Threshold(threshold, f"{policy} {threshold:g}{unit} (--threshold): {rules[policy]}")
    if policy == "confidence":
        return Threshold(DEFAULT_CONFIDENCE, f"confidence {DEFAULT_CONFIDENCE:g} (default): {rules[policy]}")
    if policy == "margin":
        return Threshold(DEFAULT_MARGIN, f"margin {DEFAULT_MARGIN:g} logits (default): {rules[policy]}")
    if validation is None:
        raise click.UsageError("the budget policy needs --threshold MACs here")
    images, where = validation()
    budget, target = default_budget(ir, images)
    return Threshold(
        float(budget),
        f"budget {budget:,} MACs (default: the largest whose mean on {len(images)} validation images, "
        f"{where}, stays within the {target:,.0f} MACs confidence {DEFAULT_CONFIDENCE:g} spends "
        f"there): {rules[policy]}",
    )


def budget_options(func: Any) -> Any:
    """Hard budgets (tinydyn/cost/budget.py): ``--budget 3M --budget-unit energy``, a cost table
    for the cycles unit, and (run/measure) a schedule of per-request budgets."""
    func = click.option(
        "--cost-table",
        type=click.Path(path_type=Path),
        default=None,
        help="Per-layer cost table from `tinydyn profile` (cost_table.json): the cycles unit, and "
        "the baseline term of the energy unit.",
    )(func)
    func = click.option(
        "--budget-unit",
        type=click.Choice(["macs", "energy", "cycles"]),
        default="macs",
        show_default=True,
        help="Unit of --budget / --threshold under the budget policy: MACs, modelled nJ or cycles.",
    )(func)
    return click.option(
        "--budget",
        default=None,
        help="A hard budget per image (e.g. 3M, 250k): the budget policy with this threshold.",
    )(func)


def schedule_option(func: Any) -> Any:
    return click.option(
        "--budget-schedule",
        default=None,
        help="Per-request budgets cycled over the images (a time-varying limit), e.g. "
        "'3M,1M,energy:900,cycles:2M'; items without a unit are in --budget-unit.",
    )(func)


def budget_policy(
    policy: str, threshold: float | None, budget: str | None, unit: str
) -> tuple[str, float | None]:
    """``--budget`` sets the budget policy and its threshold (``3M`` = 3,000,000 in ``unit``)."""
    if budget is None:
        return policy, threshold
    from tinydyn.host.measure import parse_amount

    if threshold is not None:
        raise click.UsageError("give --budget or --threshold, not both")
    return "budget", float(parse_amount(budget))


def load_costs(ir: IRModel, board: str | None, cost_table: Path | None) -> Any:
    """The budget cost model of ``ir`` on ``board`` (tinydyn.cost.budget), with ``cost_table``."""
    from tinydyn.cost.budget import budget_costs
    from tinydyn.cost.cost_table import read_cost_table

    return budget_costs(ir, board, read_cost_table(cost_table) if cost_table else None)
