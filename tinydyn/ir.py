"""The integer IR: the one contract between quantize, codegen and hw.

An IR model is a linear schedule of integer ops over named tensors. Structure is JSON
(``model.json``), integer arrays live in ``weights.npz`` keyed ``"<op name>.<array>"``.
Nothing here imports torch: the host and codegen read the IR without it.

The arithmetic every op performs is specified in ``docs/ARITHMETIC.md`` and implemented
once, in :mod:`tinydyn.quantize.executor`; generated C must equal that executor bit for bit.

Op kinds (``Op.kind``) and their fields:

* ``conv2d`` inputs ``x`` [, ``residual``]; attrs ``stride``, ``padding``, ``groups``,
  ``out_range``; optional gates ``channel_gate`` (salience vector, one per output channel:
  channels with 0 are not computed), ``block_gate`` (scalar salience scaling the whole
  output, LC-Net's ``s_L * F(x)``) and ``input_mask`` (salience vector of the *input*
  channels: channels with 0 are not read). Arrays ``weight`` int8 [Cout, Cin/groups, k, k],
  ``bias`` int32 [Cout], ``mult`` int64 [Cout], ``shift`` int32 [Cout], and with a
  residual ``res_mult`` int64 [Cout].
* ``linear``: the same for vectors (weight [Cout, Cin]); gates/salience heads are linears
  whose output tensor has kind ``salience`` (uint8, scale 1/255).
* ``gap``: global average pool with round-half-up integer division.
* ``maxpool`` / ``avgpool``: k×k windows (attrs ``kernel``, ``stride``, ``padding``).
* ``rescale``: per-channel requantisation of a tensor (a skipped residual block's output).
* ``guard``: ``gate`` names a scalar salience; ``then`` runs when it is non-zero, ``orelse``
  when it is zero (a skipped block costs only its gate).
* ``exit``: an early-exit point. Its ``then`` ops (the head) compute the int16 tensor named
  by attr ``logits``; the run-time policy decides whether inference stops here (attrs
  ``index``, ``final``, ``next_cost_max``). The last exit is the final classifier.

Room for the other dynamic models (so they fit without a rewrite):

* DDI (DenseNet + LSTM layer gate + CNN channel gate): DenseNet's dense connectivity is
  ``concat`` (reserved kind: channel concatenation of tensors that share one scale, which
  the lowering guarantees by a ``rescale`` where they differ). The LSTM layer gate is a
  reserved ``lstm_gate`` kind whose state tensors are ordinary named tensors carried between
  blocks, and its output is a scalar ``salience`` tensor consumed by a ``guard`` exactly as
  LC-Net's L-Net output is. DDI's channel gate is a ``conv2d``/``gap``/``linear`` chain ending
  in a binary ``salience`` vector (0 or 255), consumed through ``channel_gate``.
* S2DNAS (channel-wise multi-stage network): ``split`` (reserved: a channel slice of a
  tensor, a view with no arithmetic) selects a stage's channel group, ``concat`` joins
  earlier stages' features, and each stage ends in an ``exit`` whose policy is the softmax
  confidence threshold already implemented here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinydyn.errors import TinydynError

IR_FORMAT = "tinydyn-ir"
IR_VERSION = 1

SUPPORTED_KINDS = {"conv2d", "linear", "gap", "maxpool", "avgpool", "rescale", "guard", "exit"}
RESERVED_KINDS = {"concat", "split", "lstm_gate"}
DTYPE_RANGES = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "int16": (-32768, 32767),
    "int32": (-(2**31), 2**31 - 1),
}
SALIENCE_ONE = 255  # a salience of 255 means 1.0: saliences are uint8 with scale 1/255


class IRError(TinydynError):
    """An IR file that is missing, from another version, or inconsistent."""


@dataclass
class TensorSpec:
    """A named tensor; ``shape`` excludes the batch dimension (C, H, W) or (C,)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float
    kind: str = "activation"  # activation | salience | logits | vector

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Op:
    """One op of the schedule; see the module docstring for the fields each kind uses."""

    kind: str
    name: str
    inputs: dict[str, str] = field(default_factory=dict)
    output: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    then: list[Op] = field(default_factory=list)
    orelse: list[Op] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.inputs:
            out["inputs"] = self.inputs
        if self.output is not None:
            out["output"] = self.output
        if self.attrs:
            out["attrs"] = self.attrs
        if self.then:
            out["then"] = [op.to_json() for op in self.then]
        if self.orelse:
            out["orelse"] = [op.to_json() for op in self.orelse]
        return out

    @staticmethod
    def from_json(data: dict[str, Any]) -> Op:
        return Op(
            kind=data["kind"],
            name=data["name"],
            inputs=dict(data.get("inputs", {})),
            output=data.get("output"),
            attrs=dict(data.get("attrs", {})),
            then=[Op.from_json(d) for d in data.get("then", [])],
            orelse=[Op.from_json(d) for d in data.get("orelse", [])],
        )


@dataclass
class IRModel:
    """A whole integer model: tensors, schedule, arrays and metadata."""

    name: str
    input: str
    tensors: dict[str, TensorSpec]
    ops: list[Op]
    arrays: dict[str, np.ndarray]
    classes: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    # --- queries -------------------------------------------------------------------
    @property
    def input_spec(self) -> TensorSpec:
        return self.tensors[self.input]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def walk(self, ops: list[Op] | None = None) -> Iterator[Op]:
        """Every op, depth first, including those inside guards and exit heads."""
        for op in self.ops if ops is None else ops:
            yield op
            yield from self.walk(op.then)
            yield from self.walk(op.orelse)

    def exits(self) -> list[Op]:
        return [op for op in self.walk() if op.kind == "exit"]

    def array(self, op: Op, key: str) -> np.ndarray:
        try:
            return self.arrays[f"{op.name}.{key}"]
        except KeyError:
            raise IRError(f"IR array '{op.name}.{key}' is missing: re-run the lowering") from None

    def model_id(self) -> str:
        """A stable fingerprint of structure and weights (the board reports it in INFO)."""
        digest = hashlib.sha256(json.dumps(self.structure_json(), sort_keys=True).encode())
        for key in sorted(self.arrays):
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(self.arrays[key]).tobytes())
        return digest.hexdigest()[:16]

    # --- serialisation ---------------------------------------------------------------
    def structure_json(self) -> dict[str, Any]:
        return {
            "format": IR_FORMAT,
            "version": IR_VERSION,
            "name": self.name,
            "input": self.input,
            "classes": self.classes,
            "tensors": {n: _tensor_json(t) for n, t in self.tensors.items()},
            "ops": [op.to_json() for op in self.ops],
            "meta": self.meta,
        }

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.json").write_text(json.dumps(self.structure_json(), indent=1))
        np.savez(directory / "weights.npz", **self.arrays)
        return directory

    @staticmethod
    def load(directory: str | Path) -> IRModel:
        directory = Path(directory)
        structure_path, weights_path = directory / "model.json", directory / "weights.npz"
        for path in (structure_path, weights_path):
            if not path.is_file():
                raise IRError(f"IR file {path} not found: run 'tinydyn lower' to create the IR")
        try:
            data = json.loads(structure_path.read_text())
        except json.JSONDecodeError as exc:
            raise IRError(f"{structure_path} is not valid JSON ({exc}): re-run the lowering") from None
        if data.get("format") != IR_FORMAT or data.get("version") != IR_VERSION:
            raise IRError(
                f"{structure_path} is IR format {data.get('format')!r} version "
                f"{data.get('version')!r}, this tinydyn reads {IR_FORMAT!r} version {IR_VERSION}: "
                "re-run the lowering with this version"
            )
        try:
            with np.load(weights_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError) as exc:
            raise IRError(f"{weights_path} is not a readable .npz ({exc}): re-run the lowering") from None
        model = IRModel(
            name=data["name"],
            input=data["input"],
            tensors={n: TensorSpec(name=n, **_tensor_from_json(t)) for n, t in data["tensors"].items()},
            ops=[Op.from_json(d) for d in data["ops"]],
            arrays=arrays,
            classes=list(data["classes"]),
            meta=dict(data.get("meta", {})),
        )
        validate(model)
        return model


def _tensor_json(spec: TensorSpec) -> dict[str, Any]:
    data = asdict(spec)
    del data["name"]
    data["shape"] = list(spec.shape)
    return data


def _tensor_from_json(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "shape": tuple(data["shape"])}


def validate(model: IRModel) -> None:
    """Check that every op names known tensors, kinds and arrays (raises IRError)."""
    for op in model.walk():
        if op.kind in RESERVED_KINDS:
            raise IRError(
                f"IR op '{op.name}' has kind '{op.kind}', reserved for DDI/S2DNAS models and not "
                "implemented in this version: lower a model without it"
            )
        if op.kind not in SUPPORTED_KINDS:
            raise IRError(f"IR op '{op.name}' has unknown kind '{op.kind}': re-run the lowering")
        names = list(op.inputs.values()) + ([op.output] if op.output else [])
        for key in ("channel_gate", "block_gate", "input_mask", "gate", "logits"):
            if op.attrs.get(key):
                names.append(op.attrs[key])
        for name in names:
            if name not in model.tensors:
                raise IRError(f"IR op '{op.name}' refers to unknown tensor '{name}'")
        spec = model.tensors.get(op.output) if op.output else None
        if spec is not None and spec.dtype not in DTYPE_RANGES:
            raise IRError(f"IR tensor '{spec.name}' has unsupported dtype '{spec.dtype}'")
        if op.kind in ("conv2d", "linear"):
            for key in ("weight", "bias", "mult", "shift"):
                model.array(op, key)
            if op.attrs.get("channel_gate") and op.attrs.get("block_gate"):
                raise IRError(f"IR op '{op.name}' has both a channel gate and a block gate")
    finals = [op for op in model.exits() if op.attrs.get("final")]
    if len(finals) != 1 or model.ops[-1].kind != "exit" or not model.ops[-1].attrs.get("final"):
        raise IRError("IR schedule must end in exactly one final exit (the last classifier)")
