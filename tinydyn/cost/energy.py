"""Modelled energy per inference, in the form of DDI's energy model (eq. 6):

    E = sum_i #acc_i * e_i + #MAC * e_MAC  (+ cycles * e_cycle, the static/baseline term)

with three memory levels of a microcontroller (flash for the const weights, SRAM reads and
SRAM writes for activations) and a per-cycle baseline (leakage, clock tree, fetch) that an MCU
pays whatever it computes. Coefficients, their sources and assumptions: ``docs/ENERGY.md``.

Everything is integer (coefficients in femtojoules) so that the firmware computes the very same
numbers: :func:`c_header` renders the coefficients and the arithmetic as C from
``templates/energy_model.h.j2``, and a test compiles it and compares. Results are labelled
``"modelled"``: they are an estimate, never a measurement (``TD_ENERGY_MODELLED`` in the serial
protocol). No torch here: the host reads IR files only (the differentiable form for training
losses is :mod:`tinydyn.cost.torch_cost`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tinydyn.cost.traffic import Q16, U32_MAX, MemoryTraffic, TrafficProfile, layer_costs
from tinydyn.errors import TinydynError
from tinydyn.ir import IRModel

ENERGY_KIND = "modelled"
U64_MAX = 2**64 - 1
COEFF_MAX_FJ = 2**24  # each coefficient below 16.7 nJ: five u32 x coefficient terms fit u64
ENERGY_TEMPLATE = "energy_model.h.j2"


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


def coefficients(board: str | EnergyCoefficients) -> EnergyCoefficients:
    """The coefficients of a named board (a coefficient record is returned as it is)."""
    if isinstance(board, EnergyCoefficients):
        return board
    try:
        return COEFFICIENTS[board]
    except KeyError:
        known = ", ".join(sorted(COEFFICIENTS))
        raise EnergyModelError(f"no energy model for board '{board}': use one of {known}") from None


def traffic_profile(model: IRModel, board: str | EnergyCoefficients) -> TrafficProfile:
    """Bytes per MAC of the full model on a board (its kernels' reuse), as Q16 ratios."""
    rows = layer_costs(model, coefficients(board))
    macs = sum(r.macs for r in rows)
    if macs == 0:
        raise EnergyModelError(f"model '{model.name}' has no MACs: a traffic per MAC is undefined")
    totals = (
        sum(r.traffic.flash_bytes for r in rows),
        sum(r.traffic.sram_read_bytes for r in rows),
        sum(r.traffic.sram_write_bytes for r in rows),
    )
    ratios = [(v << Q16) // macs for v in totals]
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
    return energy(coefficients(board), macs, profile.traffic(macs), cycles)


def c_header(board: str | EnergyCoefficients, profile: TrafficProfile | None = None) -> str:
    """C99 text with the board's coefficients and the integer arithmetic of :func:`energy`.

    With a profile it also defines ``td_emodel_from_macs(macs, cycles, &nj, &uw)``, which a
    board's ``td_serial_energy`` can call directly (see docs/ENERGY.md).
    """
    # imported here: codegen imports this package, and the IR-side cost model needs no Jinja
    from tinydyn.codegen.render import environment

    c = coefficients(board)
    template = environment().get_template(ENERGY_TEMPLATE)
    return template.render(
        **asdict(c), clock_khz=c.clock_khz, profile=None if profile is None else asdict(profile)
    )
