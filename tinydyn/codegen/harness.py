"""Running a built project's test harness (td_harness.c) on the host or under QEMU.

The harness reads ``td_in.bin`` (policy + images) and writes ``td_out.bin`` (one record per
image) in its working directory; see the format in tinydyn/firmware/td_harness.c.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinydyn.codegen.errors import CodegenError
from tinydyn.cost.budget import UNIT_CODES
from tinydyn.ir import IRModel
from tinydyn.quantize.policy import ExitPolicy

if TYPE_CHECKING:
    from tinydyn.host.cycles import CycleModel

POLICY_CODES = {"none": 0, "confidence": 1, "margin": 2, "budget": 3}
HARNESS_MARGINS = 8
QEMU_TIMER_HZ = 25_000_000


@dataclass
class HarnessResults:
    model_id: str
    arena_bytes: int
    static_macs: int
    counter_kind: int
    logits: np.ndarray  # (N, classes) int64
    predictions: np.ndarray
    exits: np.ndarray
    macs: np.ndarray
    skipped_blocks: np.ndarray
    skipped_channels: np.ndarray
    counter: np.ndarray  # board counter delta around td_infer (QEMU: timer ticks)
    budget_units: int = 0  # bit (code - 1) per budget unit the firmware offers
    cost_model_id: int = 0  # CRC-32 of its baked budget cost model (BudgetCosts.cost_model_id)
    # per image, from the baked cost model (tinydyn/cost/budget.py): modelled energy (nJ) and
    # cycles of what ran, and the gates' own MACs
    energy_cost_nj: np.ndarray | None = None
    cycles_cost: np.ndarray | None = None
    gate_macs: np.ndarray | None = None
    # QEMU with the cycle model (tinydyn.host.cycles): MODELLED Cortex-M4 cycles of each td_infer
    # call, and the instructions the plugin counted in it; None without the model
    cycles_modelled: np.ndarray | None = None
    cycle_model_insns: np.ndarray | None = None


def encode_input(ir: IRModel, images: np.ndarray, policy: ExitPolicy) -> bytes:
    ip = policy.to_integer(ir)
    if ip.budget >= 2**32:
        raise CodegenError(f"budget {ip.budget} {ip.budget_unit} does not fit the firmware's uint32 budget")
    margins = (list(ip.margins) + [0] * HARNESS_MARGINS)[:HARNESS_MARGINS]
    margins = [max(min(m, 2**31 - 1), -(2**31)) for m in margins]
    header = b"TDH2" + struct.pack(
        f"<IBBBxII{HARNESS_MARGINS}i",
        len(images),
        POLICY_CODES[ip.kind],
        0 if ip.gating else 1,
        UNIT_CODES[ip.budget_unit],
        ip.confidence_t16,
        ip.budget,
        *margins,
    )
    return header + np.ascontiguousarray(images, dtype=np.uint8).tobytes()


def decode_output(data: bytes) -> HarnessResults:
    if data[:4] != b"TDR2":
        raise CodegenError("harness output is missing or truncated: the firmware did not run to the end")
    model_id = data[4:20].decode()
    arena, static, nc, kind, units, cost_id = struct.unpack_from("<IIBBBxI", data, 20)
    record = np.dtype(
        [
            ("logits", "<i2", (nc,)),
            ("pred", "u1"),
            ("exit", "u1"),
            ("sb", "<u2"),
            ("sc", "<u2"),
            ("macs", "<u4"),
            ("counter", "<u4"),
            ("energy", "<u4"),
            ("cycles", "<u4"),
            ("gate_macs", "<u4"),
        ]
    )
    rec = np.frombuffer(data, dtype=record, offset=36)
    return HarnessResults(
        model_id,
        arena,
        static,
        kind,
        rec["logits"].astype(np.int64),
        rec["pred"].astype(np.int64),
        rec["exit"].astype(np.int64),
        rec["macs"].astype(np.int64),
        rec["sb"].astype(np.int64),
        rec["sc"].astype(np.int64),
        rec["counter"].astype(np.int64),
        units,
        cost_id,
        rec["energy"].astype(np.int64),
        rec["cycles"].astype(np.int64),
        rec["gate_macs"].astype(np.int64),
    )


def _run(cmd: list[str], workdir: Path, payload: bytes, timeout: float) -> HarnessResults:
    (workdir / "td_in.bin").write_bytes(payload)
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-1000:]
        raise CodegenError(f"firmware harness failed with status {proc.returncode}: {detail}")
    return decode_output((workdir / "td_out.bin").read_bytes())


def run_host(
    ir: IRModel, executable: Path, images: np.ndarray, policy: ExitPolicy, timeout: float = 600
) -> HarnessResults:
    with tempfile.TemporaryDirectory(prefix="td_host_") as tmp:
        return _run([str(Path(executable).resolve())], Path(tmp), encode_input(ir, images, policy), timeout)


def qemu_command(elf: Path, icount_shift: int | None = None, plugin: list[str] | None = None) -> list[str]:
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise CodegenError("qemu-system-arm not found: apt-get install qemu-system-arm")
    cmd = [qemu, "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "null"]
    cmd += ["-semihosting-config", "enable=on,target=native", "-kernel", str(Path(elf).resolve())]
    if icount_shift is not None:
        cmd += ["-icount", f"shift={icount_shift},align=off"]
    return cmd + list(plugin or [])


def run_qemu(
    ir: IRModel,
    elf: Path,
    images: np.ndarray,
    policy: ExitPolicy,
    icount_shift: int | None = None,
    timeout: float = 600,
    cycle_model: CycleModel | bool | None = None,
) -> HarnessResults:
    """Run under QEMU; with ``icount_shift`` the counter is exact virtual time, and
    :func:`instructions` turns it into retired instructions. With ``cycle_model`` (True or a
    :class:`tinydyn.host.cycles.CycleModel`) the results also carry modelled cycles per image."""
    from tinydyn.host.cycles import (
        CycleModel,
        CycleModelError,
        qemu_plugin_args,
        read_records,
        symbol_address,
    )

    with tempfile.TemporaryDirectory(prefix="td_qemu_") as tmp:
        plugin = None
        log = Path(tmp) / "cycles.jsonl"
        if cycle_model:
            model = cycle_model if isinstance(cycle_model, CycleModel) else CycleModel()
            try:
                plugin = qemu_plugin_args(log, symbol_address(elf), model)
            except CycleModelError as e:
                raise CodegenError(f"cycle model: {e}") from None
        got = _run(
            qemu_command(elf, icount_shift, plugin), Path(tmp), encode_input(ir, images, policy), timeout
        )
        if plugin is not None:
            recs = read_records(log)
            if len(recs) != len(got.counter):
                raise CodegenError(
                    f"the cycle model saw {len(recs)} td_infer calls for {len(got.counter)} images"
                )
            got.cycles_modelled = np.array([r.cycles for r in recs], dtype=np.int64)
            got.cycle_model_insns = np.array([r.insns for r in recs], dtype=np.int64)
        return got


def instructions(ticks: np.ndarray, icount_shift: int) -> np.ndarray:
    """Timer ticks (25 MHz) → retired instructions when each takes 2^shift ns."""
    return ticks * (1_000_000_000 // QEMU_TIMER_HZ) / (2**icount_shift)
