"""The budget cost tables model.c bakes in (tinydyn/cost/budget.py): one row per layer function,
the per-exit maxima, the units the firmware offers and the cost model's id."""

from __future__ import annotations

from typing import Any

from tinydyn.codegen.cdefs import ModelDesc
from tinydyn.codegen.errors import CodegenError
from tinydyn.cost.budget import BudgetCosts
from tinydyn.ir import IRModel
from tinydyn.ops import op_kind


def budget_context(ir: IRModel, desc: ModelDesc, costs: BudgetCosts) -> dict[str, Any]:
    """Template fields: ``budget`` (rows, maxima, unit mask, id) and ``cost_index`` (the row of
    each layer function, by C name)."""
    if costs.model_id != ir.model_id():
        raise CodegenError(
            f"budget cost model is of model {costs.model_id}, not {ir.model_id()}: build it for this IR"
        )
    names = [c.name for c in costs.ops]
    if sorted(names) != sorted(desc.layers):
        raise CodegenError("budget cost model does not list exactly this model's layers: rebuild it")
    ops = {op.name: op for op in ir.walk()}
    rows = [
        {
            "name": c.name,
            "energy_fixed_pj": c.energy_fixed_pj,
            "energy_q16_pj": c.energy_q16_pj,
            "cycles_fixed": c.cycles_fixed,
            "cycles_q16": c.cycles_q16,
            "gate": int(op_kind(ops[c.name].kind).is_gate(ops[c.name])),
        }
        for c in costs.ops
    ]
    return {
        "budget": {
            "ops": rows,
            "board": costs.board or "no",
            "cycles_source": costs.cycles_source,
            "cycles_init": costs.cycles_init,
            "next_energy_pj": list(costs.next_energy_pj),
            "next_cycles": list(costs.next_cycles),
            "unit_mask": costs.unit_mask,
            "cost_model_id": costs.cost_model_id,
        },
        "cost_index": {desc.layers[c.name]["cname"]: i for i, c in enumerate(costs.ops)},
    }
