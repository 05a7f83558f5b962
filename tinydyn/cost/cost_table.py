"""The per-layer cost table: what each layer of a model costs on one target, in (modelled)
cycles, as ``tinydyn profile`` measures it on the QEMU Cortex-M4 board (docs/CYCLES.md,
"Profiling"; the format is documented there, "The cost table").

Training reads it as its resource cost: instead of weighting a salience by the MACs it controls,
weight it by the cycles it saves on *this* target. Torch-free; reading a table is an
untrusted-file load (bounded size, strict schema, one-line errors)::

    from tinydyn.cost.cost_table import read_cost_table

    table = read_cost_table("runs/profile/cost_table.json")
    table.check_model(op.name for op in ir.walk())  # refuse a table of another model
    table.layer_weights()         # {IR op name: cycles when the layer runs in full}
    table.channel_weights()       # {IR op name: cycles per executed (gated) channel}
    table.gate_channel_weights()  # {salience tensor: cycles one of its channels saves}
    table.block_weights()         # {guard op name: cycles saved when the block is skipped}
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinydyn.errors import TinydynError

if TYPE_CHECKING:
    from tinydyn.ir import IRModel

FORMAT = "tinydyn-cost-table"
VERSION = 1
MAX_BYTES = 4 * 1024 * 1024  # a table of 4096 layers is well under 2 MiB
MAX_LAYERS = 4096
MAX_BLOCKS = 1024
MAX_CHANNELS = 65536
MAX_CYCLES = 1e12  # |any figure|: a Cortex-M4 inference of 1e12 cycles takes hours
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,63}")  # the IR's op/tensor names (ir_schema.NAME_PATTERN)
TEXT = re.compile(r"[ -~]{0,200}")  # printable ASCII: model names, boards, notes
CHANNEL_DIMS = ("output", "input")
FIT_SOURCES = ("gated", "gated+static", "constant", "none")


class CostTableError(TinydynError):
    """A cost table that is missing, too big, or not in the documented format."""


@dataclass(frozen=True)
class Fit:
    """How well ``cycles ≈ fixed + per_channel × active channels`` describes the measured runs."""

    source: str  # "gated" (least squares over the gated runs), "gated+static", "constant", "none"
    images: int  # runs of the layer the figures come from
    distinct_counts: int  # distinct active-channel counts among them
    r2: float | None = None  # coefficient of determination (None: nothing to explain)
    rmse: float | None = None  # root-mean-square residual, cycles
    max_abs_error: float | None = None  # largest residual, cycles


@dataclass(frozen=True)
class LayerCycles:
    """One layer (IR op): cycles ≈ ``fixed`` + ``per_channel`` × executed channels of its gated
    dimension; ``full`` is its mean cost with every channel executed (the static runs)."""

    name: str
    kind: str
    macs: int  # MACs when it runs in full
    channels: int  # channels of its gated dimension (output channels when not gated)
    channel_dim: str | None  # "output" (channel_gate), "input" (input_mask) or None
    gate: str | None  # the salience tensor that gates those channels
    fixed: float  # cycles when it runs with every gated channel skipped (the intercept)
    per_channel: float | None  # marginal cycles per executed channel (None: not channel-gated)
    full: float  # cycles when it runs in full
    runs: int  # runs the figures come from (all modes)
    fit: Fit


@dataclass(frozen=True)
class BlockCycles:
    """One guarded block: what it costs when it runs and when it is skipped (its gate, the
    L-Net, runs before the decision either way and is ``gate_cycles``)."""

    name: str
    gate: str  # the block salience tensor
    gate_layer: str | None  # the op computing it
    gate_cycles: float | None
    run_cycles: float | None  # mean over the gated runs where the block ran (None: never ran)
    skip_cycles: float | None  # mean over the runs where it was skipped (None: never skipped)
    full_cycles: float  # the block run in full (static runs)
    runs: int
    skips: int
    layers_run: tuple[str, ...]
    layers_skip: tuple[str, ...]


@dataclass(frozen=True)
class CostTable:
    model: str
    model_id: str
    board: str
    unit: str  # "cycles"
    kind: str  # "modelled" (QEMU's cycle model) or "measured" (a real counter)
    cycle_model: dict[str, Any]
    control_cycles: float  # td_infer's own dispatch per inference (static runs), not per layer
    layers: tuple[LayerCycles, ...]
    blocks: tuple[BlockCycles, ...] = ()
    source: dict[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> LayerCycles:
        for row in self.layers:
            if row.name == name:
                return row
        raise CostTableError(f"cost table of {self.model} has no layer {name!r}")

    def layer_weights(self) -> dict[str, float]:
        """Cycles of each layer run in full, keyed by IR op name (the cycle analogue of the
        per-layer MACs of ``cost.traffic.layer_costs``)."""
        return {row.name: row.full for row in self.layers}

    def channel_weights(self) -> dict[str, float]:
        """Marginal cycles per executed channel of each channel-gated layer (never negative)."""
        return {r.name: max(r.per_channel, 0.0) for r in self.layers if r.per_channel is not None}

    def gate_channel_weights(self) -> dict[str, float]:
        """Cycles one channel of each channel-salience tensor saves when it is zero: the sum
        over the layers it gates (LC-Net: the first conv's output and the second conv's input
        channel), keyed by the salience tensor's name."""
        out: dict[str, float] = {}
        for r in self.layers:
            if r.gate is not None and r.per_channel is not None:
                out[r.gate] = out.get(r.gate, 0.0) + max(r.per_channel, 0.0)
        return out

    def block_weights(self) -> dict[str, float]:
        """Cycles a block saves when it is skipped (run in full minus skipped; never negative),
        keyed by the guard op's name."""
        out = {}
        for b in self.blocks:
            skip = (
                b.skip_cycles if b.skip_cycles is not None else sum(self.layer(n).full for n in b.layers_skip)
            )
            out[b.name] = max(b.full_cycles - skip, 0.0)
        return out

    def check_model(self, op_names: Iterable[str], model_id: str | None = None) -> None:
        """Refuse a table made for another model: every layer must be an op of it (and, when
        given, the IR's model id must match)."""
        names = set(op_names)
        missing = [r.name for r in self.layers if r.name not in names]
        if missing:
            raise CostTableError(
                f"cost table of {self.model} names layers this model lacks ({', '.join(missing[:5])}): "
                "profile this model with `tinydyn profile`"
            )
        if model_id is not None and model_id != self.model_id:
            raise CostTableError(
                f"cost table is of model {self.model_id}, not {model_id}: profile this model with "
                "`tinydyn profile`"
            )

    def check_shapes(self, model: IRModel) -> None:
        """Refuse a table profiled on another architecture of the same layer names (other widths):
        names as :meth:`check_model`, then each layer's MACs in full must be the model's."""
        from tinydyn.cost.energy import coefficients
        from tinydyn.cost.traffic import op_traffic

        ops = {op.name: op for op in model.walk()}
        self.check_model(ops)
        board = coefficients("qemu-mps2-an386")  # MACs do not depend on the board's reuse figures
        for row in self.layers:
            macs = op_traffic(model, ops[row.name], board)[0] if ops[row.name].output is not None else 0
            if macs != row.macs:
                raise CostTableError(
                    f"cost table of {self.model} was profiled on another architecture (layer {row.name}: "
                    f"{row.macs:,} MACs, this model {macs:,}): profile a model of this architecture "
                    "with `tinydyn profile`"
                )

    def to_json(self) -> dict[str, Any]:
        def layer(r: LayerCycles) -> dict[str, Any]:
            d = asdict(r)
            d["fit"] = {("from" if k == "source" else k): v for k, v in asdict(r.fit).items()}
            return d

        def block(b: BlockCycles) -> dict[str, Any]:
            d = asdict(b)
            d["layers_run"], d["layers_skip"] = list(b.layers_run), list(b.layers_skip)
            return d

        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "model_id": self.model_id,
            "board": self.board,
            "unit": self.unit,
            "kind": self.kind,
            "cycle_model": dict(self.cycle_model),
            "control_cycles": self.control_cycles,
            "source": dict(self.source),
            "layers": [layer(r) for r in self.layers],
            "blocks": [block(b) for b in self.blocks],
        }


# ---------------------------------------------------------------------------- writing
def write_cost_table(table: CostTable, path: Path) -> Path:
    """Write ``table`` as JSON (checked first: a table this writes always reads back)."""
    text = json.dumps(table.to_json(), indent=1, allow_nan=False)
    parse_cost_table(text.encode(), str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------- reading
class _Bad(Exception):
    """A schema violation (turned into a one-line CostTableError naming the file)."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_cost_table(path: Path) -> CostTable:
    """Load and check a cost table file (untrusted: size-capped, strict schema)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise CostTableError(f"cost table {path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CostTableError(f"cost table {path}: not a regular file")
    if st.st_size > MAX_BYTES:
        raise CostTableError(f"cost table {path}: {st.st_size} bytes, more than the {MAX_BYTES} allowed")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise CostTableError(f"cost table {path}: cannot read it ({e.strerror})") from None
    return parse_cost_table(data, str(path))


def _no_constants(name: str) -> Any:
    raise _Bad(f"{name} is not a number JSON allows")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Bad(f"key {_shown(k)} appears twice")
        out[k] = v
    return out


def parse_cost_table(data: bytes, where: str = "<data>") -> CostTable:
    """Check and build a cost table from the bytes of its JSON file."""
    try:
        if len(data) > MAX_BYTES:
            raise _Bad(f"more than {MAX_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad("not UTF-8 text") from None
        try:
            doc = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constants)
        except RecursionError:
            raise _Bad("nested too deeply") from None
        except ValueError as e:
            msg = str(e).splitlines()[0] if str(e) else "invalid"
            raise _Bad(f"not JSON ({msg[:80]})") from None
        return _table(doc)
    except _Bad as e:
        raise CostTableError(f"cost table {where}: {e}") from None


def _obj(v: Any, what: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Bad(f"{what} must be an object")
    extra = [k for k in v if k not in keys and k not in optional]
    if extra:
        raise _Bad(f"{what} has an unknown field {_shown(extra[0])}")
    missing = [k for k in keys if k not in v]
    if missing:
        raise _Bad(f"{what} lacks the field {missing[0]!r}")
    return v


def _name(v: Any, what: str) -> str:
    if not isinstance(v, str) or not NAME.fullmatch(v):
        raise _Bad(f"{what} must be an IR name (a letter, then letters, digits, '_' or '.'), got {_shown(v)}")
    return v


def _opt_name(v: Any, what: str) -> str | None:
    return None if v is None else _name(v, what)


def _text(v: Any, what: str) -> str:
    if not isinstance(v, str) or not TEXT.fullmatch(v):
        raise _Bad(f"{what} must be printable ASCII of at most 200 characters")
    return v


def _int(v: Any, what: str, lo: int = 0, hi: int = 2**53) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _Bad(f"{what} must be an integer in [{lo}, {hi}], got {_shown(v)}")
    return v


def _num(v: Any, what: str, lo: float = -MAX_CYCLES) -> float:
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or not math.isfinite(v)
        or not lo <= v <= MAX_CYCLES
    ):
        raise _Bad(f"{what} must be a finite number in [{lo:g}, {MAX_CYCLES:g}], got {_shown(v)}")
    return float(v)


def _opt_num(v: Any, what: str, lo: float = -MAX_CYCLES) -> float | None:
    return None if v is None else _num(v, what, lo)


def _list(v: Any, what: str, cap: int) -> list[Any]:
    if not isinstance(v, list):
        raise _Bad(f"{what} must be a list")
    if len(v) > cap:
        raise _Bad(f"{what} has {len(v)} entries, more than the {cap} allowed")
    return v


def _small_json(v: Any, what: str, depth: int = 0) -> Any:
    """Plain data of bounded depth and size: the informative ``cycle_model`` and ``source``."""
    if depth > 4:
        raise _Bad(f"{what} is nested too deeply")
    if isinstance(v, dict):
        if len(v) > 64:
            raise _Bad(f"{what} has too many fields")
        return {_text(k, f"a key of {what}"): _small_json(x, what, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [_small_json(x, what, depth + 1) for x in _list(v, what, 64)]
    if isinstance(v, str):
        return _text(v, f"a value of {what}")
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return _int(v, f"a value of {what}", -(2**63), 2**64)
    return _num(v, f"a value of {what}")


def _fit(v: Any, what: str) -> Fit:
    d = _obj(v, what, ("from", "images", "distinct_counts"), ("r2", "rmse", "max_abs_error"))
    if d["from"] not in FIT_SOURCES:
        raise _Bad(f"{what}.from must be one of {', '.join(FIT_SOURCES)}")
    return Fit(
        d["from"],
        _int(d["images"], f"{what}.images"),
        _int(d["distinct_counts"], f"{what}.distinct_counts"),
        _opt_num(d.get("r2"), f"{what}.r2"),
        _opt_num(d.get("rmse"), f"{what}.rmse", 0.0),
        _opt_num(d.get("max_abs_error"), f"{what}.max_abs_error", 0.0),
    )


LAYER_KEYS = (
    "name",
    "kind",
    "macs",
    "channels",
    "channel_dim",
    "gate",
    "fixed",
    "per_channel",
    "full",
    "runs",
    "fit",
)
BLOCK_KEYS = (
    "name",
    "gate",
    "gate_layer",
    "gate_cycles",
    "run_cycles",
    "skip_cycles",
    "full_cycles",
    "runs",
    "skips",
    "layers_run",
    "layers_skip",
)
TOP_KEYS = (
    "format",
    "version",
    "model",
    "model_id",
    "board",
    "unit",
    "kind",
    "cycle_model",
    "control_cycles",
    "source",
    "layers",
    "blocks",
)


def _layer(v: Any, i: int) -> LayerCycles:
    d = _obj(v, f"layers[{i}]", LAYER_KEYS)
    name = _name(d["name"], f"layers[{i}].name")
    what = f"layer {name}"
    dim = d["channel_dim"]
    if dim is not None and dim not in CHANNEL_DIMS:
        raise _Bad(f"{what}: channel_dim must be 'output', 'input' or null")
    gate = _opt_name(d["gate"], f"{what}: gate")
    if (dim is None) != (gate is None):
        raise _Bad(f"{what}: channel_dim and gate are given together or not at all")
    per_channel = _opt_num(d["per_channel"], f"{what}: per_channel")
    if per_channel is not None and gate is None:
        raise _Bad(f"{what}: per_channel needs a gate")
    return LayerCycles(
        name,
        _name(d["kind"], f"{what}: kind"),
        _int(d["macs"], f"{what}: macs"),
        _int(d["channels"], f"{what}: channels", 1, MAX_CHANNELS),
        dim,
        gate,
        _num(d["fixed"], f"{what}: fixed"),
        per_channel,
        _num(d["full"], f"{what}: full", 0.0),
        _int(d["runs"], f"{what}: runs"),
        _fit(d["fit"], f"{what}: fit"),
    )


def _block(v: Any, i: int, layers: set[str]) -> BlockCycles:
    d = _obj(v, f"blocks[{i}]", BLOCK_KEYS)
    name = _name(d["name"], f"blocks[{i}].name")
    what = f"block {name}"
    members = []
    for key in ("layers_run", "layers_skip"):
        names = tuple(_name(n, f"{what}: {key}") for n in _list(d[key], f"{what}: {key}", MAX_LAYERS))
        unknown = [n for n in names if n not in layers]
        if unknown:
            raise _Bad(f"{what}: {key} names {_shown(unknown[0])}, which is not a layer of the table")
        members.append(names)
    gate_layer = _opt_name(d["gate_layer"], f"{what}: gate_layer")
    if gate_layer is not None and gate_layer not in layers:
        raise _Bad(f"{what}: gate_layer {gate_layer!r} is not a layer of the table")
    return BlockCycles(
        name,
        _name(d["gate"], f"{what}: gate"),
        gate_layer,
        _opt_num(d["gate_cycles"], f"{what}: gate_cycles", 0.0),
        _opt_num(d["run_cycles"], f"{what}: run_cycles", 0.0),
        _opt_num(d["skip_cycles"], f"{what}: skip_cycles", 0.0),
        _num(d["full_cycles"], f"{what}: full_cycles", 0.0),
        _int(d["runs"], f"{what}: runs"),
        _int(d["skips"], f"{what}: skips"),
        members[0],
        members[1],
    )


def _table(doc: Any) -> CostTable:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise _Bad(f"not a cost table (format {_shown(got)}, want {FORMAT!r})")
    d = _obj(doc, "the file", TOP_KEYS)
    if d["version"] != VERSION or isinstance(d["version"], bool):
        raise _Bad(f"version {_shown(d['version'])} is not the supported {VERSION}: re-run `tinydyn profile`")
    if d["unit"] != "cycles":
        raise _Bad(f"unit must be 'cycles', got {_shown(d['unit'])}")
    if d["kind"] not in ("modelled", "measured"):
        raise _Bad(f"kind must be 'modelled' or 'measured', got {_shown(d['kind'])}")
    model_id = _text(d["model_id"], "model_id")
    if not re.fullmatch(r"[0-9a-f]{1,64}", model_id):
        raise _Bad("model_id must be lowercase hex")
    raw_layers = _list(d["layers"], "layers", MAX_LAYERS)
    if not raw_layers:
        raise _Bad("layers is empty")
    layers = tuple(_layer(v, i) for i, v in enumerate(raw_layers))
    names = [r.name for r in layers]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise _Bad(f"layer {dup!r} appears twice")
    blocks = tuple(_block(v, i, set(names)) for i, v in enumerate(_list(d["blocks"], "blocks", MAX_BLOCKS)))
    bnames = [b.name for b in blocks]
    dup = next((n for n in bnames if bnames.count(n) > 1), None)
    if dup is not None:
        raise _Bad(f"block {dup!r} appears twice")
    if not isinstance(d["cycle_model"], dict) or not isinstance(d["source"], dict):
        raise _Bad("cycle_model and source must be objects")
    return CostTable(
        _text(d["model"], "model"),
        model_id,
        _text(d["board"], "board"),
        "cycles",
        d["kind"],
        _small_json(d["cycle_model"], "cycle_model"),
        _num(d["control_cycles"], "control_cycles", 0.0),
        layers,
        blocks,
        _small_json(d["source"], "source"),
    )
