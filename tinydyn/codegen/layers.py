"""From IR ops to the C-level description the templates render: one entry per layer with
its kernel parameters, packed constant arrays, scratch needs and gate wiring. What each op
kind contributes is its own (``tinydyn.ops.<kind>.describe``); this walks the schedule.
"""

from __future__ import annotations

from tinydyn.codegen.cdefs import (
    C_TYPES,
    MAX_CLASSES,
    MAX_EXITS,
    TD_TYPES,
    CArray,
    ModelDesc,
    c_name,
    check_identifiers,
    hwc,
    tensor_bytes,
)
from tinydyn.codegen.errors import CodegenError
from tinydyn.codegen.packing import round4
from tinydyn.ir import IRModel
from tinydyn.ops import op_kind
from tinydyn.quantize.policy import lut_multiplier


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
        kind = op_kind(op.kind)
        fields = kind.describe(ir, op, desc)
        if fields is not None:
            desc.layers[op.name] = {
                "kind": op.kind,
                "name": op.name,
                "cname": c_name(op.name),
                "template": kind.template,
                **fields,
            }
    check_identifiers(ir, desc)
    for op in exits:
        scale = ir.tensors[op.attrs["logits"]].scale
        desc.exits.append(
            {
                "index": int(op.attrs["index"]),
                "final": bool(op.attrs.get("final")),
                "next_cost_max": int(op.attrs.get("next_cost_max", 0)),
                "lut_mult": lut_multiplier(scale),
                "own_t16": op.attrs.get("confidence_t16"),  # None: the run-time threshold
            }
        )
    return desc


__all__ = ["C_TYPES", "TD_TYPES", "CArray", "ModelDesc", "c_name", "describe", "hwc", "round4"]
