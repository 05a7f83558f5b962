"""The model families tinydyn trains, lowers and deploys, behind one registry.

A family (:class:`tinydyn.models.family.ModelFamily`) supplies everything that depends on its
architecture: a validated config, the torch module, its lowering to the IR, its training loss
terms and parameter groups, and its FPGA partitioning. Everything else (training loop,
checkpoints, commands, codegen) works through it. The registry names each family's module
without importing it, so listing families (the CLI's --model choices) needs no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinydyn.errors import TinydynError

if TYPE_CHECKING:
    from tinydyn.models.family import ModelFamily

DEFAULT_FAMILY = "lcnet"  # what old checkpoints (which record no family) hold


@dataclass(frozen=True)
class FamilyEntry:
    module: str  # imported on first use
    attribute: str  # the ModelFamily instance in that module
    summary: str


FAMILIES: dict[str, FamilyEntry] = {
    "lcnet": FamilyEntry(
        "tinydyn.models.lcnet_family",
        "LCNET",
        "LC-Net: residual blocks skipped by an L-Net salience, channels by a C-Net, early exits",
    ),
    "s2dnas": FamilyEntry(
        "tinydyn.models.s2dnas_family",
        "S2DNAS",
        "S2DNAS: a static ResNet/VGG split along its channels into stages, each with an exit",
    ),
    "ddi": FamilyEntry(
        "tinydyn.models.ddi_family",
        "DDI",
        "DDI: ResNet/DenseNet units skipped by an LSTM layer gate, channels by a CNN gate, RADI branches",
    ),
}


class UnknownFamilyError(TinydynError):
    """A model family name no registry entry has."""


def family_names() -> list[str]:
    return list(FAMILIES)


def get_family(name: str) -> ModelFamily:
    entry = FAMILIES.get(name) if isinstance(name, str) else None
    if entry is None:
        shown = repr(name) if isinstance(name, str) and len(name) <= 40 and name.isprintable() else "another"
        raise UnknownFamilyError(
            f"model family {shown} is not one of {', '.join(FAMILIES)}: pass --model with one of them"
        )
    return getattr(importlib.import_module(entry.module), entry.attribute)
