"""Hypothesis fuzzing of an IR directory, run by tests/test_ir_hostile.py in its own process
under an address-space limit (``python -m tests.ir_fuzz IR_DIR WORK_DIR``).

Each example mutates ``model.json`` (a value anywhere in the tree replaced by another of any
JSON type, a key dropped, an op duplicated, the text truncated) or ``weights.npz`` (an array's
dtype, shape or values changed, an array dropped or added, the file's bytes truncated or
flipped). The property: loading gives a one-line IRError, or a model whose reference runs and
whose build either is refused in one line or compiles into C equal to the reference. The last
stdout line is a JSON summary (how many mutants were refused, built, checked bit-exact).
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ir_mutation import ADDRESS_SPACE_LIMIT, read_ir, write_ir
from tinydyn.codegen import build_project
from tinydyn.codegen.harness import run_host
from tinydyn.errors import TinydynError
from tinydyn.ir import IRModel
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

HOSTILE_TEXT = ["", "x\ny", "*/", "$(shell id)", '"', "\\", "??/", "é", "b0.conv1", "input", "stem", "a" * 80]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from([0, 1, -1, 2, 3, 255, 2**31, 2**63, 10**30])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(HOSTILE_TEXT),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(HOSTILE_TEXT), inner, max_size=2)
    ),
    max_leaves=6,
)
COUNTS = {"examples": 0, "refused": 0, "loaded": 0, "build_refused": 0, "built_bit_exact": 0}


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in a JSON tree."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, (*prefix, i))
    return out


def replace(node: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        node = dict(node)
        if delete and not rest:
            del node[head]
        else:
            node[head] = replace(node[head], rest, value, delete)
    else:
        node = list(node)
        if delete and not rest:
            del node[head]
        else:
            node[head] = replace(node[head], rest, value, delete)
    return node


@st.composite
def json_mutation(draw: st.DrawFn, data: dict[str, Any]) -> str:
    choice = draw(st.sampled_from(["replace", "delete", "duplicate_op", "truncate"]))
    if choice == "truncate":
        text = json.dumps(data)
        return text[: draw(st.integers(0, len(text) - 1))]
    if choice == "duplicate_op":
        ops = list(data["ops"])
        i = draw(st.integers(0, len(ops) - 1))
        ops.insert(draw(st.integers(0, len(ops))), ops[i])
        return json.dumps({**data, "ops": ops})
    path = draw(st.sampled_from(paths(data)[1:]))
    mutated = replace(data, path, draw(JSON_VALUES), delete=choice == "delete")
    return json.dumps(mutated)


@st.composite
def array_mutation(draw: st.DrawFn, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    arrays = dict(arrays)
    key = draw(st.sampled_from(sorted(arrays)))
    choice = draw(st.sampled_from(["dtype", "shape", "values", "drop", "add"]))
    if choice == "dtype":
        arrays[key] = arrays[key].astype(
            draw(st.sampled_from(["int8", "int16", "int32", "int64", "float64", "uint8"]))
        )
    elif choice == "shape":
        arrays[key] = arrays[key].reshape(-1)[: draw(st.integers(0, arrays[key].size))]
    elif choice == "values":
        flat = arrays[key].reshape(-1).copy()
        info = np.iinfo(flat.dtype)
        index = draw(st.integers(0, flat.size - 1))
        flat[index] = draw(st.integers(int(info.min), int(info.max)))
        arrays[key] = flat.reshape(arrays[key].shape)
    elif choice == "drop":
        del arrays[key]
    else:
        arrays[draw(st.sampled_from(HOSTILE_TEXT[1:]))] = np.zeros(3, np.int8)
    return arrays


def check_one_line(exc: TinydynError) -> None:
    message = str(exc)
    assert message and "\n" not in message, repr(message)


def check(directory: Path, work: Path) -> None:
    COUNTS["examples"] += 1
    try:
        ir = IRModel.load(directory)
    except TinydynError as exc:
        check_one_line(exc)
        COUNTS["refused"] += 1
        return
    COUNTS["loaded"] += 1
    images = np.random.default_rng(0).integers(0, 256, (6, *ir.input_spec.shape), dtype=np.uint8)
    policy = ExitPolicy("confidence", 0.6)
    reference = execute(ir, images, policy)
    out = work / "fw"
    shutil.rmtree(out, ignore_errors=True)
    try:
        build_project(ir, "host", out, compile=True)
    except TinydynError as exc:
        check_one_line(exc)
        COUNTS["build_refused"] += 1
        return
    got = run_host(ir, out / "fw", images, policy)
    assert np.array_equal(got.logits, reference.logits) and np.array_equal(got.exits, reference.exits)
    assert np.array_equal(got.macs, reference.macs) and np.array_equal(got.predictions, reference.predictions)
    COUNTS["built_bit_exact"] += 1


def main(ir_dir: Path, work: Path) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    data, arrays = read_ir(ir_dir)
    target = work / "mutant"
    fuzz = settings(
        max_examples=250, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )

    @fuzz
    @given(st.data())
    def fuzz_json(draw: st.DataObject) -> None:
        write_ir(target, draw.draw(json_mutation(data)), arrays)
        check(target, work)

    @fuzz
    @given(st.data(), st.sampled_from(["arrays", "truncate", "flip"]))
    def fuzz_npz(draw: st.DataObject, how: str) -> None:
        if how == "arrays":
            write_ir(target, data, draw.draw(array_mutation(arrays)))
        else:
            raw = (ir_dir / "weights.npz").read_bytes()
            if how == "truncate":
                raw = raw[: draw.draw(st.integers(0, len(raw) - 1))]
            else:
                at = draw.draw(st.integers(0, len(raw) - 1))
                raw = raw[:at] + bytes([raw[at] ^ draw.draw(st.integers(1, 255))]) + raw[at + 1 :]
            write_ir(target, data)
            (target / "weights.npz").write_bytes(raw)
        check(target, work)

    fuzz_json()
    fuzz_npz()
    hwm = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")]
    COUNTS["peak_rss_kib"] = int(hwm[0].split()[1])
    print(json.dumps(COUNTS))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
