"""The ``tinydyn`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tinydyn.codegen.boards import boards_that_boot_here
from tinydyn.errors import TinydynError
from tinydyn.models.registry import DEFAULT_FAMILY, FAMILIES, family_names
from tinydyn.options import DEFAULT_DATASET, budget_options, dataset_options, policy_options, schedule_option


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
@click.option(
    "--epochs",
    type=int,
    default=15,
    show_default=True,
    help="15: the standard recipe's length; it takes the static ResNet-8 to 92.7% on Fashion-MNIST.",
)
@click.option(
    "--batch-size",
    type=int,
    default=128,
    show_default=True,
    help="The global batch (split over torchrun's processes); 128 is what lr 0.1 is tuned for.",
)
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adamw"]),
    default="sgd",
    show_default=True,
    help="sgd: Nesterov momentum, the recipe ResNets on these datasets reach their accuracy with; "
    "adamw: the previous default, forgiving for short fine-tunes.",
)
@click.option(
    "--lr",
    type=float,
    default=None,
    help="Peak learning rate (default 0.1 for sgd at batch 128, 2e-3 for adamw).",
)
@click.option(
    "--gate-lr",
    type=float,
    default=None,
    help="Peak learning rate of the gates (LC-Net's L-Net/C-Net, DDI's layer and channel gates; "
    "default: --lr, or the gate optimizer's default when --gate-optimizer differs).",
)
@click.option(
    "--gate-optimizer",
    type=click.Choice(["sgd", "adamw"]),
    default=None,
    help="The gates' own optimizer (default: --optimizer). adamw steps every gate parameter at "
    "the same pace whatever its gradient's scale: DDI's channel gates, whose cost gradient is 1/k "
    "of a layer gate's, learn to skip with it.",
)
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum (Nesterov).")
@click.option(
    "--weight-decay",
    type=float,
    default=5e-4,
    show_default=True,
    help="On conv/FC weights only: BN parameters, biases, quantiser scales and gates never decay "
    "(shrinking a per-channel scale changes the function instead of regularising it).",
)
@click.option(
    "--warmup-epochs",
    type=float,
    default=1.0,
    show_default=True,
    help="Linear warm-up before the cosine decay (at most a fifth of the run): lr 0.1 on fresh BN "
    "statistics or fresh exit heads on a warm-started backbone would wreck the first steps.",
)
@click.option(
    "--label-smoothing",
    type=float,
    default=0.0,
    show_default=True,
    help="Off by default: it flattens the confidences the early-exit policy thresholds.",
)
@click.option(
    "--crop-padding",
    type=int,
    default=None,
    help="Random crop after zero padding of this many pixels (default: image size // 8, i.e. 3 px on "
    "28 px images: CIFAR's standard 4 px on 32 px, scaled); 0 turns it off.",
)
@click.option(
    "--flip/--no-flip",
    default=None,
    help="Random horizontal flip (default: on for Fashion-MNIST and CIFAR-10, off for MNIST: a "
    "mirrored digit is no digit).",
)
@click.option(
    "--teacher",
    type=click.Path(path_type=Path),
    default=None,
    help="Distil from this checkpoint (any tinydyn model of the same dataset, e.g. a static "
    "--no-gates one): its final logits, in eval mode, are every exit's soft targets.",
)
@click.option(
    "--kd-temperature",
    type=float,
    default=4.0,
    show_default=True,
    help="Distillation temperature (Hinton's T; 4 is the usual CIFAR-scale choice).",
)
@click.option(
    "--kd-weight",
    type=float,
    default=0.5,
    show_default=True,
    help="Share of the distillation term in each exit's loss (the rest is cross-entropy).",
)
@click.option(
    "--l1",
    type=float,
    default=0.0,
    show_default=True,
    help="Salience penalty: larger trades accuracy for fewer MACs.",
)
@click.option(
    "--exit-weight", type=float, default=1.0, show_default=True, help="Weight of each early exit's loss."
)
@click.option(
    "--gate-open-epochs",
    type=float,
    default=None,
    help="Gates held fully open (frozen, no penalty) for this many epochs (default: 1 with "
    "--backbone-from, else 0): the fresh exit heads settle on the backbone before gates move.",
)
@click.option(
    "--l1-ramp-epochs",
    type=float,
    default=None,
    help="Then --l1 rises linearly from 0 over this many epochs (default: 2 with --backbone-from, "
    "else 0): gates close gradually instead of all at once on a network trained open.",
)
@click.option(
    "--qat-last-epochs",
    type=int,
    default=None,
    help="Weight fake-quant only in the last N epochs (float weights before; activation "
    "quantisers always on). Default: from the start. Measured once (static ResNet-8, 3 epochs on "
    "20,000 images): 85.68% int8 with the last epoch only vs 85.16% from the start (README).",
)
@click.option("--widths", default="16,32,64", show_default=True, help="Channels per stage.")
@click.option("--blocks", default="1,1,1", show_default=True, help="Residual blocks per stage.")
@click.option(
    "--exits", default="0,1", show_default=True, help="Block indices followed by an early exit ('' for none)."
)
@click.option("--no-gates", is_flag=True, help="Train the static backbone (no L-Net/C-Net).")
@click.option(
    "--backbone",
    type=click.Choice(["resnet", "vgg", "densenet"]),
    default="resnet",
    show_default=True,
    help="s2dnas: the static backbone (with --backbone-from: that checkpoint's architecture); "
    "ddi: resnet or densenet.",
)
@click.option(
    "--growth-rate", type=int, default=None, help="ddi --backbone densenet: growth rate (default 12)."
)
@click.option(
    "--channel-gate",
    type=click.Choice(["full", "light"]),
    default=None,
    help="ddi: the channel gate: full (paper Fig. 2(b), 3x3 stride-2 conv; a ResNet's default) or "
    "light (Fig. 4, 1x1 stride-2 conv to half the channels then 3x3; a DenseNet's default).",
)
@click.option(
    "--target-skip",
    type=float,
    default=None,
    help="ddi: share of the static backbone's cost (in --cost units, gates' own cost included) the "
    "gates learn to skip; α's sign flips per batch to hold it (default 0.5).",
)
@click.option(
    "--cost",
    type=click.Choice(["macs", "energy", "profile"]),
    default=None,
    help="ddi: the resource E of L + α·E: executed MACs, the DDI energy model (QEMU board "
    "coefficients), or cycles from a 'tinydyn profile' cost table given with --cost-table (default macs). "
    "lcnet: what weighs each salience in the --l1 penalty: the MACs it controls (default), or "
    "(profile) the cycles it saves on the profiled target. s2dnas: the COST of the thresholds' reward: "
    "MACs (default), energy (modelled, QEMU board) or profile (the trained model's cycles on the QEMU "
    "board: built and profiled under QEMU on a few held-out images, no table given).",
)
@click.option(
    "--cost-table",
    type=click.Path(path_type=Path),
    default=None,
    help="--cost profile: the cost_table.json `tinydyn profile` wrote for a model of this architecture.",
)
@click.option("--alpha", type=float, default=None, help="ddi: |α|, the weight of E (default 0.5).")
@click.option(
    "--branch-epochs",
    type=int,
    default=None,
    help="ddi: the last N epochs add the RADI branches, trained with the sum of all exit losses "
    "(default: half of --epochs). The first --gate-open-epochs train the gates alone on the frozen "
    "backbone toward zero skipping.",
)
@click.option(
    "--branch-warmup-epochs",
    type=float,
    default=None,
    help="ddi: the first W epochs of --branch-epochs train only the new branches, backbone and "
    "gates frozen, before everything trains jointly: the untrained branches' large first gradients "
    "would otherwise pull the trained backbone off its final classifier (default 0).",
)
@click.option(
    "--groups", type=int, default=8, show_default=True, help="s2dnas: channel groups per layer (G)."
)
@click.option(
    "--stages",
    type=int,
    default=3,
    show_default=True,
    help="s2dnas: stages, each with a classifier (1: static).",
)
@click.option(
    "--splits", default=None, help="s2dnas: split points per resolution, e.g. 3,5/3,5/2,6 (default even)."
)
@click.option(
    "--concat",
    default=None,
    help="s2dnas: concat indicators m12 m13 m23 per resolution, e.g. 111/101/011 (default 1s).",
)
@click.option(
    "--naive-exits",
    default=None,
    help="s2dnas --stages 1: the resolutions after which a naive early exit sits, e.g. 0,1 (the S2DNAS "
    "paper's baseline: the static model with classifiers at intermediate depths).",
)
@click.option(
    "--held-out",
    type=int,
    default=None,
    help="s2dnas: the last N training images are held out of training to choose the per-stage exit "
    "thresholds (Fashion-MNIST has no validation split; default 5000).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run whose checkpoint is --out.")
@click.option(
    "--stop-after",
    type=int,
    default=None,
    help="End this session after N epochs of the run (schedule still spans --epochs); --resume "
    "continues it exactly.",
)
@click.option(
    "--init-from", type=click.Path(path_type=Path), default=None, help="Fine-tune from this checkpoint."
)
@click.option(
    "--backbone-from",
    type=click.Path(path_type=Path),
    default=None,
    help="Warm-start the backbone from this checkpoint (e.g. a --no-gates one); exit heads start "
    "fresh, gates start exactly open (the model first computes the static backbone).",
)
@click.option(
    "--fold-gates",
    is_flag=True,
    help="With --init-from: fold the gates into constant scales and fine-tune that static model "
    "(with its exits): the model 'tinydyn fpga' builds.",
)
@click.option(
    "--int-joins",
    is_flag=True,
    help="LC-Net without gates: one shared quantiser at each residual join, so an FPGA adds integers "
    "(docs/FPGA.md); with --init-from it switches that checkpoint to integer joins and fine-tunes it.",
)
@click.option("--limit", type=int, default=None, help="Train on the first N images only.")
@click.option(
    "--eval-limit",
    type=int,
    default=1000,
    show_default=True,
    help="Test images evaluated when training ends (integer reference and Brevitas, recorded in "
    "the checkpoint); 0: none.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto: a GPU when torch sees one. Under torchrun each process takes its local rank's GPU.",
)
@click.option(
    "--threads",
    type=int,
    default=0,
    show_default=True,
    help="torch CPU threads (0: torch's default, OMP_NUM_THREADS or every core; torchrun sets 1 "
    "per process). Idle threads sleep (OMP_WAIT_POLICY=PASSIVE unless set): spinning ones slow "
    "training badly when other jobs share the cores.",
)
@click.option(
    "--channels-last",
    is_flag=True,
    help="NHWC tensors (off: no gain measured for these small Brevitas convs on CPU).",
)
@click.option(
    "--micro-batches",
    type=int,
    default=1,
    show_default=True,
    help="Split each batch into K parts run one after another (BN statistics per part, gradients "
    "summed): less memory, and what K torchrun processes compute.",
)
def train(
    dataset: str | None,
    data_root: Path | None,
    family: str,
    out: Path,
    epochs: int,
    batch_size: int,
    optimizer: str,
    lr: float | None,
    gate_lr: float | None,
    gate_optimizer: str | None,
    momentum: float,
    weight_decay: float,
    warmup_epochs: float,
    label_smoothing: float,
    crop_padding: int | None,
    flip: bool | None,
    teacher: Path | None,
    kd_temperature: float,
    kd_weight: float,
    l1: float,
    exit_weight: float,
    gate_open_epochs: float | None,
    l1_ramp_epochs: float | None,
    qat_last_epochs: int | None,
    widths: str,
    blocks: str,
    exits: str,
    no_gates: bool,
    backbone: str,
    growth_rate: int | None,
    channel_gate: str | None,
    target_skip: float | None,
    cost: str | None,
    cost_table: Path | None,
    alpha: float | None,
    branch_epochs: int | None,
    branch_warmup_epochs: float | None,
    groups: int,
    stages: int,
    splits: str | None,
    concat: str | None,
    naive_exits: str | None,
    held_out: int | None,
    seed: int,
    resume: bool,
    stop_after: int | None,
    init_from: Path | None,
    backbone_from: Path | None,
    fold_gates: bool,
    int_joins: bool,
    limit: int | None,
    eval_limit: int,
    device: str,
    threads: int,
    channels_last: bool,
    micro_batches: int,
) -> None:
    """Train a model with the recipe (writes a checkpoint after every epoch).

    The same command runs data-parallel under 'torchrun --nproc_per_node=N -m tinydyn train ...'.
    """
    import os
    import shlex

    # before torch loads OpenMP: threads waiting for work sleep instead of spinning. A spinning
    # thread on a core another job holds made steps up to 10x slower on this 2-core machine
    # (benchmarks/training_speed.py); OMP_WAIT_POLICY set by the user wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from tinydyn.data import load_dataset
    from tinydyn.models import get_family
    from tinydyn.train.loop import TrainConfig
    from tinydyn.train.loop import train as run_training

    if channel_gate is not None and family != "ddi":
        raise TinydynError(f"--channel-gate is a ddi option, not one of {family}'s: use --model ddi")
    if naive_exits is not None and family != "s2dnas":
        raise TinydynError(
            f"--naive-exits is an s2dnas option, not one of {family}'s: use --model s2dnas --stages 1"
        )
    name = dataset or DEFAULT_DATASET
    data = load_dataset(name, "train", data_root)
    if data.note:  # e.g. CIFAR-10 training on the batches that are present
        click.echo(f"note: {data.note}", err=True)
    held, family_options = None, {}
    if family == "s2dnas":  # the thresholds are chosen on training images held out of training
        from tinydyn.models.s2dnas_family import HELD_OUT_IMAGES, hold_out, s2d_options

        data, held = hold_out(data, HELD_OUT_IMAGES if held_out is None else held_out)
        family_options = {
            "s2d": s2d_options(backbone, groups, stages, splits, concat, int_tuple(naive_exits or "")),
            "backbone_from": backbone_from,
        }
    recipe_options: dict = {}
    if family == "s2dnas":  # the thresholds' COST; DDI's options too, so that S2DNAS refuses them
        recipe_options = {
            "cost": cost,
            "cost_table": str(cost_table) if cost_table else None,
            "target_skip": target_skip,
            "alpha": alpha,
            "branch_epochs": branch_epochs,
            "branch_warmup_epochs": branch_warmup_epochs,
        }
    if family == "lcnet":  # the salience penalty's weights: MACs, or a profiled target's cycles
        recipe_options = {  # DDI's own options too, so that LC-Net refuses them in one line
            "cost": cost,
            "cost_table": str(cost_table) if cost_table else None,
            "target_skip": target_skip,
            "alpha": alpha,
            "branch_epochs": branch_epochs,
            "branch_warmup_epochs": branch_warmup_epochs,
        }
    if family == "ddi":
        family_options = {
            "backbone": backbone,
            "growth_rate": growth_rate,
            "channel_gate": channel_gate or "",  # "": the backbone's paper gate
        }
        recipe_options = {
            "target_skip": target_skip,
            "cost": cost,
            "cost_table": str(cost_table) if cost_table else None,
            "alpha": alpha,
            "branch_epochs": branch_epochs,
            "branch_warmup_epochs": branch_warmup_epochs,
        }
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
        **family_options,
    )
    recipe = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        gate_lr=gate_lr,
        gate_optimizer=gate_optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        crop_padding=crop_padding,
        flip=flip,
        l1=l1,
        exit_weight=exit_weight,
        teacher=str(teacher) if teacher else None,
        kd_temperature=kd_temperature,
        kd_weight=kd_weight,
        gate_open_epochs=gate_open_epochs,
        l1_ramp_epochs=l1_ramp_epochs,
        qat_last_epochs=qat_last_epochs,
        micro_batches=micro_batches,
        device=device,
        threads=threads,
        channels_last=channels_last,
        seed=seed,
        eval_limit=eval_limit,
        stop_after=stop_after,
        extra={k: v for k, v in recipe_options.items() if v is not None},
    )
    result = run_training(
        data,
        out,
        config,
        recipe,
        resume=resume,
        init_from=init_from,
        backbone_from=backbone_from,
        fold_gates=fold_gates,
        int_joins=int_joins,
        family_name=family,
        command=shlex.join(["tinydyn", *sys.argv[1:]]),
        test_set=lambda: load_dataset(name, "test", data_root),
        held_out=held,
    )
    if not result["main"]:
        return  # process 0 of a torchrun group reports
    last = result["history"][-1] if result["history"] else {}
    click.echo(
        f"checkpoint {out}  (epochs {len(result['history'])}, last epoch {last.get('seconds', 0):.0f} s)"
    )
    evaluation = result.get("evaluation") or {}
    if "error" in evaluation:
        click.echo(f"note: not evaluated: {evaluation['error']}", err=True)
    for key, summary in evaluation.items():
        if isinstance(summary, dict):
            brevitas = summary["brevitas_accuracy"]
            click.echo(
                f"{evaluation['images']} {evaluation['dataset']} images, policy {key}: integer reference "
                f"{100 * summary['reference_accuracy']:.2f}%, Brevitas "
                f"{'n/a' if brevitas is None else f'{100 * brevitas:.2f}%'}, "
                f"{summary['mean_macs']:,.0f} mean MACs"
            )


@cli.command(name="eval")
@click.argument("checkpoint", type=click.Path(path_type=Path), required=False)
@dataset_options
@policy_options
@budget_options
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
    budget: str | None = None,
    budget_unit: str = "macs",
    cost_table: Path | None = None,
) -> None:
    """Accuracy, executed MACs and exits of a checkpoint (Brevitas and integer reference); energy
    and cycles of the budget cost model on the QEMU board (cycles with --cost-table)."""
    from tinydyn.commands.board import load_test_set
    from tinydyn.data import load_dataset
    from tinydyn.options import budget_policy, default_threshold, load_costs, validation_images
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
    policy, threshold = budget_policy(policy, threshold, budget, budget_unit)
    if policy == "budget" and threshold is None and budget_unit != "macs":
        raise click.UsageError(f"a budget in {budget_unit} needs --budget")
    chosen = default_threshold(
        policy, threshold, ir, lambda: validation_images(full, lambda: load_dataset(name, "train", data_root))
    )
    if policy == "budget" and budget_unit != "macs":
        label = {"energy": "nJ (modelled)", "cycles": "cycles"}[budget_unit]
        chosen = type(chosen)(chosen.value, chosen.note.replace(" MACs", f" {label}", 1))
    costs = load_costs(ir, "qemu-mps2-an386", cost_table)
    exit_policy = ExitPolicy(policy, chosen.value, gating=not no_gating, unit=budget_unit, costs=costs)
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
@budget_options
@schedule_option
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
    budget: str | None = None,
    budget_unit: str = "macs",
    cost_table: Path | None = None,
    budget_schedule: str | None = None,
) -> None:
    """The main job: checkpoint → quantize → IR → C → firmware → QEMU → measure over the pty → report."""
    from tinydyn.commands.board import run_main
    from tinydyn.host.measure import parse_schedule
    from tinydyn.options import budget_policy

    policy, threshold = budget_policy(policy, threshold, budget, budget_unit)
    schedule = parse_schedule(budget_schedule, budget_unit) if budget_schedule else None
    run_main(
        checkpoint, dataset, data_root, policy, threshold, limit, out, board, icount_shift, resume,
        budget_unit=budget_unit, cost_table=cost_table, schedule=schedule,
    )  # fmt: skip


def _register_subcommands() -> None:
    """Commands owned by other parts of the pipeline (imported lazily by click at call time)."""
    from tinydyn.commands.board import emulate, firmware_cmd, measure_cmd
    from tinydyn.commands.build import build
    from tinydyn.commands.profile import profile_cmd
    from tinydyn.commands.search import search_cmd
    from tinydyn.commands.thresholds import thresholds_cmd
    from tinydyn.hw.commands import fpga

    cli.add_command(build)
    cli.add_command(fpga)
    cli.add_command(firmware_cmd)
    cli.add_command(emulate)
    cli.add_command(profile_cmd)
    cli.add_command(measure_cmd)
    cli.add_command(search_cmd)
    cli.add_command(thresholds_cmd)


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
