"""``tinydyn fpga``: the click command (registered in the CLI group by tinydyn/cli.py)."""

from __future__ import annotations

from pathlib import Path

import click


def parse_branches(text: str | None) -> tuple[int, ...] | str | None:
    """``--branches``: comma-separated indices, ``all`` or ``none`` (None: the default rule)."""
    from tinydyn.hw.export import ExportError

    if text is None:
        return None
    text = text.strip().lower()
    if text in ("all", "none"):
        return "all" if text == "all" else ()
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 64 or not all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts):
        raise ExportError(
            f"--branches {text[:40]!r}: give RADI branch indices separated by commas (e.g. 1,3), "
            "'all' or 'none'"
        )
    return tuple(int(p) for p in parts)


@click.command("fpga")
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--board", default="zedboard", show_default=True, help="FPGA board (zedboard).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option(
    "--target-fps",
    type=float,
    default=None,
    help="Images/s the design is folded for (segment k: × the share of images reaching it). "
    "Default: automatic search for the fastest design that fits the part.",
)
@click.option(
    "--policy", default="confidence", show_default=True, type=click.Choice(["confidence", "margin", "none"])
)
@click.option("--threshold", default=0.9, show_default=True, help="Exit threshold of the policy.")
@click.option(
    "--calibration-images", default=1000, show_default=True, help="Training images: mean gate saliences."
)
@click.option(
    "--eval-images",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 5000),
    help="Validation images for the stage reach (Fashion-MNIST test images 5000..) and test images "
    "for accuracy (0..).",
)
@click.option("--check-images", default=20, show_default=True, help="Images for the export/HW-graph checks.")
@click.option(
    "--batch",
    default=64,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Images per batch of the PS controller's pipelined schedule (the IODMA repeat count).",
)
@click.option(
    "--rtlsim",
    default=None,
    metavar="PARTITION",
    help="Simulate the RTL layers of this partition (seg0, head0, ...; 'all': every one) with Verilator "
    "and compare bit for bit with finn-plus's python execution (report in OUT/rtlsim/).",
)
@click.option(
    "--branches",
    default=None,
    metavar="K,K,...",
    help="DDI: the RADI branches to build, by index (0 = the first; 'all' or 'none'). Default: what fits "
    "(the most whose shell and IODMAs leave 40% of the part to the layers; of those, the fewest mean MACs "
    "per image). The report names the branches left out.",
)
@click.option("--no-codegen", is_flag=True, help="Stop after the estimates (skip HLS/RTL code generation).")
@click.option("--allow-overfit", is_flag=True, help="Write the report even if the design does not fit.")
def fpga(
    checkpoint: Path | None,
    board: str,
    out_dir: Path,
    target_fps: float | None,
    policy: str,
    threshold: float,
    calibration_images: int,
    eval_images: int,
    check_images: int,
    batch: int,
    rtlsim: str | None,
    branches: str | None,
    no_codegen: bool,
    allow_overfit: bool,
) -> None:
    """FINN dataflow build (front end) for an FPGA board; early exits become backbone segments + heads.

    Errors are TinydynError (one line); tinydyn.cli.main prints them and exits non-zero.
    """
    from tinydyn.hw import build_fpga
    from tinydyn.quantize.policy import ExitPolicy

    report = build_fpga(
        checkpoint,
        board,
        out_dir,
        target_fps=target_fps,
        policy=ExitPolicy(policy, threshold),
        calibration_images=calibration_images,
        eval_images=eval_images,
        check_images=check_images,
        batch=batch,
        rtlsim=rtlsim,
        branches=parse_branches(branches),
        codegen=not no_codegen,
        allow_overfit=allow_overfit,
        progress=lambda msg: click.echo(msg, err=True),
    )
    click.echo(report.text())
    click.echo(f"fpga: wrote {out_dir}/report.json; finish with {out_dir}/build_bitstream.sh (needs Vivado)")
