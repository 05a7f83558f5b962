"""Costs of a network: MACs, memory traffic and the energy model.

The IR side (:mod:`~tinydyn.cost.traffic`, :mod:`~tinydyn.cost.energy`) is integer/numpy and
torch-free, for the host, codegen and the firmware header. The training side
(:mod:`~tinydyn.cost.torch_cost`: static MACs of a torch model, MAC-weighted salience penalty,
a differentiable energy) imports torch, so its names load lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

# `tinydyn.cost.energy` stays the submodule (callers do `from tinydyn.cost import energy`):
# its function energy() is not re-exported under the same name.
from tinydyn.cost import energy
from tinydyn.cost.energy import (
    COEFFICIENTS,
    ENERGY_KIND,
    EnergyCoefficients,
    EnergyEstimate,
    EnergyModelError,
    c_header,
    coefficients,
    energy_from_macs,
    traffic_profile,
)
from tinydyn.cost.traffic import (
    DTYPE_BYTES,
    LayerCost,
    MemoryTraffic,
    TrafficProfile,
    layer_costs,
    op_traffic,
)

# torch-side names: resolved by __getattr__ so that `import tinydyn.cost` never loads torch
_TORCH_NAMES = {
    "BlockCost",
    "block_costs",
    "conv_macs",
    "expected_energy_nj",
    "salience_penalty",
    "static_backbone_macs",
}


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        return getattr(importlib.import_module("tinydyn.cost.torch_cost"), name)
    raise AttributeError(f"module 'tinydyn.cost' has no attribute '{name}'")


__all__ = [
    "COEFFICIENTS",
    "DTYPE_BYTES",
    "ENERGY_KIND",
    "EnergyCoefficients",
    "EnergyEstimate",
    "EnergyModelError",
    "LayerCost",
    "MemoryTraffic",
    "TrafficProfile",
    "c_header",
    "coefficients",
    "energy",  # the submodule (its function of the same name: energy.energy)
    "energy_from_macs",
    "layer_costs",
    "op_traffic",
    "traffic_profile",
    *sorted(_TORCH_NAMES),
]
