"""An IR directory is untrusted: hostile names never steer generated code, schema violations are
one-line errors (exit 2), and no file makes tinydyn allocate what it claims."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinydyn.codegen import CodegenError, build_project
from tinydyn.codegen.harness import run_host
from tinydyn.codegen.render import c_comment, c_string, guard_value, make_comment
from tinydyn.ir import IRError, IRModel
from tinydyn.ir_schema import MAX_DEPTH
from tinydyn.quantize.executor import execute
from tinydyn.quantize.policy import ExitPolicy

from .codegen_support import assert_same
from .conftest import require_tool
from .ir_mutation import (
    assert_one_line_error,
    read_ir,
    rename_op,
    rename_tensor,
    run_tinydyn,
    walk_ops,
    write_ir,
)

Mutation = Callable[[dict[str, Any], dict[str, np.ndarray]], tuple[Any, dict[str, np.ndarray]]]


@pytest.fixture(scope="module")
def ir_dir(small_ir, tmp_path_factory) -> Path:
    return small_ir.save(tmp_path_factory.mktemp("ir") / "ir")


@pytest.fixture
def base(ir_dir) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return read_ir(ir_dir)


def load_error(directory: Path) -> str:
    with pytest.raises(IRError) as info:
        IRModel.load(directory)
    message = str(info.value)
    assert "\n" not in message and message, message
    return message


# ----------------------------------------------------------------------------- hostile names
HOSTILE_NAMES = [
    "x\nall:\n\ttouch pwned",  # a newline reaching the Makefile
    "a */ int evil(void) { return 1; } /* b",  # closing a C comment
    "$(shell touch pwned)",  # make expansion
    'q"; system("id"); "',  # closing a C string
    "back\\",  # line continuation
    "??/",  # a trigraph (backslash)
    "a b",
    "a/b",
    "../../etc",
    "a;b",
    "`id`",
    "énergie",
    "",
    "1abc",
    "_start",
    "x" * 65,
]


def with_name(base: tuple[dict[str, Any], dict[str, np.ndarray]], place: str, name: str) -> tuple[Any, Any]:
    """The IR with ``name`` as its model name, a conv's op name, or a conv output's tensor name."""
    data, arrays = base
    if place == "model":
        return {**data, "name": name}, arrays
    if place == "op":
        return rename_op(data, arrays, "b0.conv2", name)
    return rename_tensor(data, "b0.out", name), arrays


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: repr(n)[:24])
@pytest.mark.parametrize("place", ["model", "op", "tensor"])
def test_hostile_names_are_refused_on_load(base, tmp_path, name, place):
    message = load_error(write_ir(tmp_path / "ir", *with_name(base, place, name)))
    assert "safe identifier" in message or "op names must be safe" in message
    if "\n" in name:
        assert "\\n" in message  # the name is shown escaped, its newline never raw


@pytest.mark.parametrize(
    "place, name",
    [("model", HOSTILE_NAMES[0]), ("op", HOSTILE_NAMES[1]), ("tensor", HOSTILE_NAMES[2])],
)
def test_build_refuses_hostile_names_before_writing_anything(base, tmp_path, place, name):
    ir = write_ir(tmp_path / "ir", *with_name(base, place, name))
    proc, _ = run_tinydyn("build", "--ir", str(ir), "--board", "host", "--out", str(tmp_path / "fw"))
    assert_one_line_error(proc, "not a safe identifier" if place != "op" else "op names must be safe")
    assert not (tmp_path / "fw").exists()
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_in_memory_ir_gets_the_same_check(small_ir, tmp_path):
    ops = [*small_ir.ops]
    bad = IRModel("evil\n", small_ir.input, small_ir.tensors, ops, small_ir.arrays, small_ir.classes)
    with pytest.raises(IRError, match="not a safe identifier"):
        build_project(bad, "host", tmp_path / "fw")
    assert not (tmp_path / "fw").exists()


# names that are identifiers but mean something to C, its headers or the generated code
C_MEANINGFUL = {
    "ops": {
        "b0.conv1": "main",
        "b0.conv2": "memset",
        "stem": "NULL",
        "b1.conv1": "finish",
        "b1.conv2": "int",
    },
    "tensors": {"b0.h": "size_t", "b1.h": "td_infer", "stem": "Reset_Handler", "b0.out": "image"},
}


def global_symbols(executable: Path) -> set[str]:
    out = subprocess.run(
        ["nm", "-g", "--defined-only", str(executable)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_names_c_gives_meaning_to_build_bit_exact_with_no_foreign_symbol(base, small_ir, tmp_path):
    require_tool("gcc")
    data, arrays = base
    for old, new in C_MEANINGFUL["ops"].items():
        data, arrays = rename_op(data, arrays, old, new)
    for old, new in C_MEANINGFUL["tensors"].items():
        data = rename_tensor(data, old, new)
    ir = IRModel.load(write_ir(tmp_path / "ir", data, arrays))
    build_project(ir, "host", tmp_path / "renamed", compile=True)
    build_project(small_ir, "host", tmp_path / "plain", compile=True)
    # the same globals as the plain build, but for the constant arrays named after the layers
    weights = re.compile(r"(?:[wbmsr]|rq)_.*")
    renamed = {s for s in global_symbols(tmp_path / "renamed" / "fw") if not weights.fullmatch(s)}
    plain = {s for s in global_symbols(tmp_path / "plain" / "fw") if not weights.fullmatch(s)}
    assert renamed == plain
    source = (tmp_path / "renamed" / "model.c").read_text()
    assert "static void l_main(td_ctx_t *ctx)" in source and "static void l_NULL(td_ctx_t *ctx)" in source
    images = np.random.default_rng(0).integers(0, 256, (24, *ir.input_spec.shape), dtype=np.uint8)
    for policy in (ExitPolicy("none"), ExitPolicy("confidence", 0.6)):
        assert_same(execute(ir, images, policy), run_host(ir, tmp_path / "renamed" / "fw", images, policy))


@pytest.mark.parametrize(
    "kind, first, second",
    [("op", "b0.conv1", "b0_conv1"), ("op", "b0.conv1", "t_b0_h"), ("op", "b0.conv1", "w_stem")],
)
def test_names_that_become_one_c_identifier_are_refused(base, tmp_path, kind, first, second):
    data, arrays = base
    data, arrays = rename_op(data, arrays, "b0.conv2", second)
    ir = write_ir(tmp_path / "ir", data, arrays)
    proc, _ = run_tinydyn("build", "--ir", str(ir), "--board", "host", "--out", str(tmp_path / "fw"))
    assert_one_line_error(proc, "both become the C identifier", "rename one")


def test_class_names_never_reach_generated_code(base, tmp_path):
    data, arrays = base
    data = {**data, "classes": ["*/ evil(); /*", *data["classes"][1:]]}
    ir = IRModel.load(write_ir(tmp_path / "ir", data, arrays))
    build_project(ir, "host", tmp_path / "fw")
    for path in (tmp_path / "fw").rglob("*"):
        if path.is_file():
            assert "evil" not in path.read_text(errors="replace"), path


def test_render_guard_and_context_filters():
    for text in ("a\nb", "x */ y", "a // b", "$(shell id)", 'q"', "a\\", "??/", "#x"):
        with pytest.raises(CodegenError, match="refusing to write"):
            guard_value(text)
    assert guard_value("conv 3x3/2 pad 1, 16x28x28 -> 32x14x14") == "conv 3x3/2 pad 1, 16x28x28 -> 32x14x14"
    assert c_comment("a */ b /* c\nd ??/") == "a * / b / * c?d ?_?/"
    assert c_string('say "hi"\\?') == "say \\042hi\\042\\134\\077"
    assert make_comment("a\\\nb") == "a??b"


# ----------------------------------------------------------------------------- schema violations
def _set_attr(op_name: str, key: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
        for op in walk_ops(data["ops"]):
            if op["name"] == op_name:
                op.setdefault("attrs", {})[key] = value
        return data, arrays

    return mutate


def _set_array(key: str, value: Callable[[np.ndarray], np.ndarray]) -> Mutation:
    return lambda data, arrays: (data, {**arrays, key: value(arrays[key])})


def _set_tensor(name: str, key: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
        data["tensors"][name][key] = value
        return data, arrays

    return mutate


def _nest_guards(depth: int) -> Mutation:
    def mutate(data: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
        guard = next(op for op in data["ops"] if op["kind"] == "guard")
        inner = guard["then"]
        for i in range(depth):
            wrapper = {
                "kind": "guard",
                "name": f"g{i}",
                "attrs": {"gate": guard["attrs"]["gate"]},
                "then": inner,
            }
            inner = [wrapper]
        guard["then"] = inner
        return data, arrays

    return mutate


def _swap_first_ops(data: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
    data["ops"][0], data["ops"][1] = data["ops"][1], data["ops"][0]
    return data, arrays


def _drop_op_name(data: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
    del data["ops"][0]["name"]
    return data, arrays


def _duplicate_key_json(
    data: dict[str, Any], arrays: dict[str, np.ndarray]
) -> tuple[Any, dict[str, np.ndarray]]:
    text = json.dumps(data).replace(
        '"tensors": {', '"tensors": {"stem": {"shape": [1], "dtype": "uint8", "scale": 1.0}, ', 1
    )
    return text, arrays


VIOLATIONS: list[tuple[str, Mutation, str]] = [
    ("duplicate op names", lambda d, a: rename_op(d, a, "b0.conv2", "b0.conv1"), "defined twice"),
    ("float64 weights", _set_array("b0.conv1.weight", lambda w: w.astype(np.float64)), "expected int8"),
    ("float64 multiplier", _set_array("stem.mult", lambda m: m.astype(np.float64)), "expected int64"),
    ("string dims", _set_tensor("b0.h", "shape", ["8", 28, 28]), "field 'shape'"),
    ("huge dim", _set_tensor("b0.h", "shape", [8, 100000, 28]), "field 'shape'"),
    ("NaN scale", _set_tensor("b0.h", "scale", float("nan")), "field 'scale'"),
    ("unknown dtype", _set_tensor("b0.h", "dtype", "float32"), "field 'dtype'"),
    ("stride 0", _set_attr("stem", "stride", 0), "attr 'stride'"),
    ("fractional padding", _set_attr("stem", "padding", 1.5), "attr 'padding'"),
    ("boolean groups", _set_attr("stem", "groups", True), "attr 'groups'"),
    ("lying MAC count", _set_attr("stem", "macs", 1), "attr 'macs'"),
    ("unknown attr", _set_attr("stem", "weights_file", "/etc/passwd"), "unknown attr"),
    ("out_range beyond dtype", _set_attr("stem", "out_range", [0, 70000]), "out_range"),
    ("missing op name", _drop_op_name, "has name None"),
    ("ops not a list", lambda d, a: ({**d, "ops": {"0": d["ops"][0]}}, a), "must be a list"),
    ("read before write", _swap_first_ops, "before any op writes it"),
    ("guards nested too deep", _nest_guards(MAX_DEPTH + 1), "nests blocks deeper"),
    (
        "JSON nested a million deep",
        lambda d, a: (
            '{"format": "tinydyn-ir", "version": 1, "x": ' + "[" * 1_000_000 + "]" * 1_000_000 + "}",
            a,
        ),
        "nests JSON too deeply",
    ),
    ("duplicate JSON keys", _duplicate_key_json, "twice in one object"),
    ("not an object", lambda d, a: ("[1, 2, 3]", a), "IR format None"),
    (
        "bias that does not broadcast",
        _set_array("stem.bias", lambda b: np.zeros(3, np.int32)),
        "expected int32 [8]",
    ),
    (
        "non-square kernel",
        _set_array("stem.weight", lambda w: np.zeros((8, 1, 3, 1), np.int8)),
        "does not map",
    ),
    ("shift 0", _set_array("stem.shift", lambda s: np.zeros_like(s)), "shift"),
    ("negative multiplier", _set_array("stem.mult", lambda m: -m), "negative"),
    ("overflowing bias", _set_array("stem.bias", lambda b: np.full_like(b, 2**31 - 1)), "int32 accumulator"),
    ("Fortran-order weights", _set_array("b0.conv1.weight", np.asfortranarray), "Fortran order"),
    ("stray array", lambda d, a: (d, {**a, "evil": np.zeros(3)}), "belongs to no op"),
    (
        "missing array",
        lambda d, a: (d, {k: v for k, v in a.items() if k != "stem.shift"}),
        "'stem.shift' is missing",
    ),
    (
        "input written by an op",
        lambda d, a: ({**d, "ops": [{**d["ops"][0], "output": "input"}, *d["ops"][1:]]}, a),
        "already wrote",
    ),
    ("exit logits of the wrong type", _set_tensor("final.logits", "dtype", "uint8"), "attr 'logits'"),
    (
        "another kind's fields",
        lambda d, a: ({**d, "ops": [{**d["ops"][0], "kind": "lstm_gate"}, *d["ops"][1:]]}, a),
        "for kind 'lstm_gate'",
    ),
]


@pytest.mark.parametrize("mutation, fragment", [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS])
def test_schema_violations_are_one_line_errors(base, tmp_path, mutation, fragment):
    data, arrays = mutation(json.loads(json.dumps(base[0])), dict(base[1]))
    message = load_error(write_ir(tmp_path / "ir", data, arrays))
    assert fragment in message, message


def test_schema_violations_exit_2_through_the_cli(base, tmp_path):
    for i, (_, mutation, fragment) in enumerate(VIOLATIONS[:6]):
        data, arrays = mutation(json.loads(json.dumps(base[0])), dict(base[1]))
        ir = write_ir(tmp_path / f"ir{i}", data, arrays)
        proc, _ = run_tinydyn("build", "--ir", str(ir), "--board", "host", "--out", str(tmp_path / "fw"))
        assert_one_line_error(proc, fragment)


def test_npz_that_is_not_a_zip(ir_dir, tmp_path):
    ir = write_ir(tmp_path / "ir", (ir_dir / "model.json").read_text())
    (ir / "weights.npz").write_bytes(b"PK\x03\x04 not really a zip")
    assert "not a readable .npz" in load_error(ir)


def test_model_json_over_the_size_cap(ir_dir, tmp_path):
    ir = write_ir(tmp_path / "ir", " " * (17 << 20) + "{}")
    (ir / "weights.npz").write_bytes((ir_dir / "weights.npz").read_bytes())
    assert "more than the" in load_error(ir)


# ----------------------------------------------------------------------------- memory bombs
def _npy_header(shape: tuple[int, ...], dtype: str = "|i1") -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _npz_with(ir_dir: Path, key: str, member: bytes, compress: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with np.load(ir_dir / "weights.npz") as npz, zipfile.ZipFile(buf, "w", compress) as out:
        for name in npz.files:
            if name != key:
                one = io.BytesIO()
                np.lib.format.write_array(one, npz[name])
                out.writestr(f"{name}.npy", one.getvalue())
        out.writestr(f"{key}.npy", member)
    return buf.getvalue()


BOMB_LIMIT_KIB = 400 << 10  # peak resident memory allowed while refusing any bomb


def test_npz_header_claiming_84_gib_is_refused_without_allocating(ir_dir, tmp_path):
    ir = write_ir(tmp_path / "ir", (ir_dir / "model.json").read_text())
    claim = (84 << 30,)  # int8 elements: 84 GiB
    (ir / "weights.npz").write_bytes(_npz_with(ir_dir, "stem.weight", _npy_header(claim)))
    proc, peak = run_tinydyn("build", "--ir", str(ir), "--board", "host", "--out", str(tmp_path / "fw"))
    assert_one_line_error(proc, "stem.weight", "expected int8 [8, 1, k, k]")
    assert 0 < peak < BOMB_LIMIT_KIB, peak
    print(f"84 GiB npz header: refused, peak {peak} KiB")


def test_compressed_npz_bomb_is_refused_before_decompressing(ir_dir, tmp_path):
    ir = write_ir(tmp_path / "ir", (ir_dir / "model.json").read_text())
    shape = (8, 1, 3, 3)
    member = _npy_header(shape) + bytes(np.prod(shape)) + bytes(512 << 20)  # 512 MiB of zeros
    (ir / "weights.npz").write_bytes(_npz_with(ir_dir, "stem.weight", member, zipfile.ZIP_DEFLATED))
    assert (ir / "weights.npz").stat().st_size < 4 << 20
    proc, peak = run_tinydyn("build", "--ir", str(ir), "--board", "host", "--out", str(tmp_path / "fw"))
    assert_one_line_error(proc, "stem.weight", "larger than")
    assert 0 < peak < BOMB_LIMIT_KIB, peak
    print(f"512 MiB deflate bomb in weights.npz: refused, peak {peak} KiB")


# ----------------------------------------------------------------------------- fuzzing
def test_mutated_irs_give_a_one_line_error_or_a_bit_exact_build(ir_dir, tmp_path):
    """Hypothesis mutates model.json and weights.npz (tests/ir_fuzz.py) in a process under an
    address-space limit: every mutant is refused in one line or builds bit-exact."""
    require_tool("gcc")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.ir_fuzz", str(ir_dir), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    print("IR fuzzing:", summary)
    assert summary["refused"] > 50 and summary["built_bit_exact"] >= 3, summary


def test_lowering_names_the_ir_safely_whatever_the_checkpoint_file_is_called(small_model):
    from tinydyn.models.lcnet_lower import lower

    ir = lower(small_model, name="my model (v2)\n$(shell id)")
    assert ir.name == "my_model__v2____shell_id_"
    assert lower(small_model, name="2024-run").name == "m2024_run"
