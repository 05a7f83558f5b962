"""`tinydyn profile` (tinydyn/host/profile.py, tinydyn/commands/profile.py), the plugin's
per-layer attribution (syms=, tinydyn/firmware/qemu_plugin/m4cycles.c) and the per-layer cost
table (tinydyn/cost/cost_table.py); docs/CYCLES.md "Profiling".

* a hand-written firmware: exact per-function attribution (kernels count toward the layer that
  called them, td_infer's own code is control), a layer with 4x the work costs more;
* a small gated LC-Net through the CLI (--limit 3): files, bit-exact runs, attribution sums equal
  the plugin's per-inference totals, per-layer MACs equal the reference's;
* the cost table: round trip, weights, hostile files rejected with one-line errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinydyn.cost.cost_table import (
    MAX_BYTES,
    BlockCycles,
    CostTable,
    CostTableError,
    Fit,
    LayerCycles,
    parse_cost_table,
    read_cost_table,
    write_cost_table,
)
from tinydyn.host.cycles import (
    COSTS,
    DEFAULT_REFILL,
    CycleModel,
    function_symbols,
    qemu_plugin_args,
    read_records,
    symbol_address,
)

from .bare_metal import assemble, run_plugin
from .conftest import require_tool

P = DEFAULT_REFILL
TAKEN = COSTS["branch_taken"] + P

PROGRAM = """
    .syntax unified
    .cpu cortex-m4
    .thumb
    .text
    .word 0x20010000
    .word reset + 1
    .balign 4
    .thumb_func
reset:
    movs r5, #0
    movs r6, #1
    movs r7, #1
    bl bench
    bl bench
    ldr r1, =0xE000ED0C
    ldr r2, =0x05FA0004
    str r2, [r1]
1:  b 1b
    .ltorg

    .balign 16
    .global bench
    .type bench, %function
    .thumb_func
bench:                  @ td_infer's stand-in: dispatch only
    push {r4, lr}
    movs r0, #{a}
    bl layer_a
    movs r0, #{b}
    bl layer_b
    adds r1, r1, #1
    pop {r4, pc}
    .size bench, .-bench

    .type layer_a, %function
    .thumb_func
layer_a:
    push {lr}
    bl kern
    pop {pc}
    .size layer_a, .-layer_a

    .type layer_b, %function
    .thumb_func
layer_b:
    push {lr}
    bl kern
    pop {pc}
    .size layer_b, .-layer_b

    .type kern, %function
    .thumb_func
kern:                   @ the shared kernel: r0 multiply-accumulates
1:  smlad r5, r6, r7, r5
    subs r0, r0, #1
    bne 1b
    bx lr
    .size kern, .-kern
"""


@pytest.fixture(scope="module")
def tools() -> None:
    require_tool("gcc")
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")


def run_layers(
    tmp_path: Path, a: int, b: int, syms_text: str | None = None
) -> tuple[list, subprocess.CompletedProcess]:
    elf = assemble(PROGRAM.replace("{a}", str(a)).replace("{b}", str(b)), tmp_path, "layers")
    syms = tmp_path / "layers.syms"
    if syms_text is None:
        by_name = {s.name: s for s in function_symbols(elf)}
        syms_text = "".join(
            f"{i} {by_name[n].address:#x} {by_name[n].address + by_name[n].size:#x} {n}\n"
            for i, n in enumerate(("layer_a", "layer_b"))
        )
    syms.write_text(syms_text)
    out = tmp_path / "cycles.jsonl"
    proc = run_plugin(elf, out, CycleModel(), syms=syms)
    return (read_records(out) if proc.returncode == 0 else []), proc


def expected_layer(n: int) -> tuple[int, int]:
    """(instructions, cycles) of layer_x with kern running n iterations, by the documented table:
    push {lr} (1+1), bl (1+P), n x (smlad, subs, bne: taken but the last), bx lr (1+P),
    pop {pc} (1+1+P)."""
    insns = 3 + 3 * n + 1
    cycles = 2 + TAKEN + n * (COSTS["mul"] + COSTS["alu"]) + (n - 1) * TAKEN + COSTS["branch_not_taken"]
    cycles += TAKEN + 2 + P
    return insns, cycles


def test_attribution_is_exact_and_kernels_count_toward_their_layer(tools: None, tmp_path: Path) -> None:
    recs, proc = run_layers(tmp_path, 3, 12)
    assert proc.returncode == 0, proc.stderr
    assert len(recs) == 2  # bench runs twice: each call is its own record
    for rec in recs:
        assert rec.layers is not None and rec.control is not None and rec.stack_overflow == 0
        assert rec.layers[0] == expected_layer(3)
        assert rec.layers[1] == expected_layer(12)
        # bench's own code: push {r4,lr} (1+2), movs, bl, movs, bl, adds, pop {r4,pc} (1+2+P)
        assert rec.control == (7, 3 + 1 + TAKEN + 1 + TAKEN + 1 + 3 + P)
        assert sum(i for i, _ in rec.layers) + rec.control[0] == rec.insns
        assert sum(c for _, c in rec.layers) + rec.control[1] == rec.cycles
    # the layer doing 4x the multiply-accumulates costs more
    assert recs[0].layers[1][1] > recs[0].layers[0][1]


def test_without_syms_the_record_is_unchanged(tools: None, tmp_path: Path) -> None:
    recs, proc = run_layers(tmp_path, 2, 2)
    assert proc.returncode == 0
    with_syms = recs[0]
    src = (tmp_path / "cycles.jsonl").read_text().splitlines()[0]
    assert '"layers"' in src
    # same totals as without attribution (the plugin's behaviour is otherwise unchanged)
    elf = tmp_path / "layers.elf"
    out = tmp_path / "plain.jsonl"
    cmd = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "null"]
    cmd += ["-icount", "shift=0,align=off", "-kernel", str(elf), "-no-reboot"]
    cmd += qemu_plugin_args(out, symbol_address(elf, "bench"), CycleModel())
    assert subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    plain = read_records(out)[0]
    assert '"layers"' not in out.read_text() and plain.layers is None
    assert (plain.cycles, plain.insns) == (with_syms.cycles, with_syms.insns)


@pytest.mark.parametrize(
    "text",
    ["0 0x10\n", "x 0x10 0x20 a\n", "0 0x20 0x10 a\n", "0 0x10 0x20 a\n1 0x18 0x30 b\n", "", "9999 1 2\n"],
)
def test_plugin_refuses_a_bad_syms_file(tools: None, tmp_path: Path, text: str) -> None:
    _, proc = run_layers(tmp_path, 1, 1, syms_text=text)
    assert proc.returncode != 0


# ---------------------------------------------------------------------------- a small model, CLI
@pytest.fixture(scope="module")
def gated(fashion_test):  # noqa: ANN001, ANN201 - conftest objects
    from .codegen_support import gated_ir
    from .conftest import make_model

    return gated_ir(fashion_test, make_model)


@pytest.fixture(scope="module")
def profiled(tools: None, gated, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("profile")
    gated.save(tmp / "ir")
    out = tmp / "out"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-m", "tinydyn", "profile", "--ir", str(tmp / "ir"), "--dataset", "fashion-mnist"]
        + ["--limit", "3", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(measured)" in proc.stdout and "(modelled)" in proc.stdout
    return out


def test_cli_writes_profile_json_png_table_and_cost_table(profiled: Path) -> None:
    for name in ("profile.json", "profile.txt", "profile.png", "cost_table.json"):
        assert (profiled / name).is_file(), name
    assert (profiled / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (profiled / "profile.txt").read_text()
    for word in (
        "static",
        "gated",
        "gated+exit",
        "instructions",
        "(measured)",
        "cycles",
        "(modelled)",
        "instr/MAC",
    ):
        assert word in text
    summary = json.loads((profiled / "profile.json").read_text())
    assert list(summary["modes"]) == ["static", "gated", "gated+exit"]
    assert summary["labels"]["instructions"].startswith("measured")
    assert summary["labels"]["cycles_modelled"].startswith("modelled")
    for m in summary["modes"].values():
        assert m["images"] == 3 and m["bit_exact"], m["mismatches"]
        # the profile build (layer functions out of line) stays within 2% of the default build
        assert abs(m["default_build"]["profile_build_overhead_instructions"]) < 0.02


def test_attribution_sums_to_the_plugin_totals(profiled: Path) -> None:
    summary = json.loads((profiled / "profile.json").read_text())
    for m in summary["modes"].values():
        per = m["per_image"]
        ins, cyc = np.array(per["layer_instructions"]), np.array(per["layer_cycles_modelled"])
        assert ins.shape == (3, len(summary["layers"]) + 1)  # + control
        assert np.array_equal(ins.sum(axis=1), per["instructions"])
        assert np.array_equal(cyc.sum(axis=1), per["cycles_modelled"])
        assert (ins[:, -1] > 0).all()  # td_infer's own dispatch is control


def test_layer_macs_equal_the_reference(profiled: Path, gated, fashion_test) -> None:  # noqa: ANN001
    from tinydyn.host.profile import modes
    from tinydyn.ops import op_kind
    from tinydyn.quantize.executor import execute

    summary = json.loads((profiled / "profile.json").read_text())
    ops = {op.name: op for op in gated.walk()}
    images = fashion_test.images[:3]
    for mode, policy in modes(0.9).items():
        m = summary["modes"][mode]
        per_layer = np.array(m["per_image"]["layer_macs"])
        ref = execute(gated, images, policy)
        assert np.array_equal(per_layer.sum(axis=1), ref.macs)
        assert np.array_equal(np.array(m["per_image"]["macs"]), ref.macs)
        ran = np.array(m["per_image"]["layer_instructions"])[:, :-1] > 0
        for j, layer in enumerate(summary["layers"]):
            full = op_kind(ops[layer["layer"]].kind).macs(ops[layer["layer"]])
            assert layer["macs_full"] == full
            assert (per_layer[~ran[:, j], j] == 0).all()  # a layer that did not run did no MACs
            if mode == "static":
                assert (per_layer[ran[:, j], j] == full).all()
            elif layer["channel_dim"] is not None:  # channel-gated: in proportion to active channels
                active = np.array(m["per_image"]["active_channels"])[:, j]
                assert np.array_equal(per_layer[ran[:, j], j] * layer["channels"], full * active[ran[:, j]])
        rows = {r["layer"]: r for r in m["layers"]}
        for j, layer in enumerate(summary["layers"]):
            assert rows[layer["layer"]]["macs"] == pytest.approx(per_layer[:, j].mean())


def test_cost_table_from_the_profile(profiled: Path, gated) -> None:  # noqa: ANN001
    table = read_cost_table(profiled / "cost_table.json")
    table.check_model((op.name for op in gated.walk()), gated.model_id())
    assert table.kind == "modelled" and table.unit == "cycles"
    gated_layers = [r for r in table.layers if r.channel_dim is not None]
    assert gated_layers and all(r.fit.source in ("gated", "gated+static", "none") for r in gated_layers)
    fitted = [r for r in gated_layers if r.per_channel is not None]
    assert fitted and all(r.fit.r2 is not None and r.fit.images >= 2 for r in fitted)
    assert set(table.layer_weights()) == {r.name for r in table.layers}
    assert set(table.gate_channel_weights()) <= {r.gate for r in gated_layers}
    assert {b.name for b in table.blocks} == {op.name for op in gated.walk() if op.kind == "guard"}
    for b in table.blocks:
        assert b.full_cycles > 0 and b.gate_layer is not None
    with pytest.raises(CostTableError):
        table.check_model(["stem"])


# ---------------------------------------------------------------------------- LC-Net trains on it
def test_lcnet_training_weighs_saliences_by_the_profiled_cycles(profiled: Path, fashion_test) -> None:  # noqa: ANN001
    """`tinydyn train --cost profile`: each block salience weighs the cycles skipping its block
    saves, each channel salience the cycles one channel saves, as halved shares of the model's
    cycles (the MAC weighting's convention); without --cost the MAC weighting stays."""
    from types import SimpleNamespace

    import torch

    from tinydyn.cost.torch_cost import mac_salience_weights, salience_penalty
    from tinydyn.models.lcnet import LCNet
    from tinydyn.models.lcnet_family import LCNET

    from .codegen_support import gated_config

    path = profiled / "cost_table.json"
    table = read_cost_table(path)
    model = LCNet(gated_config(fashion_test.classes)).eval()
    LCNET.start_training(model, SimpleNamespace(extra={"cost": "profile", "cost_table": str(path)}), 1, 1)
    total = sum(r.full for r in table.layers) + table.control_cycles
    blocks, channels = table.block_weights(), table.gate_channel_weights()
    weights = model._salience_weights
    assert [w.block for w in weights] == pytest.approx([blocks[f"b{i}.guard"] / total / 2 for i in range(3)])
    assert [w.channel for w in weights] == pytest.approx(
        [channels[f"b{i}.s_chan"] / total / 2 for i in range(3)]
    )
    assert all(w.block > 0 and w.channel > 0 for w in weights)
    assert weights != mac_salience_weights(model)

    x = torch.from_numpy(fashion_test.images[:8].astype(np.float32) / 255)
    with torch.no_grad():
        out, raw = LCNET.train_outputs(model, x), model(x)
    by_hand = sum(
        w.block * float(s_b.abs().mean()) + w.channel * float(s_c.abs().sum(dim=1).mean())
        for w, s_b, s_c in zip(weights, raw.block_saliences, raw.channel_saliences, strict=True)
    )
    assert float(out.penalty) == pytest.approx(by_hand)
    by_macs = salience_penalty(model, raw.block_saliences, raw.channel_saliences)
    assert float(out.penalty) != pytest.approx(float(by_macs))

    plain = LCNet(gated_config(fashion_test.classes)).eval()
    LCNET.start_training(plain, SimpleNamespace(extra={}), 1, 1)
    with torch.no_grad():
        raw = plain(x)
        by_macs = salience_penalty(
            plain, raw.block_saliences, raw.channel_saliences, mac_salience_weights(plain)
        )
        assert float(LCNET.train_outputs(plain, x).penalty) == pytest.approx(float(by_macs))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--cost", "profile", "--cost-table", "TABLE"], "was profiled on another architecture"),
        (["--cost", "profile"], "--cost profile takes the table from --cost-table FILE"),
        (["--cost", "energy"], "--cost energy is DDI's"),
        (["--target-skip", "0.3"], "--target-skip is a DDI option"),
    ],
)
def test_lcnet_train_refuses_bad_cost_options(
    profiled: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    """A table of the small profiled model given to the default-width LC-Net: one line, exit 2,
    nothing written."""
    args = [str(profiled / "cost_table.json") if a == "TABLE" else a for a in args]
    out = tmp_path / "m.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "tinydyn", "train", "--limit", "8", "--epochs", "1", "--eval-limit", "0"]
        + ["--out", str(out), "--l1", "1", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert not out.exists()


# ---------------------------------------------------------------------------- cost table files
def sample_table() -> CostTable:
    fit = Fit("gated", 12, 4, 0.98, 1200.5, 2500.0)
    return CostTable(
        "tiny",
        "0123456789abcdef",
        "qemu-mps2-an386",
        "cycles",
        "modelled",
        {"plugin": "m4cycles", "kind": "modelled", "refill": 2},
        350.0,
        (
            LayerCycles(
                "stem",
                "conv2d",
                1000,
                8,
                None,
                None,
                5000.0,
                None,
                5000.0,
                6,
                Fit("constant", 6, 1, None, 0.0, 0.0),
            ),
            LayerCycles("b0.lnet", "linear", 16, 1, None, None, 900.0, None, 900.0, 3, Fit("constant", 3, 1)),
            LayerCycles("b0.conv1", "conv2d", 4000, 16, "output", "b0.s_chan", 2000.0, 400.0, 8400.0, 6, fit),
            LayerCycles("b0.conv2", "conv2d", 4000, 16, "input", "b0.s_chan", 3000.0, 300.0, 7800.0, 6, fit),
            LayerCycles("b0.skip", "rescale", 0, 8, None, None, 700.0, None, 700.0, 2, Fit("constant", 2, 1)),
        ),
        (
            BlockCycles(
                "b0.guard",
                "b0.s_block",
                "b0.lnet",
                900.0,
                12000.0,
                700.0,
                16200.0,
                4,
                2,
                ("b0.conv1", "b0.conv2"),
                ("b0.skip",),
            ),
        ),
        {"tool": "tinydyn profile", "images": 6, "modes": ["static", "gated"]},
    )


def test_cost_table_round_trips_and_gives_weights(tmp_path: Path) -> None:
    table = sample_table()
    path = write_cost_table(table, tmp_path / "cost_table.json")
    back = read_cost_table(path)
    assert back == table
    assert back.layer_weights() == {
        "stem": 5000.0,
        "b0.lnet": 900.0,
        "b0.conv1": 8400.0,
        "b0.conv2": 7800.0,
        "b0.skip": 700.0,
    }
    assert back.channel_weights() == {"b0.conv1": 400.0, "b0.conv2": 300.0}
    assert back.gate_channel_weights() == {"b0.s_chan": 700.0}
    assert back.block_weights() == {"b0.guard": 16200.0 - 700.0}


def _mutate(edit):  # noqa: ANN001, ANN202
    doc = sample_table().to_json()
    edit(doc)
    return json.dumps(doc).encode()


HOSTILE = {
    "not json": b"{not json",
    "not utf-8": b"\xff\xfe{}",
    "empty": b"",
    "a list": b"[]",
    "deep nesting": b"[" * 200_000 + b"]" * 200_000,
    "nan": _mutate(lambda d: d.update(control_cycles=float("nan"))),
    "infinity": _mutate(lambda d: d["layers"][0].update(full=1e400)),
    "duplicate key": b'{"format": "tinydyn-cost-table", "format": "x"}',
    "other format": _mutate(lambda d: d.update(format="something-else")),
    "future version": _mutate(lambda d: d.update(version=2)),
    "bool version": _mutate(lambda d: d.update(version=True)),
    "unknown field": _mutate(lambda d: d.update(extra=1)),
    "missing field": _mutate(lambda d: d.pop("layers")),
    "hostile name": _mutate(lambda d: d["layers"][0].update(name="stem; rm -rf /\n")),
    "newline in model": _mutate(lambda d: d.update(model="a\nb")),
    "negative full": _mutate(lambda d: d["layers"][0].update(full=-1.0)),
    "huge number": _mutate(lambda d: d["layers"][0].update(fixed=1e300)),
    "string number": _mutate(lambda d: d["layers"][0].update(fixed="12")),
    "bool int": _mutate(lambda d: d["layers"][0].update(macs=True)),
    "zero channels": _mutate(lambda d: d["layers"][0].update(channels=0)),
    "gate without dim": _mutate(lambda d: d["layers"][0].update(gate="b0.s_chan")),
    "bad dim": _mutate(lambda d: d["layers"][2].update(channel_dim="sideways")),
    "duplicate layer": _mutate(lambda d: d["layers"].append(dict(d["layers"][0]))),
    "block names unknown layer": _mutate(lambda d: d["blocks"][0]["layers_run"].append("nowhere")),
    "too many layers": _mutate(lambda d: d.update(layers=[d["layers"][0]] * 5000)),
    "bad fit source": _mutate(lambda d: d["layers"][0]["fit"].update({"from": "guess"})),
    "bad model id": _mutate(lambda d: d.update(model_id="../../etc")),
    "deep source": _mutate(lambda d: d.update(source={"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}})),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_cost_table_loader_rejects_hostile_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / "cost_table.json"
    path.write_bytes(HOSTILE[name])
    with pytest.raises(CostTableError) as err:
        read_cost_table(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"cost table {path}") and len(msg) < 400, msg


def test_cost_table_loader_bounds_the_size(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with open(path, "wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: nothing is read
    with pytest.raises(CostTableError, match="more than"):
        read_cost_table(path)
    with pytest.raises(CostTableError, match="not a regular file"):
        read_cost_table(tmp_path)
    with pytest.raises(CostTableError, match="cannot read"):
        read_cost_table(tmp_path / "missing.json")
    with pytest.raises(CostTableError, match="more than"):
        parse_cost_table(b" " * (MAX_BYTES + 1))
