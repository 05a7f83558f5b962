"""Editing an IR directory as an attacker or a careless user would: the JSON structure and the
npz arrays, renamed consistently or broken on purpose. Shared by the hostile-IR tests and the
IR fuzzer (tests/ir_fuzz.py), which runs under an address-space limit."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# The address space a tinydyn process gets in these tests: the interpreter with numpy and
# jinja2 maps about 0.5 GiB; what is left is far below any bomb's claim (3 GiB .. 84 GiB).
ADDRESS_SPACE_LIMIT = 1536 << 20


def read_ir(directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    data = json.loads((directory / "model.json").read_text())
    with np.load(directory / "weights.npz") as npz:
        return data, {k: npz[k] for k in npz.files}


def write_ir(directory: Path, data: Any, arrays: dict[str, np.ndarray] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else json.dumps(data)
    (directory / "model.json").write_text(text)
    if arrays is not None:
        np.savez(directory / "weights.npz", **arrays)
    return directory


def walk_ops(ops: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for op in ops:
        yield op
        yield from walk_ops(op.get("then", []))
        yield from walk_ops(op.get("orelse", []))


TENSOR_ATTRS = ("channel_gate", "block_gate", "input_mask", "gate", "logits")


def rename_tensor(data: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    data = copy.deepcopy(data)
    data["tensors"] = {new if k == old else k: v for k, v in data["tensors"].items()}
    if data["input"] == old:
        data["input"] = new
    for op in walk_ops(data["ops"]):
        op["inputs"] = {k: new if v == old else v for k, v in op.get("inputs", {}).items()}
        if op.get("output") == old:
            op["output"] = new
        for key in TENSOR_ATTRS:
            if op.get("attrs", {}).get(key) == old:
                op["attrs"][key] = new
    return data


def rename_op(
    data: dict[str, Any], arrays: dict[str, np.ndarray], old: str, new: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    data = copy.deepcopy(data)
    for op in walk_ops(data["ops"]):
        if op["name"] == old:
            op["name"] = new
    prefix = old + "."
    renamed = {(new + "." + k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in arrays.items()}
    return data, renamed


def run_tinydyn(*args: str, limit: int = ADDRESS_SPACE_LIMIT) -> tuple[subprocess.CompletedProcess[str], int]:
    """``tinydyn ARGS`` under an address-space limit; also its peak resident memory (KiB: VmHWM,
    which exec resets, unlike ru_maxrss, which keeps the forking test process's peak)."""
    code = (
        "import resource, runpy, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
        "sys.argv = ['tinydyn', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('tinydyn', run_name='__main__')\n"
        "finally:\n"
        "    sys.stdout.flush()\n"
        "    hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0].split()[1]\n"
        "    print('maxrss', hwm, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    lines = proc.stderr.splitlines()
    peak = int(lines[-1].split()[1]) if lines and lines[-1].startswith("maxrss") else -1
    stderr = "\n".join(lines[:-1]) if peak >= 0 else proc.stderr
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, stderr), peak


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
