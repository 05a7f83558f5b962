/* The I2C master interface the sensor drivers call. A board supplies it (boards/<name>/i2c_*.c);
 * the host tests supply it with a shim that forwards each transaction to a register model.
 * Addresses are 7-bit. Every call returns within a bounded time: a slave that never answers or
 * a stuck bus gives TD_I2C_ETIMEOUT, never a hang. */
#ifndef TD_I2C_H
#define TD_I2C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TD_I2C_OK 0
#define TD_I2C_ENACK (-1)    /* address or data byte not acknowledged */
#define TD_I2C_ETIMEOUT (-2) /* a flag did not arrive in time (bus stuck, clock stretched too long) */
#define TD_I2C_EBUS (-3)     /* bus error or arbitration lost */
#define TD_I2C_EINVAL (-4)   /* bad argument (length the controller cannot do in one transfer) */

/* Configure the controller for bus_hz (100000 or 400000); returns TD_I2C_OK or TD_I2C_EINVAL. */
int td_i2c_init(uint32_t bus_hz);
/* START, addr+W, n bytes, STOP. n = 0 is an address probe. */
int td_i2c_write(uint8_t addr, const uint8_t *buf, size_t n);
/* START, addr+R, n bytes (the last one NACKed by the master), STOP. */
int td_i2c_read(uint8_t addr, uint8_t *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* TD_I2C_H */
