"""The op kinds of the integer IR, one module each, behind one registry.

``op_kind(kind)`` gives the :class:`~tinydyn.ops.base.OpKind` that holds all of a kind's rules:
schema, planner reads/writes, MACs, memory traffic, reference execution and C emission. The
executor, planner, energy model, schema and codegen dispatch through it and hold no per-kind
branches. To add a kind: a module here with an ``OpKind`` subclass, an entry in ``OPS``, a
template macro under ``templates/ops/``, its spec in docs/ARITHMETIC.md, and its tests.
"""

from __future__ import annotations

from tinydyn.ops.avgpool import AvgPool
from tinydyn.ops.base import OpKind
from tinydyn.ops.concat import Concat
from tinydyn.ops.conv2d import Conv2d
from tinydyn.ops.exit import Exit
from tinydyn.ops.gap import Gap
from tinydyn.ops.guard import Guard
from tinydyn.ops.linear import Linear
from tinydyn.ops.lstm_gate import LstmGate
from tinydyn.ops.maxpool import MaxPool
from tinydyn.ops.rescale import Rescale
from tinydyn.ops.split import Split

OPS: dict[str, OpKind] = {
    cls.kind: cls()
    for cls in (Conv2d, Linear, Gap, MaxPool, AvgPool, Rescale, Concat, Split, LstmGate, Guard, Exit)
}


def op_kind(kind: str) -> OpKind:
    """The registered kind (KeyError for an unknown one: the IR schema rejects those first)."""
    return OPS[kind]


__all__ = ["OPS", "OpKind", "op_kind"]
