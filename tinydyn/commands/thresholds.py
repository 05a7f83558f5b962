"""``tinydyn thresholds``: choose an S2DNAS model's per-exit thresholds again, without retraining.

The thresholds are part of an S2DNAS model (its exits carry them into the IR and the firmware);
training chooses them on its held-out images for the largest reward ACC x COST^omega. This
command chooses them again on the same held-out images (the last N training images, N as the
checkpoint's training held out) for another omega, another cost unit, or, with ``--max-cost``,
for the best accuracy within a MAC budget (e.g. 0.4: at least 60 % fewer MACs than the static
model), and writes a new checkpoint: same weights, new thresholds, the choice recorded under
``train.tuned`` and the command appended to ``train.commands``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from tinydyn.errors import TinydynError
from tinydyn.models.s2dnas_thresholds import COST_UNITS, DEFAULT_OMEGA


@click.command(name="thresholds")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The new checkpoint.")
@click.option(
    "--max-cost",
    type=float,
    default=None,
    help="The most accurate thresholds whose mean cost stays within this share of the static "
    "model's (e.g. 0.4: at least 60 % fewer MACs); default: the largest reward.",
)
@click.option("--omega", type=float, default=DEFAULT_OMEGA, show_default=True, help="The reward's ω.")
@click.option(
    "--cost",
    type=click.Choice(COST_UNITS),
    default="macs",
    show_default=True,
    help="COST: executed MACs, modelled energy, or cycles on the QEMU board (the model built and "
    "profiled under QEMU on a few held-out images).",
)
@click.option(
    "--held-out",
    type=int,
    default=None,
    help="The last N training images (default: as many as the checkpoint's training held out).",
)
@click.option("--data-root", type=click.Path(path_type=Path), default=None)
def thresholds_cmd(
    checkpoint: Path,
    out: Path,
    max_cost: float | None,
    omega: float,
    cost: str,
    held_out: int | None,
    data_root: Path | None,
) -> None:
    """Choose CHECKPOINT's per-exit thresholds (S2DNAS stages or naive early exits) again on its
    held-out training images and write them into --out."""
    from tinydyn.data import load_dataset
    from tinydyn.models.checkpoint import load_model, save_checkpoint
    from tinydyn.models.s2dnas_family import HELD_OUT_IMAGES, hold_out
    from tinydyn.models.s2dnas_thresholds import tune_thresholds

    if max_cost is not None and not 0.0 < max_cost <= 1.0:
        raise TinydynError(
            f"--max-cost {max_cost:g} is not a share of the static model's cost: give 0 < C <= 1"
        )
    if held_out is not None and held_out <= 0:
        raise TinydynError(f"--held-out {held_out} holds no image: give a positive number")
    model, payload = load_model(checkpoint)
    family = payload.get("family", "lcnet")
    if family != "s2dnas":
        raise TinydynError(
            f"{checkpoint} is a {family} model: per-exit thresholds of its own are S2DNAS's "
            "(for other families give --policy/--threshold at run time)"
        )
    if model.config.exit_count == 1:  # type: ignore[union-attr]
        raise TinydynError(f"{checkpoint} has a single exit: there is no threshold to choose")
    train = dict(payload.get("train") or {})
    recorded = (train.get("tuned") or {}).get("images")
    count = held_out or (recorded if isinstance(recorded, int) and recorded > 0 else HELD_OUT_IMAGES)
    data = load_dataset(payload.get("dataset") or "fashion-mnist", "train", data_root)
    _, held = hold_out(data, count)
    if held is None:
        raise TinydynError(f"no images held out of {len(data)}: give a larger training set or --held-out")
    choice = tune_thresholds(model, held, omega, unit=cost, max_cost=max_cost)
    choice.where = f"{len(held)} {held.name} {held.split} images held out of training" + (
        f", the most accurate within cost {max_cost:g}" if max_cost is not None else ""
    )
    command = shlex.join(["tinydyn", *sys.argv[1:]])  # as `tinydyn train` records its own
    train["tuned"] = choice.to_json()
    train["commands"] = [*list(train.get("commands") or []), command]
    extra = {k: v for k, v in payload.items() if k in ("dataset", "recipe")}
    # the training's test-set evaluation measured the old thresholds: not carried over
    save_checkpoint(out, model, payload.get("metrics", {}), {**extra, "train": train, "command": command})
    fractions = " / ".join(f"{100 * f:.1f}" for f in choice.exit_fractions)
    click.echo(
        f"thresholds {' / '.join(f'{t:g}' for t in choice.thresholds)}: held-out accuracy "
        f"{100 * choice.accuracy:.2f} % at cost {choice.cost:.3f} ({cost}), exits {fractions} %; "
        f"wrote {out}"
    )
    if max_cost is not None and choice.cost > max_cost:
        click.echo(f"note: no thresholds keep the cost within {max_cost:g}: these are the cheapest", err=True)
