"""C-level vocabulary shared by the op kinds' C emission and the project: types, identifiers
for IR names, the constant arrays, and the model description the templates render.

Activations are stored HWC (channels innermost) so that a convolution reads contiguous
channel runs; the model input arrives CHW and is transposed once (or used in place when it
has a single channel, where CHW and HWC coincide).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinydyn.codegen.errors import CodegenError
from tinydyn.ir import IRModel, TensorSpec

C_TYPES = {"uint8": "uint8_t", "int8": "int8_t", "int16": "int16_t"}
TD_TYPES = {"uint8": "TD_U8", "int8": "TD_S8", "int16": "TD_S16"}
ELEM_BYTES = {"uint8": 1, "int8": 1, "int16": 2}
MAX_EXITS = 8  # TD_MAX_EXITS in tinydyn_model.h
MAX_CLASSES = 100  # TD_MAX_CLASSES
C_RESERVED = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum",
    "extern", "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return",
    "short", "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
    "volatile", "while", "main", "ctx", "result", "cfg", "image", "p", "q", "g",
    # what model.c.j2 itself defines or calls
    "finish", "exit_head_runs", "exit_leaves", "exp_lut", "lut_mult", "exit_t16", "offsetof", "errno",
    "assert",
}  # fmt: skip
# Identifiers C and its headers reserve or commonly take (C99 7.1.3, 7.26): a layer named like
# one gets the 'l_' prefix, so no IR name can shadow or redefine a library symbol or macro.
_C_RESERVED_SHAPES = re.compile(r"_.*|(str|mem|is|to|wcs)[a-z].*|.*_t|[A-Z0-9_]+|(td|TD)_.*|E[A-Z0-9].*")


def c_name(name: str) -> str:
    """A C identifier for an IR name: 'b0.conv1' → 'b0_conv1'; reserved-looking ones get 'l_'."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name)
    if not ident or ident[0].isdigit() or ident in C_RESERVED or _C_RESERVED_SHAPES.fullmatch(ident):
        ident = "l_" + ident
    return ident


def check_identifiers(ir: IRModel, desc: ModelDesc) -> None:
    """Every identifier the generated C declares from an IR name is distinct (two names that map
    to one identifier, such as 'b0.conv1' and 'b0_conv1', would redefine or alias a symbol)."""
    owners: dict[str, str] = {}
    claims = [(f"t_{c_name(name)}", f"tensor '{name}'") for name in ir.tensors]
    claims += [(layer["cname"], f"op '{layer['name']}'") for layer in desc.layers.values()]
    claims += [(array.name, f"the weights of a layer ('{array.name}')") for array in desc.arrays]
    for ident, owner in claims:
        if ident in owners:
            raise CodegenError(
                f"IR names {owners[ident]} and {owner} both become the C identifier '{ident}': "
                "rename one of them"
            )
        owners[ident] = owner


@dataclass
class CArray:
    """A constant array emitted into model_weights.c."""

    name: str
    ctype: str
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return (
            int(self.values.size)
            * {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "int64_t": 8}[self.ctype]
        )


@dataclass
class ModelDesc:
    layers: dict[str, dict[str, Any]]  # op name → template fields
    arrays: list[CArray]
    tensor_bytes: dict[str, int]
    scratch: dict[str, int]  # op name → scratch bytes
    exits: list[dict[str, Any]]
    input_in_arena: bool
    max_acc: dict[str, int] = field(default_factory=dict)


def tensor_bytes(spec: TensorSpec) -> int:
    if spec.dtype not in ELEM_BYTES:
        raise CodegenError(f"tensor '{spec.name}' has dtype {spec.dtype}, which the C runtime does not store")
    return spec.size * ELEM_BYTES[spec.dtype]


def hwc(spec: TensorSpec) -> tuple[int, int, int]:
    """(C, H, W) of an activation or (C, 1, 1) of a vector."""
    if len(spec.shape) == 3:
        return spec.shape  # type: ignore[return-value]
    return (spec.shape[0], 1, 1)


def tensor_macro(name: str | None) -> str:
    """The C macro of a tensor ('t_' + its identifier), or NULL for none."""
    return f"t_{c_name(name)}" if name else "NULL"
