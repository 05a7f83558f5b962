"""``exit``: an early-exit point. Its ``then`` ops (the head) compute the int16 tensor named by
attr ``logits``; the run-time policy decides whether inference stops here (attrs ``index``,
``final``, ``next_cost_max``). The last exit is the final classifier.

Under a budget (DDI §III-B) an image leaves at a non-final exit when its cost so far plus the
most the way to the next exit's decision can cost exceeds the budget, in the budget's unit:
``next_cost_max`` for MACs, the cost model's ``next_energy_pj`` / ``next_cycles`` for modelled
energy and cycles (tinydyn/cost/budget.py); the head runs only for images that leave."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tinydyn.ir_schema import Field, IRError, is_int, safe_name
from tinydyn.ops.base import OpKind

if TYPE_CHECKING:
    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.ir import Op
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run


class Exit(OpKind):
    kind = "exit"
    has_output = False
    template = "ops/exit.c.j2"
    attrs: ClassVar[dict[str, Field]] = {
        "index": Field(lambda v: is_int(v) and 0 <= v < 64, "an integer in 0..63", True),
        "final": Field(lambda v: isinstance(v, bool), "true or false"),
        "logits": Field(safe_name, "a tensor name", True),
        "next_cost_max": Field(lambda v: is_int(v) and 0 <= v < 2**40, "a non-negative integer"),
        # the exit's own confidence threshold (t16 = round(t * 65536)): a model tuned per exit
        # (S2DNAS, one per stage) leaves here under the confidence policy when top-1 >= it,
        # whatever the run-time threshold, which still applies to exits without one
        "confidence_t16": Field(lambda v: is_int(v) and 0 <= v <= 65536, "an integer in 0..65536"),
    }
    blocks = ("then",)

    def check_shapes(self, checker: ShapeChecker, op: dict[str, Any], where: str) -> None:
        shape, dtype, _ = checker.spec(op["attrs"]["logits"])
        if shape != (checker.classes,) or dtype != "int16":
            raise IRError(
                f"{where} attr 'logits' names a {dtype} {list(shape)} tensor: "
                f"expected int16 [{checker.classes}], one logit per class"
            )

    def check_flow(self, checker: ShapeChecker, op: dict[str, Any], depth: int) -> None:
        before = set(checker.defined)
        checker.check_block(op.get("then", []), "then", depth + 1, op["name"])
        logits = op["attrs"]["logits"]
        if logits not in checker.defined:
            raise IRError(
                f"IR op '{op['name']}' attr 'logits' names tensor '{logits}', which its head never writes"
            )
        checker.defined = before  # an early head may not run: nothing it wrote is available after it

    def reads(self, op: Op) -> list[str]:
        return [op.attrs["logits"]]

    def schedule(self, op: Op, flatten: Any) -> list[tuple[Op, list[str], list[str]]]:
        return [*flatten(op.then), (op, self.reads(op), [])]

    def max_macs(self, op: Op, of: Any) -> int:
        return of(op.then)

    def execute(self, run: Run, op: Op, live: np.ndarray) -> None:
        index = int(op.attrs["index"])
        final = bool(op.attrs.get("final"))
        if final:
            leaving = live.copy()
        elif run.policy.kind == "budget":
            # exit now if the work up to the next exit's decision could break the budget;
            # the head runs only for images that leave here
            leaving = live & run.policy.over_budget(run, op)
        else:
            leaving = None
        head_live = leaving if leaving is not None else live
        if run.policy.kind == "none" and not final:
            return  # no policy: early heads are never computed
        run.run_ops(op.then, head_live)
        logits = run.env[op.attrs["logits"]]
        run.exit_logits[index], run.exit_macs[index] = logits.copy(), run.macs.copy()
        run.meter.snapshot(index)
        if leaving is None:
            leaving = live & run.policy.decide(logits, index)
        run.logits[leaving] = logits[leaving]
        run.exits[leaving] = index
        run.running &= ~leaving

    def node(self, op: Op, desc: ModelDesc, children: Any) -> dict[str, Any]:
        from tinydyn.codegen.cdefs import tensor_macro

        return {
            "type": "exit",
            "template": self.template,
            "name": op.name,
            "final": bool(op.attrs.get("final")),
            "index": int(op.attrs["index"]),
            "next_cost_max": int(op.attrs.get("next_cost_max", 0)),
            "logits": tensor_macro(op.attrs["logits"]),
            "then": children(op.then),
        }
