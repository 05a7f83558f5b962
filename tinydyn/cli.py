"""The ``tinydyn`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tinydyn.codegen.boards import boards_that_boot_here
from tinydyn.errors import TinydynError
from tinydyn.models.registry import DEFAULT_FAMILY, FAMILIES, family_names
from tinydyn.options import DEFAULT_DATASET, dataset_options, policy_options


def int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip() != "")
    except ValueError:
        raise click.BadParameter(
            f"'{text}' is not a comma-separated list of integers, e.g. 16,32,64"
        ) from None


@click.group()
@click.version_option(package_name="tinydyn")
def cli() -> None:
    """tinydyn: dynamic CNNs (block/channel skipping, early exits) to integer firmware."""


@cli.command()
@dataset_options
@click.option(
    "--model",
    "family",
    type=click.Choice(family_names()),
    default=DEFAULT_FAMILY,
    show_default=True,
    help="Model family: " + "; ".join(f"{name}: {entry.summary}" for name, entry in FAMILIES.items()),
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/model.pt"), show_default=True)
@click.option("--epochs", type=int, default=4, show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--gate-lr", type=float, default=1e-2, show_default=True, help="Learning rate of L-Net/C-Net.")
@click.option(
    "--l1",
    type=float,
    default=0.0,
    show_default=True,
    help="Salience penalty: larger trades accuracy for fewer MACs.",
)
@click.option("--widths", default="16,32,64", show_default=True, help="Channels per stage.")
@click.option("--blocks", default="1,1,1", show_default=True, help="Residual blocks per stage.")
@click.option(
    "--exits", default="0,1", show_default=True, help="Block indices followed by an early exit ('' for none)."
)
@click.option("--no-gates", is_flag=True, help="Train the static backbone (no L-Net/C-Net).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run whose checkpoint is --out.")
@click.option(
    "--init-from", type=click.Path(path_type=Path), default=None, help="Fine-tune from this checkpoint."
)
@click.option(
    "--backbone-from",
    type=click.Path(path_type=Path),
    default=None,
    help="Warm-start the backbone from this checkpoint (e.g. a --no-gates one); gates and heads start fresh.",
)
@click.option(
    "--fold-gates",
    is_flag=True,
    help="With --init-from: fold the gates into constant scales and fine-tune that static model "
    "(with its exits): the model 'tinydyn fpga' builds.",
)
@click.option("--limit", type=int, default=None, help="Train on the first N images only.")
def train(
    dataset: str | None,
    data_root: Path | None,
    family: str,
    out: Path,
    epochs: int,
    batch_size: int,
    lr: float,
    gate_lr: float,
    l1: float,
    widths: str,
    blocks: str,
    exits: str,
    no_gates: bool,
    seed: int,
    resume: bool,
    init_from: Path | None,
    backbone_from: Path | None,
    fold_gates: bool,
    limit: int | None,
) -> None:
    """Train a dynamic model (writes a checkpoint after every epoch)."""
    from tinydyn.data import load_dataset
    from tinydyn.models import get_family
    from tinydyn.train.loop import TrainConfig
    from tinydyn.train.loop import train as run_training

    data = load_dataset(dataset or DEFAULT_DATASET, "train", data_root)
    if data.note:  # e.g. CIFAR-10 training on the batches that are present
        click.echo(f"note: {data.note}", err=True)
    if limit:
        data = data.subset(limit)
    c, h, _ = data.input_shape
    stage_widths = int_tuple(widths)
    config = get_family(family).config_from_options(
        in_channels=c,
        input_size=h,
        num_classes=data.num_classes,
        stem_width=stage_widths[0] if stage_widths else 1,  # no widths: the config says what is wrong
        widths=stage_widths,
        blocks=int_tuple(blocks),
        exits=int_tuple(exits),
        gates=not no_gates,
        classes=data.classes,
    )
    result = run_training(
        data,
        out,
        config,
        TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, gate_lr=gate_lr, l1=l1, seed=seed),
        resume=resume,
        init_from=init_from,
        backbone_from=backbone_from,
        fold_gates=fold_gates,
        family_name=family,
    )
    last = result["history"][-1] if result["history"] else {}
    click.echo(
        f"checkpoint {out}  (epochs {len(result['history'])}, last epoch {last.get('seconds', 0):.0f} s)"
    )


@cli.command(name="eval")
@click.argument("checkpoint", type=click.Path(path_type=Path), required=False)
@dataset_options
@policy_options
@click.option("--limit", type=int, default=None, help="Evaluate the first N test images.")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Write the summary as JSON.")
@click.option(
    "--no-gating", is_flag=True, help="Evaluate the static network: gates not computed, nothing skipped."
)
def evaluate_cmd(
    checkpoint: Path | None,
    dataset: str | None,
    data_root: Path | None,
    policy: str,
    threshold: float | None,
    limit: int | None,
    json_out: Path | None,
    no_gating: bool,
) -> None:
    """Accuracy, executed MACs and exits of a checkpoint (Brevitas and integer reference)."""
    from tinydyn.commands.board import load_test_set
    from tinydyn.data import load_dataset
    from tinydyn.options import default_threshold, validation_images
    from tinydyn.pipeline import load_ir
    from tinydyn.quantize.policy import ExitPolicy
    from tinydyn.train.evaluate import evaluate

    loaded = load_ir(checkpoint)
    ir, model = loaded.ir, loaded.module
    # the model's own dataset unless --dataset names another with the same classes and images
    name, source = loaded.dataset(dataset)
    data = load_test_set(ir, name, data_root, loaded.what)
    full = data
    if limit:
        data = data.subset(limit)
    chosen = default_threshold(
        policy, threshold, ir, lambda: validation_images(full, lambda: load_dataset(name, "train", data_root))
    )
    exit_policy = ExitPolicy(policy, chosen.value, gating=not no_gating)
    # the Brevitas model has no gates-off mode: with --no-gating only the integer model is evaluated
    summary, _ = evaluate(ir, data, exit_policy, None if no_gating else model)
    summary.dataset = f"{name} test split ({source})"
    summary.threshold_note = chosen.note
    for line in summary.lines():
        click.echo(line)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary.to_json(), indent=2))


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path), required=False)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/ir"), show_default=True)
def lower(checkpoint: Path | None, out: Path) -> None:
    """Quantize and lower a checkpoint to the integer IR (model.json + weights.npz)."""
    from tinydyn.pipeline import load_ir

    ir = load_ir(checkpoint).ir
    ir.save(out)
    click.echo(
        f"IR {ir.name} ({ir.model_id()}) written to {out}: {len(list(ir.walk()))} ops, "
        f"{ir.meta['static_backbone_macs']:,} static backbone MACs"
    )


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path), required=False)
@dataset_options
@policy_options
@click.option("--limit", type=int, default=500, show_default=True, help="Number of test images measured.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/main"), show_default=True)
@click.option(
    "--board",
    type=click.Choice(boards_that_boot_here()),
    default="qemu-mps2-an386",
    show_default=True,
    help="Board booted here (host = the firmware as a Linux process on a pty).",
)
@click.option("--icount-shift", type=int, default=6, show_default=True, help="QEMU -icount shift.")
@click.option("--resume", is_flag=True, help="Continue the measurement in OUT/results.jsonl.")
def run(
    checkpoint: Path | None,
    dataset: str | None,
    data_root: Path | None,
    policy: str,
    threshold: float | None,
    limit: int,
    out: Path,
    board: str,
    icount_shift: int,
    resume: bool,
) -> None:
    """The main job: checkpoint → quantize → IR → C → firmware → QEMU → measure over the pty → report."""
    from tinydyn.commands.board import run_main

    run_main(checkpoint, dataset, data_root, policy, threshold, limit, out, board, icount_shift, resume)


def _register_subcommands() -> None:
    """Commands owned by other parts of the pipeline (imported lazily by click at call time)."""
    from tinydyn.commands.board import emulate, firmware_cmd, measure_cmd
    from tinydyn.commands.build import build
    from tinydyn.commands.profile import profile_cmd
    from tinydyn.hw.commands import fpga

    cli.add_command(build)
    cli.add_command(fpga)
    cli.add_command(firmware_cmd)
    cli.add_command(emulate)
    cli.add_command(profile_cmd)
    cli.add_command(measure_cmd)


_register_subcommands()


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except TinydynError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
