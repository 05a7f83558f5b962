"""Hard budgets in three units: what each op costs, statically, and the meter that adds it up.

DDI's anytime rule (paper §III-B): an image stops at the latest branch whose cumulative cost fits
the budget. The firmware and the reference executor both decide it at every early exit ``k`` as
``cost so far + next_max[k] > budget`` → leave here, where ``next_max[k]`` is the most the way to
the next exit's decision (its head included) can cost. For the decision to be checkable bit for
bit, every cost is a *static* function of what ran, never a timer read at run time:

* ``macs``: executed multiply-accumulates (the IR's ``next_cost_max`` attrs; unchanged).
* ``energy`` (nJ, **modelled**): per op ``F + (Q · m) >> 16`` picojoules, ``m`` the MACs the op
  executed. ``Q`` carries the op's dynamic energy per MAC (MACs, flash, SRAM reads and writes of
  tinydyn/cost/traffic.py times the board's coefficients of tinydyn/cost/energy.py: a channel-gated
  op moves data in proportion to the channels it computes, as in docs/ENERGY.md); ops without
  MACs (pools, rescale, concat) cost their traffic as ``F``. With a cost table, each op's modelled
  cycles times the board's baseline energy per cycle are added to ``F`` and ``Q``.
* ``cycles`` (**modelled**, or measured if the table is): per op ``F + (Q · m) >> 16`` from the
  per-layer cost table ``tinydyn profile`` writes (tinydyn/cost/cost_table.py): ``F`` = the
  layer's fitted cycles with every gated channel off (``full`` for layers not channel-gated) and
  ``Q`` = its cycles per executed channel spread over that channel's MACs. Plus the table's
  ``control_cycles`` once per inference. Without a table the unit is not available.

The firmware bakes these integers into ``model.c``; ``BudgetCosts.cost_model_id`` (CRC-32 of
their canonical JSON) is reported in INFO (protocol v2) so that a host can tell that its reference
uses the same numbers. Everything here is integer, numpy and torch-free.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tinydyn.errors import TinydynError
from tinydyn.ir import IRModel, Op

if TYPE_CHECKING:
    from tinydyn.cost.cost_table import CostTable
    from tinydyn.cost.energy import EnergyCoefficients

UNITS = ("macs", "energy", "cycles")
UNIT_CODES = {"macs": 1, "energy": 2, "cycles": 3}  # on the wire (docs/PROTOCOL.md, v2)
UNIT_NAMES = {code: unit for unit, code in UNIT_CODES.items()}
UNIT_SUFFIX = {"macs": "MACs", "energy": "nJ (modelled)", "cycles": "cycles"}
Q16 = 16
PJ_PER_NJ = 1000
U32_MAX = 2**32 - 1
# Each product Q·m must fit int64 in the reference and uint64 in C: Q < 2^31, m < 2^32.
MAX_Q16 = 2**31 - 1
MAX_FIXED = 2**40  # per-op fixed cost (pJ or cycles): u64 in C, far below overflow when summed


class BudgetCostError(TinydynError):
    """A cost model that cannot be built (unknown board, a cost table of another model, overflow)."""


@dataclass(frozen=True)
class OpCost:
    """One op with a C layer function: its cost in pJ and in cycles when it executes ``m`` MACs
    is ``fixed + (q16 * m) >> 16``."""

    name: str
    energy_fixed_pj: int
    energy_q16_pj: int
    cycles_fixed: int
    cycles_q16: int
    full_macs: int

    def energy_pj(self, macs: int) -> int:
        return self.energy_fixed_pj + ((self.energy_q16_pj * macs) >> Q16)

    def cycles(self, macs: int) -> int:
        return self.cycles_fixed + ((self.cycles_q16 * macs) >> Q16)


@dataclass(frozen=True)
class BudgetCosts:
    """Per-op costs of one model on one board (and, for cycles, one cost table)."""

    model_id: str
    board: str  # whose energy coefficients ("" for a board without an energy model: no energy unit)
    cycles_source: str  # "" when there is no cost table (the cycles unit is then unavailable)
    cycles_init: int  # the table's control cycles, charged once per inference
    ops: tuple[OpCost, ...]
    next_energy_pj: tuple[int, ...]  # per exit index: the most the way to the next decision costs
    next_cycles: tuple[int, ...]
    index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {c.name: i for i, c in enumerate(self.ops)})

    @property
    def units(self) -> tuple[str, ...]:
        return tuple(
            u for u, ok in zip(UNITS, (True, bool(self.board), bool(self.cycles_source)), strict=True) if ok
        )

    @property
    def unit_mask(self) -> int:
        """Bit (code - 1) set for each unit the firmware can budget (INFO v2 ``budget_units``)."""
        return sum(1 << (UNIT_CODES[u] - 1) for u in self.units)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("index")
        d["ops"] = [asdict(c) for c in self.ops]
        return d

    @property
    def cost_model_id(self) -> int:
        """CRC-32 of the canonical JSON: INFO v2 reports it, the host compares."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return zlib.crc32(text.encode()) & 0xFFFFFFFF

    def op(self, name: str) -> OpCost | None:
        i = self.index.get(name)
        return None if i is None else self.ops[i]


def layer_ops(model: IRModel) -> list[Op]:
    """Ops with a C layer function (every op with an output), in schedule order."""
    return [op for op in model.walk() if op.output is not None]


def _dynamic_fj(model: IRModel, op: Op, coeffs: EnergyCoefficients) -> tuple[int, int]:
    from tinydyn.cost.traffic import op_traffic

    macs, t = op_traffic(model, op, coeffs)
    fj = (
        macs * coeffs.fj_per_mac
        + t.flash_bytes * coeffs.fj_per_flash_byte
        + t.sram_read_bytes * coeffs.fj_per_sram_read_byte
        + t.sram_write_bytes * coeffs.fj_per_sram_write_byte
    )
    return int(macs), int(fj)


def _cycle_terms(row: Any, macs: int) -> tuple[int, int]:
    """(fixed, q16) cycles of one cost-table row (LayerCycles): never negative."""
    if row.per_channel is not None and row.channels > 0 and macs > 0:
        fixed = max(int(round(row.fixed)), 0)
        q16 = max(int(round(row.per_channel * row.channels * (1 << Q16) / macs)), 0)
        return fixed, q16
    return max(int(round(row.full)), 0), 0


def budget_costs(
    model: IRModel, board: str | EnergyCoefficients | None = "host", table: CostTable | None = None
) -> BudgetCosts:
    """The per-op costs of ``model`` with ``board``'s energy coefficients (None or a board the
    energy model does not know: no energy unit) and, for the cycles unit, the per-layer cost
    ``table`` measured by ``tinydyn profile`` for this model."""
    from tinydyn.cost.energy import COEFFICIENTS, EnergyCoefficients, coefficients

    known = isinstance(board, EnergyCoefficients) or board in COEFFICIENTS
    # without an energy model every op costs 0 pJ: the firmware then offers no energy unit
    coeffs = coefficients(board) if known else EnergyCoefficients("", 0, 0, 0, 0, 0, 0, 1, 1)
    ops = layer_ops(model)
    rows: dict[str, Any] = {}
    source = ""
    if table is not None:
        table.check_model((op.name for op in model.walk()), model.model_id())
        rows = {r.name: r for r in table.layers}
        missing = [op.name for op in ops if op.name not in rows]
        if missing:
            raise BudgetCostError(
                f"cost table of {table.model} has no row for layers {', '.join(missing[:5])}: "
                "profile this model with `tinydyn profile`"
            )
        source = f"{table.kind} {table.unit} of {table.board} ({table.model} {table.model_id})"
    costs = []
    for op in ops:
        macs, dyn_fj = _dynamic_fj(model, op, coeffs)
        c_fixed, c_q16 = _cycle_terms(rows[op.name], macs) if rows else (0, 0)
        if macs > 0:
            e_fixed, e_q16 = 0, (dyn_fj << Q16) // (macs * PJ_PER_NJ)
        else:
            e_fixed, e_q16 = dyn_fj // PJ_PER_NJ, 0
        # the baseline energy of the op's modelled cycles (leakage, clock tree, fetch)
        e_fixed += c_fixed * coeffs.fj_per_cycle // PJ_PER_NJ
        e_q16 += c_q16 * coeffs.fj_per_cycle // PJ_PER_NJ
        cost = OpCost(op.name, int(e_fixed), int(e_q16), int(c_fixed), int(c_q16), macs)
        if max(cost.energy_q16_pj, cost.cycles_q16) > MAX_Q16 or max(e_fixed, c_fixed) >= MAX_FIXED:
            raise BudgetCostError(
                f"op '{op.name}' costs more per MAC than the firmware's budget arithmetic holds "
                f"({cost}): check the cost table"
            )
        costs.append(cost)
    by_name = {c.name: c for c in costs}
    init = max(int(round(table.control_cycles)), 0) if table is not None else 0
    next_e, next_c = _next_costs(model, by_name)
    return BudgetCosts(model.model_id(), coeffs.board, source, init, tuple(costs), next_e, next_c)


def _max_cost(ops: list[Op], by_name: dict[str, OpCost]) -> tuple[int, int]:
    """The most (pJ, cycles) one pass over ``ops`` can cost: a guard's dearer branch, every
    channel computed."""
    energy = cycles = 0
    for op in ops:
        c = by_name.get(op.name)
        if c is not None:
            energy += c.energy_pj(c.full_macs)
            cycles += c.cycles(c.full_macs)
            continue
        branches = [_max_cost(block, by_name) for block in (op.then, op.orelse)]
        energy += max(b[0] for b in branches)
        cycles += max(b[1] for b in branches)
    return energy, cycles


def _next_costs(model: IRModel, by_name: dict[str, OpCost]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For each exit (by index), the most the ops up to the next exit's decision plus that exit's
    head can cost: ``builder.set_next_costs`` in every unit (exits are top-level ops)."""
    ops = model.ops
    at = sorted((int(op.attrs["index"]), i) for i, op in enumerate(ops) if op.kind == "exit")
    energy = [0] * len(at)
    cycles = [0] * len(at)
    for k, ((_, here), (_, nxt)) in enumerate(zip(at, at[1:], strict=False)):
        e1, c1 = _max_cost(ops[here + 1 : nxt], by_name)
        e2, c2 = _max_cost(ops[nxt].then, by_name)
        energy[k], cycles[k] = e1 + e2, c1 + c2
    return tuple(energy), tuple(cycles)


# ---------------------------------------------------------------------------- the meter
class CostMeter:
    """What the reference executor counts per image besides MACs: the budget units' costs
    (with ``costs``), the gates' and early-exit heads' own MACs, the guarded blocks reached and the
    channel-gated channels offered (the denominators of the skip ratios). Generic over op kinds:
    gates are what ``OpKind.is_gate`` says, heads are the ops inside exits."""

    def __init__(self, model: IRModel, costs: BudgetCosts | None, n: int) -> None:
        from tinydyn.ops import op_kind

        self.costs = costs
        self.gates = {op.name for op in model.walk() if op_kind(op.kind).is_gate(op)}
        # early exits' heads (the final classifier belongs to the backbone, as in static_macs)
        self.heads = {o.name for e in model.exits() if not e.attrs.get("final") for o in model.walk(e.then)}
        self.gated_channels = {
            op.name: int(model.tensors[op.output].shape[0])
            for op in model.walk()
            if op.output is not None and op.attrs.get("channel_gate")
        }
        self.energy_pj = np.zeros(n, dtype=np.int64)
        self.cycles = np.full(n, costs.cycles_init if costs else 0, dtype=np.int64)
        self.gate_macs = np.zeros(n, dtype=np.int64)
        self.gate_cycles = np.zeros(n, dtype=np.int64)
        self.head_macs = np.zeros(n, dtype=np.int64)
        self.blocks_reached = np.zeros(n, dtype=np.int64)
        self.channels_offered = np.zeros(n, dtype=np.int64)
        # per exit index whose head ran: (pJ, cycles) counted when it decided (heads included)
        self.exit_costs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def charge(self, op: Op, executed: np.ndarray, macs: np.ndarray) -> None:
        """``op`` ran for the images in ``executed`` and executed ``macs`` MACs each."""
        if op.output is None:
            if op.kind == "guard":
                self.blocks_reached += executed
            return
        if op.name in self.gates:
            self.gate_macs += macs
        if op.name in self.heads:
            self.head_macs += macs
        if op.name in self.gated_channels:
            self.channels_offered += np.where(executed, self.gated_channels[op.name], 0)
        c = self.costs.op(op.name) if self.costs is not None else None
        if c is not None:
            self.energy_pj += np.where(executed, c.energy_fixed_pj + ((c.energy_q16_pj * macs) >> Q16), 0)
            cycles = np.where(executed, c.cycles_fixed + ((c.cycles_q16 * macs) >> Q16), 0)
            self.cycles += cycles
            if op.name in self.gates:
                self.gate_cycles += cycles

    def snapshot(self, index: int) -> None:
        self.exit_costs[index] = (self.energy_pj.copy(), self.cycles.copy())

    def cost_so_far(self, unit: str) -> np.ndarray:
        return self.energy_pj if unit == "energy" else self.cycles

    def results(self) -> dict[str, np.ndarray]:
        """Per-image figures for ``Results.extra`` (RESULT v2 reports the same from the board)."""
        return {
            "gate_macs": self.gate_macs,
            "head_macs": self.head_macs,
            "blocks_reached": self.blocks_reached,
            "channels_offered": self.channels_offered,
            "energy_cost_nj": np.minimum(self.energy_pj // PJ_PER_NJ, U32_MAX),
            "cycles_cost": np.minimum(self.cycles, U32_MAX),
            "gate_cycles_cost": self.gate_cycles,
        }
