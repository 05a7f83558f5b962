"""``tinydyn search``: S2DNAS's architecture search over a static checkpoint (tinydyn/search)."""

from __future__ import annotations

from pathlib import Path

import click

from tinydyn.options import DEFAULT_DATASET


@click.command(name="search")
@click.argument("static", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/search"), show_default=True)
@click.option(
    "--method",
    type=click.Choice(["ppo", "random"]),
    default="ppo",
    show_default=True,
    help="ppo: the controller (stable-baselines3 PPO, clipped objective); random: the baseline at "
    "the same candidate budget.",
)
@click.option(
    "--candidates", type=int, default=24, show_default=True, help="Candidates evaluated (the budget)."
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Candidates trained at once, one core each (default: the cores here; with --ray-address: 2).",
)
@click.option(
    "--ray-address",
    default=None,
    help="An existing Ray cluster (e.g. 'auto' or 'ray://head:10001'); default: a local Ray started "
    "and stopped by this command.",
)
@click.option("--groups", type=int, default=8, show_default=True, help="Channel groups per layer (G).")
@click.option("--stages", type=int, default=3, show_default=True, help="Stages (s), each with a classifier.")
@click.option("--dataset", default=DEFAULT_DATASET, show_default=True)
@click.option("--data-root", type=click.Path(path_type=Path), default=None)
@click.option(
    "--limit",
    type=int,
    default=None,
    help="Training images per candidate (default: all but the held-out ones).",
)
@click.option(
    "--held-out",
    type=int,
    default=5000,
    show_default=True,
    help="The last N training images: held out of training, the thresholds and reward are measured "
    "on them (Fashion-MNIST has no validation split).",
)
@click.option("--epochs", type=int, default=1, show_default=True, help="Training epochs per candidate.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option(
    "--lr",
    type=float,
    default=0.02,
    show_default=True,
    help="Peak SGD learning rate of a candidate's fine-tune.",
)
@click.option("--omega", type=float, default=-0.06, show_default=True, help="The reward's ACC x COST^omega.")
@click.option(
    "--cost",
    type=click.Choice(["macs", "energy", "cycles"]),
    default="macs",
    show_default=True,
    help="COST, relative to the static model: mean executed MACs, the modelled energy on the default "
    "emulated board, or its cycles (each candidate built and profiled under QEMU on a few held-out "
    "images: instructions counted, cycles modelled).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--steps-per-update",
    type=int,
    default=4,
    show_default=True,
    help="PPO: candidates per worker between two policy updates.",
)
@click.option("--resume", is_flag=True, help="Continue the search whose state is in --out.")
def search_cmd(
    static: Path,
    out: Path,
    method: str,
    candidates: int,
    workers: int | None,
    ray_address: str | None,
    groups: int,
    stages: int,
    dataset: str,
    data_root: Path | None,
    limit: int | None,
    held_out: int,
    epochs: int,
    batch_size: int,
    lr: float,
    omega: float,
    cost: str,
    seed: int,
    steps_per_update: int,
    resume: bool,
) -> None:
    """Search the S2DNAS transformations of STATIC (a static ResNet or VGG checkpoint) for the
    largest reward ACC x COST^omega; COST is the mean MACs (or modelled energy or QEMU cycles,
    --cost) under dynamic inference relative to the static model, both measured on held-out
    training images with each candidate's own per-stage thresholds. Writes candidates.jsonl, summary.json,
    pareto.png under --out."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from tinydyn.search.runner import SearchOptions, default_workers, run_search

    options = SearchOptions(
        static=str(static),
        out_dir=str(out),
        method=method,
        candidates=candidates,
        workers=workers or (2 if ray_address else default_workers()),
        ray_address=ray_address,
        groups=groups,
        stages=stages,
        dataset=dataset,
        data_root=str(data_root) if data_root else None,
        limit=limit,
        held_out=held_out,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        omega=omega,
        cost=cost,
        steps_per_update=steps_per_update,
    )
    summary = run_search(options, resume=resume)
    best = summary["best"]
    click.echo(
        f"{summary['candidates']} candidates evaluated ({summary['trained']} trained), "
        f"log {out}/candidates.jsonl"
    )
    if best is not None:
        click.echo(
            f"best reward {best['reward']:.4f}: accuracy {100 * best['accuracy']:.2f}%, cost "
            f"{best['cost']:.3f} of the static MACs ({best['mean_macs']:,.0f}), thresholds "
            f"{', '.join(f'{t:g}' for t in best['thresholds'])}, on {best['held_out_images']} "
            "held-out training images"
        )
        click.echo(f"its checkpoint: {best['checkpoint']}")
        click.echo(f"train it fully: {summary['final_training_command']}")
    click.echo(f"Pareto plot {out}/pareto.png, summary {out}/summary.json")
