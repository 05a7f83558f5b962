"""Finish an FPGA build where Vivado and Vitis HLS are installed: one bitstream holding every
partition, and the deploy package (``build_bitstream.sh`` runs ``python -m tinydyn.hw.finish``).

1. per partition (``stages/<name>``): finn-plus resumes its build at ``step_hw_codegen`` and runs
   IP generation and FIFO sizing (RTL simulation);
2. per partition: ``ZynqBuild``'s preparation and kernel builds (:mod:`tinydyn.hw.link`);
3. one link graph with every partition → ``MakeZYNQProject``: Vivado block design, synthesis,
   implementation, bitstream;
4. ``deploy/``: bitstream + hardware handoff, the PS controller sources with the IODMA
   addresses read from the handoff, the build's reports.

``--link-only`` runs the parts that need no Xilinx tool (2's preparation on the estimate-step
models, the merge) and writes ``zynq/link.onnx``: a check of the assembly before a long build.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinydyn.errors import TinydynError
from tinydyn.hw.boards import FpgaBoard, get_board, register_with_finn
from tinydyn.hw.controller import ADDRESSES_HEADER
from tinydyn.hw.finn_shims import load_finn
from tinydyn.hw.flow import FRONT_END_STEPS, make_config
from tinydyn.hw.link import (
    LinkError,
    addresses_header,
    build_kernels,
    iodma_instances,
    make_project,
    merge_link_graphs,
    predicted_addresses,
    prepare_link_graph,
    read_hwh_addresses,
)

PARTITION_STEPS = ["step_hw_codegen", "step_hw_ipgen", "step_set_fifo_depths"]
LINK_STEPS = [
    "ZynqBuild preparation per partition (InsertIODMA, InsertDWC, Floorplan, CreateDataflowPartition)",
    "kernel builds per partition (PrepareIP, HLSSynthIP, CreateStitchedIP)",
    "MakeZYNQProject on one link graph holding every partition (block design, bitstream)",
]


def load_build(out_dir: Path) -> tuple[dict[str, Any], FpgaBoard, Any]:
    meta_path = out_dir / "build.json"
    if not meta_path.is_file():
        raise LinkError(f"{out_dir} has no build.json: run 'tinydyn fpga --out {out_dir}' first")
    meta = json.loads(meta_path.read_text())
    build_dataflow = load_finn(out_dir)
    board = get_board(meta["board"])
    register_with_finn(board)
    return meta, board, build_dataflow


def run_partition_steps(build_dataflow: Any, board: FpgaBoard, stage_dir: Path, target_fps: float) -> Path:
    """finn-plus IP generation and FIFO sizing for one partition; the resulting model's path."""
    cfg = make_config(board, stage_dir, target_fps, FRONT_END_STEPS + PARTITION_STEPS, None)
    cfg.start_step = PARTITION_STEPS[0]
    if build_dataflow.build_dataflow_cfg(str(stage_dir / "model.onnx"), cfg) != 0:
        raise LinkError(
            f"finn-plus IP generation failed for {stage_dir.name}: see {stage_dir}/build_dataflow.log"
        )
    return stage_dir / "intermediate_models" / f"{PARTITION_STEPS[-1]}.onnx"


def link_graphs(
    out_dir: Path,
    meta: dict[str, Any],
    board: FpgaBoard,
    model_for: Callable[[Path, dict[str, Any]], Path],
    kernels: bool,
    progress: Callable[[str], None],
) -> list[Any]:
    """Every partition's link graph, in the order of build.json (= the PS's partition index)."""
    from qonnx.core.modelwrapper import ModelWrapper

    links = []
    for part in meta["partitions"]:
        stage_dir = out_dir / "stages" / part["name"]
        model_path = model_for(stage_dir, part)
        if not model_path.is_file():
            raise LinkError(f"{model_path} missing: re-run 'tinydyn fpga --out {out_dir}'")
        progress(f"finish: {part['name']}: Zynq partitions (IODMA in, dataflow, IODMA out)")
        link = prepare_link_graph(ModelWrapper(str(model_path)), board, part["name"], stage_dir / "zynq_sdp")
        if kernels:
            progress(f"finish: {part['name']}: HLS synthesis and IP stitching")
            build_kernels(link, board)
        links.append(link)
    return links


def check_instances(merged: Any, partitions: int) -> None:
    expected = list(predicted_addresses(partitions))
    got = iodma_instances(merged)
    if got != expected:
        raise LinkError(
            f"the link graph's IODMAs are {', '.join(got)}, the PS controller expects {', '.join(expected)}: "
            "a partition was split by finn-plus (report this bug)"
        )


def hls_resources(stage_dir: Path) -> dict[str, float] | None:
    """Totals of the post-HLS-synthesis resource report ``step_hw_ipgen`` writes (LUT, FF, BRAM,
    DSP of the HLS layers: FF first appears here, finn-plus's estimates have none)."""
    path = stage_dir / "report" / "estimate_layer_resources_hls.json"
    try:
        total = json.loads(path.read_text())["total"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    return {k: float(v) for k, v in total.items() if isinstance(v, int | float)}


def link_only(out_dir: Path, progress: Callable[[str], None] = print) -> Path:
    """Assemble the link graph from the estimate-step models (no Xilinx tool needed)."""
    meta, board, _ = load_build(out_dir)
    links = link_graphs(
        out_dir,
        meta,
        board,
        lambda stage_dir, _part: stage_dir / "intermediate_models" / "step_generate_estimate_reports.onnx",
        kernels=False,
        progress=progress,
    )
    merged = merge_link_graphs(links)
    check_instances(merged, len(meta["partitions"]))
    path = out_dir / "zynq" / "link.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    merged.save(str(path))
    return path


def finish(out_dir: Path, progress: Callable[[str], None] = print) -> Path:
    """The whole Vivado part; returns the deploy directory."""
    start = time.time()
    meta, board, build_dataflow = load_build(out_dir)
    links = link_graphs(
        out_dir,
        meta,
        board,
        lambda stage_dir, part: run_partition_steps(build_dataflow, board, stage_dir, part["target_fps"]),
        kernels=True,
        progress=progress,
    )
    merged = merge_link_graphs(links)
    check_instances(merged, len(meta["partitions"]))
    progress("finish: Vivado block design with every partition, synthesis, implementation, bitstream")
    try:
        merged = make_project(merged, board)
    except FileNotFoundError as exc:
        raise LinkError(f"{exc}: source Vivado's settings64.sh first") from None
    deploy = out_dir / "deploy"
    (deploy / "bitfile").mkdir(parents=True, exist_ok=True)
    shutil.copy2(merged.get_metadata_prop("bitfile"), deploy / "bitfile" / "tinydyn_zynq.bit")
    hwh = Path(shutil.copy2(merged.get_metadata_prop("hw_handoff"), deploy / "bitfile" / "tinydyn_zynq.hwh"))
    addresses = read_hwh_addresses(hwh)
    shutil.copytree(out_dir / "ps", deploy / "ps", dirs_exist_ok=True)
    (deploy / "ps" / ADDRESSES_HEADER).write_text(addresses_header(addresses, f"read from {hwh.name}"))
    for name in ("report.txt", "report.json", "build.json"):
        if (out_dir / name).is_file():
            shutil.copy2(out_dir / name, deploy / name)
    predicted = predicted_addresses(len(meta["partitions"]))
    (deploy / "finish.json").write_text(
        json.dumps(
            {
                "vivado_project": merged.get_metadata_prop("vivado_pynq_proj"),
                "utilisation_report": merged.get_metadata_prop("vivado_synth_rpt"),
                "iodma_addresses": {k: f"0x{v:08X}" for k, v in sorted(addresses.items())},
                "hls_resources": {
                    part["name"]: hls_resources(out_dir / "stages" / part["name"])
                    for part in meta["partitions"]
                },
                "addresses_as_predicted": addresses == predicted,
                "seconds": round(time.time() - start, 1),
            },
            indent=2,
        )
    )
    return deploy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinydyn.hw.finish", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="the directory 'tinydyn fpga --out' wrote")
    parser.add_argument(
        "--link-only", action="store_true", help="assemble the link graph only (no Xilinx tools)"
    )
    args = parser.parse_args(argv)
    out_dir = args.out_dir.resolve()
    try:
        if args.link_only:
            print(f"finish: link graph written to {link_only(out_dir)}")
        else:
            print(f"finish: bitstream, hardware handoff and PS sources in {finish(out_dir)}")
    except TinydynError as exc:
        print(f"finish: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
