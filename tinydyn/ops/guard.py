"""``guard``: ``gate`` names a scalar salience; ``then`` runs when it is non-zero, ``orelse``
when it is zero (a skipped block costs only its gate)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from tinydyn.ir_schema import Field, IRError, safe_name
from tinydyn.ops.base import OpKind

if TYPE_CHECKING:
    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.ir import Op
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run


class Guard(OpKind):
    kind = "guard"
    has_output = False
    template = "ops/guard.c.j2"
    attrs: ClassVar[dict[str, Field]] = {"gate": Field(safe_name, "a tensor name", True)}
    blocks = ("then", "orelse")

    def check_shapes(self, checker: ShapeChecker, op: dict[str, Any], where: str) -> None:
        shape, dtype, _ = checker.spec(op["attrs"]["gate"])
        if shape != (1,) or dtype != "uint8":
            raise IRError(
                f"{where} attr 'gate' names a {dtype} {list(shape)} tensor: "
                "expected a uint8 scalar salience [1]"
            )

    def check_flow(self, checker: ShapeChecker, op: dict[str, Any], depth: int) -> None:
        before_defined, before_written = set(checker.defined), set(checker.written)
        checker.check_block(op.get("then", []), "then", depth + 1, op["name"])
        then_defined, then_written = checker.defined, checker.written
        checker.defined, checker.written = set(before_defined), set(before_written)
        checker.check_block(op.get("orelse", []), "orelse", depth + 1, op["name"])
        # after the guard only what both branches wrote is available; what either wrote is taken
        checker.defined = before_defined | (then_defined & checker.defined)
        checker.written = then_written | checker.written

    def schedule(self, op: Op, flatten: Any) -> list[tuple[Op, list[str], list[str]]]:
        return [(op, self.reads(op), []), *flatten(op.then), *flatten(op.orelse)]

    def max_macs(self, op: Op, of: Any) -> int:
        return max(of(op.then), of(op.orelse))

    def execute(self, run: Run, op: Op, live: np.ndarray) -> None:
        gate = run.env[op.attrs["gate"]].reshape(-1)
        taken = gate != 0
        run.skipped_blocks += np.where(live & ~taken, 1, 0)
        before = run.env
        run.env = dict(before)
        run.run_ops(op.then, live & taken)
        then_env = run.env
        run.env = dict(before)
        run.run_ops(op.orelse, live & ~taken)
        else_env = run.env
        # each image keeps the values its own branch wrote
        merged = dict(before)
        for name in set(then_env) | set(else_env):
            a, b = then_env.get(name), else_env.get(name)
            a_new = a is not None and a is not before.get(name)
            b_new = b is not None and b is not before.get(name)
            if a_new and b_new:
                merged[name] = np.where(taken.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
            elif a_new or b_new:
                merged[name] = a if a_new else b
        run.env = merged

    def node(self, op: Op, desc: ModelDesc, children: Any) -> dict[str, Any]:
        from tinydyn.codegen.cdefs import tensor_macro

        return {
            "type": "guard",
            "template": self.template,
            "name": op.name,
            "gate": tensor_macro(op.attrs["gate"]),
            "then": children(op.then),
            "orelse": children(op.orelse),
        }
