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


OP_KEYS = {"kind", "name", "inputs", "output", "attrs", "then", "orelse"}
TOP_KEYS = {"format", "version", "name", "input", "classes", "tensors", "ops", "meta"}
TENSOR_KEYS = {"shape", "dtype", "scale", "kind"}


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
    scales = {name: float(spec["scale"]) for name, spec in data["tensors"].items()}
    checker = ShapeChecker(tensors, data["input"], len(data["classes"]), scales)
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


class ShapeChecker:
    """Walks the schedule once: fields, names, nesting, def-before-use of every tensor; each
    op's kind (:mod:`tinydyn.ops`) checks its own shapes and declares its arrays here."""

    def __init__(
        self,
        tensors: dict[str, tuple[tuple[int, ...], str, str]],
        model_input: str,
        classes: int,
        scales: dict[str, float] | None = None,
    ):
        self.tensors = tensors
        self.scales = scales or {}  # tensor name → its real scale, for ops that must match them
        self.classes = classes
        self.defined = {model_input}
        self.written = {model_input}  # single assignment: no tensor is written on two paths in a row
        self.op_names: set[str] = set()
        self.arrays: dict[str, ArraySpec] = {}
        self.count = 0

    # --- what op kinds use ---------------------------------------------------------------
    def spec(self, ref: str) -> tuple[tuple[int, ...], str, str]:
        """(shape, dtype, kind) of a tensor the op names (already known to exist)."""
        return self.tensors[ref]

    def scale(self, ref: str) -> float:
        """The real scale of a tensor the op names (1.0 where the caller gave none)."""
        return self.scales.get(ref, 1.0)

    def gate(self, where: str, attrs: dict[str, Any], key: str, size: int) -> None:
        """An attr naming a uint8 salience tensor of ``size`` elements, if present."""
        ref = attrs.get(key)
        if not ref:
            return
        shape, dtype, _ = self.spec(ref)
        if dtype != "uint8" or shape != (size,):
            raise IRError(
                f"{where} attr '{key}' names tensor '{ref}' of {dtype} {list(shape)}: expected a uint8 "
                f"salience of shape [{size}]"
            )

    def write(self, tensor: str, where: str) -> None:
        if tensor in self.written:
            raise IRError(f"{where} writes tensor '{tensor}', which another op already wrote: rename one")
        self.written.add(tensor)
        self.defined.add(tensor)

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
        from tinydyn.ops import OPS  # the kinds sit above the schema

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
        kind_name = op.get("kind")
        if not isinstance(kind_name, str) or kind_name not in OPS:
            raise IRError(
                f"{where} field 'kind' is {_show(kind_name)}: expected one of {', '.join(sorted(OPS))}"
            )
        kind = OPS[kind_name]
        inputs = self._check_inputs(op, kind, where)
        attrs = self._check_attrs(op, kind, where)
        for key in ("then", "orelse"):
            if key in op and key not in kind.blocks:
                raise IRError(f"{where} of kind '{kind_name}' cannot have '{key}' ops")
        if kind.has_output:
            out = op.get("output")
            if not safe_name(out) or out not in self.tensors:
                raise IRError(f"{where} field 'output' is {_show(out)}: expected one of the IR's tensors")
        elif "output" in op:
            raise IRError(f"{where} of kind '{kind_name}' has no output")
        for ref in [*inputs.values(), *(attrs[k] for k in (*GATE_KEYS, "gate") if k in attrs)]:
            if ref not in self.tensors:
                raise IRError(f"{where} refers to unknown tensor {_show(ref)}")
            if ref not in self.defined:
                raise IRError(f"{where} reads tensor '{ref}' before any op writes it: reorder the schedule")
        for ref in (attrs[k] for k in ("logits", *kind.output_attrs) if k in attrs):
            if ref not in self.tensors:
                raise IRError(f"{where} refers to unknown tensor {_show(ref)}")
        kind.check_shapes(self, op, where)
        kind.check_flow(self, op, depth)

    def _check_inputs(self, op: dict[str, Any], kind: Any, where: str) -> dict[str, str]:
        inputs = op.get("inputs", {})
        if not isinstance(inputs, dict):
            raise IRError(f"{where} field 'inputs' must be an object: re-run the lowering")
        allowed = set(kind.inputs) | set(kind.optional_inputs)
        for slot, ref in inputs.items():
            if slot not in allowed:
                raise IRError(f"{where} has unknown input {_show(slot)} for kind '{op['kind']}'")
            if not safe_name(ref):
                raise IRError(f"{where} input '{slot}' is {_show(ref)}: expected a tensor name")
        for slot in kind.inputs:
            if slot not in inputs:
                raise IRError(f"{where} has no input '{slot}': re-run the lowering")
        return dict(inputs)

    def _check_attrs(self, op: dict[str, Any], kind: Any, where: str) -> dict[str, Any]:
        attrs = op.get("attrs", {})
        if not isinstance(attrs, dict):
            raise IRError(f"{where} field 'attrs' must be an object: re-run the lowering")
        for key, value in attrs.items():
            if key not in kind.attrs:
                raise IRError(f"{where} has unknown attr {_show(key)} for kind '{op['kind']}'")
            if not kind.attrs[key].check(value):
                raise IRError(f"{where} attr '{key}' is {_show(value)}: expected {kind.attrs[key].expect}")
        for key, spec in kind.attrs.items():
            if spec.required and key not in attrs:
                raise IRError(f"{where} has no attr '{key}': re-run the lowering")
        return dict(attrs)

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
            if not any(op is top for top in ops):
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
    """Array values each kind requires: ranges, square kernels, and for any input no int32
    accumulator or int64 requantisation overflow (the lowering's proof, re-proved for a file)."""
    from tinydyn.ops import OPS

    for op in model.walk():
        OPS[op.kind].check_values(model, op)
