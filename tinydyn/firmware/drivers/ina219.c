/* TI INA219 driver: see ina219.h. Integer arithmetic only (no FPU or libgcc float helpers). */
#include "ina219.h"

#include <stddef.h>

/* 0.04096 / (Current_LSB[A] * R[ohm]) with Current_LSB in nA and R in micro-ohms:
 * 0.04096 / (lsb * 1e-9 * r * 1e-6) = 4.096e13 / (lsb * r). */
#define TD_INA219_CAL_NUM 40960000000000ull
#define TD_INA219_CAL_MAX 0xFFFEu /* bit 0 of the calibration register is void */
#define TD_INA219_CURRENT_FULL 32767u

/* Shunt ranges of the PGA (config bits 12..11) in uV: 40, 80, 160, 320 mV. */
static const uint32_t pga_range_uv[4] = {40000u, 80000u, 160000u, 320000u};

int td_ina219_plan(td_ina219_t *dev, uint8_t addr, uint32_t shunt_uohm, uint32_t max_current_ua)
{
    if (dev == NULL || addr > 0x7Fu || shunt_uohm == 0u || max_current_ua == 0u) {
        return TD_INA219_ERANGE;
    }
    /* ceil so that the largest expected shunt voltage still fits the range chosen */
    uint64_t vmax_puv = (uint64_t)max_current_ua * shunt_uohm; /* uA * uohm = 1e-12 V */
    if (vmax_puv < 10000000u) { /* full scale below one shunt LSB (10 uV): nothing to measure */
        return TD_INA219_ERANGE;
    }
    uint64_t vmax_uv = (vmax_puv + 999999u) / 1000000u;
    uint32_t pg = 0;
    while (pg < 4u && vmax_uv > pga_range_uv[pg]) {
        pg++;
    }
    if (pg == 4u) {
        return TD_INA219_ERANGE;
    }
    /* datasheet: Current_LSB = I_max / 2^15, rounded up to a whole nA (the register tops at 32767) */
    uint64_t lsb = ((uint64_t)max_current_ua * 1000u + TD_INA219_CURRENT_FULL - 1u) / TD_INA219_CURRENT_FULL;
    /* a smaller LSB would need a calibration beyond 16 bits */
    uint64_t lsb_min = (TD_INA219_CAL_NUM + (uint64_t)TD_INA219_CAL_MAX * shunt_uohm - 1u) /
                       ((uint64_t)TD_INA219_CAL_MAX * shunt_uohm);
    if (lsb < lsb_min) {
        lsb = lsb_min;
    }
    if (lsb > 0xFFFFFFFFull) {
        return TD_INA219_ERANGE;
    }
    uint64_t cal = TD_INA219_CAL_NUM / (lsb * shunt_uohm); /* trunc, as the datasheet says */
    cal &= ~(uint64_t)1u;                                  /* what the device keeps */
    if (cal == 0u || cal > TD_INA219_CAL_MAX) {
        return TD_INA219_ERANGE;
    }
    dev->addr = addr;
    dev->shunt_uohm = shunt_uohm;
    dev->current_lsb_na = (uint32_t)lsb;
    dev->cal = (uint16_t)cal;
    /* BRNG = 1 (32 V), PG, BADC = SADC = 0011 (12-bit, 532 us), MODE = 111 (shunt+bus continuous) */
    dev->config = (uint16_t)((1u << 13) | (pg << 11) | (3u << 7) | (3u << 3) | 7u);
    return TD_INA219_OK;
}

int td_ina219_write_reg(const td_ina219_t *dev, uint8_t reg, uint16_t value)
{
    uint8_t buf[3] = {reg, (uint8_t)(value >> 8), (uint8_t)(value & 0xFFu)}; /* MSB first */
    return td_i2c_write(dev->addr, buf, sizeof buf);
}

int td_ina219_read_reg(const td_ina219_t *dev, uint8_t reg, uint16_t *value)
{
    uint8_t buf[2];
    int rc = td_i2c_write(dev->addr, &reg, 1u); /* set the register pointer */
    if (rc != TD_I2C_OK) {
        return rc;
    }
    rc = td_i2c_read(dev->addr, buf, sizeof buf);
    if (rc != TD_I2C_OK) {
        return rc;
    }
    *value = (uint16_t)(((uint16_t)buf[0] << 8) | buf[1]);
    return TD_INA219_OK;
}

int td_ina219_init(td_ina219_t *dev, uint8_t addr, uint32_t shunt_uohm, uint32_t max_current_ua)
{
    int rc = td_ina219_plan(dev, addr, shunt_uohm, max_current_ua);
    if (rc != TD_INA219_OK) {
        return rc;
    }
    uint16_t v = 0;
    if ((rc = td_ina219_write_reg(dev, TD_INA219_REG_CONFIG, TD_INA219_CONFIG_RESET)) != TD_I2C_OK ||
        (rc = td_ina219_read_reg(dev, TD_INA219_REG_CONFIG, &v)) != TD_I2C_OK) {
        return rc;
    }
    if (v != TD_INA219_CONFIG_POR) { /* reset bit self-clears and restores the defaults */
        return TD_INA219_ERESET;
    }
    if ((rc = td_ina219_write_reg(dev, TD_INA219_REG_CONFIG, dev->config)) != TD_I2C_OK ||
        (rc = td_ina219_write_reg(dev, TD_INA219_REG_CALIB, dev->cal)) != TD_I2C_OK ||
        (rc = td_ina219_read_reg(dev, TD_INA219_REG_CONFIG, &v)) != TD_I2C_OK) {
        return rc;
    }
    if (v != dev->config) {
        return TD_INA219_EVERIFY;
    }
    if ((rc = td_ina219_read_reg(dev, TD_INA219_REG_CALIB, &v)) != TD_I2C_OK) {
        return rc;
    }
    return v == dev->cal ? TD_INA219_OK : TD_INA219_EVERIFY;
}

int td_ina219_read_bus_mv(const td_ina219_t *dev, uint32_t *mv, uint16_t *flags)
{
    uint16_t v = 0;
    int rc = td_ina219_read_reg(dev, TD_INA219_REG_BUS, &v);
    if (rc != TD_I2C_OK) {
        return rc;
    }
    *mv = (uint32_t)(v >> 3) * 4u;
    if (flags != NULL) {
        *flags = (uint16_t)(v & (TD_INA219_BUS_CNVR | TD_INA219_BUS_OVF));
    }
    return (v & TD_INA219_BUS_OVF) ? TD_INA219_EOVERFLOW : TD_INA219_OK;
}

int td_ina219_read_shunt_uv(const td_ina219_t *dev, int32_t *uv)
{
    uint16_t v = 0;
    int rc = td_ina219_read_reg(dev, TD_INA219_REG_SHUNT, &v);
    if (rc == TD_I2C_OK) {
        *uv = (int32_t)(int16_t)v * 10; /* two's complement, 10 uV LSB */
    }
    return rc;
}

int td_ina219_read_current_ua(const td_ina219_t *dev, int32_t *ua)
{
    uint16_t v = 0;
    int rc = td_ina219_read_reg(dev, TD_INA219_REG_CURRENT, &v);
    if (rc == TD_I2C_OK) {
        /* |reg| <= 32768 and lsb < 2^32 nA: the product fits int64; C division truncates toward 0 */
        int64_t na = (int64_t)(int16_t)v * (int64_t)dev->current_lsb_na;
        int64_t q = na / 1000;
        *ua = q > INT32_MAX ? INT32_MAX : (q < INT32_MIN ? INT32_MIN : (int32_t)q);
    }
    return rc;
}

int td_ina219_read_power_uw(const td_ina219_t *dev, uint32_t *uw)
{
    uint16_t v = 0;
    int rc = td_ina219_read_reg(dev, TD_INA219_REG_POWER, &v);
    if (rc == TD_I2C_OK) {
        uint64_t q = (uint64_t)v * 20u * dev->current_lsb_na / 1000u; /* Power_LSB = 20 Current_LSB */
        *uw = q > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)q;
    }
    return rc;
}

int td_ina219_energy_begin(td_ina219_energy_t *acc, uint32_t clock_hz)
{
    if (acc == NULL || clock_hz < 1000u || clock_hz % 1000u != 0u) {
        return TD_INA219_ERANGE;
    }
    acc->clock_khz = clock_hz / 1000u;
    acc->last_uw = 0;
    acc->last_cycles = 0;
    acc->total_cycles = 0;
    acc->uw_cycles_x2 = 0;
    acc->started = 0;
    return TD_INA219_OK;
}

void td_ina219_energy_add(td_ina219_energy_t *acc, uint32_t power_uw, uint32_t cycles)
{
    if (acc->started) {
        uint32_t d = cycles - acc->last_cycles; /* modular: the counter may wrap once */
        uint64_t sum = (uint64_t)acc->last_uw + power_uw;
        uint64_t seg = (d != 0u && sum > UINT64_MAX / d) ? UINT64_MAX : sum * d;
        acc->uw_cycles_x2 = (acc->uw_cycles_x2 > UINT64_MAX - seg) ? UINT64_MAX : acc->uw_cycles_x2 + seg;
        acc->total_cycles += d;
    }
    acc->started = 1;
    acc->last_uw = power_uw;
    acc->last_cycles = cycles;
}

int td_ina219_energy_sample(td_ina219_energy_t *acc, const td_ina219_t *dev, uint32_t cycles)
{
    uint32_t uw = 0;
    int rc = td_ina219_read_power_uw(dev, &uw);
    if (rc == TD_I2C_OK) {
        td_ina219_energy_add(acc, uw, cycles);
    }
    return rc;
}

void td_ina219_energy_result(const td_ina219_energy_t *acc, uint32_t *energy_nj, uint32_t *power_uw)
{
    if (acc->total_cycles == 0u || acc->clock_khz == 0u) {
        *energy_nj = 0;
        *power_uw = 0;
        return;
    }
    /* uW * cycles / kHz = nJ; the x2 of the trapezoid goes in the divisor */
    uint64_t nj = acc->uw_cycles_x2 / (2u * (uint64_t)acc->clock_khz);
    uint64_t uw = acc->uw_cycles_x2 / (2u * acc->total_cycles);
    *energy_nj = nj > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)nj;
    *power_uw = uw > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)uw;
}
