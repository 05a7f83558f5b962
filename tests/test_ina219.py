"""The INA219 C driver against a register-level model of the device (tests/ina219_model).

The driver is built for the host with gcc; its td_i2c_write/read go through ctypes callbacks
to the model, which does the device's own integer arithmetic from a physical bus voltage and
shunt current. The STM32L4 I2C master is built over a fake register file to check that a
silent or faulty bus gives error codes, never a hang.
"""

from __future__ import annotations

import ctypes
import math
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import require_tool
from tests.ina219_model import (
    I2C_EBUS,
    I2C_ENACK,
    I2C_ETIMEOUT,
    REG_BUS,
    REG_CALIB,
    REG_CONFIG,
    REG_POWER,
    REG_SHUNT,
    I2CBus,
    INA219Model,
    datasheet_calibration,
    trunc_div,
)
from tests.ina219_model.build import READ_FN, WRITE_FN, build_driver, build_fake_l4

ERANGE, EOVERFLOW, ERESET, EVERIFY = -10, -11, -12, -13


class Dev(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint8),
        ("config", ctypes.c_uint16),
        ("cal", ctypes.c_uint16),
        ("current_lsb_na", ctypes.c_uint32),
        ("shunt_uohm", ctypes.c_uint32),
    ]


class Energy(ctypes.Structure):
    _fields_ = [
        ("clock_khz", ctypes.c_uint32),
        ("last_uw", ctypes.c_uint32),
        ("last_cycles", ctypes.c_uint32),
        ("total_cycles", ctypes.c_uint64),
        ("uw_cycles_x2", ctypes.c_uint64),
        ("started", ctypes.c_uint8),
    ]


class Driver:
    """The C driver with its I2C routed to an :class:`I2CBus` of models."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.bus = I2CBus()

        def write(addr: int, buf: ctypes._Pointer, n: int) -> int:
            return self.bus.write(addr, ctypes.string_at(buf, n))

        def read(addr: int, buf: ctypes._Pointer, n: int) -> int:
            data = self.bus.read(addr, n)
            if isinstance(data, int):
                return data
            ctypes.memmove(buf, data, n)
            return 0

        self._callbacks = (WRITE_FN(write), READ_FN(read))  # keep alive while C holds them
        lib.td_shim_set(*self._callbacks)

    def init(self, addr: int, shunt_uohm: int, max_ua: int) -> tuple[int, Dev]:
        dev = Dev()
        return self.lib.td_ina219_init(ctypes.byref(dev), addr, shunt_uohm, max_ua), dev

    def plan(self, shunt_uohm: int, max_ua: int) -> tuple[int, Dev]:
        dev = Dev()
        return self.lib.td_ina219_plan(ctypes.byref(dev), 0x40, shunt_uohm, max_ua), dev

    def read(self, dev: Dev, what: str) -> tuple[int, int]:
        ctype = {"bus_mv": ctypes.c_uint32, "power_uw": ctypes.c_uint32}.get(what, ctypes.c_int32)
        out = ctype()
        fn = getattr(self.lib, f"td_ina219_read_{what}")
        args = (ctypes.byref(dev), ctypes.byref(out)) + ((None,) if what == "bus_mv" else ())  # no flags
        rc = fn(*args)
        return rc, out.value


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    require_tool("gcc")
    return build_driver(tmp_path_factory.mktemp("ina219"))


@pytest.fixture
def drv(lib: ctypes.CDLL) -> Driver:
    return Driver(lib)


def expected_plan(shunt_uohm: int, max_ua: int) -> tuple[int, int, int] | None:
    """(current LSB nA, calibration register, PGA bits) by the datasheet procedure, or None."""
    if max_ua * shunt_uohm < 10**7:  # below 10 uV at full scale
        return None
    vmax_uv = math.ceil(max_ua * shunt_uohm / 10**6)
    pg = next((i for i, r in enumerate((40000, 80000, 160000, 320000)) if vmax_uv <= r), None)
    lsb = max(math.ceil(max_ua * 1000 / 32767), math.ceil(40960000000000 / (0xFFFE * shunt_uohm)))
    if pg is None or lsb >= 2**32:
        return None
    cal = datasheet_calibration(lsb, shunt_uohm) & 0xFFFE
    return (lsb, cal, pg) if cal else None


# --- the model itself follows the datasheet ---------------------------------------------------


def test_model_register_semantics() -> None:
    bus = I2CBus()
    m = bus.attach(INA219Model(0x41, shunt_ohm=0.1))
    assert bus.write(0x40, b"\x00") == I2C_ENACK and bus.read(0x42, 2) == I2C_ENACK
    assert bus.write(0x41, b"\x00") == 0 and bus.read(0x41, 2) == b"\x39\x9f"  # POR config
    bus.write(0x41, bytes([REG_CALIB, 0x10, 0x01]))
    assert m.calib == 0x1000  # FS0 is void
    bus.write(0x41, bytes([REG_SHUNT, 0x12, 0x34]))  # read-only: ignored
    m.set_physical(12.0, 0.25)  # 25 mV, 12 V
    assert bus.read(0x41, 2) == (2500).to_bytes(2, "big")  # the pointer stayed at 01h
    assert m.current == trunc_div(2500 * 0x1000, 4096) and m.power == m.current * 3000 // 5000
    bus.write(0x41, bytes([REG_BUS]))
    assert bus.read(0x41, 2) == ((3000 << 3) | 0x2).to_bytes(2, "big")  # CNVR
    bus.write(0x41, bytes([REG_POWER]))
    bus.read(0x41, 2)
    assert not m.cnvr  # reading power clears CNVR
    bus.write(0x41, bytes([REG_CONFIG, 0x80, 0x00]))
    assert m.config == 0x399F and m.calib == 0  # reset self-clears, defaults back
    m.set_physical(12.0, -0.25)
    assert m.shunt == -2500 and m.current == 0  # no calibration: no current


# --- calibration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shunt_uohm", "max_ua", "lsb", "cal", "config"),
    [
        (100_000, 3_200_000, 97_660, 4194, 0x399F),  # 0.1 ohm, 3.2 A: the POR configuration
        (100_000, 400_000, 12_208, 33_550, 0x219F),  # 0.1 ohm, 400 mA: 40 mV range
        (10_000, 10_000_000, 305_186, 13_420, 0x319F),  # 10 mohm, 10 A: 100 mV -> 160 mV range
    ],
)
def test_init_programs_datasheet_calibration(
    drv: Driver, shunt_uohm: int, max_ua: int, lsb: int, cal: int, config: int
) -> None:
    m = drv.bus.attach(INA219Model(0x40, shunt_ohm=shunt_uohm / 1e6))
    rc, dev = drv.init(0x40, shunt_uohm, max_ua)
    assert rc == 0
    assert (dev.current_lsb_na, dev.cal, dev.config) == (lsb, cal, config)
    assert cal == datasheet_calibration(lsb, shunt_uohm) & 0xFFFE
    assert (m.calib, m.config) == (cal, config)
    # reset first, as the datasheet's power-up sequence; config and cal written big-endian
    writes = [data for kind, _, data in drv.bus.log if kind == "w" and len(data) == 3]
    assert writes == [
        b"\x00\x80\x00",
        bytes([0, config >> 8, config & 0xFF]),
        bytes([5, cal >> 8, cal & 0xFF]),
    ]


@pytest.mark.parametrize(
    ("shunt_uohm", "max_ua"), [(0, 1000), (100_000, 0), (1_000_000, 400_000), (1, 9_999_999), (3, 3_333_333)]
)
def test_plan_rejects_unrepresentable(drv: Driver, shunt_uohm: int, max_ua: int) -> None:
    assert drv.plan(shunt_uohm, max_ua)[0] == ERANGE  # 400 mV; below 10 uV


# --- readings ----------------------------------------------------------------------------------


def check_readings(drv: Driver, dev: Dev, m: INA219Model, bus_v: float, current_a: float) -> None:
    m.set_physical(bus_v, current_a)
    lsb = dev.current_lsb_na
    rc, mv = drv.read(dev, "bus_mv")
    assert rc == 0 and mv == m.bus * 4 and abs(mv - bus_v * 1000) <= 2.0 + 1e-6
    rc, uv = drv.read(dev, "shunt_uv")
    assert rc == 0 and uv == m.shunt * 10 and abs(uv - current_a * m.shunt_ohm * 1e6) <= 5.0 + 1e-6
    rc, ua = drv.read(dev, "current_ua")
    assert rc == 0 and ua == trunc_div(m.current * lsb, 1000)
    # truth: shunt quantisation (5 uV / R), Cal truncation (k <= 1), register and uA truncation
    k = dev.cal * lsb * 1e-9 * m.shunt_ohm / 0.04096
    tol_ua = abs(current_a) * 1e6 * (1 - k) + 5.0 / m.shunt_ohm + lsb / 1000 + 1
    assert abs(ua - current_a * 1e6) <= tol_ua + 1e-6
    rc, uw = drv.read(dev, "power_uw")
    assert rc == 0 and uw == m.power * 20 * lsb // 1000
    true_uw = abs(current_a) * bus_v * 1e6
    tol_uw = tol_ua * bus_v + abs(current_a) * 2e3 + 20 * lsb / 1000 + 1
    assert abs(uw - true_uw) <= tol_uw + 1e-6


def test_readings_equal_model(drv: Driver) -> None:
    m = drv.bus.attach(INA219Model(0x45, shunt_ohm=0.1))
    rc, dev = drv.init(0x45, 100_000, 3_200_000)
    assert rc == 0
    for bus_v, current_a in [(5.0, 0.1234), (3.3, 0.0), (12.004, -0.5), (26.0, 3.1999), (0.0, 0.00001)]:
        check_readings(drv, dev, m, bus_v, current_a)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shunt_uohm=st.one_of(st.integers(1, 100), st.integers(1_000, 2_000_000)),
    max_ua=st.integers(1_000, 20_000_000),
    fraction=st.floats(-1.0, 1.0),
    bus_v=st.floats(0.0, 26.0),
)
def test_random_shunts_and_currents(
    drv: Driver, shunt_uohm: int, max_ua: int, fraction: float, bus_v: float
) -> None:
    plan = expected_plan(shunt_uohm, max_ua)
    rc, dev = drv.plan(shunt_uohm, max_ua)
    if plan is None:
        assert rc == ERANGE
        return
    assert rc == 0 and (dev.current_lsb_na, dev.cal, (dev.config >> 11) & 3) == plan
    drv.bus.devices.clear()
    m = drv.bus.attach(INA219Model(0x40, shunt_ohm=shunt_uohm / 1e6))
    rc, dev = drv.init(0x40, shunt_uohm, max_ua)
    assert rc == 0 and m.calib == plan[1]
    current_a = fraction * max_ua / 1e6
    check_readings(drv, dev, m, bus_v, current_a)


def test_overflow_and_conversion_flags(drv: Driver) -> None:
    m = drv.bus.attach(INA219Model(0x40, shunt_ohm=0.1))
    rc, dev = drv.init(0x40, 100_000, 400_000)
    assert rc == 0
    m.set_physical(5.0, 0.3)
    flags = ctypes.c_uint16()
    mv = ctypes.c_uint32()
    assert drv.lib.td_ina219_read_bus_mv(ctypes.byref(dev), ctypes.byref(mv), ctypes.byref(flags)) == 0
    assert flags.value == 0x2  # CNVR, no OVF
    drv.read(dev, "power_uw")
    drv.lib.td_ina219_read_bus_mv(ctypes.byref(dev), ctypes.byref(mv), ctypes.byref(flags))
    assert flags.value == 0  # the power read cleared CNVR
    assert drv.lib.td_ina219_write_reg(ctypes.byref(dev), REG_CALIB, 0xFFFE) == 0
    m.set_physical(5.0, 0.399)  # 39.9 mV * 0xFFFE / 4096 > 32767: the device overflows
    rc = drv.lib.td_ina219_read_bus_mv(ctypes.byref(dev), ctypes.byref(mv), ctypes.byref(flags))
    assert rc == EOVERFLOW and flags.value == 0x3 and mv.value == 5000


# --- errors ------------------------------------------------------------------------------------


def test_wrong_address_nacks(drv: Driver) -> None:
    drv.bus.attach(INA219Model(0x40))
    assert drv.init(0x41, 100_000, 1_000_000)[0] == I2C_ENACK
    rc, dev = drv.init(0x40, 100_000, 1_000_000)
    assert rc == 0
    dev.addr = 0x44
    for what in ("bus_mv", "shunt_uv", "current_ua", "power_uw"):
        assert drv.read(dev, what)[0] == I2C_ENACK


@pytest.mark.parametrize("code", [I2C_ETIMEOUT, I2C_ENACK, I2C_EBUS])
def test_bus_faults_at_every_transfer(drv: Driver, code: int) -> None:
    m = drv.bus.attach(INA219Model(0x40))
    drv.init(0x40, 100_000, 1_000_000)
    n_init = len(drv.bus.log)
    assert n_init == 9  # reset, pointer+read, config, cal, (pointer+read) x2
    for i in range(n_init):  # a fault at any step of init is returned, nothing after it runs
        m.reset()
        drv.bus.log.clear()
        drv.bus.faults = [0] * i + [code]
        assert drv.init(0x40, 100_000, 1_000_000)[0] == code
        assert len(drv.bus.log) == i + 1
    rc, dev = drv.init(0x40, 100_000, 1_000_000)
    for i in range(2):  # pointer write, then data read
        drv.bus.faults = [0] * i + [code]
        assert drv.read(dev, "current_ua")[0] == code


def test_reset_and_verify_failures(drv: Driver) -> None:
    class NoReset(INA219Model):
        def reset(self) -> None:
            super().reset()
            self.config = 0x1234  # not an INA219 at POR

    class StuckCal(INA219Model):
        def i2c_write(self, data: bytes) -> None:
            if data[:1] != bytes([REG_CALIB]):
                super().i2c_write(data)
            else:
                self.pointer = REG_CALIB

    drv.bus.attach(NoReset(0x40))
    assert drv.init(0x40, 100_000, 1_000_000)[0] == ERESET
    drv.bus.attach(StuckCal(0x40))
    assert drv.init(0x40, 100_000, 1_000_000)[0] == EVERIFY


# --- energy accumulator -----------------------------------------------------------------------


def energy_ref(clock_hz: int, samples: list[tuple[int, int]]) -> tuple[int, int]:
    acc = total = 0
    for (p0, c0), (p1, c1) in zip(samples, samples[1:], strict=False):
        d = (c1 - c0) % 2**32
        acc += (p0 + p1) * d
        total += d
    if total == 0:
        return 0, 0
    return min(acc // (2 * (clock_hz // 1000)), 2**32 - 1), min(acc // (2 * total), 2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(
    clock_khz=st.integers(1, 480_000),
    samples=st.lists(st.tuples(st.integers(0, 2_000_000), st.integers(0, 2**32 - 1)), min_size=0, max_size=6),
)
def test_energy_accumulator_matches_reference(lib: ctypes.CDLL, clock_khz: int, samples: list) -> None:
    acc = Energy()
    assert lib.td_ina219_energy_begin(ctypes.byref(acc), clock_khz * 1000) == 0
    for power, cycles in samples:
        lib.td_ina219_energy_add(ctypes.byref(acc), power, cycles)
    nj, uw = ctypes.c_uint32(), ctypes.c_uint32()
    lib.td_ina219_energy_result(ctypes.byref(acc), ctypes.byref(nj), ctypes.byref(uw))
    assert (nj.value, uw.value) == energy_ref(clock_khz * 1000, samples)


def test_energy_of_an_inference_from_the_sensor(drv: Driver) -> None:
    m = drv.bus.attach(INA219Model(0x40, shunt_ohm=0.1))
    rc, dev = drv.init(0x40, 100_000, 400_000)
    assert rc == 0
    acc = Energy()
    assert drv.lib.td_ina219_energy_begin(ctypes.byref(acc), 120_000_123) == ERANGE
    assert drv.lib.td_ina219_energy_begin(ctypes.byref(acc), 120_000_000) == 0
    m.set_physical(3.3, 0.030)  # about 99 mW
    assert drv.lib.td_ina219_energy_sample(ctypes.byref(acc), ctypes.byref(dev), 2**32 - 6_000_000) == 0
    m.set_physical(3.3, 0.040)
    assert drv.lib.td_ina219_energy_sample(ctypes.byref(acc), ctypes.byref(dev), 6_000_000) == 0  # wrapped
    nj, uw = ctypes.c_uint32(), ctypes.c_uint32()
    drv.lib.td_ina219_energy_result(ctypes.byref(acc), ctypes.byref(nj), ctypes.byref(uw))
    # 12e6 cycles at 120 MHz = 0.1 s at the mean of ~99 mW and ~132 mW
    assert abs(uw.value - 0.5 * 3.3 * (0.030 + 0.040) * 1e6) < 0.002 * 115_500
    assert abs(nj.value - uw.value * 0.1 * 1e3) <= 1
    drv.bus.faults = [I2C_ETIMEOUT]
    assert drv.lib.td_ina219_energy_sample(ctypes.byref(acc), ctypes.byref(dev), 7_000_000) == I2C_ETIMEOUT


# --- the STM32L4 I2C master over a fake register file -------------------------------------------

I2C1, RCC, GPIOB = 0x5400, 0x1000, 0x0400
CR1, CR2, TIMINGR, ISR, RXDR, TXDR = 0x00, 0x04, 0x10, 0x18, 0x24, 0x28
TXIS, RXNE, NACKF, STOPF, BERR, BUSY = 1 << 1, 1 << 2, 1 << 4, 1 << 5, 1 << 8, 1 << 15


L4Lib = tuple[ctypes.CDLL, ctypes.Array]


@pytest.fixture(scope="module")
def l4(tmp_path_factory: pytest.TempPathFactory) -> L4Lib:
    require_tool("gcc")
    lib = build_fake_l4(tmp_path_factory.mktemp("l4"))
    return lib, (ctypes.c_uint32 * 0x1800).in_dll(lib, "td_fake_regs")


def test_l4_init_programs_pins_clock_and_timing(l4: L4Lib) -> None:
    lib, regs = l4
    ctypes.memset(regs, 0, ctypes.sizeof(regs))
    assert lib.td_i2c_init(100_000) == I2C_ETIMEOUT  # HSI16 never ready: gives up
    assert lib.td_i2c_init(250_000) == -4
    regs[RCC // 4] = 1 << 10  # HSIRDY
    assert lib.td_i2c_init(400_000) == 0
    assert regs[(RCC + 0x4C) // 4] == 1 << 1  # GPIOBEN
    assert regs[(RCC + 0x58) // 4] == 1 << 21  # I2C1EN
    assert regs[(RCC + 0x88) // 4] == 2 << 12  # I2C1SEL = HSI16
    assert regs[GPIOB // 4] == (2 << 16) | (2 << 18)  # PB8/PB9 alternate function
    assert regs[(GPIOB + 0x04) // 4] == (1 << 8) | (1 << 9)  # open drain
    assert regs[(GPIOB + 0x24) // 4] == 0x44  # AFRH: AF4 on pins 8 and 9
    assert regs[(I2C1 + TIMINGR) // 4] == 0x10320309 and regs[(I2C1 + CR1) // 4] & 1


@pytest.mark.parametrize(
    ("isr", "rc"),
    [
        (0, I2C_ETIMEOUT),
        (BUSY, I2C_ETIMEOUT),
        (NACKF | STOPF, I2C_ENACK),
        (NACKF, I2C_ENACK),
        (BERR | TXIS, I2C_EBUS),
    ],
)
def test_l4_silent_or_faulty_bus_returns_errors(l4: L4Lib, isr: int, rc: int) -> None:
    lib, regs = l4
    ctypes.memset(regs, 0, ctypes.sizeof(regs))
    regs[(I2C1 + ISR) // 4] = isr
    buf = (ctypes.c_uint8 * 2)(1, 2)
    assert lib.td_i2c_write(0x40, buf, 2) == rc
    assert lib.td_i2c_read(0x40, buf, 2) == rc


def test_l4_transfers_encode_cr2_and_data(l4: L4Lib) -> None:
    lib, regs = l4
    ctypes.memset(regs, 0, ctypes.sizeof(regs))
    regs[(I2C1 + ISR) // 4] = TXIS | RXNE | STOPF
    buf = (ctypes.c_uint8 * 3)(0x05, 0x10, 0xA6)
    assert lib.td_i2c_write(0x40, buf, 3) == 0
    cr2 = regs[(I2C1 + CR2) // 4]
    assert cr2 == (0x40 << 1) | (3 << 16) | (1 << 25) | (1 << 13)  # SADD, NBYTES, AUTOEND, START
    assert regs[(I2C1 + TXDR) // 4] == 0xA6
    regs[(I2C1 + RXDR) // 4] = 0x5A
    out = (ctypes.c_uint8 * 2)()
    assert lib.td_i2c_read(0x41, out, 2) == 0 and bytes(out) == b"\x5a\x5a"
    assert regs[(I2C1 + CR2) // 4] == (0x41 << 1) | (1 << 10) | (2 << 16) | (1 << 25) | (1 << 13)
    assert lib.td_i2c_write(0x80, buf, 1) == -4 and lib.td_i2c_read(0x40, out, 0) == -4


def test_driver_sources_build_for_cortex_m4(tmp_path: Path) -> None:
    cc = require_tool("arm-none-eabi-gcc")
    firmware = Path(__file__).resolve().parents[1] / "tinydyn" / "firmware"
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O2", "-std=c99"]
    flags += ["-Wall", "-Wextra", "-Werror", f"-I{firmware / 'drivers'}", "-c"]
    for src in (firmware / "drivers" / "ina219.c", firmware / "boards" / "nucleo-l4r5zi" / "i2c_stm32l4.c"):
        subprocess.run([cc, *flags, str(src), "-o", str(tmp_path / (src.stem + ".o"))], check=True)
