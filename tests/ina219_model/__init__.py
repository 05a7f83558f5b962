"""A register-level model of the TI INA219 on an I2C bus, for host tests of the C driver.

The sensor cannot exist on a build machine, so the driver is tested against this model of
the device as the datasheet (SBOS448) describes it: 7-bit address decoding (other addresses
are NACKed), a register pointer set by the first byte of a write, 16-bit big-endian registers,
the self-clearing reset bit, read-only result registers, and the device's own integer
arithmetic: Shunt = V_shunt / 10 uV, Bus = V_bus / 4 mV in bits 15..3 with CNVR (bit 1)
and OVF (bit 0), Current = trunc(Shunt * Cal / 4096), Power = trunc(Current * Bus / 5000).

Conversions happen when the physical inputs change or the configuration/calibration is
written (as continuous mode would within one conversion time); reading Power clears CNVR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

REG_CONFIG, REG_SHUNT, REG_BUS, REG_POWER, REG_CURRENT, REG_CALIB = range(6)
CONFIG_POR = 0x399F
SHUNT_LSB_V = 10e-6
BUS_LSB_V = 4e-3
# Full-scale shunt codes per PGA setting (config bits 12..11): +-40, 80, 160, 320 mV.
SHUNT_FULL_SCALE = (4000, 8000, 16000, 32000)

# Return codes of td_i2c_* (drivers/i2c.h).
I2C_OK, I2C_ENACK, I2C_ETIMEOUT, I2C_EBUS = 0, -1, -2, -3


def trunc_div(a: int, b: int) -> int:
    """Integer division rounding toward zero, as C and the device do."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class INA219Model:
    """One INA219 with a physical shunt; drive it with :meth:`set_physical`."""

    def __init__(self, address: int = 0x40, shunt_ohm: float = 0.1) -> None:
        self.address = address
        self.shunt_ohm = shunt_ohm
        self.bus_v = 0.0
        self.current_a = 0.0
        self.reset()

    # --- physical side -----------------------------------------------------------------
    def set_physical(self, bus_v: float, current_a: float) -> None:
        self.bus_v, self.current_a = bus_v, current_a
        self._convert()

    def reset(self) -> None:
        self.config = CONFIG_POR
        self.calib = 0
        self.shunt = 0
        self.bus = 0  # 13-bit code (bits 15..3 of the register)
        self.current = 0
        self.power = 0
        self.cnvr = False
        self.ovf = False
        self.pointer = REG_CONFIG

    def _convert(self) -> None:
        mode = self.config & 0x7
        if mode in (0, 4):  # power-down, ADC off: registers keep their values
            return
        pga = (self.config >> 11) & 0x3
        if mode & 0x1:
            code = round(self.current_a * self.shunt_ohm / SHUNT_LSB_V)
            full = SHUNT_FULL_SCALE[pga]
            self.shunt = max(-full, min(full, code))
        if mode & 0x2:
            full_v = 32.0 if self.config & 0x2000 else 16.0
            self.bus = max(0, min(round(min(self.bus_v, full_v) / BUS_LSB_V), 0x1FFF))
        # The datasheet's Current and Power formulas; a zero calibration leaves them at zero.
        current = trunc_div(self.shunt * self.calib, 4096)
        power = abs(current) * self.bus // 5000
        self.ovf = not (-32768 <= current <= 32767) or power > 0xFFFF
        self.current = max(-32768, min(32767, current))
        self.power = min(power, 0xFFFF)
        self.cnvr = True

    # --- register side -------------------------------------------------------------------
    def register(self, reg: int) -> int:
        if reg == REG_CONFIG:
            return self.config
        if reg == REG_SHUNT:
            return self.shunt & 0xFFFF
        if reg == REG_BUS:
            return (self.bus << 3) | (int(self.cnvr) << 1) | int(self.ovf)
        if reg == REG_POWER:
            return self.power
        if reg == REG_CURRENT:
            return self.current & 0xFFFF
        if reg == REG_CALIB:
            return self.calib
        return 0  # pointer beyond 05h: undocumented; the driver never sets one

    def i2c_write(self, data: bytes) -> None:
        if not data:
            return  # address probe
        self.pointer = data[0]
        if len(data) < 3:  # pointer only (a lone MSB is not latched)
            return
        value = (data[1] << 8) | data[2]  # big-endian
        if self.pointer == REG_CONFIG:
            if value & 0x8000:
                self.reset()  # RST self-clears: the register reads back its power-on value
                return
            self.config = value & 0x3FFF
            self._convert()
        elif self.pointer == REG_CALIB:
            self.calib = value & 0xFFFE  # FS0 is void: it always reads 0
            self._convert()
        # 01h..04h are read-only: writes are acknowledged and ignored

    def i2c_read(self, n: int) -> bytes:
        value = self.register(self.pointer)
        if self.pointer == REG_POWER:
            self.cnvr = False
        word = bytes([value >> 8, value & 0xFF])
        return (word * ((n + 1) // 2))[:n]  # past two bytes: the register again (undocumented)


@dataclass
class I2CBus:
    """Devices by 7-bit address, a transaction log, and fault injection for the next transfers."""

    devices: dict[int, INA219Model] = field(default_factory=dict)
    log: list[tuple[str, int, bytes]] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)  # codes for the next transfers; 0 = carry it out

    def attach(self, device: INA219Model) -> INA219Model:
        self.devices[device.address] = device
        return device

    def write(self, addr: int, data: bytes) -> int:
        self.log.append(("w", addr, data))
        if self.faults and (fault := self.faults.pop(0)):
            return fault
        device = self.devices.get(addr)
        if device is None:
            return I2C_ENACK
        device.i2c_write(data)
        return I2C_OK

    def read(self, addr: int, n: int) -> bytes | int:
        self.log.append(("r", addr, b""))
        if self.faults and (fault := self.faults.pop(0)):
            return fault
        device = self.devices.get(addr)
        if device is None:
            return I2C_ENACK
        return device.i2c_read(n)


def datasheet_calibration(current_lsb_na: int, shunt_uohm: int) -> int:
    """Cal = trunc(0.04096 / (Current_LSB * R_shunt)) (datasheet equation 1), in exact rationals."""
    cal = Fraction("0.04096") / (Fraction(current_lsb_na, 10**9) * Fraction(shunt_uohm, 10**6))
    return int(cal)  # int() of a positive Fraction truncates
