/* I2C1 master for the STM32L4R5 (RM0432), register level, no CMSIS: PB8 = SCL, PB9 = SDA (AF4),
 * the Arduino D15/D14 pins of the NUCLEO-L4R5ZI. The kernel clock is HSI16, so the bus timing
 * does not depend on how the board clocks the core. Implements drivers/i2c.h; every wait is a
 * bounded poll (TD_I2C_TIMEOUT_POLLS), and a timeout resets the peripheral before returning.
 *
 * TD_L4_REG(addr) maps a register address to an lvalue; the host tests redefine it to point into
 * a fake register file to check that a silent bus gives errors rather than hangs. */
#include <stddef.h>
#include <stdint.h>

#include "i2c.h"

#ifndef TD_L4_REG
#define TD_L4_REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))
#endif

/* Polls of a status flag before giving up. One poll is a few cycles; at 120 MHz 200000 polls
 * are several ms, well above one byte at 100 kHz (90 us) and typical clock stretching. */
#ifndef TD_I2C_TIMEOUT_POLLS
#define TD_I2C_TIMEOUT_POLLS 200000u
#endif

/* RCC */
#define RCC_BASE 0x40021000u
#define RCC_CR TD_L4_REG(RCC_BASE + 0x00u)
#define RCC_CR_HSION (1u << 8)
#define RCC_CR_HSIRDY (1u << 10)
#define RCC_AHB2ENR TD_L4_REG(RCC_BASE + 0x4Cu)
#define RCC_AHB2ENR_GPIOBEN (1u << 1)
#define RCC_APB1RSTR1 TD_L4_REG(RCC_BASE + 0x38u)
#define RCC_APB1ENR1 TD_L4_REG(RCC_BASE + 0x58u)
#define RCC_APB1_I2C1 (1u << 21) /* I2C1RST / I2C1EN */
#define RCC_CCIPR TD_L4_REG(RCC_BASE + 0x88u)
#define RCC_CCIPR_I2C1SEL_SHIFT 12u
#define RCC_CCIPR_I2C1SEL_MASK (3u << RCC_CCIPR_I2C1SEL_SHIFT)
#define RCC_CCIPR_I2C1SEL_HSI16 (2u << RCC_CCIPR_I2C1SEL_SHIFT)

/* GPIOB */
#define GPIOB_BASE 0x48000400u
#define GPIOB_MODER TD_L4_REG(GPIOB_BASE + 0x00u)
#define GPIOB_OTYPER TD_L4_REG(GPIOB_BASE + 0x04u)
#define GPIOB_OSPEEDR TD_L4_REG(GPIOB_BASE + 0x08u)
#define GPIOB_PUPDR TD_L4_REG(GPIOB_BASE + 0x0Cu)
#define GPIOB_AFRH TD_L4_REG(GPIOB_BASE + 0x24u)
#define GPIO_AF_I2C1 4u

/* I2C1 */
#define I2C1_BASE 0x40005400u
#define I2C_CR1 TD_L4_REG(I2C1_BASE + 0x00u)
#define I2C_CR2 TD_L4_REG(I2C1_BASE + 0x04u)
#define I2C_TIMINGR TD_L4_REG(I2C1_BASE + 0x10u)
#define I2C_ISR TD_L4_REG(I2C1_BASE + 0x18u)
#define I2C_ICR TD_L4_REG(I2C1_BASE + 0x1Cu)
#define I2C_RXDR TD_L4_REG(I2C1_BASE + 0x24u)
#define I2C_TXDR TD_L4_REG(I2C1_BASE + 0x28u)

#define I2C_CR1_PE (1u << 0)
#define I2C_CR2_RD_WRN (1u << 10)
#define I2C_CR2_START (1u << 13)
#define I2C_CR2_NBYTES_SHIFT 16u
#define I2C_CR2_AUTOEND (1u << 25)
#define I2C_ISR_TXIS (1u << 1)
#define I2C_ISR_RXNE (1u << 2)
#define I2C_ISR_NACKF (1u << 4)
#define I2C_ISR_STOPF (1u << 5)
#define I2C_ISR_BERR (1u << 8)
#define I2C_ISR_ARLO (1u << 9)
#define I2C_ISR_BUSY (1u << 15)
#define I2C_ICR_ALL ((1u << 3) | (1u << 4) | (1u << 5) | (1u << 8) | (1u << 9) | (1u << 10) | (1u << 11) | (1u << 12) | (1u << 13))
#define I2C_ICR_NACKCF (1u << 4)
#define I2C_ICR_STOPCF (1u << 5)

/* TIMINGR for a 16 MHz kernel clock (RM0432 "Examples of timing settings"):
 * PRESC | SCLDEL | SDADEL | SCLH | SCLL. */
#define I2C_TIMING_100K_HSI16 0x30420F13u
#define I2C_TIMING_400K_HSI16 0x10320309u

static void i2c_recover(void)
{
    /* Clearing PE resets the state machine and the flags (software reset: PE low >= 3 APB clocks). */
    I2C_CR1 &= ~I2C_CR1_PE;
    for (volatile uint32_t i = 0; i < 8u; i++) {
    }
    I2C_CR1 |= I2C_CR1_PE;
}

/* Wait until one of `want` or an error flag is set; error flags win. */
static int i2c_wait(uint32_t want)
{
    for (uint32_t n = 0; n < TD_I2C_TIMEOUT_POLLS; n++) {
        uint32_t isr = I2C_ISR;
        if (isr & (I2C_ISR_BERR | I2C_ISR_ARLO)) {
            I2C_ICR = I2C_ICR_ALL;
            i2c_recover();
            return TD_I2C_EBUS;
        }
        if (isr & I2C_ISR_NACKF) {
            /* AUTOEND sends STOP after a NACK: wait for it (bounded), then clear both */
            for (uint32_t m = 0; m < TD_I2C_TIMEOUT_POLLS && !(I2C_ISR & I2C_ISR_STOPF); m++) {
            }
            I2C_ICR = I2C_ICR_NACKCF | I2C_ICR_STOPCF;
            return TD_I2C_ENACK;
        }
        if (isr & want) {
            return TD_I2C_OK;
        }
    }
    i2c_recover();
    return TD_I2C_ETIMEOUT;
}

static int i2c_start(uint8_t addr, size_t n, uint32_t read)
{
    if (addr > 0x7Fu || n > 255u) { /* no RELOAD support: one transfer of at most 255 bytes */
        return TD_I2C_EINVAL;
    }
    uint32_t n_polls = 0;
    while (I2C_ISR & I2C_ISR_BUSY) { /* another master or a slave holding SDA low */
        if (++n_polls >= TD_I2C_TIMEOUT_POLLS) {
            i2c_recover();
            return TD_I2C_ETIMEOUT;
        }
    }
    I2C_ICR = I2C_ICR_ALL;
    I2C_CR2 = ((uint32_t)addr << 1) | read | ((uint32_t)n << I2C_CR2_NBYTES_SHIFT) | I2C_CR2_AUTOEND |
              I2C_CR2_START;
    return TD_I2C_OK;
}

static int i2c_finish(void)
{
    int rc = i2c_wait(I2C_ISR_STOPF);
    if (rc == TD_I2C_OK) {
        I2C_ICR = I2C_ICR_STOPCF;
    }
    return rc;
}

int td_i2c_init(uint32_t bus_hz)
{
    uint32_t timing;
    if (bus_hz == 100000u) {
        timing = I2C_TIMING_100K_HSI16;
    } else if (bus_hz == 400000u) {
        timing = I2C_TIMING_400K_HSI16;
    } else {
        return TD_I2C_EINVAL;
    }
    RCC_CR |= RCC_CR_HSION;
    for (uint32_t n = 0; !(RCC_CR & RCC_CR_HSIRDY); n++) {
        if (n >= TD_I2C_TIMEOUT_POLLS) {
            return TD_I2C_ETIMEOUT;
        }
    }
    RCC_CCIPR = (RCC_CCIPR & ~RCC_CCIPR_I2C1SEL_MASK) | RCC_CCIPR_I2C1SEL_HSI16;
    RCC_AHB2ENR |= RCC_AHB2ENR_GPIOBEN;
    RCC_APB1ENR1 |= RCC_APB1_I2C1;
    (void)RCC_APB1ENR1; /* read back: the clock is on before the first register access */
    RCC_APB1RSTR1 |= RCC_APB1_I2C1;
    RCC_APB1RSTR1 &= ~RCC_APB1_I2C1;

    /* PB8, PB9: alternate function 4, open drain, high speed, pull-up (breakouts add 10k too) */
    GPIOB_MODER = (GPIOB_MODER & ~((3u << 16) | (3u << 18))) | (2u << 16) | (2u << 18);
    GPIOB_OTYPER |= (1u << 8) | (1u << 9);
    GPIOB_OSPEEDR = (GPIOB_OSPEEDR & ~((3u << 16) | (3u << 18))) | (2u << 16) | (2u << 18);
    GPIOB_PUPDR = (GPIOB_PUPDR & ~((3u << 16) | (3u << 18))) | (1u << 16) | (1u << 18);
    GPIOB_AFRH = (GPIOB_AFRH & ~0xFFu) | (GPIO_AF_I2C1 << 0) | (GPIO_AF_I2C1 << 4);

    I2C_CR1 &= ~I2C_CR1_PE; /* TIMINGR is writable only with PE = 0 */
    I2C_TIMINGR = timing;
    I2C_CR1 |= I2C_CR1_PE;
    return TD_I2C_OK;
}

int td_i2c_write(uint8_t addr, const uint8_t *buf, size_t n)
{
    int rc = i2c_start(addr, n, 0u);
    for (size_t i = 0; rc == TD_I2C_OK && i < n; i++) {
        rc = i2c_wait(I2C_ISR_TXIS);
        if (rc == TD_I2C_OK) {
            I2C_TXDR = buf[i];
        }
    }
    return rc == TD_I2C_OK ? i2c_finish() : rc;
}

int td_i2c_read(uint8_t addr, uint8_t *buf, size_t n)
{
    if (n == 0u) { /* a read of 0 bytes cannot be expressed: NBYTES = 0 with RD_WRN is a probe */
        return TD_I2C_EINVAL;
    }
    int rc = i2c_start(addr, n, I2C_CR2_RD_WRN);
    for (size_t i = 0; rc == TD_I2C_OK && i < n; i++) {
        rc = i2c_wait(I2C_ISR_RXNE);
        if (rc == TD_I2C_OK) {
            buf[i] = (uint8_t)I2C_RXDR;
        }
    }
    return rc == TD_I2C_OK ? i2c_finish() : rc;
}
