"""From IR ops to the C-level description the templates render: one entry per layer with
its kernel parameters, packed constant arrays, scratch needs and gate wiring.

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
from tinydyn.codegen.packing import pack_conv, pack_linear, prove_accumulators, prove_requant, round4
from tinydyn.codegen.planner import align
from tinydyn.ir import IRModel, Op, TensorSpec
from tinydyn.quantize.policy import lut_multiplier

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
    "finish", "exit_head_runs", "exit_leaves", "exp_lut", "lut_mult", "offsetof", "errno", "assert",
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
            * {"int8_t": 1, "uint8_t": 1, "uint16_t": 2, "int32_t": 4, "int64_t": 8}[self.ctype]
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


def describe(ir: IRModel) -> ModelDesc:
    """Check every op is supported and build the per-layer template fields."""
    if ir.num_classes > MAX_CLASSES:
        raise CodegenError(f"model has {ir.num_classes} classes, the firmware allows {MAX_CLASSES}")
    exits = sorted(ir.exits(), key=lambda op: op.attrs["index"])
    if len(exits) > MAX_EXITS:
        raise CodegenError(f"model has {len(exits)} exits, the firmware allows {MAX_EXITS}")
    if ir.input_spec.dtype != "uint8" or len(ir.input_spec.shape) != 3:
        raise CodegenError("the firmware takes uint8 CHW images: the IR input must be uint8 (C, H, W)")
    desc = ModelDesc({}, [], {}, {}, [], input_in_arena=ir.input_spec.shape[0] != 1)
    for name, spec in ir.tensors.items():
        desc.tensor_bytes[name] = tensor_bytes(spec)
    for op in ir.walk():
        builder = _BUILDERS.get(op.kind)
        if builder is None:
            raise CodegenError(
                f"op '{op.name}' of kind '{op.kind}' has no C kernel: lower a model without it"
            )
        fields = builder(ir, op, desc)
        if fields is not None:
            desc.layers[op.name] = {"kind": op.kind, "name": op.name, "cname": c_name(op.name), **fields}
    check_identifiers(ir, desc)
    for op in exits:
        scale = ir.tensors[op.attrs["logits"]].scale
        desc.exits.append(
            {
                "index": int(op.attrs["index"]),
                "final": bool(op.attrs.get("final")),
                "next_cost_max": int(op.attrs.get("next_cost_max", 0)),
                "lut_mult": lut_multiplier(scale),
            }
        )
    return desc


def _t(name: str | None) -> str:
    return f"t_{c_name(name)}" if name else "NULL"


def _gates(op: Op) -> dict[str, str]:
    return {key: _t(op.attrs.get(key)) for key in ("channel_gate", "block_gate", "input_mask")}


def _quant(ir: IRModel, op: Op, desc: ModelDesc, out: TensorSpec, acc_max: int) -> dict[str, Any]:
    cn = c_name(op.name)
    mult = ir.array(op, "mult").astype(np.int64)
    shift = ir.array(op, "shift").astype(np.int64)
    bias = ir.array(op, "bias").astype(np.int64)
    res_name = op.inputs.get("residual")
    res_mult = ir.array(op, "res_mult").astype(np.int64) if res_name else None
    gated = bool(op.attrs.get("channel_gate") or op.attrs.get("block_gate"))
    prove_requant(
        op.name, acc_max, gated, mult, shift, res_mult, ir.tensors[res_name].dtype if res_name else None
    )
    desc.arrays += [
        CArray(f"b_{cn}", "int32_t", bias),
        CArray(f"m_{cn}", "int32_t", mult),
        CArray(f"s_{cn}", "uint8_t", shift),
    ]
    if res_mult is not None:
        desc.arrays.append(CArray(f"r_{cn}", "int64_t", res_mult))
    lo, hi = op.attrs["out_range"]
    return {
        "bias": f"b_{cn}",
        "mult": f"m_{cn}",
        "res_mult": f"r_{cn}" if res_mult is not None else "NULL",
        "shift": f"s_{cn}",
        "out_min": int(lo),
        "out_max": int(hi),
    }


def _conv(ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
    x, out = ir.tensors[op.inputs["x"]], ir.tensors[op.output]
    weight = ir.array(op, "weight")
    cout, cin_g, kh, kw = weight.shape
    groups = int(op.attrs.get("groups", 1))
    stride, pad = int(op.attrs["stride"]), int(op.attrs["padding"])
    cin, h, w = hwc(x)
    _, ho, wo = hwc(out)
    if kh != kw:
        raise CodegenError(f"conv '{op.name}' has a {kh}x{kw} kernel: the C kernels take square kernels")
    if cin_g * groups != cin or cout % groups:
        raise CodegenError(f"conv '{op.name}' has inconsistent groups ({groups}) and channels")
    if (ho, wo) != ((h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1):
        raise CodegenError(f"conv '{op.name}' output shape does not match its input, stride and padding")
    packed, row_len = pack_conv(weight, groups)
    acc_max = prove_accumulators(op.name, packed, row_len, ir.array(op, "bias"), x.dtype)
    desc.max_acc[op.name] = acc_max
    cn = c_name(op.name)
    desc.arrays.append(CArray(f"w_{cn}", "int8_t", packed))
    quant = _quant(ir, op, desc, out, acc_max)
    base = align(2 * cout) + align(2 * cin)
    if groups == 1:
        scratch = base + 16 * cout + 4 * row_len  # index lists, channel table, two im2col columns
        if op.attrs.get("input_mask"):
            scratch += 2 * row_len  # at least two compacted rows; the planner may grant more
    else:
        scratch = base + align(cin)
    desc.scratch[op.name] = scratch
    residual = op.inputs.get("residual")
    if residual and tuple(hwc(ir.tensors[residual])) != tuple(hwc(out)):
        raise CodegenError(f"conv '{op.name}' residual shape differs from its output")
    return {
        "weight": f"w_{cn}",
        "row_len": row_len,
        "in_c": cin,
        "in_h": h,
        "in_w": w,
        "out_c": cout,
        "out_h": ho,
        "out_w": wo,
        "kernel": kh,
        "stride": stride,
        "pad": pad,
        "groups": groups,
        "in_type": TD_TYPES[x.dtype],
        "out_type": TD_TYPES[out.dtype],
        "res_type": TD_TYPES[ir.tensors[residual].dtype] if residual else "TD_U8",
        "row_group": 0,
        "quant": quant,
        "gates": _gates(op),
        "input": _t(op.inputs["x"]),
        "residual": _t(residual),
        "output": _t(op.output),
        "macs": int(op.attrs.get("macs", 0)),
        "summary": f"conv {kh}x{kw}/{stride} pad {pad}{'' if groups == 1 else f' groups {groups}'}, "
        f"{cin}x{h}x{w} -> {cout}x{ho}x{wo}",
    }


def _linear(ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
    x, out = ir.tensors[op.inputs["x"]], ir.tensors[op.output]
    weight = ir.array(op, "weight")
    cout, cin = weight.shape
    if x.size != cin or out.size != cout:
        raise CodegenError(f"linear '{op.name}' weight shape does not match its tensors")
    packed, row_len = pack_linear(weight)
    acc_max = prove_accumulators(op.name, packed, row_len, ir.array(op, "bias"), x.dtype)
    desc.max_acc[op.name] = acc_max
    cn = c_name(op.name)
    desc.arrays.append(CArray(f"w_{cn}", "int8_t", packed))
    quant = _quant(ir, op, desc, out, acc_max)
    desc.scratch[op.name] = align(2 * cout) + align(2 * cin) + 4 * row_len
    residual = op.inputs.get("residual")
    return {
        "weight": f"w_{cn}",
        "row_len": row_len,
        "in_c": cin,
        "out_c": cout,
        "in_type": TD_TYPES[x.dtype],
        "out_type": TD_TYPES[out.dtype],
        "res_type": TD_TYPES[ir.tensors[residual].dtype] if residual else "TD_U8",
        "quant": quant,
        "gates": _gates(op),
        "input": _t(op.inputs["x"]),
        "residual": _t(residual),
        "output": _t(op.output),
        "macs": int(op.attrs.get("macs", 0)),
        "summary": f"fully connected {cin} -> {cout} ({out.kind})",
    }


def _gap(ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
    x, out = ir.tensors[op.inputs["x"]], ir.tensors[op.output]
    c, h, w = hwc(x)
    if x.dtype != out.dtype:
        raise CodegenError(f"gap '{op.name}' changes dtype ({x.dtype} -> {out.dtype}): not supported")
    desc.scratch[op.name] = 4 * c
    return {
        "c": c,
        "hw": h * w,
        "type": TD_TYPES[x.dtype],
        "input": _t(op.inputs["x"]),
        "output": _t(op.output),
        "summary": f"global average pool {c}x{h}x{w} -> {c}",
    }


def _pool(ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
    x, out = ir.tensors[op.inputs["x"]], ir.tensors[op.output]
    c, h, w = hwc(x)
    _, ho, wo = hwc(out)
    k, stride, pad = int(op.attrs["kernel"]), int(op.attrs["stride"]), int(op.attrs.get("padding", 0))
    if pad >= k:
        raise CodegenError(f"pool '{op.name}' has padding {pad} >= kernel {k}: a window would be all padding")
    if x.dtype != out.dtype:
        raise CodegenError(f"pool '{op.name}' changes dtype: not supported")
    return {
        "c": c,
        "in_h": h,
        "in_w": w,
        "out_h": ho,
        "out_w": wo,
        "kernel": k,
        "stride": stride,
        "pad": pad,
        "type": TD_TYPES[x.dtype],
        "input": _t(op.inputs["x"]),
        "output": _t(op.output),
        "summary": f"{op.kind} {k}x{k}/{stride} pad {pad}, {c}x{h}x{w} -> {c}x{ho}x{wo}",
    }


def _rescale(ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any]:
    x, out = ir.tensors[op.inputs["x"]], ir.tensors[op.output]
    c, h, w = hwc(x)
    cn = c_name(op.name)
    res_mult = ir.array(op, "res_mult").astype(np.int64)
    shift = ir.array(op, "shift").astype(np.int64)
    prove_requant(op.name, 0, False, np.zeros_like(res_mult), shift, res_mult, x.dtype)
    desc.arrays += [CArray(f"r_{cn}", "int64_t", res_mult), CArray(f"s_{cn}", "uint8_t", shift)]
    lo, hi = op.attrs["out_range"]
    return {
        "c": c,
        "hw": h * w,
        "in_type": TD_TYPES[x.dtype],
        "out_type": TD_TYPES[out.dtype],
        "quant": {
            "bias": "NULL",
            "mult": "NULL",
            "res_mult": f"r_{cn}",
            "shift": f"s_{cn}",
            "out_min": int(lo),
            "out_max": int(hi),
        },
        "input": _t(op.inputs["x"]),
        "output": _t(op.output),
        "summary": f"requantise {c}x{h}x{w} (block skipped: shortcut only)",
    }


def _control(ir: IRModel, op: Op, desc: ModelDesc) -> None:
    if op.kind == "guard" and ir.tensors[op.attrs["gate"]].size != 1:
        raise CodegenError(f"guard '{op.name}' needs a scalar salience")
    return None


_BUILDERS = {
    "conv2d": _conv,
    "linear": _linear,
    "gap": _gap,
    "maxpool": _pool,
    "avgpool": _pool,
    "rescale": _rescale,
    "guard": _control,
    "exit": _control,
}


def row_len_of(layer: dict[str, Any]) -> int:
    return int(layer.get("row_len", 0))


__all__ = ["ModelDesc", "CArray", "describe", "c_name", "C_TYPES", "TD_TYPES", "round4"]
