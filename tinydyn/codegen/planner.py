"""Liveness-based memory planner: every tensor (and every op's scratch) gets an offset in
one static arena.

The schedule is flattened depth first (a guard, then its ``then`` ops, then its ``orelse``
ops; an exit's head, then the exit decision). Treating both branches of a guard as if they
ran one after the other only lengthens lifetimes, so the plan is safe whichever branch
runs. A tensor lives from its first definition to its last use. Offsets are assigned
greedily, largest buffer first, at the lowest address that does not overlap any buffer
whose lifetime intersects (TFLite Micro's greedy planner does the same).

The liveness lower bound is the most bytes live at any one schedule point: no placement of
these buffers can use a smaller arena.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinydyn.ir import IRModel, Op
from tinydyn.ops import op_kind

ALIGN = 4


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Buffer:
    name: str
    size: int  # bytes, aligned
    start: int  # first schedule position
    end: int  # last schedule position (inclusive)
    offset: int = -1

    def overlaps(self, other: Buffer) -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass
class MemoryPlan:
    buffers: dict[str, Buffer]
    arena_bytes: int
    lower_bound: int
    positions: dict[str, int] = field(default_factory=dict)  # op name → schedule position

    def offset(self, name: str) -> int:
        return self.buffers[name].offset

    def live_bytes(self, position: int, exclude: str | None = None) -> int:
        return sum(
            b.size for b in self.buffers.values() if b.start <= position <= b.end and b.name != exclude
        )


def schedule(ops: list[Op]) -> list[tuple[Op, list[str], list[str]]]:
    """Flattened (op, tensors read, tensors written), in the order the C code runs them."""
    out: list[tuple[Op, list[str], list[str]]] = []
    for op in ops:
        out.extend(op_kind(op.kind).schedule(op, schedule))
    return out


def plan_memory(
    ir: IRModel, sizes: dict[str, int], scratch: dict[str, int], exclude: set[str] | None = None
) -> MemoryPlan:
    """Plan tensors of ``sizes`` (bytes per tensor name) and per-op ``scratch`` (bytes per op
    name, live only while that op runs). Tensors in ``exclude`` live outside the arena."""
    exclude = exclude or set()
    buffers: dict[str, Buffer] = {}
    positions: dict[str, int] = {}
    for pos, (op, reads, writes) in enumerate(schedule(ir.ops)):
        positions[op.name] = pos
        for name in reads + writes:
            if name in exclude:
                continue
            buf = buffers.get(name)
            if buf is None:
                buffers[name] = Buffer(name, align(sizes[name]), pos, pos)
            else:
                buf.end = max(buf.end, pos)
        if scratch.get(op.name):
            key = f"{op.name}#scratch"
            buffers[key] = Buffer(key, align(scratch[op.name]), pos, pos)
    placed: list[Buffer] = []
    for buf in sorted(buffers.values(), key=lambda b: (-b.size, b.start, b.name)):
        offset = 0
        for other in sorted((p for p in placed if p.overlaps(buf)), key=lambda p: p.offset):
            if offset + buf.size <= other.offset:
                break
            offset = max(offset, other.offset + other.size)
        buf.offset = offset
        placed.append(buf)
    arena = max((b.offset + b.size for b in placed), default=0)
    n = len(positions)
    bound = max((sum(b.size for b in placed if b.start <= p <= b.end) for p in range(n)), default=0)
    return MemoryPlan(buffers, arena, bound, positions)


def check_plan(plan: MemoryPlan) -> None:
    """No two buffers that are live at the same time may share a byte (tests call this)."""
    items = list(plan.buffers.values())
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            if a.overlaps(b) and a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                raise AssertionError(f"buffers {a.name} and {b.name} overlap in time and memory")
