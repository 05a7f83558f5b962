/* Host build of boards/nucleo-l4r5zi/i2c_stm32l4.c: peripheral registers become words of a plain
 * array indexed by the low 16 address bits (RCC 0x1000, GPIOB 0x0400, I2C1 0x5400 do not clash),
 * so a test can preset ISR flags and inspect what the driver programmed. */
#include <stdint.h>
extern volatile uint32_t td_fake_regs[0x1800];
#define TD_L4_REG(addr) (td_fake_regs[((addr) & 0xFFFFu) >> 2])
