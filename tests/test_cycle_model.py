"""The Cortex-M4 cycle model (tinydyn/host/cycles.py, the m4cycles QEMU plugin, docs/CYCLES.md).

Per-instruction costs: tiny hand-written Thumb-2 programs, assembled with arm-none-eabi-gcc and run
bare-metal under qemu-system-arm -M mps2-an386 with the plugin, whose measured region is the
``bench`` function; each expected total is worked out by hand from the documented table
(``COSTS``, P = the pipeline refill, W = flash wait states per fetched 32-bit word).

End to end: a small model's serial firmware under QemuBoard: every RESULT gets modelled cycles,
the plugin's instruction count agrees with the board's -icount count, deterministic across boots.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tinydyn.host.cycles import (
    COSTS,
    DEFAULT_DIV,
    DEFAULT_REFILL,
    CycleModel,
    CycleModelError,
    CycleRecord,
    plugin_path,
    read_records,
    symbol_address,
)

from .bare_metal import assemble, run_plugin
from .conftest import require_tool

P = DEFAULT_REFILL
ALU, LOAD, LOAD_PIPE = COSTS["alu"], COSTS["load"], COSTS["load_pipelined"]
TAKEN = COSTS["branch_taken"] + P  # a taken branch: 1 + P
NOT_TAKEN = COSTS["branch_not_taken"]
RET = TAKEN  # bench's closing `bx lr`

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
    ldr r0, =0x20000000
    movs r1, #0
    movs r2, #7
    movs r3, #{count}
    movs r4, #3
    movs r5, #0
    movs r6, #0
    movs r7, #4
    str r0, [r0, #64]
    bl bench
    ldr r1, =0xE000ED0C
    ldr r2, =0x05FA0004
    str r2, [r1]
1:  b 1b
    .ltorg
    .balign 16
    .thumb_func
    .global bench
bench:
{body}
"""


@pytest.fixture(scope="module")
def tools() -> None:
    require_tool("gcc")
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")


def run_bench(
    tmp_path: Path, body: str, model: CycleModel | None = None, count: int = 5
) -> tuple[CycleRecord, Path]:
    """Assemble ``body`` as the function ``bench`` (called once by BL), run it under QEMU with the
    plugin delimiting ``bench``; returns the plugin's one record and the ELF."""
    elf = assemble(PROGRAM.format(body=body, count=count), tmp_path, "bench")
    out = tmp_path / "cycles.jsonl"
    proc = run_plugin(elf, out, model)
    assert proc.returncode == 0, proc.stderr
    recs = read_records(out)
    assert len(recs) == 1, recs
    return recs[0], elf


def lines(*insns: str) -> str:
    return "\n".join(f"    {i}" for i in insns)


# ---------------------------------------------------------------------------- per-instruction costs
def test_alu_sequence(tools: None, tmp_path: Path) -> None:
    # ten 16-bit ALU operations and three 32-bit ones (MOVW, UBFX, SSAT), then bx lr
    body = lines(
        *["adds r1, r1, #1"] * 10, "movw r5, #1234", "ubfx r6, r5, #2, #3", "ssat r6, #8, r5", "bx lr"
    )
    rec, _ = run_bench(tmp_path, body)
    assert rec.insns == 14
    assert rec.cycles == 13 * ALU + RET
    assert (rec.taken, rec.not_taken) == (1, 0)


def test_loads_address_dependent_chain_and_pipelined(tools: None, tmp_path: Path) -> None:
    body = lines(
        # chain: each load's address is the previous load's result: no pipelining, 2 cycles each
        "ldr r1, [r0, #64]",  # r1 = 0x20000000 (stored by reset)
        "ldr r2, [r1, #64]",  # depends on r1
        "ldr r3, [r2, #64]",  # depends on r2
        "adds r7, r7, #0",  # breaks the load-load pairing
        # independent back-to-back loads: the 2nd and 3rd pipeline (TRM 3.3.2): 2 + 1 + 1
        "ldr r4, [r0]",
        "ldrb r5, [r0, #1]",
        "ldrh r6, [r0, r7]",
        # stores: immediate offset 1; register offset 2, but 1 right after a load
        "str r1, [r0, #8]",
        "str r1, [r0, r7]",
        "ldr r2, [r0, #4]",
        "str r2, [r0, r7]",
        "bx lr",
    )
    rec, _ = run_bench(tmp_path, body)
    assert rec.insns == 12
    chain = 3 * LOAD
    pipelined = LOAD + 2 * LOAD_PIPE
    stores = COSTS["store_imm"] + COSTS["store_reg"] + LOAD + (COSTS["store_reg"] - 1)
    assert rec.cycles == chain + ALU + pipelined + stores + RET


def test_ldm_stm_push_pop_are_1_plus_n(tools: None, tmp_path: Path) -> None:
    body = lines(
        "push {r4-r7, lr}",  # 1 + 5
        "ldmia r0, {r1-r4}",  # 1 + 4
        "ldmia.w r0, {r1-r3, r8}",  # 1 + 4 (32-bit encoding)
        "stmia r0!, {r1, r2}",  # 1 + 2
        "ldrd r2, r3, [r0]",  # 1 + 2
        "pop {r4-r7, pc}",  # 1 + 5 + P (loads the PC: a taken branch)
    )
    rec, _ = run_bench(tmp_path, body)
    n = COSTS["ldm_base"]
    assert rec.insns == 6
    assert rec.cycles == (n + 5) + (n + 4) + (n + 4) + (n + 2) + COSTS["ldrd"] + (n + 5 + P)


def test_branch_loop_taken_and_not_taken(tools: None, tmp_path: Path) -> None:
    body = lines("subs r3, r3, #1", "bne bench", "bx lr")
    rec, _ = run_bench(tmp_path, body, count=5)
    # five iterations: 5 subs, bne taken 4 times and falls through once, then the return
    assert rec.insns == 5 * 2 + 1
    assert rec.cycles == 5 * ALU + 4 * TAKEN + 1 * NOT_TAKEN + RET
    assert (rec.taken, rec.not_taken) == (4 + 1, 1)


def test_cbz_and_unconditional_branch(tools: None, tmp_path: Path) -> None:
    body = "\n".join(
        ["1:  subs r4, r4, #1", "    cbz r4, 2f", "    b 1b", "2:  bx lr"]
    )  # r4 = 3: cbz falls through twice, then is taken
    rec, _ = run_bench(tmp_path, body)
    assert rec.insns == 3 + 3 + 2 + 1
    assert rec.cycles == 3 * ALU + 2 * NOT_TAKEN + 1 * TAKEN + 2 * TAKEN + RET


def test_multiplies_and_smlad(tools: None, tmp_path: Path) -> None:
    body = lines(
        "smlad r1, r2, r3, r1",  # 1
        "smlabb r1, r2, r3, r1",  # 1
        "mul r1, r2, r1",  # 1
        "muls r1, r2, r1",  # 1 (16-bit)
        "mla r1, r2, r3, r1",  # 2
        "mls r1, r2, r3, r1",  # 2
        "smull r5, r6, r2, r3",  # 1: the M4 multiplies 32x32->64 in one cycle
        "umlal r5, r6, r2, r3",  # 1
        "sxtb16 r5, r2",  # 1
        "bx lr",
    )
    rec, _ = run_bench(tmp_path, body)
    assert rec.insns == 10
    assert rec.cycles == 4 * COSTS["mul"] + 2 * COSTS["mla"] + 2 * COSTS["long_mul"] + ALU + RET


@pytest.mark.parametrize("div", [None, 4])
def test_divide(tools: None, tmp_path: Path, div: int | None) -> None:
    model = CycleModel() if div is None else CycleModel(div=div)
    body = lines("sdiv r1, r2, r4", "udiv r1, r2, r4", "bx lr")
    rec, _ = run_bench(tmp_path, body, model)
    assert rec.cycles == 2 * (div or DEFAULT_DIV) + RET


@pytest.mark.parametrize("refill", [1, 3])
def test_refill_is_a_parameter(tools: None, tmp_path: Path, refill: int) -> None:
    body = lines("subs r3, r3, #1", "bne bench", "bx lr")
    rec, _ = run_bench(tmp_path, body, CycleModel(refill=refill), count=3)
    assert rec.cycles == 3 * ALU + 2 * (1 + refill) + NOT_TAKEN + (1 + refill)


def test_flash_wait_states_per_fetched_word(tools: None, tmp_path: Path) -> None:
    body = lines(*["adds r1, r1, #1"] * 10, "bx lr")  # 22 bytes from a 16-byte aligned start: 6 words
    base, elf = run_bench(tmp_path, body)
    w2, _ = run_bench(tmp_path, body, CycleModel(flash_ws=2))
    assert base.cycles == 10 * ALU + RET
    assert w2.cycles == base.cycles + 6 * 2
    # code outside [0, flash_end) fetches without wait states: end "flash" where bench starts
    ram, _ = run_bench(tmp_path, body, CycleModel(flash_ws=2, flash_end=symbol_address(elf, "bench")))
    assert ram.cycles == base.cycles


def test_flash_wait_states_in_a_loop(tools: None, tmp_path: Path) -> None:
    # loop body 6 bytes = 2 words, fetched anew each iteration (a taken branch refetches);
    # the fall-through `bx lr` at +6 lies in a word already fetched: no wait states
    body = "\n".join(["1:  subs r3, r3, #1", "    nop", "    bne 1b", "    bx lr"])  # all 16-bit
    base, _ = run_bench(tmp_path, body, count=4)
    w3, _ = run_bench(tmp_path, body, CycleModel(flash_ws=3), count=4)
    assert base.cycles == 4 * 2 * ALU + 3 * TAKEN + NOT_TAKEN + RET
    assert w3.cycles == base.cycles + 4 * 2 * 3


def test_region_is_each_call_of_the_entry_function(tools: None, tmp_path: Path) -> None:
    # code before `bl bench` and after its return is not counted; a nested call is
    body = lines("push {lr}", "bl 1f", "pop {pc}", "1:  adds r1, r1, #1", "bx lr")
    rec, _ = run_bench(tmp_path, body)
    n = COSTS["ldm_base"]
    assert rec.insns == 5
    assert rec.cycles == (n + 1) + TAKEN + ALU + RET + (n + 1 + P)


def test_model_parameters_are_checked() -> None:
    with pytest.raises(CycleModelError):
        CycleModel(refill=0)
    with pytest.raises(CycleModelError):
        CycleModel(div=13)
    with pytest.raises(CycleModelError):
        CycleModel(flash_ws=-1)


def test_plugin_is_cached_by_source_hash(tools: None) -> None:
    path = plugin_path()
    assert path.is_file() and plugin_path(build=False) == path
    assert path.stem.startswith("m4cycles-")


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def small_ir(fashion_test):  # noqa: ANN001, ANN201 - conftest objects
    from .codegen_support import gated_ir
    from .conftest import make_model

    return gated_ir(fashion_test, make_model)


@pytest.fixture(scope="module")
def serial_fw(tools: None, small_ir, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    from tinydyn.host.firmware import build_firmware

    return build_firmware(small_ir, "qemu-mps2-an386", tmp_path_factory.mktemp("cycles_fw"))


def _measure(fw: Path, ir, images: np.ndarray, labels: np.ndarray, out: Path, **kw):  # noqa: ANN001, ANN003, ANN202
    from tinydyn.host.client import BoardClient
    from tinydyn.host.emulate import QemuBoard
    from tinydyn.host.measure import measure
    from tinydyn.quantize.policy import ExitPolicy

    with QemuBoard(fw) as board:
        assert board.cycles is not None and any(a.startswith("-plugin") for a in board.argv)
        client = BoardClient(board.port, timeout=5.0)
        try:
            return measure(
                client,
                ir,
                images,
                labels,
                ExitPolicy("confidence", 0.5),
                out,
                progress=False,
                cycles=board.cycles,
                **kw,
            )
        finally:
            client.close()


@pytest.fixture(scope="module")
def two_runs(serial_fw: Path, small_ir, fashion_test, tmp_path_factory) -> Iterator[list]:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("cycles_runs")
    images, labels = fashion_test.images[:6], fashion_test.labels[:6]
    yield [_measure(serial_fw, small_ir, images, labels, tmp / f"run{i}.jsonl") for i in range(2)]


def test_every_result_gets_modelled_cycles(two_runs: list) -> None:
    outcome = two_runs[0]
    assert not outcome.mismatches
    assert outcome.header["cycle_model"]["kind"] == "modelled"
    for r in outcome.records:
        assert r["counter_kind"] == "instructions"
        assert r["cycles_modelled"] >= r["cycle_model_insns"] > 0
    # the board's -icount count spans td_infer plus the timer reads around it: a constant
    # handful of instructions more, within the counter's one-instruction resolution
    gaps = [r["counter"] - r["cycle_model_insns"] for r in outcome.records]
    assert 0 <= min(gaps) and max(gaps) <= 16 and max(gaps) - min(gaps) <= 1


def test_modelled_cycles_are_deterministic(two_runs: list) -> None:
    a, b = ([(r["cycles_modelled"], r["cycle_model_insns"]) for r in o.records] for o in two_runs)
    assert a == b  # exact; the board's own counter may differ by its one-tick resolution
    ca, cb = ([r["counter"] for r in o.records] for o in two_runs)
    assert max(abs(x - y) for x, y in zip(ca, cb, strict=True)) <= 1


def test_summary_reports_modelled_cycles(two_runs: list, small_ir) -> None:  # noqa: ANN001
    from tinydyn.host.measure import summarize, summary_lines

    s = summarize(two_runs[0], small_ir)
    assert s["cycles_kind"] == "modelled" and s["cycles_modelled_images"] == s["images"]
    assert 1.0 <= s["modelled_cpi"] < 3.0
    assert s["mean_latency_modelled_ms"] > s["mean_latency_ms"]
    text = "\n".join(summary_lines(s))
    assert "mean cycles (modelled)" in text and "latency (modelled)" in text and "(measured" in text


def test_cost_plot(two_runs: list, small_ir, tmp_path: Path) -> None:  # noqa: ANN001
    from tinydyn.host.measure import summarize
    from tinydyn.host.report import plot_cost_vs_macs

    s = summarize(two_runs[0], small_ir)
    assert plot_cost_vs_macs(s, two_runs[0].records, tmp_path / "cost.png").stat().st_size > 1000


def test_resume_keeps_modelled_cycles(serial_fw: Path, small_ir, fashion_test, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "r.jsonl"
    images, labels = fashion_test.images[:4], fashion_test.labels[:4]
    _measure(serial_fw, small_ir, images[:2], labels[:2], out)
    outcome = _measure(serial_fw, small_ir, images, labels, out, resume=True)
    assert [r["seq"] for r in outcome.records] == [0, 1, 2, 3]
    assert all("cycles_modelled" in r for r in outcome.records)


def test_harness_under_qemu_reports_modelled_cycles(
    tools: None, small_ir, fashion_test, tmp_path: Path
) -> None:  # noqa: ANN001
    from tinydyn.codegen import build_project
    from tinydyn.codegen.harness import instructions, run_qemu
    from tinydyn.quantize.policy import ExitPolicy

    build_project(small_ir, "qemu-mps2-an386", tmp_path, compile=True)
    got = run_qemu(
        small_ir,
        tmp_path / "fw.elf",
        fashion_test.images[:3],
        ExitPolicy("none", 0.0),
        icount_shift=3,
        cycle_model=True,
    )
    assert got.cycles_modelled is not None and got.cycle_model_insns is not None
    assert np.all(got.cycles_modelled >= got.cycle_model_insns)
    gap = instructions(got.counter, 3) - got.cycle_model_insns
    assert np.all((gap >= 0) & (gap <= 16))
