"""Which of a model's optional early exits (DDI's RADI branches) a dataflow build holds when
``tinydyn fpga --branches`` does not say.

Every partition costs its IODMA pair and two shell ports whatever its size
(:mod:`tinydyn.hw.resources`: about 8,200 LUT on the xc7z020), and each DDI branch adds two
partitions (the branch and a segment boundary), so a (3,3,3) ResNet's six branches cannot all fit
(13 partitions: about 106,700 LUT of fixed part against the part's 53,200). The default is a
simple, documented rule, decided before any finn-plus run:

* **how many:** the most branches whose design's fixed part (:func:`fixed_part`: the shell and the
  IODMAs of its partitions) leaves at least :data:`LAYER_SHARE` of the budget to the layers, FIFOs
  and DWCs, in every resource the fit is decided on;
* **which:** among the subsets of that size, the one with the fewest mean MACs per image on the
  validation images under the build's policy (:func:`choose_branches`), from the integer
  reference of the model with every branch: an image leaves at the first built exit whose decision
  lets it go (a decision depends only on that exit's own logits), the heads of unbuilt exits are not
  computed. Mean MACs per image is what the early-exit design saves over the static one; at equal
  resources the fabric's throughput follows it.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np

from tinydyn.hw.resources import IODMA_IN, IODMA_OUT, shell_resources
from tinydyn.ir import IRModel
from tinydyn.ops import op_kind
from tinydyn.quantize.executor import every_head, trace
from tinydyn.quantize.policy import ExitPolicy

LAYER_SHARE = 0.4  # of the budget left to the folding-dependent part (layers, FIFOs, DWCs)


def fixed_part(partitions: int) -> dict[str, float]:
    """The part of a design of ``partitions`` partitions that no folding shrinks: the Zynq shell
    with one AXI port pair per partition, and each partition's input and output IODMA."""
    res = shell_resources(partitions)
    for k in res:
        res[k] += partitions * (IODMA_IN.get(k, 0) + IODMA_OUT.get(k, 0))
    return res


def branch_count(
    available: int, partitions: Callable[[int], int], budget: dict[str, float], keys: tuple[str, ...]
) -> int:
    """The most of ``available`` branches whose design (``partitions(b)`` partitions) leaves
    :data:`LAYER_SHARE` of ``budget`` after its fixed part, in each of ``keys``; 0 if none does."""
    best = 0
    for b in range(1, available + 1):
        fixed = fixed_part(partitions(b))
        if all(fixed[k] <= (1.0 - LAYER_SHARE) * budget[k] for k in keys):
            best = b
    return best


def exit_costs(ir: IRModel) -> tuple[list[int], list[int], int]:
    """Per exit of a flat (gate-free) IR: the backbone MACs before it and its head's MACs; and the
    backbone's MACs in all (the final head's excluded)."""
    before, heads, total = [], [], 0
    for op in ir.ops:
        if op.kind == "exit":
            before.append(total)
            heads.append(sum(op_kind(o.kind).macs(o) for o in ir.walk(op.then)))
        else:
            total += sum(op_kind(o.kind).macs(o) for o in ir.walk([op]))
    return before, heads, total


def exit_decisions(ir: IRModel, images: np.ndarray, policy: ExitPolicy) -> list[np.ndarray]:
    """Per early exit: which images the policy lets leave there (the integer reference, every head
    computed)."""
    exits = sorted(ir.exits(), key=lambda op: op.attrs["index"])
    if policy.kind == "none":
        return [np.zeros(len(images), dtype=bool) for _ in exits[:-1]]
    logits = trace(ir, images, every_head(), keep_tensors=False).exit_logits
    integer = policy.to_integer(ir)
    return [np.asarray(integer.decide(logits[k], k), dtype=bool) for k in range(len(exits) - 1)]


def mean_macs(
    subset: tuple[int, ...], leave: list[np.ndarray], costs: tuple[list[int], list[int], int]
) -> float:
    """Mean MACs per image with only the early exits ``subset`` built."""
    before, heads, total = costs
    n = len(leave[0]) if leave else 0
    cost = np.full(n, float(total + heads[-1] + sum(heads[k] for k in subset)))
    staying = np.ones(n, dtype=bool)
    spent = 0
    for k in subset:
        spent += heads[k]
        here = staying & leave[k]
        cost[here] = before[k] + spent
        staying &= ~here
    return float(cost.mean()) if n else 0.0


def choose_branches(ir: IRModel, images: np.ndarray, policy: ExitPolicy, count: int) -> tuple[int, ...]:
    """The ``count`` early exits of ``ir`` (the gate-free model with every branch) with the fewest
    mean MACs per image on ``images`` under ``policy``; ties: the earlier exits."""
    leave = exit_decisions(ir, images, policy)
    if count <= 0 or not leave:
        return ()
    costs = exit_costs(ir)
    return min(
        combinations(range(len(leave)), min(count, len(leave))), key=lambda s: mean_macs(s, leave, costs)
    )
