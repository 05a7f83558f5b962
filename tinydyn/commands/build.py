"""``tinydyn build``: a checkpoint or an IR directory → a firmware project for a board."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from tinydyn.codegen.boards import BOARDS, get_board


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path), required=False)
@click.option(
    "--ir", "ir_dir", type=click.Path(path_type=Path), default=None, help="Build from an IR directory."
)
@click.option("--board", type=click.Choice(sorted(BOARDS)), default="qemu-mps2-an386", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/firmware"), show_default=True)
@click.option(
    "--compile/--no-compile",
    "do_compile",
    default=None,
    help="Run make and measure flash (default: when the board's compiler is installed).",
)
def build(
    checkpoint: Path | None, ir_dir: Path | None, board: str, out: Path, do_compile: bool | None
) -> None:
    """Generate C firmware (model, runtime, board files, Makefile) and report its footprint."""
    from tinydyn.codegen.project import build_project
    from tinydyn.pipeline import load_ir

    ir = load_ir(checkpoint, ir_dir).ir
    if do_compile is None:
        do_compile = shutil.which(get_board(board).cc) is not None
    report = build_project(ir, board, out, compile=do_compile)
    summary = {
        k: getattr(report, k)
        for k in (
            "model",
            "model_id",
            "board",
            "flash_bytes",
            "flash_measured",
            "weight_bytes",
            "arena_bytes",
            "arena_lower_bound",
            "static_macs",
            "out_dir",
        )
    }
    click.echo(json.dumps(summary, indent=2))
