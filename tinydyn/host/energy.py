"""Modelled energy per inference, in the form of DDI's energy model (eq. 6):

    E = sum_i #acc_i * e_i + #MAC * e_MAC  (+ cycles * e_cycle, the static/baseline term)

with three memory levels of a microcontroller (flash for the const weights, SRAM reads and
SRAM writes for activations) and a per-cycle baseline (leakage, clock tree, fetch) that an MCU
pays whatever it computes. Coefficients, their sources and assumptions: ``docs/ENERGY.md``.

Everything is integer (coefficients in femtojoules) so that the firmware computes the very same
numbers: :func:`c_header` emits the coefficients and the arithmetic as C, and a test compiles it
and compares. Results are labelled ``"modelled"``: they are an estimate, never a measurement
(``TD_ENERGY_MODELLED`` in the serial protocol). No torch here: the host reads IR files only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from string import Template
from typing import Any

from tinydyn.errors import TinydynError
from tinydyn.ir import IRModel, Op

ENERGY_KIND = "modelled"
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
COEFF_MAX_FJ = 2**24  # each coefficient below 16.7 nJ: five u32 x coefficient terms fit u64
Q16 = 16
DTYPE_BYTES = {"uint8": 1, "int8": 1, "int16": 2, "int32": 4}
# Requantisation constants read from flash once per output channel per layer call
# (td_kernels.c builds a table): bias int32 + mult int32 + shift uint8, plus res_mult int64.
QPARAM_BYTES, RES_MULT_BYTES = 9, 8


class EnergyModelError(TinydynError):
    """An unknown board or inputs the integer energy model cannot represent."""


@dataclass(frozen=True)
class EnergyCoefficients:
    """Energy per event of one board, in femtojoules (1 fJ = 1e-3 pJ)."""

    board: str
    clock_hz: int  # 0: no time base (power is then reported as 0)
    fj_per_mac: int
    fj_per_flash_byte: int  # weights (const, in flash)
    fj_per_sram_read_byte: int
    fj_per_sram_write_byte: int
    fj_per_cycle: int  # baseline power / clock: leakage, clock tree, instruction fetch
    weight_reuse: int  # MACs per weight byte fetched (register blocking of the kernels)
    input_reuse: int  # MACs per activation byte fetched

    def __post_init__(self) -> None:
        for name in ("fj_per_mac", "fj_per_flash_byte", "fj_per_sram_read_byte", "fj_per_sram_write_byte"):
            if not 0 <= getattr(self, name) < COEFF_MAX_FJ:
                raise EnergyModelError(f"energy coefficient {name} of board '{self.board}' is out of range")
        if not 0 <= self.fj_per_cycle < COEFF_MAX_FJ or self.weight_reuse < 1 or self.input_reuse < 1:
            raise EnergyModelError(f"energy coefficients of board '{self.board}' are out of range")
        if self.clock_hz % 1000 or not 0 <= self.clock_hz < 2**20 * 1000:
            raise EnergyModelError(f"clock of board '{self.board}' must be a multiple of 1 kHz below 1 GHz")

    @property
    def clock_khz(self) -> int:
        return self.clock_hz // 1000


# Sources and derivations: docs/ENERGY.md. MAC/SRAM/flash energies are Horowitz (ISSCC 2014,
# 45 nm, 0.9 V) scaled by ~3.6x to a 90 nm-class MCU process at 1.2 V core; the per-cycle
# baseline is a run-mode supply current x 3.3 V / f. Kernels on Cortex-M4 take the DSP path,
# whose 2x2 blocking reuses each loaded weight for two pixels and each input for two channels.
COEFFICIENTS: dict[str, EnergyCoefficients] = {
    "nucleo-l4r5zi": EnergyCoefficients(
        board="nucleo-l4r5zi",
        clock_hz=120_000_000,
        fj_per_mac=1_100,
        fj_per_flash_byte=15_000,
        fj_per_sram_read_byte=5_000,
        fj_per_sram_write_byte=6_000,
        fj_per_cycle=363_000,  # 110 uA/MHz x 3.3 V
        weight_reuse=2,
        input_reuse=2,
    ),
    "qemu-mps2-an386": EnergyCoefficients(
        board="qemu-mps2-an386",
        clock_hz=25_000_000,
        fj_per_mac=1_100,
        fj_per_flash_byte=15_000,
        fj_per_sram_read_byte=5_000,
        fj_per_sram_write_byte=6_000,
        fj_per_cycle=495_000,  # generic Cortex-M4F MCU: 150 uA/MHz x 3.3 V (leakage weighs more at 25 MHz)
        weight_reuse=2,
        input_reuse=2,
    ),
    # The Linux-process board is a pretend device: 10 pJ per MAC and nothing else, as its
    # board_host.c has always reported; no clock, so no power.
    "host": EnergyCoefficients(
        board="host",
        clock_hz=0,
        fj_per_mac=10_000,
        fj_per_flash_byte=0,
        fj_per_sram_read_byte=0,
        fj_per_sram_write_byte=0,
        fj_per_cycle=0,
        weight_reuse=1,
        input_reuse=1,
    ),
}


def coefficients(board: str) -> EnergyCoefficients:
    try:
        return COEFFICIENTS[board]
    except KeyError:
        known = ", ".join(sorted(COEFFICIENTS))
        raise EnergyModelError(f"no energy model for board '{board}': use one of {known}") from None


@dataclass(frozen=True)
class MemoryTraffic:
    """Bytes moved by one inference."""

    flash_bytes: int  # weights and requantisation constants read
    sram_read_bytes: int  # activations read
    sram_write_bytes: int  # activations written


@dataclass(frozen=True)
class TrafficProfile:
    """Bytes per executed MAC of a model, Q16 fixed point, from its layer shapes (full execution).

    Dynamic skipping removes MACs and the traffic that feeds them together, so one inference's
    traffic is estimated as ``(macs * ratio) >> 16`` for each level (see docs/ENERGY.md).
    """

    flash_q16: int
    sram_read_q16: int
    sram_write_q16: int

    def traffic(self, macs: int) -> MemoryTraffic:
        return MemoryTraffic(
            _scale_q16(macs, self.flash_q16),
            _scale_q16(macs, self.sram_read_q16),
            _scale_q16(macs, self.sram_write_q16),
        )


def _scale_q16(macs: int, q16: int) -> int:
    return min((macs * q16) >> Q16, U32_MAX)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def op_traffic(model: IRModel, op: Op, coeffs: EnergyCoefficients) -> tuple[int, MemoryTraffic]:
    """(MACs, bytes moved) of one op executed in full; guards and exits count as nothing."""
    if op.kind in ("guard", "exit") or op.output is None:
        return 0, MemoryTraffic(0, 0, 0)
    out = model.tensors[op.output]
    x = model.tensors[op.inputs["x"]] if "x" in op.inputs else None
    written = out.size * DTYPE_BYTES[out.dtype]
    if op.kind in ("conv2d", "linear"):
        weight = model.array(op, "weight")
        macs = int(op.attrs.get("macs", 0))
        cout = int(weight.shape[0])
        flash = _ceil_div(macs, coeffs.weight_reuse) + cout * QPARAM_BYTES
        # each MAC consumes one input element; blocking reuses a fetched one input_reuse times
        read = _ceil_div(macs * (DTYPE_BYTES[x.dtype] if x else 1), coeffs.input_reuse)
        if "residual" in op.inputs:
            res = model.tensors[op.inputs["residual"]]
            read += res.size * DTYPE_BYTES[res.dtype]
            flash += cout * RES_MULT_BYTES
        return macs, MemoryTraffic(flash, read, written)
    # pools, rescale: one read per window element (k*k per output for pools), one write per output
    window = int(op.attrs.get("kernel", 1)) ** 2 if op.kind in ("maxpool", "avgpool") else 1
    read = out.size * window * DTYPE_BYTES[x.dtype] if x and op.kind != "gap" else 0
    if op.kind == "gap" and x:
        read = x.size * DTYPE_BYTES[x.dtype]
    return 0, MemoryTraffic(0, read, written)


def _full_path(ops: list[Op]) -> list[Op]:
    """Ops of a full execution: guards take their ``then`` (block executed), every exit head runs."""
    result: list[Op] = []
    for op in ops:
        result.append(op)
        result.extend(_full_path(op.then))
    return result


def traffic_profile(model: IRModel, board: str | EnergyCoefficients) -> TrafficProfile:
    """Bytes per MAC of the full model on a board (its kernels' reuse), as Q16 ratios."""
    coeffs = coefficients(board) if isinstance(board, str) else board
    macs = flash = read = write = 0
    for op in _full_path(model.ops):
        m, t = op_traffic(model, op, coeffs)
        macs += m
        flash += t.flash_bytes
        read += t.sram_read_bytes
        write += t.sram_write_bytes
    if macs == 0:
        raise EnergyModelError(f"model '{model.name}' has no MACs: a traffic per MAC is undefined")
    ratios = [(v << Q16) // macs for v in (flash, read, write)]
    if max(ratios) >= COEFF_MAX_FJ:
        raise EnergyModelError(f"model '{model.name}' moves over 256 bytes per MAC: the Q16 ratio overflows")
    return TrafficProfile(*ratios)


@dataclass(frozen=True)
class EnergyEstimate:
    """Modelled energy of one inference; ``kind`` is always ``"modelled"``."""

    board: str
    energy_nj: int
    power_uw: int  # mean over the inference; 0 without a time base
    breakdown_fj: dict[str, int]
    kind: str = ENERGY_KIND

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _check_u32(**values: int) -> None:
    for name, v in values.items():
        if not 0 <= v <= U32_MAX:
            raise EnergyModelError(f"{name}={v} is outside 0..2^32-1, the firmware's range")


def energy(coeffs: EnergyCoefficients, macs: int, traffic: MemoryTraffic, cycles: int) -> EnergyEstimate:
    """E (nJ, floor, saturated to u32) and mean power (uW) = E / (cycles / clock).

    ``cycles`` is what the board's counter reports (retired instructions under QEMU).
    Bit-identical to ``td_emodel_energy`` of :func:`c_header`.
    """
    _check_u32(
        macs=macs,
        flash_bytes=traffic.flash_bytes,
        sram_read_bytes=traffic.sram_read_bytes,
        sram_write_bytes=traffic.sram_write_bytes,
        cycles=cycles,
    )
    parts = {
        "mac": macs * coeffs.fj_per_mac,
        "flash": traffic.flash_bytes * coeffs.fj_per_flash_byte,
        "sram_read": traffic.sram_read_bytes * coeffs.fj_per_sram_read_byte,
        "sram_write": traffic.sram_write_bytes * coeffs.fj_per_sram_write_byte,
        "static": cycles * coeffs.fj_per_cycle,
    }
    total_fj = sum(parts.values())
    energy_nj = min(total_fj // 10**6, U32_MAX)
    power_uw = 0
    if cycles and coeffs.clock_hz:
        # fJ * kHz / cycles = 1e-15 J * 1e3 / s = 1e-12 W: divide by 1e6 for uW
        power_uw = min(total_fj * coeffs.clock_khz // cycles // 10**6, U32_MAX)
    return EnergyEstimate(coeffs.board, energy_nj, power_uw, parts)


def energy_from_macs(
    board: str | EnergyCoefficients, profile: TrafficProfile, macs: int, cycles: int
) -> EnergyEstimate:
    """One inference from its executed MACs and counter: traffic estimated by the profile.

    Bit-identical to ``td_emodel_from_macs`` of :func:`c_header` with the same profile.
    """
    coeffs = coefficients(board) if isinstance(board, str) else board
    return energy(coeffs, macs, profile.traffic(macs), cycles)


_C_ENERGY = """\
/* Generated by tinydyn.host.energy: MODELLED energy of board '$board' (not a measurement).
 * E[fJ] = MACs*e_mac + flash*e_flash + sram_rd*e_rd + sram_wr*e_wr + cycles*e_cycle (ENERGY.md) */
#ifndef TD_ENERGY_MODEL_H
#define TD_ENERGY_MODEL_H
#include <stdint.h>
#define TD_EMODEL_CLOCK_KHZ ${clock_khz}u
#define TD_EMODEL_FJ_PER_MAC ${fj_per_mac}u
#define TD_EMODEL_FJ_PER_FLASH_BYTE ${fj_per_flash_byte}u
#define TD_EMODEL_FJ_PER_SRAM_READ_BYTE ${fj_per_sram_read_byte}u
#define TD_EMODEL_FJ_PER_SRAM_WRITE_BYTE ${fj_per_sram_write_byte}u
#define TD_EMODEL_FJ_PER_CYCLE ${fj_per_cycle}u

static inline void td_emodel_energy(uint32_t macs, uint32_t flash_bytes, uint32_t sram_rd_bytes,
                                    uint32_t sram_wr_bytes, uint32_t cycles, uint32_t *energy_nj,
                                    uint32_t *power_uw)
{
    /* each term < 2^32 * 2^24: the sum fits 64 bits */
    uint64_t fj = (uint64_t)macs * TD_EMODEL_FJ_PER_MAC;
    fj += (uint64_t)flash_bytes * TD_EMODEL_FJ_PER_FLASH_BYTE;
    fj += (uint64_t)sram_rd_bytes * TD_EMODEL_FJ_PER_SRAM_READ_BYTE;
    fj += (uint64_t)sram_wr_bytes * TD_EMODEL_FJ_PER_SRAM_WRITE_BYTE;
    fj += (uint64_t)cycles * TD_EMODEL_FJ_PER_CYCLE;
    uint64_t nj = fj / 1000000u;
    *energy_nj = nj > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)nj;
    *power_uw = 0;
    if (cycles != 0u && TD_EMODEL_CLOCK_KHZ != 0u) {
        /* floor(fj * kHz / cycles) exactly, without 128-bit: q * kHz + r * kHz / cycles, where
         * r < 2^32 and kHz < 2^20; the power in uW is that / 1e6 */
        uint64_t q = fj / cycles, r = fj % cycles, uw;
        if (q > UINT64_MAX / (TD_EMODEL_CLOCK_KHZ + 1u)) {
            uw = UINT64_MAX; /* far beyond 2^32 uW: saturates below */
        } else {
            uw = (q * TD_EMODEL_CLOCK_KHZ + r * TD_EMODEL_CLOCK_KHZ / cycles) / 1000000u;
        }
        *power_uw = uw > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)uw;
    }
}
"""

_C_PROFILE = """
/* bytes per executed MAC of this model (Q16), from its layer shapes */
#define TD_EMODEL_FLASH_Q16 ${flash_q16}u
#define TD_EMODEL_SRAM_READ_Q16 ${sram_read_q16}u
#define TD_EMODEL_SRAM_WRITE_Q16 ${sram_write_q16}u

static inline uint32_t td_emodel_scale_q16(uint32_t macs, uint32_t q16)
{
    uint64_t v = ((uint64_t)macs * q16) >> 16;
    return v > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)v;
}

/* Modelled energy of one inference from its executed MACs and counter value. */
static inline void td_emodel_from_macs(uint32_t macs, uint32_t cycles, uint32_t *energy_nj,
                                       uint32_t *power_uw)
{
    td_emodel_energy(macs, td_emodel_scale_q16(macs, TD_EMODEL_FLASH_Q16),
                     td_emodel_scale_q16(macs, TD_EMODEL_SRAM_READ_Q16),
                     td_emodel_scale_q16(macs, TD_EMODEL_SRAM_WRITE_Q16), cycles, energy_nj, power_uw);
}

/* nJ only, for board mains that compute power themselves: prefer td_emodel_from_macs, whose
 * power equals the host's energy_from_macs bit for bit. */
static inline uint32_t td_emodel_nj(uint32_t macs, uint32_t cycles)
{
    uint32_t nj, uw;
    td_emodel_from_macs(macs, cycles, &nj, &uw);
    return nj;
}
#define TD_ENERGY_MODEL_NJ(macs, counter) td_emodel_nj((macs), (counter))
"""


def c_header(board: str | EnergyCoefficients, profile: TrafficProfile | None = None) -> str:
    """C99 text with the board's coefficients and the integer arithmetic of :func:`energy`.

    With a profile it also defines ``td_emodel_from_macs(macs, cycles, &nj, &uw)``, which a
    board's ``td_serial_energy`` can call directly (see docs/ENERGY.md).
    """
    c = coefficients(board) if isinstance(board, str) else board
    text = Template(_C_ENERGY).substitute(asdict(c), clock_khz=c.clock_khz)
    if profile is not None:
        text += Template(_C_PROFILE).substitute(asdict(profile))
    return text + "#endif /* TD_ENERGY_MODEL_H */\n"
