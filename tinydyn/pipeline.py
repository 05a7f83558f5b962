"""One entry from what a user hands tinydyn to the integer IR, used by every command.

A checkpoint (the bundled one when none is given) is loaded through its model family and
lowered; an IR directory is loaded and schema-checked. Either way the result says where it
came from and which dataset it belongs to. This module sits above host/ and codegen/: they
take an :class:`~tinydyn.ir.IRModel` and never import torch or the model families; torch is
imported only when a checkpoint is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from tinydyn.ir import IRModel
from tinydyn.models.provenance import model_dataset


@dataclass
class LoadedModel:
    ir: IRModel
    what: str  # "checkpoint PATH" or "IR DIR", for messages
    path: Path
    module: Any = None  # the trained torch module (checkpoints only)
    payload: dict[str, Any] = field(default_factory=dict)  # the checkpoint's (empty for an IR)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = (int(v) for v in self.ir.input_spec.shape)
        return c, h, w

    def dataset(self, requested: str | None) -> tuple[str, str]:
        """The dataset to use (``requested`` when its classes and images fit, else the model's
        own: recorded in the checkpoint or inferred), and where that choice came from."""
        return model_dataset(
            requested, self.ir.classes, self.input_shape, self.payload.get("dataset"), self.what
        )


def load_ir(checkpoint: Path | None = None, ir_dir: Path | None = None) -> LoadedModel:
    """The integer IR of a checkpoint (lowered here) or of an IR directory (checked on load)."""
    if checkpoint is not None and ir_dir is not None:
        raise click.UsageError("give a CHECKPOINT or --ir DIR, not both")
    if ir_dir is not None:
        return LoadedModel(IRModel.load(ir_dir), f"IR {ir_dir}", Path(ir_dir))
    from tinydyn.models.checkpoint import bundled_checkpoint, load_model  # torch: only on this path
    from tinydyn.models.registry import get_family

    path = Path(checkpoint) if checkpoint is not None else bundled_checkpoint()
    module, payload = load_model(path)
    ir = get_family(module.family).lower(module, path.stem)
    return LoadedModel(ir, f"checkpoint {path}", path, module, payload)
