"""S2DNAS's per-stage exit thresholds and its reward (paper Eq. 2 and §3.3, "Dynamic inference").

Stage ``i`` exits when its top-1 softmax confidence reaches ``t_i``. The thresholds are chosen to
maximise the reward ``ACC × COST^ω`` on held-out images, where COST is the mean MACs executed
under dynamic inference relative to the static backbone's MACs (the ratio only rescales the
reward by a constant, so the choice is the paper's). Everything is measured on the integer
model: one probe pass of the reference executor computes every stage's logits and the MACs
executed up to each decision (:func:`tinydyn.host.sweep.probe`), and the integer confidence
test of the firmware decides each candidate threshold.

Beyond the paper, COST may be the **modelled energy** of the default emulated board instead of
MACs (``unit="energy"``): the budget cost model of tinydyn/cost/budget.py (the same per-op
picojoules the firmware's energy budgets use) charged up to each exit's decision, relative to
the static backbone's energy. Or the **cycles on the QEMU board** (``unit="cycles"``): the model
itself is built and run under QEMU on a few held-out images (:data:`PROFILE_IMAGES`), every layer's
retired instructions counted and its cycles modelled by the Cortex-M4 cycle model
(:func:`tinydyn.host.profile.measured_cost_table`), and those per-layer cycles are charged up to
each exit's decision by the same budget cost model; the static backbone's cycles come from its
one-stage model of the same shapes with this model's weights, profiled the same way. S2DNAS
computes the same layers for every image that reaches them (no gates), so a few images fix every
layer's cost.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tinydyn.cost.budget import budget_costs
from tinydyn.data import Dataset
from tinydyn.host.sweep import Probe, probe, probe_from_trace
from tinydyn.ir import IRModel
from tinydyn.quantize.executor import every_head, trace
from tinydyn.quantize.policy import confident, lut_multiplier

DEFAULT_OMEGA = -0.06  # the paper's ω
# what COST counts: executed MACs, modelled energy (pJ), or cycles on the QEMU board (modelled
# from the instructions QEMU retires)
COST_UNITS = ("macs", "energy", "cycles")
ENERGY_BOARD = "qemu-mps2-an386"  # whose energy coefficients (the default emulated board)
PROFILE_IMAGES = 4  # held-out images the cycles unit runs under QEMU per model
# the thresholds tried per stage: dense near 1, where the confident images are told apart
THRESHOLD_GRID = (
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.75,
    0.8,
    0.85,
    0.9,
    0.925,
    0.95,
    0.97,
    0.98,
    0.99,
    0.995,
    0.999,
    1.0,
)
MAX_EXHAUSTIVE = 20_000  # threshold combinations tried one by one; beyond: coordinate ascent


def reward(accuracy: float, cost: float, omega: float = DEFAULT_OMEGA) -> float:
    """ACC × COST^ω (Eq. 2); ``cost`` > 0, relative to the static model."""
    return float(accuracy * cost**omega)


@dataclass
class StageChoice:
    """Thresholds and what they give on the images they were chosen on."""

    thresholds: tuple[float, ...]
    accuracy: float
    mean_macs: float
    cost: float  # mean MACs / static MACs
    reward: float
    omega: float
    images: int
    exit_fractions: list[float]
    stage_accuracy: list[float | None]  # accuracy of the images leaving at each stage
    where: str = ""
    unit: str = "macs"  # what ``cost`` counts (COST_UNITS)
    mean_cost: float | None = None  # mean spent in ``unit`` (pJ for energy; MACs; cycles)

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": list(self.thresholds),
            "accuracy": self.accuracy,
            "mean_macs": self.mean_macs,
            "cost": self.cost,
            "reward": self.reward,
            "omega": self.omega,
            "images": self.images,
            "exit_fractions": self.exit_fractions,
            "stage_accuracy": self.stage_accuracy,
            "where": self.where,
            "unit": self.unit,
            "mean_cost": self.mean_cost,
        }


def outcome(pr: Probe, decisions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chosen logits' argmax, exit, MACs) per image given each early stage's leave decisions;
    the confidence policy's accounting (every head up to the exit computed)."""
    n = len(pr.logits[0])
    exits = np.full(n, pr.num_exits - 1, dtype=np.int64)
    running = np.ones(n, dtype=bool)
    for k, leave in enumerate(decisions):
        leave = leave & running
        exits[leave] = k
        running &= ~leave
    logits = np.stack(pr.logits)  # (exits, N, classes)
    macs = np.stack(pr.macs)  # (exits, N)
    chosen = logits[exits, np.arange(n)]
    return np.argmax(chosen, axis=1), exits, macs[exits, np.arange(n)]


def choose(
    pr: Probe,
    labels: np.ndarray,
    lut_mults: list[int],
    static_macs: int,
    omega: float = DEFAULT_OMEGA,
    max_cost: float | None = None,
    exit_costs: list[np.ndarray] | None = None,
    unit: str = "macs",
) -> StageChoice:
    """The per-stage thresholds (from THRESHOLD_GRID) with the largest reward on the probe's images;
    with ``max_cost``, the most accurate ones whose cost (mean MACs / static MACs) stays within it
    (an operating point chosen for accuracy at a MAC saving, e.g. 0.4: at least 60 % fewer MACs;
    when no combination fits, the cheapest). ``exit_costs``: per exit, each image's cost in
    ``unit`` when it leaves there (else the probe's MACs); ``static_macs`` is then the static
    model's cost in that unit."""
    stages = pr.num_exits
    grid = THRESHOLD_GRID
    # leave[k][g]: images confident enough at stage k under grid threshold g (the integer test)
    leave = [
        [confident(pr.logits[k], lut_mults[k], int(round(t * 65536))) for t in grid]
        for k in range(stages - 1)
    ]

    spent = np.stack(exit_costs) if exit_costs is not None else np.stack(pr.macs)  # (exits, N)
    n = len(labels)

    def score(combo: tuple[int, ...]) -> tuple[float, float, float]:
        pred, exits, _ = outcome(pr, [leave[k][g] for k, g in enumerate(combo)])
        acc, cost = float((pred == labels).mean()), float(spent[exits, np.arange(n)].mean()) / static_macs
        if max_cost is not None:  # within the cap: accuracy (ties: the cheaper); beyond: the cheaper
            return (acc - 1e-9 * cost if cost <= max_cost else -cost), acc, cost
        return reward(acc, cost, omega), acc, cost

    if len(grid) ** (stages - 1) <= MAX_EXHAUSTIVE:
        best = max(itertools.product(range(len(grid)), repeat=stages - 1), key=lambda c: score(c)[0])
    else:  # coordinate ascent from the strictest thresholds, three sweeps
        best = (len(grid) - 1,) * (stages - 1)
        for _ in range(3):
            for k in range(stages - 1):
                best = max(
                    (best[:k] + (g,) + best[k + 1 :] for g in range(len(grid))), key=lambda c: score(c)[0]
                )
    thresholds = tuple(grid[g] for g in best)
    pred, exits, macs = outcome(pr, [leave[k][g] for k, g in enumerate(best)])
    _, acc, cost = score(best)
    value = reward(acc, cost, omega)
    fractions, stage_acc = [], []
    for k in range(stages):
        here = exits == k
        fractions.append(float(here.mean()))
        stage_acc.append(float((pred[here] == labels[here]).mean()) if here.any() else None)
    return StageChoice(
        thresholds,
        acc,
        float(macs.mean()),
        cost,
        value,
        omega,
        len(labels),
        fractions,
        stage_acc,
        unit=unit,
        mean_cost=float(spent[exits, np.arange(n)].mean()),
    )


def ir_probe_multipliers(ir: IRModel) -> list[int]:
    """Each exit's LUT multiplier (the integer confidence test's), in exit order."""
    exits = sorted(ir.exits(), key=lambda op: op.attrs["index"])
    return [lut_multiplier(ir.tensors[op.attrs["logits"]].scale) for op in exits]


def ir_probe(ir: IRModel, images: np.ndarray) -> tuple[Probe, list[int]]:
    """Every stage's integer logits and MACs on ``images``, and each exit's LUT multiplier."""
    return probe(ir, images), ir_probe_multipliers(ir)


def energy_probe(
    ir: IRModel, images: np.ndarray, board: str = ENERGY_BOARD
) -> tuple[Probe, list[np.ndarray]]:
    """The probe, and per exit each image's modelled energy (pJ) when it leaves there: the
    budget cost model charged up to that exit's decision, every earlier head included (as the
    probe's MACs are)."""
    costs = budget_costs(ir, board)
    run = trace(ir, images, replace(every_head(), costs=costs), keep_tensors=False)
    indices = sorted(int(op.attrs["index"]) for op in ir.exits())
    return probe_from_trace(ir, run), [run.exit_costs[i][0] for i in indices]


def static_energy_pj(cfg: Any, board: str = ENERGY_BOARD) -> int:
    """Modelled energy of one inference of the static backbone ``cfg`` was transformed from
    (every connection, one classifier). The cost model depends on layer shapes only, so the
    one-stage model of the same architecture is lowered with its initial weights."""
    from tinydyn.models.s2dnas import S2DNASNet
    from tinydyn.models.s2dnas_lower import lower

    static = replace(cfg, stages=1, splits=(), concat=(), thresholds=(), naive_exits=())
    ir = lower(S2DNASNet(static), "static")
    image = np.zeros((1, cfg.in_channels, cfg.input_size, cfg.input_size), dtype=np.uint8)
    _, per_exit = energy_probe(ir, image, board)
    return int(per_exit[-1][0])


def cycles_probe(
    ir: IRModel, images: np.ndarray, profile_images: np.ndarray
) -> tuple[Probe, list[np.ndarray]]:
    """The probe, and per exit each image's cycles when it leaves there: ``ir``'s per-layer cycles
    measured under QEMU on ``profile_images``, charged up to that exit's decision by the budget
    cost model (every earlier head included, as the probe's MACs are)."""
    from tinydyn.host.profile import measured_cost_table

    costs = budget_costs(ir, ENERGY_BOARD, measured_cost_table(ir, profile_images))
    run = trace(ir, images, replace(every_head(), costs=costs), keep_tensors=False)
    indices = sorted(int(op.attrs["index"]) for op in ir.exits())
    return probe_from_trace(ir, run), [run.exit_costs[i][1] for i in indices]


def static_cycles(model: Any, profile_images: np.ndarray) -> int:
    """Cycles on the QEMU board of one inference of the static backbone ``model`` was transformed
    from: its one-stage model of the same shapes (every connection, one classifier), carrying
    ``model``'s weights and quantisers where the shapes agree, profiled on ``profile_images`` as
    :func:`cycles_probe` does. The kernels' work depends on the shapes and on the requantisation
    path each layer's scales select, not on the weights' values: a removed connection's zeros
    cost what the static weights did."""
    import torch

    from tinydyn.models.s2dnas import S2DNASNet
    from tinydyn.models.s2dnas_lower import lower

    cfg = model.config
    one = S2DNASNet(replace(cfg, stages=1, splits=(), concat=(), thresholds=(), naive_exits=()))
    one.train()
    with torch.no_grad():  # let Brevitas build its runtime state (scales) first, as warm_start does
        one(torch.from_numpy(profile_images[:2].astype(np.float32) / 255.0))
        own, mine = model.state_dict(), one.state_dict()
        one.load_state_dict(
            {k: own[k] if k in own and own[k].shape == v.shape else v for k, v in mine.items()}
        )
    one.eval()
    _, per_exit = cycles_probe(lower(one, "static"), profile_images[:1], profile_images)
    return int(per_exit[-1][0])


def tune_thresholds(
    model: Any,
    held_out: Dataset,
    omega: float = DEFAULT_OMEGA,
    unit: str = "macs",
    max_cost: float | None = None,
) -> StageChoice:
    """Choose ``model``'s per-stage thresholds on ``held_out`` (COST in ``unit``; the largest
    reward, or with ``max_cost`` the most accurate within it) and write them into its config."""
    from tinydyn.models.s2dnas_lower import lower, static_macs

    ir = lower(model, "tuning")
    if unit == "energy":
        pr, spent = energy_probe(ir, held_out.images)
        mults = ir_probe_multipliers(ir)
        base = static_energy_pj(model.config)
    elif unit == "cycles":
        shots = held_out.images[:PROFILE_IMAGES]
        pr, spent = cycles_probe(ir, held_out.images, shots)
        mults = ir_probe_multipliers(ir)
        base = static_cycles(model, shots)
    elif unit == "macs":
        (pr, mults), spent, base = ir_probe(ir, held_out.images), None, static_macs(model.config)
    else:
        raise ValueError(f"unknown cost unit '{unit}': use one of {', '.join(COST_UNITS)}")
    choice = choose(pr, held_out.labels, mults, base, omega, max_cost, exit_costs=spent, unit=unit)
    choice.where = f"{len(held_out)} {held_out.name} {held_out.split} images held out of training"
    model.config = replace(model.config, thresholds=choice.thresholds)
    return choice
