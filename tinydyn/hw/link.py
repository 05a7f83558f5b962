"""One Zynq design holding every partition (backbone segments and exit heads).

finn-plus's ``ZynqBuild`` turns *one* dataflow model into a Vivado block design: it inserts an
input and an output IODMA, splits the model into StreamingDataflowPartitions (IODMA, compute,
IODMA), builds each as a stitched IP and hands the resulting *link graph* to
``MakeZYNQProject``, which instantiates every partition of the link graph next to the Zynq PS
and maps each IODMA's AXI-lite registers into the PS address space.

tinydyn needs all its partitions in one bitstream, because the PS runs segment k, then head k,
then (only for images that stay) segment k+1 on the stored features. So per partition we run
the same preparation and kernel builds as ``ZynqBuild``, prefix every link-graph node and
tensor with the partition's name (so stitched IPs and their HLS cores get distinct names), and
give ``MakeZYNQProject`` one link graph holding all chains. Its IODMAs come out named
``idma<p>``/``odma<p>`` in partition order p, and their register windows are assigned in that
order: :func:`predicted_addresses` is what the PS controller assumes before the build, and
:func:`read_hwh_addresses` reads the real ones from the hardware handoff afterwards.

finn-plus's Zynq shell template knows no ZedBoard: :func:`zedboard_shell_template` adds it
(Zynq-7000, the ZedBoard board files for the PS7's DDR/MIO presets).

Only the preparation and the merge run without Xilinx tools; kernel builds (Vitis HLS) and the
project (Vivado) run in ``build_bitstream.sh``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tinydyn.errors import TinydynError
from tinydyn.hw.boards import FpgaBoard

AXI_BASE = 0x4000_0000  # the Zynq-7000 shell's first AXI GP0 peripheral address
IODMA_WINDOW = 0x1000  # an IODMA's few control registers get the 4 KiB minimum window


class LinkError(TinydynError):
    """The partitions cannot be assembled into one Zynq design."""


def prepare_link_graph(model: Any, board: FpgaBoard, prefix: str, sdp_dir: Path) -> Any:
    """``ZynqBuild``'s preparation of one partition, with names prefixed by ``prefix``.

    ``model``: the partition's HW-layer model after FIFO sizing (a qonnx ModelWrapper).
    Returns its link graph: StreamingDataflowPartition nodes (IODMA in, compute, IODMA out)
    whose child models are written under ``sdp_dir``."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
    from finn.transformation.fpgadataflow.floorplan import Floorplan
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_iodma import InsertIODMA
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_data_layouts import InferDataLayouts

    sdp_dir.mkdir(parents=True, exist_ok=True)
    model = model.transform(InferDataLayouts())
    for step in (
        InsertIODMA(board.port_width),
        InsertDWC(),
        SpecializeLayers(board.part),
        Floorplan(),
        CreateDataflowPartition(partition_model_dir=str(sdp_dir)),
    ):
        model = model.transform(step)
        model = model.transform(GiveUniqueNodeNames())
        model = model.transform(GiveReadableTensorNames())
    nodes = model.graph.node
    if not nodes or any(n.op_type != "StreamingDataflowPartition" for n in nodes):
        kinds = sorted({n.op_type for n in nodes if n.op_type != "StreamingDataflowPartition"})
        raise LinkError(
            f"{prefix}: layers left outside the dataflow partitions ({', '.join(kinds) or 'none built'}): "
            "only HW layers can go into the Zynq design"
        )
    return _prefixed(model, prefix)


def _prefixed(model: Any, prefix: str) -> Any:
    rename = {}
    for tensor in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        rename[tensor.name] = f"{prefix}_{tensor.name}"
    for node in model.graph.node:
        for name in [*node.input, *node.output]:
            if name:
                rename.setdefault(name, f"{prefix}_{name}")
    for node in model.graph.node:
        node.name = f"{prefix}_{node.name}"
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for tensor in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        tensor.name = rename[tensor.name]
    for init in model.graph.initializer:
        init.name = rename.get(init.name, init.name)
    return model


def build_kernels(link: Any, board: FpgaBoard) -> None:
    """HLS synthesis and IP stitching of every partition of ``link`` (needs Vitis HLS + Vivado):
    finn-plus's own per-partition kernel build, as ``ZynqBuild`` runs it."""
    from finn.transformation.fpgadataflow.make_zynq_proj import _build_sdp_kernel
    from qonnx.custom_op.registry import getCustomOp

    for node in link.graph.node:
        model_file = getCustomOp(node).get_nodeattr("model")
        _build_sdp_kernel((node.name, model_file, board.part, 1000.0 / board.clock_mhz, False))


def merge_link_graphs(links: list[Any]) -> Any:
    """One link graph holding every partition's chain, in partition order."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper

    nodes, inputs, outputs, infos = [], [], [], []
    for link in links:
        nodes += link.graph.node
        inputs += link.graph.input
        outputs += link.graph.output
        infos += link.graph.value_info
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise LinkError("two partitions share a link-graph node name: give each partition its own prefix")
    graph = onnx.helper.make_graph(nodes, "tinydyn_zynq_link", inputs, outputs, value_info=infos)
    merged = ModelWrapper(onnx.helper.make_model(graph, producer_name="tinydyn"))
    merged.set_metadata_prop("tinydyn_partitions", ",".join(str(len(link.graph.node)) for link in links))
    return merged


def iodma_instances(merged: Any) -> list[str]:
    """IODMA instance names in the order ``MakeZYNQProject`` assigns their register windows."""
    out: list[str] = []
    idma = odma = 0
    for node in merged.graph.node:
        producer = merged.find_producer(node.input[0]) if node.input else None
        if producer is None:
            out.append(f"idma{idma}")
            idma += 1
        elif not merged.find_consumers(node.output[0]):
            out.append(f"odma{odma}")
            odma += 1
    return out


def predicted_addresses(partitions: int) -> dict[str, int]:
    """Register windows of the IODMAs of ``partitions`` chains (idma0, odma0, idma1, …), as
    ``MakeZYNQProject`` assigns them: consecutive 4 KiB windows from the shell's base."""
    names = [f"{kind}{p}" for p in range(partitions) for kind in ("idma", "odma")]
    return {name: AXI_BASE + i * IODMA_WINDOW for i, name in enumerate(names)}


_MEMRANGE = re.compile(r"<MEMRANGE\b[^>]*>")
_ATTR = re.compile(r'(\w+)="([^"]*)"')


def read_hwh_addresses(hwh: Path) -> dict[str, int]:
    """IODMA base addresses from a Vivado hardware handoff (``top.hwh``): the MEMRANGE entries
    of the PS's address map whose INSTANCE is an ``idma<p>``/``odma<p>``."""
    out: dict[str, int] = {}
    for tag in _MEMRANGE.findall(hwh.read_text(errors="replace")):
        attrs = dict(_ATTR.findall(tag))
        name = attrs.get("INSTANCE", "")
        if re.fullmatch(r"[io]dma\d+", name) and "BASEVALUE" in attrs:
            out[name] = int(attrs["BASEVALUE"], 16)
    if not out:
        raise LinkError(
            f"{hwh}: no idma/odma address ranges: is this the hardware handoff of the tinydyn design?"
        )
    return out


def addresses_header(addresses: dict[str, int], source: str) -> str:
    """``td_fpga_addresses.h``: the IODMA register bases the PS controller uses."""
    lines = [
        f"/* IODMA register bases of the tinydyn Zynq design ({source}). */",
        "#ifndef TD_FPGA_ADDRESSES_H",
        "#define TD_FPGA_ADDRESSES_H",
    ]
    lines += [
        f"#define TD_FPGA_{name.upper()}_BASE 0x{base:08X}u" for name, base in sorted(addresses.items())
    ]
    lines += ["#endif", ""]
    return "\n".join(lines)


ZEDBOARD_BRANCH = """} elseif {$BOARD == "ZedBoard"} {
    # tinydyn: the ZedBoard (xc7z020clg484-1); its board files give the PS7 its DDR/MIO presets
    set ZYNQ_TYPE "zynq_7000"
    set zed_parts [lsort [get_board_parts -quiet *zedboard*]]
    if {[llength $zed_parts] == 0} {
        puts "ERROR: ZedBoard board files missing: install them from Vivado's board store\
 (Tools > Vivado Store > Boards > ZedBoard), then re-run build_bitstream.sh"
        exit 1
    }
    set_property board_part [lindex $zed_parts end] [current_project]
} else {
    puts "Unrecognized board\""""


def zedboard_shell_template(template: str) -> str:
    """finn-plus's Zynq shell template with a ZedBoard branch (idempotent)."""
    if '$BOARD == "ZedBoard"' in template:
        return template
    anchor = '} else {\n    puts "Unrecognized board"'
    if anchor not in template:
        raise LinkError(
            "finn-plus's Zynq shell template changed (no board list found): tinydyn supports finn-plus 1.6.1"
        )
    return template.replace(anchor, ZEDBOARD_BRANCH, 1)


def make_project(merged: Any, board: FpgaBoard) -> Any:
    """Write the Vivado project script for the whole design and run it (needs Vivado):
    finn-plus's ``MakeZYNQProject`` with the ZedBoard in its shell. Returns ``merged`` with the
    project, bitfile and hardware handoff recorded in its metadata (``vivado_pynq_proj``,
    ``bitfile``, ``hw_handoff``); the Tcl is ``<vivado_pynq_proj>/ip_config.tcl``."""
    from finn.transformation.fpgadataflow import templates
    from finn.transformation.fpgadataflow.make_zynq_proj import MakeZYNQProject

    templates.custom_zynq_shell_template = zedboard_shell_template(templates.custom_zynq_shell_template)
    # apply() on the model itself, not transform(): the project directory is recorded on
    # ``merged`` before Vivado starts, so a failed run still says where its logs are
    MakeZYNQProject(board.finn_name, 1000.0 / board.clock_mhz).apply(merged)
    return merged
