/* TI INA219 current/power monitor over I2C (td_i2c.h), integer arithmetic only.
 *
 * Registers are 16-bit big-endian behind a register pointer: a write of [reg, msb, lsb] sets a
 * register, a write of [reg] followed by a 2-byte read reads one. Calibration follows the
 * datasheet: Current_LSB >= I_max / 2^15, Cal = trunc(0.04096 / (Current_LSB * R_shunt)),
 * Power_LSB = 20 * Current_LSB; the device computes Current = Shunt * Cal / 4096 and
 * Power = Current * Bus / 5000. Units here: shunt in micro-ohms, current LSB in nA. */
#ifndef TD_INA219_H
#define TD_INA219_H

#include <stdint.h>

#include "i2c.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TD_INA219_ADDR_DEFAULT 0x40u /* A0 = A1 = GND */

#define TD_INA219_REG_CONFIG 0x00u
#define TD_INA219_REG_SHUNT 0x01u   /* signed, 10 uV LSB */
#define TD_INA219_REG_BUS 0x02u     /* bits 15..3: 4 mV LSB; bit 1 CNVR; bit 0 OVF */
#define TD_INA219_REG_POWER 0x03u   /* Power_LSB = 20 * Current_LSB; reading it clears CNVR */
#define TD_INA219_REG_CURRENT 0x04u /* signed, Current_LSB */
#define TD_INA219_REG_CALIB 0x05u   /* bit 0 is void (always 0) */

#define TD_INA219_CONFIG_RESET 0x8000u
#define TD_INA219_CONFIG_POR 0x399Fu /* value after reset: 32 V, /8, 12-bit, continuous */
#define TD_INA219_BUS_CNVR 0x0002u
#define TD_INA219_BUS_OVF 0x0001u

/* Errors: the TD_I2C_* codes (-1..-4) pass through unchanged; these are the driver's own. */
#define TD_INA219_OK 0
#define TD_INA219_ERANGE (-10)    /* shunt/max current outside what the device can represent */
#define TD_INA219_EOVERFLOW (-11) /* OVF: the device's current or power computation overflowed */
#define TD_INA219_ERESET (-12)    /* reset did not bring the power-on configuration back */
#define TD_INA219_EVERIFY (-13)   /* a register read back differs from what was written */

typedef struct {
    uint8_t addr;            /* 7-bit address */
    uint16_t config;         /* configuration programmed by td_ina219_init */
    uint16_t cal;            /* calibration as held by the device (bit 0 cleared) */
    uint32_t current_lsb_na; /* Current_LSB in nA; Power_LSB = 20 * this */
    uint32_t shunt_uohm;
} td_ina219_t;

/* Reset the device, then program the configuration (32 V bus range, the smallest PGA range that
 * holds max_current_ua * shunt, 12-bit single-sample conversions, shunt and bus continuous) and
 * the calibration. Current_LSB = ceil(max_current_ua * 1000 / 32767) nA, raised where needed so
 * that Cal fits 16 bits. Both registers are read back. TD_INA219_ERANGE when max_current_ua * shunt
 * exceeds 320 mV or is below one shunt LSB (10 uV). */
int td_ina219_init(td_ina219_t *dev, uint8_t addr, uint32_t shunt_uohm, uint32_t max_current_ua);

/* Pure parts of td_ina219_init (no I/O): fill config/cal/current_lsb_na, or TD_INA219_ERANGE. */
int td_ina219_plan(td_ina219_t *dev, uint8_t addr, uint32_t shunt_uohm, uint32_t max_current_ua);

int td_ina219_read_reg(const td_ina219_t *dev, uint8_t reg, uint16_t *value);
int td_ina219_write_reg(const td_ina219_t *dev, uint8_t reg, uint16_t value);

/* Bus voltage in mV; flags (may be NULL) gets the CNVR/OVF bits. OVF is reported as
 * TD_INA219_EOVERFLOW after *mv is stored, since then current and power are meaningless. */
int td_ina219_read_bus_mv(const td_ina219_t *dev, uint32_t *mv, uint16_t *flags);
int td_ina219_read_shunt_uv(const td_ina219_t *dev, int32_t *uv);
/* Current register * Current_LSB, truncated toward zero to uA. */
int td_ina219_read_current_ua(const td_ina219_t *dev, int32_t *ua);
/* Power register * 20 * Current_LSB, truncated to uW. Clears CNVR in the device. */
int td_ina219_read_power_uw(const td_ina219_t *dev, uint32_t *uw);

/* Energy of a code section from power samples taken at cycle-counter stamps: trapezoids of
 * power over the cycles between samples, at clock_hz. Sample before and after an inference
 * (and in between if it is long). The INA219 converts every 532 us at 12 bits, so a section
 * shorter than that sees at most one new conversion: use it for sections of several ms. */
typedef struct {
    uint32_t clock_khz;
    uint32_t last_uw;
    uint32_t last_cycles;
    uint64_t total_cycles;
    uint64_t uw_cycles_x2; /* sum of (p0 + p1) * dcycles, uW * cycles */
    uint8_t started;
} td_ina219_energy_t;

/* clock_hz must be a multiple of 1000 and at least 1000 (TD_INA219_ERANGE otherwise). */
int td_ina219_energy_begin(td_ina219_energy_t *acc, uint32_t clock_hz);
/* Add one power sample taken at counter value cycles (uint32 wrap-around handled: samples must
 * be less than 2^32 cycles apart). The first sample only sets the starting point. */
void td_ina219_energy_add(td_ina219_energy_t *acc, uint32_t power_uw, uint32_t cycles);
/* Read power from the device and add it stamped with cycles, e.g. the counter value read just
 * after the inference ended (the I2C transfer itself is then outside the measured section). */
int td_ina219_energy_sample(td_ina219_energy_t *acc, const td_ina219_t *dev, uint32_t cycles);
/* Energy in nJ = floor(sum((p0 + p1) * dcycles) / (2 * clock_khz)) and mean power in uW =
 * floor(sum((p0 + p1) * dcycles) / (2 * total_cycles)), both saturated to 32 bits; zeros
 * before two samples. */
void td_ina219_energy_result(const td_ina219_energy_t *acc, uint32_t *energy_nj, uint32_t *power_uw);

#ifdef __cplusplus
}
#endif

#endif /* TD_INA219_H */
