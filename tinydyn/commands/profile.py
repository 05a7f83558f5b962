"""``tinydyn profile``: per-layer MACs, instructions (measured) and cycles (modelled) of a model
on the QEMU Cortex-M4 board, for static, gated and gated+exit runs, and the per-layer cost table
training can use (docs/CYCLES.md, "Profiling")."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from tinydyn.options import dataset_options

MAX_IMAGES = 10_000


@click.command(name="profile")
@click.argument("checkpoint", type=click.Path(path_type=Path), required=False)
@click.option(
    "--ir", "ir_dir", type=click.Path(path_type=Path), default=None, help="Profile an IR directory."
)
@dataset_options
@click.option("--limit", type=int, default=20, show_default=True, help="Profile the first N test images.")
@click.option(
    "--threshold",
    type=float,
    default=0.9,
    show_default=True,
    help="Confidence threshold of the gated+exit run.",
)
@click.option(
    "--flash-ws",
    type=int,
    default=0,
    show_default=True,
    help="Cycle model: wait states per 32-bit instruction fetch from flash (mps2-an386: 0).",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/profile"), show_default=True)
def profile_cmd(
    checkpoint: Path | None,
    ir_dir: Path | None,
    dataset: str | None,
    data_root: Path | None,
    limit: int,
    threshold: float,
    flash_ws: int,
    out: Path,
) -> None:
    """Per-layer profile on the QEMU Cortex-M4 board: MACs, instructions (measured), cycles
    (modelled) per layer for static, gated and gated+exit runs, each checked bit-exact against
    the reference. Writes OUT/profile.json, profile.txt, profile.png and cost_table.json (the
    per-layer cost table training can use)."""
    from tinydyn.commands.board import load_test_set
    from tinydyn.host.cycles import CycleModel
    from tinydyn.host.profile import ProfileError, take_profile
    from tinydyn.pipeline import load_ir

    if not 1 <= limit <= MAX_IMAGES:
        raise click.BadParameter(f"must be 1..{MAX_IMAGES}", param_hint="--limit")
    if not 0.0 < threshold <= 1.0:
        raise click.BadParameter("a confidence in (0, 1]", param_hint="--threshold")
    model = CycleModel(flash_ws=flash_ws)  # checks the range
    for tool, package in (("arm-none-eabi-gcc", "gcc-arm-none-eabi"), ("qemu-system-arm", "qemu-system-arm")):
        if shutil.which(tool) is None:
            raise ProfileError(f"{tool} not found: apt-get install {package} (or run scripts/setup.sh)")
    loaded = load_ir(checkpoint, ir_dir)
    name, source = loaded.dataset(dataset)
    data = load_test_set(loaded.ir, name, data_root, loaded.what)
    images = data.images[:limit]
    click.echo(
        f"profiling {loaded.what} on {len(images)} {name} test images ({source}) under QEMU mps2-an386",
        err=True,
    )
    prof = take_profile(loaded.ir, images, out, threshold, model, dataset=name)
    click.echo((out / "profile.txt").read_text(), nl=False)
    for mode, m in prof.summary["modes"].items():
        click.echo(
            f"{mode:<11} {m['macs'] / 1e6:7.3f} M MACs  {m['instructions'] / 1e6:7.3f} M instructions "
            f"(measured)  {m['cycles_modelled'] / 1e6:7.3f} M cycles (modelled)"
        )
    click.echo(
        "written: "
        + ", ".join(str(out / n) for n in ("profile.json", "profile.txt", "profile.png", "cost_table.json"))
    )
    bad = [mode for mode, m in prof.summary["modes"].items() if not m["bit_exact"]]
    if bad:
        first = prof.summary["modes"][bad[0]]["mismatches"][0]
        raise ProfileError(f"the firmware is not bit-exact with the reference in mode {bad[0]}: {first}")
