"""What every op kind supplies: one class per kind holds all of its rules (as qonnx's CustomOp
and TinyEngine's basicOperator do), so adding a kind is one module, one template, its tests.

An :class:`OpKind` answers, for one op of its kind:

* **schema**: its input slots, attrs (each a :class:`~tinydyn.ir_schema.Field`), nested blocks,
  and :meth:`check_shapes` (tensor shapes, and the arrays it needs) / :meth:`check_values`
  (array values, overflow proofs) for :mod:`tinydyn.ir_schema`;
* **planner**: :meth:`reads` and :meth:`writes` (tensor names, in the order the C code runs);
* **cost**: :meth:`macs` (executed in full) and :meth:`traffic` (bytes moved, for the energy model);
* **reference**: :meth:`execute` on a batch run of :mod:`tinydyn.quantize.executor`;
* **C**: :meth:`describe` (the fields its template macro renders) and :meth:`node` (its place
  in ``td_infer``); the macros live in ``templates/ops/<kind>.c.j2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from tinydyn.ir_schema import GATE_KEYS, Field

if TYPE_CHECKING:
    import numpy as np

    from tinydyn.codegen.cdefs import ModelDesc
    from tinydyn.cost.traffic import MemoryTraffic
    from tinydyn.ir import IRModel, Op
    from tinydyn.ir_schema import ShapeChecker
    from tinydyn.quantize.executor import Run

TENSOR_ATTRS = (*GATE_KEYS, "gate", "logits")  # attrs that name a tensor


class OpKind:
    """Base of every op kind; a subclass sets ``kind`` and overrides what its kind does."""

    kind: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()  # required input slots
    optional_inputs: ClassVar[tuple[str, ...]] = ()
    has_output: ClassVar[bool] = True
    attrs: ClassVar[dict[str, Field]] = {}
    blocks: ClassVar[tuple[str, ...]] = ()  # nested op lists it owns: "then", "orelse"
    output_attrs: ClassVar[tuple[str, ...]] = ()  # attrs naming further tensors the op writes
    template: ClassVar[str] = ""  # templates/ops/<kind>.c.j2, or "" for control ops

    # --- schema -----------------------------------------------------------------------
    def check_shapes(self, checker: ShapeChecker, op: dict[str, Any], where: str) -> None:
        """Tensor shapes/dtypes this op needs; record its arrays in ``checker.arrays``."""

    def check_flow(self, checker: ShapeChecker, op: dict[str, Any], depth: int) -> None:
        """Def-before-use through this op (its nested blocks, the tensors it writes)."""
        checker.write(op["output"], f"IR op '{op['name']}'")
        for key in self.output_attrs:
            if op.get("attrs", {}).get(key):
                checker.write(op["attrs"][key], f"IR op '{op['name']}' attr '{key}'")

    def check_values(self, model: IRModel, op: Op) -> None:
        """Array values: ranges and overflow proofs (arrays already have dtype and shape)."""

    # --- planner ----------------------------------------------------------------------
    def reads(self, op: Op) -> list[str]:
        names = list(op.inputs.values())
        names += [op.attrs[key] for key in TENSOR_ATTRS if op.attrs.get(key)]
        return names

    def writes(self, op: Op) -> list[str]:
        """``output`` first, then the tensors its ``output_attrs`` name."""
        names = [op.output] if op.output else []
        return names + [op.attrs[key] for key in self.output_attrs if op.attrs.get(key)]

    def schedule(self, op: Op, flatten: Any) -> list[tuple[Op, list[str], list[str]]]:
        """(op, reads, writes) in the order the C code runs this op and what it nests."""
        return [(op, self.reads(op), self.writes(op))]

    # --- cost -------------------------------------------------------------------------
    def macs(self, op: Op) -> int:
        """Multiply-accumulates of the op executed in full (0 for ops without products)."""
        return 0

    def max_macs(self, op: Op, of: Any) -> int:
        """The most MACs one execution of this op (and what it nests) can cost."""
        return self.macs(op)

    def plan_scratch(self, layer: dict[str, Any], spare_bytes: int) -> int | None:
        """A second planning pass: given the arena bytes free while this op runs, the scratch it
        would take instead (updating ``layer``), or None to keep what it asked for."""
        return None

    def traffic(self, model: IRModel, op: Op, coeffs: Any) -> tuple[int, MemoryTraffic]:
        from tinydyn.cost.traffic import MemoryTraffic

        return 0, MemoryTraffic(0, 0, 0)

    def is_gate(self, op: Op) -> bool:
        """Part of a gate: not computed when gating is off; its ``output`` then reads as fully
        open (255) and any further tensor it writes reads as 0."""
        return op.attrs.get("role") == "gate"

    # --- reference --------------------------------------------------------------------
    def execute(self, run: Run, op: Op, live: np.ndarray) -> None:
        raise NotImplementedError(f"op kind '{self.kind}' has no reference execution")

    # --- C ----------------------------------------------------------------------------
    def describe(self, ir: IRModel, op: Op, desc: ModelDesc) -> dict[str, Any] | None:
        """Fields of this op's template macro (its arrays go to ``desc``); None: no function."""
        return None

    def node(self, op: Op, desc: ModelDesc, children: Any) -> dict[str, Any]:
        """This op's entry in td_infer's schedule; ``children(ops)`` renders nested blocks.
        A gate op is skipped, its output read as fully open, when gating is off (any further
        tensor it writes is zeroed)."""
        from tinydyn.codegen.cdefs import tensor_macro

        cname = desc.layers[op.name]["cname"]
        if self.is_gate(op):
            size = desc.tensor_bytes[op.output]
            zero = [{"output": tensor_macro(t), "size": desc.tensor_bytes[t]} for t in self.writes(op)[1:]]
            return {
                "type": "gate",
                "cname": cname,
                "output": tensor_macro(op.output),
                "size": size,
                "zero": zero,
            }
        return {"type": "call", "cname": cname}
