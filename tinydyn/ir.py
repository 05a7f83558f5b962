"""The integer IR: the one contract between quantize, codegen and hw.

An IR model is a linear schedule of integer ops over named tensors. Structure is JSON
(``model.json``), integer arrays live in ``weights.npz`` keyed ``"<op name>.<array>"``.
Nothing here imports torch: the host and codegen read the IR without it.

The arithmetic every op performs is specified in ``docs/ARITHMETIC.md``. Each op kind — its
fields, shapes, arrays, reference execution and C emission — lives in one module of
:mod:`tinydyn.ops` (``conv2d``, ``linear``, ``gap``, ``maxpool``, ``avgpool``, ``rescale``,
``guard``, ``exit``, ``concat``, ``split``, ``lstm_gate``); the schema every file passes on
load is :mod:`tinydyn.ir_schema`. Generated C must equal the reference executor bit for bit.

The three dynamic families fit without a rewrite: LC-Net's L-Net/C-Net are ``linear`` gates
feeding a ``guard`` and ``channel_gate``/``input_mask``; DDI's LSTM layer gate is an
``lstm_gate`` whose state tensors are ordinary named tensors carried between blocks, its
channel gate a ``conv2d``/``gap``/``linear`` chain ending in a binary salience, its dense
connectivity ``concat``; S2DNAS's stages are ``split`` channel groups joined by ``concat``,
each ending in an ``exit``.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinydyn.ir_schema import (
    DTYPE_RANGES,
    SALIENCE_ONE,
    ArraySpec,
    IRError,
    check_array_specs,
    check_array_values,
    check_structure,
    max_array_bytes,
    shape_matches,
    shape_text,
)

IR_FORMAT = "tinydyn-ir"
IR_VERSION = 1
MAX_JSON_BYTES = 16 << 20  # model.json; the bundled LC-Net's is 12 KB
MAX_NPY_HEADER = 4096  # bytes of one .npy member's header (numpy writes 128)

__all__ = ["DTYPE_RANGES", "IRError", "IRModel", "Op", "SALIENCE_ONE", "TensorSpec", "validate"]


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
        """Read and check an IR directory; it is untrusted, so the schema is checked before any
        array is read, and arrays are read only at the dtype and shape the schema expects."""
        directory = Path(directory)
        structure_path, weights_path = directory / "model.json", directory / "weights.npz"
        for path in (structure_path, weights_path):
            if not path.is_file():
                raise IRError(f"IR file {path} not found: run 'tinydyn lower' to create the IR")
        data = _read_structure(structure_path)
        if not isinstance(data, dict) or data.get("format") != IR_FORMAT or data.get("version") != IR_VERSION:
            got = (data.get("format"), data.get("version")) if isinstance(data, dict) else (None, None)
            raise IRError(
                f"{structure_path} is IR format {got[0]!r:.40} version {got[1]!r:.20}, this tinydyn reads "
                f"{IR_FORMAT!r} version {IR_VERSION}: re-run the lowering with this version"
            )
        expected = check_structure(data)
        arrays = _read_arrays(weights_path, expected)
        model = IRModel(
            name=data["name"],
            input=data["input"],
            tensors={n: TensorSpec(name=n, **_tensor_from_json(t)) for n, t in data["tensors"].items()},
            ops=[Op.from_json(d) for d in data["ops"]],
            arrays=arrays,
            classes=list(data["classes"]),
            meta=dict(data.get("meta", {})),
        )
        check_array_values(model)
        return model


def _tensor_json(spec: TensorSpec) -> dict[str, Any]:
    data = asdict(spec)
    del data["name"]
    data["shape"] = list(spec.shape)
    return data


def _tensor_from_json(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "shape": tuple(data["shape"]), "scale": float(data["scale"])}


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects with a key given twice are refused (json keeps the last one silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise IRError(f"IR model.json gives {key[:64]!r} twice in one object: names must be unique")
        out[key] = value
    return out


def _read_structure(path: Path) -> Any:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise IRError(
            f"{path} is {size} bytes, more than the {MAX_JSON_BYTES} an IR may have: not a tinydyn IR"
        )
    try:
        return json.loads(path.read_bytes(), object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IRError(f"{path} is not valid JSON ({exc}): re-run the lowering") from None
    except RecursionError:
        raise IRError(f"{path} nests JSON too deeply: not a tinydyn IR, re-run the lowering") from None


def _read_arrays(path: Path, expected: dict[str, ArraySpec]) -> dict[str, np.ndarray]:
    """The npz members the schema expects, each header checked before its data is read, so a
    header claiming a huge array (or a compressed bomb) costs nothing."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > len(expected) + 1:
                raise IRError(
                    f"{path} holds {len(members)} arrays, the IR uses {len(expected)}: re-run the lowering"
                )
            for info in members:
                key = info.filename.removesuffix(".npy")
                if key not in expected:
                    raise IRError(
                        f"{path}: array {key[:64]!r} belongs to no op: remove it or re-run the lowering"
                    )
                dtype, shape = expected[key]
                if info.file_size > MAX_NPY_HEADER + max_array_bytes(expected[key]):
                    raise IRError(
                        f"{path}: array '{key}' is larger than an {dtype} {shape_text(shape)} array"
                    )
                with archive.open(info) as stream:
                    version = np.lib.format.read_magic(stream)
                    header = _read_npy_header(stream, version)
                    if not (shape_matches(header[0], shape) and header[1:] == (False, np.dtype(dtype))):
                        got_shape, fortran, got_dtype = header
                        raise IRError(
                            f"IR array '{key}' is {got_dtype} {list(got_shape)}"
                            f"{' (Fortran order)' if fortran else ''}: "
                            f"expected {dtype} {shape_text(shape)}"
                        )
                with archive.open(info) as stream:
                    arrays[key] = np.lib.format.read_array(stream, allow_pickle=False)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        ValueError,
        OSError,
        EOFError,
        NotImplementedError,
        zlib.error,
    ) as exc:
        raise IRError(f"{path} is not a readable .npz ({str(exc)[:120]}): re-run the lowering") from None
    check_array_specs(arrays, expected)
    return arrays


def _read_npy_header(stream: Any, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream, max_header_size=MAX_NPY_HEADER)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream, max_header_size=MAX_NPY_HEADER)
    raise ValueError(f"unsupported .npy version {version}")


def validate(model: IRModel) -> None:
    """Check an in-memory model against the schema (raises IRError): what :meth:`IRModel.load`
    checks for a file, for models built by the lowering or by hand."""
    try:
        data = json.loads(json.dumps(model.structure_json()))
    except (TypeError, ValueError) as exc:
        raise IRError(f"IR structure is not JSON-serialisable ({exc}): re-run the lowering") from None
    if len(model.tensors) != len(data["tensors"]) or any(n != t.name for n, t in model.tensors.items()):
        raise IRError("IR tensors must be keyed by their own names: re-run the lowering")
    expected = check_structure(data)
    check_array_specs(model.arrays, expected)
    check_array_values(model)
