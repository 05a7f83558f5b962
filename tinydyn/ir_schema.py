"""The IR schema: what a ``model.json`` + ``weights.npz`` pair must be before anything reads it.

An IR directory is an untrusted file a user may have downloaded. Everything downstream —
the reference executor, the memory planner, the C generator, the Makefile — assumes the
checks here: names are safe identifiers (so nothing from a file can steer generated code),
unique in their namespace; every field has its type; dims are positive and capped; every
array has the dtype and shape its op requires; every tensor is written before it is read;
nesting is shallow; and no integer in the reference arithmetic can overflow. A violation
is one line naming the op (or tensor) and the field.

Checking happens in two steps so that no array is read before its size is known:
:func:`check_structure` validates the JSON and returns the arrays the model needs (dtype
and shape per key); the npz reader loads exactly those; :func:`check_arrays` then checks
their values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinydyn.errors import TinydynError

# Caps. They bound memory and work for any file while leaving room far beyond the models
# an MCU or a ZedBoard can hold (the largest tensor of MLPerf Tiny's ResNet-8 has 16k
# elements; a 256x256x64 activation has 4M).
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,63}")
MAX_DIM = 4096  # any single dimension
MAX_ELEMENTS = 1 << 24  # elements of one tensor or one array (16 Mi)
MAX_TOTAL_ARRAY_BYTES = 256 << 20  # all arrays of a model together
MAX_TENSORS = 4096
MAX_OPS = 4096  # ops in all, nested ones included
MAX_DEPTH = 8  # guard/exit nesting (LC-Net needs 1: a guard, or an exit head)
MAX_CLASSES = 1000
MAX_CLASS_NAME = 64
MAX_SHIFT = 62  # requantisation shifts are 1..62 (docs/ARITHMETIC.md)

DTYPE_RANGES = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "int16": (-32768, 32767),
    "int32": (-(2**31), 2**31 - 1),
}
TENSOR_KINDS = ("activation", "salience", "logits", "vector")
ROLES = ("backbone", "gate", "exit_head")
GATE_KEYS = ("channel_gate", "block_gate", "input_mask")  # attrs naming a salience tensor
SALIENCE_ONE = 255

ArraySpec = tuple[str, tuple[int | None, ...]]  # (numpy dtype name, shape); None: a kernel size 1..16


class IRError(TinydynError):
    """An IR file that is missing, from another version, or inconsistent."""


# ----------------------------------------------------------------------------- field types
def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def safe_name(value: Any) -> bool:
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


def _show(value: Any) -> str:
    """A value for an error message: short, one line, no control characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _where(op_name: Any) -> str:
    return f"IR op {_show(op_name)}" if not safe_name(op_name) else f"IR op '{op_name}'"


@dataclass(frozen=True)
class Field:
    """One attr of an op kind: its check and whether it must be present."""

    check: Callable[[Any], bool]
    expect: str  # what a valid value is, for the message
    required: bool = False


def _int_range(lo: int, hi: int) -> Field:
    return Field(lambda v: is_int(v) and lo <= v <= hi, f"an integer in {lo}..{hi}")


_TENSOR_REF = Field(safe_name, "a tensor name")
_OUT_RANGE = Field(
    lambda v: isinstance(v, list) and len(v) == 2 and all(is_int(x) for x in v) and v[0] <= v[1],
    "[lo, hi] integers with lo <= hi",
    required=True,
)
_MACS = Field(lambda v: is_int(v) and 0 <= v < 2**40, "a non-negative integer", required=True)
_ROLE = Field(lambda v: v in ROLES, f"one of {', '.join(ROLES)}")
_WEIGHTED_ATTRS = {
    "out_range": _OUT_RANGE,
    "macs": _MACS,
    "role": _ROLE,
    **{key: _TENSOR_REF for key in GATE_KEYS},
}


@dataclass(frozen=True)
class KindSchema:
    """What an op of one kind carries: named inputs, an output, attrs, nested blocks."""

    inputs: tuple[str, ...] = ()  # required input slots
    optional_inputs: tuple[str, ...] = ()
    output: bool = True
    attrs: dict[str, Field] | None = None
    blocks: tuple[str, ...] = ()  # "then" / "orelse"


KINDS: dict[str, KindSchema] = {
    "conv2d": KindSchema(
        ("x",),
        ("residual",),
        attrs={
            **_WEIGHTED_ATTRS,
            "stride": Field(lambda v: is_int(v) and 1 <= v <= 16, "an integer in 1..16", True),
            "padding": Field(lambda v: is_int(v) and 0 <= v <= 16, "an integer in 0..16", True),
            "groups": _int_range(1, MAX_DIM),
        },
    ),
    "linear": KindSchema(("x",), ("residual",), attrs=dict(_WEIGHTED_ATTRS)),
    "gap": KindSchema(("x",), attrs={}),
    "maxpool": KindSchema(
        ("x",),
        attrs={
            "kernel": Field(lambda v: is_int(v) and 1 <= v <= 16, "an integer in 1..16", True),
            "stride": Field(lambda v: is_int(v) and 1 <= v <= 16, "an integer in 1..16", True),
            "padding": _int_range(0, 15),
        },
    ),
    "rescale": KindSchema(("x",), attrs={"out_range": _OUT_RANGE}),
    "guard": KindSchema(
        output=False,
        attrs={"gate": Field(safe_name, "a tensor name", True)},
        blocks=("then", "orelse"),
    ),
    "exit": KindSchema(
        output=False,
        attrs={
            "index": Field(lambda v: is_int(v) and 0 <= v < 64, "an integer in 0..63", True),
            "final": Field(lambda v: isinstance(v, bool), "true or false"),
            "logits": Field(safe_name, "a tensor name", True),
            "next_cost_max": Field(lambda v: is_int(v) and 0 <= v < 2**40, "a non-negative integer"),
        },
        blocks=("then",),
    ),
}
KINDS["avgpool"] = KINDS["maxpool"]
RESERVED_KINDS = ("concat", "split", "lstm_gate")
OP_KEYS = {"kind", "name", "inputs", "output", "attrs", "then", "orelse"}
TOP_KEYS = {"format", "version", "name", "input", "classes", "tensors", "ops", "meta"}
TENSOR_KEYS = {"shape", "dtype", "scale", "kind"}


def conv_output_hw(h: int, w: int, k: int, stride: int, pad: int) -> tuple[int, int]:
    return (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1


# ----------------------------------------------------------------------------- structure
def check_structure(data: Any) -> dict[str, ArraySpec]:
    """Validate a parsed ``model.json``; return the arrays its ops need (key → dtype, shape)."""
    if not isinstance(data, dict):
        raise IRError("IR model.json must hold a JSON object: re-run the lowering")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise IRError(f"IR model.json has unknown field {_show(sorted(unknown)[0])}: re-run the lowering")
    for key in TOP_KEYS - {"meta"}:
        if key not in data:
            raise IRError(f"IR model.json has no '{key}' field: re-run the lowering")
    if not safe_name(data["name"]):
        raise IRError(
            f"IR model name {_show(data['name'])} is not a safe identifier (letters, digits, '_' and "
            "'.', starting with a letter, at most 64 characters): rename the model"
        )
    _check_classes(data["classes"])
    tensors = _check_tensors(data["tensors"])
    if not safe_name(data["input"]) or data["input"] not in tensors:
        raise IRError(f"IR input {_show(data['input'])} is not one of the IR's tensors: re-run the lowering")
    _check_meta(data.get("meta", {}))
    checker = _StructureChecker(tensors, data["input"], len(data["classes"]))
    checker.check_block(data["ops"], "ops", depth=0)
    checker.check_exits(data["ops"])
    total = sum(max_array_bytes(spec) for spec in checker.arrays.values())
    if total > MAX_TOTAL_ARRAY_BYTES:
        raise IRError(
            f"IR arrays may take {total} bytes, more than the cap {MAX_TOTAL_ARRAY_BYTES}: split the model"
        )
    return checker.arrays


def _check_classes(classes: Any) -> None:
    if not isinstance(classes, list) or not 2 <= len(classes) <= MAX_CLASSES:
        raise IRError(f"IR 'classes' must be a list of 2..{MAX_CLASSES} class names: re-run the lowering")
    for name in classes:
        if not isinstance(name, str) or not 0 < len(name) <= MAX_CLASS_NAME or not name.isprintable():
            raise IRError(
                f"IR class name {_show(name)} must be printable text of 1..{MAX_CLASS_NAME} "
                "characters: fix the class list"
            )


def _check_tensors(tensors: Any) -> dict[str, tuple[tuple[int, ...], str, str]]:
    if not isinstance(tensors, dict) or not 0 < len(tensors) <= MAX_TENSORS:
        raise IRError(f"IR 'tensors' must be an object of 1..{MAX_TENSORS} tensors: re-run the lowering")
    out: dict[str, tuple[tuple[int, ...], str, str]] = {}
    for name, spec in tensors.items():
        if not safe_name(name):
            raise IRError(
                f"IR tensor name {_show(name)} is not a safe identifier (letters, digits, '_' and '.', "
                "starting with a letter, at most 64 characters): rename it"
            )
        where = f"IR tensor '{name}'"
        if not isinstance(spec, dict) or not {"shape", "dtype", "scale"} <= set(spec) <= TENSOR_KEYS:
            raise IRError(f"{where} must have exactly shape, dtype, scale and kind: re-run the lowering")
        shape = spec["shape"]
        if (
            not isinstance(shape, list)
            or len(shape) not in (1, 3)
            or not all(is_int(d) and 1 <= d <= MAX_DIM for d in shape)
        ):
            raise IRError(
                f"{where} field 'shape' is {_show(shape)}: expected [C] or [C, H, W] of integers in "
                f"1..{MAX_DIM}"
            )
        if math.prod(shape) > MAX_ELEMENTS:
            raise IRError(f"{where} has {math.prod(shape)} elements, more than the cap {MAX_ELEMENTS}")
        if not isinstance(spec["dtype"], str) or spec["dtype"] not in DTYPE_RANGES:
            raise IRError(
                f"{where} field 'dtype' is {_show(spec['dtype'])}: expected one of {', '.join(DTYPE_RANGES)}"
            )
        scale = spec["scale"]
        if (
            not isinstance(scale, int | float)
            or isinstance(scale, bool)
            or not (math.isfinite(scale) and scale > 0)
        ):
            raise IRError(f"{where} field 'scale' is {_show(scale)}: expected a positive finite number")
        kind = spec.get("kind", "activation")
        if not isinstance(kind, str) or kind not in TENSOR_KINDS:
            raise IRError(f"{where} field 'kind' is {_show(kind)}: expected one of {', '.join(TENSOR_KINDS)}")
        out[name] = (tuple(shape), spec["dtype"], kind)
    return out


def _check_meta(meta: Any) -> None:
    if not isinstance(meta, dict):
        raise IRError("IR 'meta' must be a JSON object: re-run the lowering")
    macs = meta.get("static_backbone_macs", 0)
    if not is_int(macs) or not 0 <= macs < 2**40:
        raise IRError(
            f"IR meta field 'static_backbone_macs' is {_show(macs)}: expected a non-negative integer"
        )
    scale = meta.get("input_scale", 1.0)
    if (
        not isinstance(scale, int | float)
        or isinstance(scale, bool)
        or not (math.isfinite(scale) and scale > 0)
    ):
        raise IRError(f"IR meta field 'input_scale' is {_show(scale)}: expected a positive finite number")
    if not isinstance(meta.get("model_config", {}), dict):
        raise IRError("IR meta field 'model_config' must be a JSON object: re-run the lowering")


class _StructureChecker:
    """Walks the schedule once: fields, names, shapes, and def-before-use of every tensor."""

    def __init__(self, tensors: dict[str, tuple[tuple[int, ...], str, str]], model_input: str, classes: int):
        self.tensors = tensors
        self.classes = classes
        self.defined = {model_input}
        self.written = {model_input}  # single assignment: no tensor is written on two paths in a row
        self.op_names: set[str] = set()
        self.arrays: dict[str, ArraySpec] = {}
        self.count = 0

    # --- schedule -------------------------------------------------------------------
    def check_block(self, ops: Any, field_name: str, depth: int, owner: str | None = None) -> None:
        if depth > MAX_DEPTH:
            raise IRError(f"{_where(owner)} nests blocks deeper than {MAX_DEPTH} levels: flatten the IR")
        if not isinstance(ops, list):
            where = "IR 'ops'" if owner is None else f"{_where(owner)} field '{field_name}'"
            raise IRError(f"{where} must be a list of ops: re-run the lowering")
        for op in ops:
            self.check_op(op, depth)

    def check_op(self, op: Any, depth: int) -> None:
        self.count += 1
        if self.count > MAX_OPS:
            raise IRError(f"IR has more than {MAX_OPS} ops: split the model")
        if not isinstance(op, dict):
            raise IRError(f"IR op #{self.count} is {type(op).__name__}, not an object: re-run the lowering")
        name = op.get("name")
        if not safe_name(name):
            raise IRError(
                f"IR op #{self.count} has name {_show(name)}: op names must be safe identifiers "
                "(letters, digits, '_' and '.', starting with a letter, at most 64 characters)"
            )
        where = f"IR op '{name}'"
        if name in self.op_names:
            raise IRError(f"{where} is defined twice: op names must be unique")
        self.op_names.add(name)
        unknown = set(op) - OP_KEYS
        if unknown:
            raise IRError(f"{where} has unknown field {_show(sorted(unknown)[0])}: re-run the lowering")
        kind = op.get("kind")
        if kind in RESERVED_KINDS:
            raise IRError(
                f"{where} has kind '{kind}', reserved for DDI/S2DNAS models and not implemented in this "
                "version: lower a model without it"
            )
        if not isinstance(kind, str) or kind not in KINDS:
            raise IRError(
                f"{where} field 'kind' is {_show(kind)}: expected one of {', '.join(sorted(KINDS))}"
            )
        schema = KINDS[kind]
        inputs = self._check_inputs(op, schema, where)
        attrs = self._check_attrs(op, schema, where)
        for key in ("then", "orelse"):
            if key in op and key not in schema.blocks:
                raise IRError(f"{where} of kind '{kind}' cannot have '{key}' ops")
        if schema.output:
            out = op.get("output")
            if not safe_name(out) or out not in self.tensors:
                raise IRError(f"{where} field 'output' is {_show(out)}: expected one of the IR's tensors")
        elif "output" in op:
            raise IRError(f"{where} of kind '{kind}' has no output")
        for ref in [*inputs.values(), *(attrs[k] for k in (*GATE_KEYS, "gate") if k in attrs)]:
            if ref not in self.tensors:
                raise IRError(f"{where} refers to unknown tensor {_show(ref)}")
            if ref not in self.defined:
                raise IRError(f"{where} reads tensor '{ref}' before any op writes it: reorder the schedule")
        getattr(self, f"shape_{kind}")(name, op, inputs, attrs, where)
        if kind == "guard":
            self._check_guard(op, name, depth)
        elif kind == "exit":
            self._check_exit(op, name, attrs, depth, where)
        else:
            out = op["output"]
            if out in self.written:
                raise IRError(f"{where} writes tensor '{out}', which another op already wrote: rename one")
            self.written.add(out)
            self.defined.add(out)

    def _check_inputs(self, op: dict[str, Any], schema: KindSchema, where: str) -> dict[str, str]:
        inputs = op.get("inputs", {})
        if not isinstance(inputs, dict):
            raise IRError(f"{where} field 'inputs' must be an object: re-run the lowering")
        allowed = set(schema.inputs) | set(schema.optional_inputs)
        for slot, ref in inputs.items():
            if slot not in allowed:
                raise IRError(f"{where} has unknown input {_show(slot)} for kind '{op['kind']}'")
            if not safe_name(ref):
                raise IRError(f"{where} input '{slot}' is {_show(ref)}: expected a tensor name")
        for slot in schema.inputs:
            if slot not in inputs:
                raise IRError(f"{where} has no input '{slot}': re-run the lowering")
        return dict(inputs)

    def _check_attrs(self, op: dict[str, Any], schema: KindSchema, where: str) -> dict[str, Any]:
        attrs = op.get("attrs", {})
        if not isinstance(attrs, dict):
            raise IRError(f"{where} field 'attrs' must be an object: re-run the lowering")
        fields = schema.attrs or {}
        for key, value in attrs.items():
            if key not in fields:
                raise IRError(f"{where} has unknown attr {_show(key)} for kind '{op['kind']}'")
            if not fields[key].check(value):
                raise IRError(f"{where} attr '{key}' is {_show(value)}: expected {fields[key].expect}")
        for key, spec in fields.items():
            if spec.required and key not in attrs:
                raise IRError(f"{where} has no attr '{key}': re-run the lowering")
        return dict(attrs)

    def _check_guard(self, op: dict[str, Any], name: str, depth: int) -> None:
        before_defined, before_written = set(self.defined), set(self.written)
        self.check_block(op.get("then", []), "then", depth + 1, name)
        then_defined, then_written = self.defined, self.written
        self.defined, self.written = set(before_defined), set(before_written)
        self.check_block(op.get("orelse", []), "orelse", depth + 1, name)
        # after the guard only what both branches wrote is available; what either wrote is taken
        self.defined = before_defined | (then_defined & self.defined)
        self.written = then_written | self.written

    def _check_exit(
        self, op: dict[str, Any], name: str, attrs: dict[str, Any], depth: int, where: str
    ) -> None:
        before = set(self.defined)
        self.check_block(op.get("then", []), "then", depth + 1, name)
        logits = attrs["logits"]
        if logits not in self.defined:
            raise IRError(f"{where} attr 'logits' names tensor '{logits}', which its head never writes")
        self.defined = before  # an early head may not run: nothing it wrote is available after it

    def check_exits(self, ops: list[Any]) -> None:
        exits = [op for op in self._walk(ops) if op["kind"] == "exit"]
        last = ops[-1] if ops else None
        finals = [op for op in exits if op.get("attrs", {}).get("final")]
        if len(finals) != 1 or last is None or last["kind"] != "exit" or not last["attrs"].get("final"):
            raise IRError("IR schedule must end in exactly one final exit (the last classifier)")
        indices = sorted(op["attrs"]["index"] for op in exits)
        if indices != list(range(len(exits))) or last["attrs"]["index"] != len(exits) - 1:
            raise IRError(
                f"IR exit indices are {indices}: they must be 0..{len(exits) - 1}, the final exit last"
            )
        for op in exits:
            if op not in ops:
                raise IRError(
                    f"IR op '{op['name']}' is an exit inside a block: exits belong at the top level"
                )

    def _walk(self, ops: list[Any]) -> list[dict[str, Any]]:
        out = []
        for op in ops:
            out.append(op)
            out.extend(self._walk(op.get("then", [])))
            out.extend(self._walk(op.get("orelse", [])))
        return out

    # --- shapes per kind ---------------------------------------------------------------
    def spec(self, ref: str) -> tuple[tuple[int, ...], str, str]:
        return self.tensors[ref]

    def _gate(self, where: str, attrs: dict[str, Any], key: str, size: int) -> None:
        ref = attrs.get(key)
        if not ref:
            return
        shape, dtype, _ = self.spec(ref)
        if dtype != "uint8" or shape != (size,):
            raise IRError(
                f"{where} attr '{key}' names tensor '{ref}' of {dtype} {list(shape)}: expected a uint8 "
                f"salience of shape [{size}]"
            )

    def _requant(self, name: str, where: str, out: str, attrs: dict[str, Any], residual: str | None) -> None:
        shape, dtype, _ = self.spec(out)
        lo, hi = DTYPE_RANGES[dtype]
        r_lo, r_hi = attrs["out_range"]
        if r_lo < lo or r_hi > hi:
            raise IRError(f"{where} attr 'out_range' [{r_lo}, {r_hi}] exceeds its output's {dtype} range")
        cout = shape[0]
        self.arrays[f"{name}.bias"] = ("int32", (cout,))
        self.arrays[f"{name}.mult"] = ("int64", (cout,))
        self.arrays[f"{name}.shift"] = ("int32", (cout,))
        if residual is not None:
            if self.spec(residual)[0] != shape:
                raise IRError(
                    f"{where} input 'residual' has shape {list(self.spec(residual)[0])}, "
                    f"its output {list(shape)}"
                )
            self.arrays[f"{name}.res_mult"] = ("int64", (cout,))

    def shape_conv2d(
        self, name: str, op: dict[str, Any], inputs: dict[str, str], attrs: dict[str, Any], where: str
    ) -> None:
        (x_shape, _, _), (o_shape, _, _) = self.spec(inputs["x"]), self.spec(op["output"])
        if len(x_shape) != 3 or len(o_shape) != 3:
            raise IRError(f"{where}: a conv2d reads and writes [C, H, W] tensors")
        groups = attrs.get("groups", 1)
        cin, cout = x_shape[0], o_shape[0]
        if cin % groups or cout % groups:
            raise IRError(
                f"{where} attr 'groups' ({groups}) does not divide its {cin} input and {cout} output channels"
            )
        # the kernel size is the weight's (square, checked with the arrays in check_array_values)
        self.arrays[f"{name}.weight"] = ("int8", (cout, cin // groups, None, None))
        self._gate(where, attrs, "channel_gate", cout)
        self._gate(where, attrs, "block_gate", 1)
        self._gate(where, attrs, "input_mask", cin)
        if attrs.get("channel_gate") and attrs.get("block_gate"):
            raise IRError(f"{where} has both a channel gate and a block gate")
        self._requant(name, where, op["output"], attrs, inputs.get("residual"))

    def shape_linear(
        self, name: str, op: dict[str, Any], inputs: dict[str, str], attrs: dict[str, Any], where: str
    ) -> None:
        (x_shape, _, _), (o_shape, _, o_kind) = self.spec(inputs["x"]), self.spec(op["output"])
        if len(x_shape) != 1 or len(o_shape) != 1:
            raise IRError(f"{where}: a linear reads and writes [C] vectors")
        cin, cout = x_shape[0], o_shape[0]
        self.arrays[f"{name}.weight"] = ("int8", (cout, cin))
        if attrs["macs"] != cin * cout:
            raise IRError(
                f"{where} attr 'macs' is {attrs['macs']}, its shapes give {cin * cout}: re-run the lowering"
            )
        if attrs.get("role") == "gate" and (o_kind != "salience" or self.spec(op["output"])[1] != "uint8"):
            raise IRError(f"{where} is a gate: its output must be a uint8 salience tensor")
        self._gate(where, attrs, "channel_gate", cout)
        self._gate(where, attrs, "block_gate", 1)
        self._gate(where, attrs, "input_mask", cin)
        if attrs.get("channel_gate") and attrs.get("block_gate"):
            raise IRError(f"{where} has both a channel gate and a block gate")
        self._requant(name, where, op["output"], attrs, inputs.get("residual"))

    def shape_gap(
        self, name: str, op: dict[str, Any], inputs: dict[str, str], attrs: dict[str, Any], where: str
    ) -> None:
        (x_shape, x_dtype, _), (o_shape, o_dtype, _) = self.spec(inputs["x"]), self.spec(op["output"])
        if len(x_shape) != 3 or o_shape != (x_shape[0],) or x_dtype != o_dtype or x_dtype != "uint8":
            raise IRError(f"{where}: a gap maps a uint8 [C, H, W] tensor to a uint8 [C] vector")

    def shape_maxpool(
        self, name: str, op: dict[str, Any], inputs: dict[str, str], attrs: dict[str, Any], where: str
    ) -> None:
        (x_shape, x_dtype, _), (o_shape, o_dtype, _) = self.spec(inputs["x"]), self.spec(op["output"])
        k, stride, pad = attrs["kernel"], attrs["stride"], attrs.get("padding", 0)
        if pad >= k:
            raise IRError(f"{where} attr 'padding' ({pad}) must be smaller than its kernel ({k})")
        if (
            len(x_shape) != 3
            or x_dtype != o_dtype
            or len(o_shape) != 3
            or o_shape[0] != x_shape[0]
            or conv_output_hw(x_shape[1], x_shape[2], k, stride, pad) != o_shape[1:]
        ):
            raise IRError(
                f"{where}: output {list(o_shape)} {o_dtype} does not follow from "
                f"input {list(x_shape)} {x_dtype}"
            )

    shape_avgpool = shape_maxpool

    def shape_rescale(
        self, name: str, op: dict[str, Any], inputs: dict[str, str], attrs: dict[str, Any], where: str
    ) -> None:
        if "out_range" not in attrs:
            raise IRError(f"{where} has no attr 'out_range': re-run the lowering")
        x_shape, o_shape = self.spec(inputs["x"])[0], self.spec(op["output"])[0]
        if x_shape != o_shape:
            raise IRError(f"{where}: a rescale keeps its shape ({list(x_shape)} -> {list(o_shape)})")
        self._requant(name, where, op["output"], attrs, None)
        del self.arrays[f"{name}.bias"], self.arrays[f"{name}.mult"]
        self.arrays[f"{name}.res_mult"] = ("int64", (o_shape[0],))

    def shape_guard(
        self, name: str, op: dict[str, Any], inputs: dict[str, str], attrs: dict[str, Any], where: str
    ) -> None:
        shape, dtype, _ = self.spec(attrs["gate"])
        if shape != (1,) or dtype != "uint8":
            raise IRError(
                f"{where} attr 'gate' names a {dtype} {list(shape)} tensor: "
                "expected a uint8 scalar salience [1]"
            )

    def shape_exit(
        self, name: str, op: dict[str, Any], inputs: dict[str, str], attrs: dict[str, Any], where: str
    ) -> None:
        shape, dtype, _ = self.spec(attrs["logits"])
        if shape != (self.classes,) or dtype != "int16":
            raise IRError(
                f"{where} attr 'logits' names a {dtype} {list(shape)} tensor: "
                f"expected int16 [{self.classes}], "
                "one logit per class"
            )


# ----------------------------------------------------------------------------- arrays
MAX_KERNEL = 16


def shape_matches(shape: tuple[int, ...], pattern: tuple[int | None, ...]) -> bool:
    return len(shape) == len(pattern) and all(
        s == p if p is not None else 1 <= s <= MAX_KERNEL for s, p in zip(shape, pattern, strict=True)
    )


def max_array_bytes(spec: ArraySpec) -> int:
    dtype, pattern = spec
    return math.prod(MAX_KERNEL if p is None else p for p in pattern) * np.dtype(dtype).itemsize


def shape_text(pattern: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("k" if p is None else str(p) for p in pattern) + "]"


def check_array_specs(arrays: dict[str, np.ndarray], expected: dict[str, ArraySpec]) -> None:
    """Every expected array present with its dtype and shape, and nothing else."""
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise IRError(f"IR array {_show(extra[0])} belongs to no op: remove it or re-run the lowering")
    for key, (dtype, shape) in expected.items():
        if key not in arrays:
            raise IRError(f"IR array '{key}' is missing: re-run the lowering")
        got = arrays[key]
        if not isinstance(got, np.ndarray) or str(got.dtype) != dtype or not shape_matches(got.shape, shape):
            raise IRError(
                f"IR array '{key}' is {getattr(got, 'dtype', type(got).__name__)} "
                f"{list(getattr(got, 'shape', []))}: expected {dtype} {shape_text(shape)}"
            )


def check_array_values(model: Any) -> None:
    """Requantisation parameters in range and, for any input, no int32 accumulator or int64
    requantisation overflow (the bound the lowering proves, re-proved for a loaded file)."""
    for op in model.walk():
        if op.kind == "conv2d":
            _check_conv_kernel(model, op)
        if op.kind not in ("conv2d", "linear", "rescale"):
            continue
        shift = model.arrays[f"{op.name}.shift"]
        if np.any(shift < 1) or np.any(shift > MAX_SHIFT):
            raise IRError(f"IR op '{op.name}' array 'shift' has values outside 1..{MAX_SHIFT}")
        if op.kind == "rescale":
            res = np.abs(model.arrays[f"{op.name}.res_mult"]).astype(np.float64)
            lo, hi = DTYPE_RANGES[model.tensors[op.inputs["x"]].dtype]
            if np.any(res * max(-lo, hi) + 2.0 ** (shift - 1) >= 2.0**63):
                raise IRError(f"IR op '{op.name}' can overflow its int64 requantisation: re-run the lowering")
            continue
        prove_bounds(model, op)


def _check_conv_kernel(model: Any, op: Any) -> None:
    """The weight's kernel is square and maps the input to the output; MACs follow from it."""
    cout, cin_g, kh, kw = model.arrays[f"{op.name}.weight"].shape
    x_shape, o_shape = model.tensors[op.inputs["x"]].shape, model.tensors[op.output].shape
    stride, pad = op.attrs["stride"], op.attrs["padding"]
    where = f"IR op '{op.name}'"
    if kh != kw or pad >= kh or conv_output_hw(x_shape[1], x_shape[2], kh, stride, pad) != tuple(o_shape[1:]):
        raise IRError(
            f"{where}: a {kh}x{kw} kernel with stride {stride} and padding {pad} does not map "
            f"{list(x_shape)} to {list(o_shape)} (kernels are square, padding < kernel)"
        )
    macs = cout * cin_g * kh * kw * o_shape[1] * o_shape[2]
    if op.attrs["macs"] != macs:
        raise IRError(
            f"{where} attr 'macs' is {op.attrs['macs']}, its shapes give {macs}: re-run the lowering"
        )


def prove_bounds(model: Any, op: Any) -> None:
    """No input makes the int32 accumulator or the int64 requantisation overflow."""
    lo, hi = DTYPE_RANGES[model.tensors[op.inputs["x"]].dtype]
    weight = model.arrays[f"{op.name}.weight"].astype(np.int64)
    mult = model.arrays[f"{op.name}.mult"]
    if np.any(mult < 0):
        raise IRError(f"IR op '{op.name}' array 'mult' has negative values: re-run the lowering")
    acc_max = np.abs(weight).reshape(weight.shape[0], -1).sum(axis=1) * max(-lo, hi) + np.abs(
        model.arrays[f"{op.name}.bias"].astype(np.int64)
    )
    if np.any(acc_max >= 2**31):
        raise IRError(
            f"layer '{op.name}' can overflow its int32 accumulator (bound {int(acc_max.max())}): "
            "reduce its fan-in or input range"
        )
    gated = op.attrs.get("channel_gate") or op.attrs.get("block_gate")
    gate_max = SALIENCE_ONE if gated else 1
    shift = model.arrays[f"{op.name}.shift"].astype(np.float64)
    value = acc_max.astype(np.float64) * gate_max * mult.astype(np.float64) + 2.0 ** (shift - 1)
    if "residual" in op.inputs:
        r_lo, r_hi = DTYPE_RANGES[model.tensors[op.inputs["residual"]].dtype]
        value = value + max(-r_lo, r_hi) * np.abs(model.arrays[f"{op.name}.res_mult"]).astype(np.float64)
    if np.any(value >= 2.0**63):
        raise IRError(f"layer '{op.name}' can overflow its int64 requantisation: retrain with smaller scales")
