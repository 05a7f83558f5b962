"""Memory traffic of the integer IR, from layer shapes: bytes read from flash (weights and
requantisation constants), read from SRAM and written to SRAM by each op executed in full.

numpy/IR only, no torch: the host and codegen read IR files. The rules and their assumptions
are in ``docs/ENERGY.md`` ("Memory traffic from layer shapes").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tinydyn.ir import IRModel, Op

U32_MAX = 2**32 - 1
Q16 = 16
DTYPE_BYTES = {"uint8": 1, "int8": 1, "int16": 2, "int32": 4}
# Requantisation constants read from flash once per output channel per layer call
# (the conv2d/linear kernels build a table): bias int32 + mult int32 + shift uint8, plus res_mult int64.
QPARAM_BYTES, RES_MULT_BYTES = 9, 8


class KernelReuse(Protocol):
    """How often the board's kernels use one fetched byte (register blocking): MACs per byte."""

    @property
    def weight_reuse(self) -> int: ...

    @property
    def input_reuse(self) -> int: ...


@dataclass(frozen=True)
class MemoryTraffic:
    """Bytes moved by one inference (or one layer)."""

    flash_bytes: int  # weights and requantisation constants read
    sram_read_bytes: int  # activations read
    sram_write_bytes: int  # activations written


@dataclass(frozen=True)
class TrafficProfile:
    """Bytes per executed MAC of a model, Q16 fixed point, from its layer shapes (full execution).

    Dynamic skipping removes MACs and the traffic that feeds them together, so one inference's
    traffic is estimated as ``(macs * ratio) >> 16`` for each level (see docs/ENERGY.md).
    """

    flash_q16: int
    sram_read_q16: int
    sram_write_q16: int

    def traffic(self, macs: int) -> MemoryTraffic:
        return MemoryTraffic(
            _scale_q16(macs, self.flash_q16),
            _scale_q16(macs, self.sram_read_q16),
            _scale_q16(macs, self.sram_write_q16),
        )


@dataclass(frozen=True)
class LayerCost:
    """One op of a full execution: the row of a per-layer cost table."""

    op: str  # the op's name in the IR
    kind: str
    macs: int
    traffic: MemoryTraffic


def _scale_q16(macs: int, q16: int) -> int:
    # saturates like the C (u64 product, clamped to u32)
    return min((macs * q16) >> Q16, U32_MAX)


def op_traffic(model: IRModel, op: Op, reuse: KernelReuse) -> tuple[int, MemoryTraffic]:
    """(MACs, bytes moved) of one op executed in full; each op kind states its own traffic
    (:meth:`tinydyn.ops.base.OpKind.traffic`); control ops move nothing."""
    from tinydyn.ops import op_kind  # the op kinds import this module's records

    return op_kind(op.kind).traffic(model, op, reuse)


def full_path(ops: list[Op]) -> list[Op]:
    """Ops of a full execution: guards take their ``then`` (block executed), every exit head runs."""
    result: list[Op] = []
    for op in ops:
        result.append(op)
        result.extend(full_path(op.then))
    return result


def layer_costs(model: IRModel, reuse: KernelReuse) -> list[LayerCost]:
    """Per-layer cost table of a full execution, in schedule order (guards and exits omitted).

    Its columns times soft gate probabilities give the expected cost a training loss weighs
    (:func:`tinydyn.cost.torch_cost.expected_energy_nj`).
    """
    rows = []
    for op in full_path(model.ops):
        if op.output is None:  # guards and exits: control, no layer of their own
            continue
        macs, traffic = op_traffic(model, op, reuse)
        rows.append(LayerCost(op.name, op.kind, macs, traffic))
    return rows
