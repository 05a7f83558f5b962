/* td_i2c_* for host tests: each transaction goes to Python callbacks (ctypes) that drive the
 * INA219 register model. Built into a shared library together with drivers/ina219.c. */
#include <stddef.h>
#include <stdint.h>

#include "i2c.h"

typedef int (*td_shim_write_fn)(uint8_t addr, const uint8_t *buf, size_t n);
typedef int (*td_shim_read_fn)(uint8_t addr, uint8_t *buf, size_t n);

static td_shim_write_fn g_write;
static td_shim_read_fn g_read;

void td_shim_set(td_shim_write_fn w, td_shim_read_fn r)
{
    g_write = w;
    g_read = r;
}

int td_i2c_init(uint32_t bus_hz)
{
    (void)bus_hz;
    return TD_I2C_OK;
}

int td_i2c_write(uint8_t addr, const uint8_t *buf, size_t n) { return g_write ? g_write(addr, buf, n) : TD_I2C_EBUS; }

int td_i2c_read(uint8_t addr, uint8_t *buf, size_t n) { return g_read ? g_read(addr, buf, n) : TD_I2C_EBUS; }
