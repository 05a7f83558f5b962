/* Serial firmware for the NUCLEO-L4R5ZI (STM32L4R5ZI, Cortex-M4F): the protocol server
 * (td_server.h) on the ST-LINK virtual COM port, register level, no CMSIS/HAL (RM0432, UM2179).
 *
 *  - Clock: 120 MHz SYSCLK from the PLL fed by MSI 4 MHz, voltage range 1 boost, 5 flash wait
 *    states (build with -DTD_NUCLEO_NO_PLL to stay on the 4 MHz reset clock).
 *  - UART: LPUART1 on PG7 (TX) / PG8 (RX), AF8, wired to the ST-LINK VCP; 115200 8N1; RX by
 *    interrupt (IRQ 70) into a ring, WFI when idle. PG2..PG15 sit in the VDDIO2 domain, which is
 *    isolated until PWR_CR2.IOSV is set.
 *  - Counter: DWT_CYCCNT (board.c); interrupts are masked while a byte is fed to the server,
 *    so no ISR adds cycles to a counted inference.
 *  - Energy: an INA219 on I2C1 (PB8/PB9, drivers/ina219.h), probed at boot. When it answers,
 *    energy is MEASURED: the power of its latest conversion, read right after the inference
 *    (12-bit conversions take 532 us, so it covers the inference's end; inferences here take
 *    tens of ms at a steady load) times the inference time in cycles. When it does not answer,
 *    energy is MODELLED and reported as such (TD_SERIAL_RUNTIME_ENERGY_KIND, td_serial.h).
 *    Build with -DTD_NUCLEO_INA219=0 for a board without the sensor.
 */
#include <stddef.h>
#include <stdint.h>

#include "protocol.h"
#include "td_board.h"
#include "td_serial.h"
#include "td_server.h"

#ifndef TD_SERIAL_RUNTIME_ENERGY_KIND
#error "build the NUCLEO serial firmware with -DTD_SERIAL_RUNTIME_ENERGY_KIND (see the Makefile's FW_CFLAGS)"
#endif

#ifndef TD_NUCLEO_INA219
#define TD_NUCLEO_INA219 1
#endif
#if TD_NUCLEO_INA219
#include "ina219.h"
#endif
#ifndef TD_INA219_SHUNT_UOHM
#define TD_INA219_SHUNT_UOHM 100000u /* 0.1 ohm, as on the common INA219 breakout boards */
#endif
#ifndef TD_INA219_MAX_UA
#define TD_INA219_MAX_UA 400000u /* 400 mA: the MCU draws ~15 mA at 120 MHz */
#endif

#ifndef TD_UART_BAUD
#define TD_UART_BAUD 115200u
#endif
#ifdef TD_NUCLEO_NO_PLL
#define TD_SYSCLK_HZ 4000000u /* MSI after reset */
#else
#define TD_SYSCLK_HZ 120000000u
#endif

/* ---- modelled energy (used when no sensor answers) ----
 * tinydyn.host.firmware.build_firmware writes board/td_energy_model.h (tinydyn.cost.energy:
 * the DDI-form model of docs/ENERGY.md at 120 MHz), which the host reproduces bit for bit. A
 * project built by hand without it falls back to the model's per-cycle term alone. */
#if defined(__has_include)
#if __has_include("td_energy_model.h")
#include "td_energy_model.h"
#endif
#endif
#ifndef TD_ENERGY_PJ_PER_CYCLE
#define TD_ENERGY_PJ_PER_CYCLE 363u /* 110 uA/MHz x 3.3 V (docs/ENERGY.md) */
#endif

#define REG(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* RCC */
#define RCC_BASE 0x40021000u
#define RCC_CR REG(RCC_BASE + 0x00u)
#define RCC_CFGR REG(RCC_BASE + 0x08u)
#define RCC_PLLCFGR REG(RCC_BASE + 0x0Cu)
#define RCC_AHB2ENR REG(RCC_BASE + 0x4Cu)
#define RCC_APB1ENR1 REG(RCC_BASE + 0x58u)
#define RCC_APB1ENR2 REG(RCC_BASE + 0x5Cu)
#define RCC_CCIPR REG(RCC_BASE + 0x88u)
#define RCC_CR_MSIRDY (1u << 1)
#define RCC_CR_PLLON (1u << 24)
#define RCC_CR_PLLRDY (1u << 25)
#define RCC_CFGR_SW_MASK 3u
#define RCC_CFGR_SW_PLL 3u
#define RCC_CFGR_SWS_MASK (3u << 2)
#define RCC_CFGR_SWS_PLL (3u << 2)
#define RCC_CFGR_HPRE_MASK (0xFu << 4)
#define RCC_CFGR_HPRE_DIV2 (0x8u << 4)
#define RCC_AHB2ENR_GPIOGEN (1u << 6)
#define RCC_APB1ENR1_PWREN (1u << 28)
#define RCC_APB1ENR2_LPUART1EN (1u << 0)
#define RCC_CCIPR_LPUART1SEL_MASK (3u << 10) /* 00 = PCLK1 */

/* PWR */
#define PWR_BASE 0x40007000u
#define PWR_CR2 REG(PWR_BASE + 0x04u)
#define PWR_CR5 REG(PWR_BASE + 0x80u)
#define PWR_CR2_IOSV (1u << 9)
#define PWR_CR5_R1MODE (1u << 8) /* 1 = range 1 normal, 0 = boost (needed above 80 MHz) */

/* FLASH */
#define FLASH_ACR REG(0x40022000u)
#define FLASH_ACR_LATENCY_MASK 0xFu
#define FLASH_ACR_CACHES ((1u << 8) | (1u << 9) | (1u << 10)) /* prefetch, I-cache, D-cache */

/* GPIOG */
#define GPIOG_BASE 0x48001800u
#define GPIOG_MODER REG(GPIOG_BASE + 0x00u)
#define GPIOG_OSPEEDR REG(GPIOG_BASE + 0x08u)
#define GPIOG_PUPDR REG(GPIOG_BASE + 0x0Cu)
#define GPIOG_AFRL REG(GPIOG_BASE + 0x20u)
#define GPIOG_AFRH REG(GPIOG_BASE + 0x24u)
#define GPIO_AF_LPUART1 8u

/* LPUART1 */
#define LPUART1_BASE 0x40008000u
#define LPUART_CR1 REG(LPUART1_BASE + 0x00u)
#define LPUART_CR3 REG(LPUART1_BASE + 0x08u)
#define LPUART_BRR REG(LPUART1_BASE + 0x0Cu)
#define LPUART_ISR REG(LPUART1_BASE + 0x1Cu)
#define LPUART_ICR REG(LPUART1_BASE + 0x20u)
#define LPUART_RDR REG(LPUART1_BASE + 0x24u)
#define LPUART_TDR REG(LPUART1_BASE + 0x28u)
#define LPUART_CR1_UE (1u << 0)
#define LPUART_CR1_RE (1u << 2)
#define LPUART_CR1_TE (1u << 3)
#define LPUART_CR1_RXNEIE (1u << 5)
#define LPUART_CR3_OVRDIS (1u << 12)
#define LPUART_ISR_ERRORS 0xFu /* PE, FE, NF, ORE */
#define LPUART_ISR_RXNE (1u << 5)
#define LPUART_ISR_TXE (1u << 7)
#define LPUART1_IRQ 70u

/* core */
#define NVIC_ISER(n) REG(0xE000E100u + 4u * (n))
#define SCB_VTOR REG(0xE000ED08u)

static td_server_t g_server;
static volatile uint8_t g_ring_buf[2048]; /* > one INFER frame: the host never has two in flight */
static td_ring_t g_ring;
static uint8_t g_energy_kind = TD_ENERGY_MODELLED;
#if TD_NUCLEO_INA219
static td_ina219_t g_ina219;
#endif

const td_serial_board_t td_serial_board = {"nucleo-l4r5zi", TD_SYSCLK_HZ, TD_ENERGY_MODELLED};

uint8_t td_serial_energy_kind(void) { return g_energy_kind; }

static uint32_t saturate(uint64_t v) { return v > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)v; }

/* the energy model when no sensor answers */
static void modelled(uint32_t macs, uint32_t counter, uint32_t *energy_nj, uint32_t *power_uw)
{
#if defined(TD_ENERGY_MODEL_H) && (TD_EMODEL_CLOCK_KHZ * 1000u == TD_SYSCLK_HZ)
    td_emodel_from_macs(macs, counter, energy_nj, power_uw);
#else
    uint64_t nj = (uint64_t)counter * TD_ENERGY_PJ_PER_CYCLE / 1000u;
    (void)macs;
    *energy_nj = saturate(nj);
    *power_uw = counter == 0u ? 0u : saturate(nj * (uint64_t)(TD_SYSCLK_HZ / 1000u) / counter);
#endif
}

void td_serial_energy(uint32_t macs, uint32_t counter, uint32_t *energy_nj, uint32_t *power_uw)
{
#if TD_NUCLEO_INA219
    uint32_t uw;
    if (g_energy_kind == TD_ENERGY_MEASURED && td_ina219_read_power_uw(&g_ina219, &uw) == TD_INA219_OK) {
        /* nJ = uW * cycles / clock_hz * 1e3 = uW * cycles / (clock_hz / 1000) */
        *power_uw = uw;
        *energy_nj = saturate((uint64_t)uw * counter / (TD_SYSCLK_HZ / 1000u));
        return;
    }
    /* the sensor stopped answering: this result and all later ones say MODELLED (RESULT reads
     * the kind after this call) */
    g_energy_kind = TD_ENERGY_MODELLED;
#endif
    modelled(macs, counter, energy_nj, power_uw);
}

void td_serial_write(const uint8_t *data, size_t n)
{
    while (n-- > 0u) {
        while ((LPUART_ISR & LPUART_ISR_TXE) == 0u) {
        }
        LPUART_TDR = *data++;
    }
}

static void lpuart1_isr(void)
{
    uint32_t isr = LPUART_ISR;
    if (isr & LPUART_ISR_ERRORS) {
        LPUART_ICR = LPUART_ISR_ERRORS; /* a framing/noise error costs one frame: the host resends */
    }
    while (LPUART_ISR & LPUART_ISR_RXNE) {
        (void)td_ring_push(&g_ring, (uint8_t)LPUART_RDR); /* reading RDR clears RXNE */
    }
}

/* ---- vector table with the external interrupts (the startup one stops at SysTick) ---- */
extern uint32_t _estack;
void td_reset_handler(void);

static void default_handler(void)
{
    for (;;) {
    }
}

typedef void (*td_vector_t)(void);
#define D default_handler
#define D4 D, D, D, D
#define D16 D4, D4, D4, D4
/* 16 + 71 entries (IRQ 0..70) = 348 bytes; VTOR needs the table aligned to the next power of 2 */
__attribute__((aligned(512))) static const td_vector_t g_vectors[16u + LPUART1_IRQ + 1u] = {
    (td_vector_t)(uintptr_t)&_estack, td_reset_handler, D, D, D, D, D, 0, 0, 0, 0, D, D, 0, D, D,
    D16, D16, D16, D16, D4, D, D,  /* IRQ 0..69 */
    lpuart1_isr,                   /* IRQ 70 */
};
#undef D16
#undef D4
#undef D

#ifndef TD_NUCLEO_NO_PLL
static void spin(uint32_t n)
{
    while (n-- > 0u) {
        __asm__ volatile("nop");
    }
}
#endif

static void clock_init(void)
{
    RCC_APB1ENR1 |= RCC_APB1ENR1_PWREN;
    (void)RCC_APB1ENR1;
#ifndef TD_NUCLEO_NO_PLL
    while ((RCC_CR & RCC_CR_MSIRDY) == 0u) {
    }
    /* RM0432 "range 1 boost": halve HCLK, enter boost, raise the wait states, switch to the PLL,
     * wait 1 us, then restore HCLK. PLL: MSI 4 MHz / M=1 * N=60 = 240 MHz VCO, / R=2 = 120 MHz. */
    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_HPRE_MASK) | RCC_CFGR_HPRE_DIV2;
    PWR_CR5 &= ~PWR_CR5_R1MODE;
    FLASH_ACR = (FLASH_ACR & ~FLASH_ACR_LATENCY_MASK) | 5u | FLASH_ACR_CACHES;
    while ((FLASH_ACR & FLASH_ACR_LATENCY_MASK) != 5u) {
    }
    RCC_CR &= ~RCC_CR_PLLON;
    while (RCC_CR & RCC_CR_PLLRDY) {
    }
    RCC_PLLCFGR = 1u                /* PLLSRC = MSI */
                  | (0u << 4)       /* PLLM = 1 */
                  | (60u << 8)      /* PLLN = 60 */
                  | (0u << 25)      /* PLLR = 2 */
                  | (1u << 24);     /* PLLREN */
    RCC_CR |= RCC_CR_PLLON;
    while ((RCC_CR & RCC_CR_PLLRDY) == 0u) {
    }
    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW_MASK) | RCC_CFGR_SW_PLL;
    while ((RCC_CFGR & RCC_CFGR_SWS_MASK) != RCC_CFGR_SWS_PLL) {
    }
    spin(200u); /* >= 1 us at 60 MHz */
    RCC_CFGR &= ~RCC_CFGR_HPRE_MASK;
#endif
}

static void uart_init(void)
{
    RCC_AHB2ENR |= RCC_AHB2ENR_GPIOGEN;
    RCC_APB1ENR2 |= RCC_APB1ENR2_LPUART1EN;
    (void)RCC_APB1ENR2;
    PWR_CR2 |= PWR_CR2_IOSV; /* PG7/PG8 are in the VDDIO2 domain */
    RCC_CCIPR &= ~RCC_CCIPR_LPUART1SEL_MASK;
    GPIOG_MODER = (GPIOG_MODER & ~((3u << 14) | (3u << 16))) | (2u << 14) | (2u << 16);
    GPIOG_OSPEEDR |= (2u << 14) | (2u << 16);
    GPIOG_PUPDR = (GPIOG_PUPDR & ~(3u << 16)) | (1u << 16); /* pull-up on RX: idle high if unplugged */
    GPIOG_AFRL = (GPIOG_AFRL & ~(0xFu << 28)) | (GPIO_AF_LPUART1 << 28);
    GPIOG_AFRH = (GPIOG_AFRH & ~0xFu) | GPIO_AF_LPUART1;
    LPUART_CR1 = 0u;
    /* LPUART: BRR = 256 * f_ck / baud, rounded */
    LPUART_BRR = (uint32_t)(((uint64_t)TD_SYSCLK_HZ * 256u + TD_UART_BAUD / 2u) / TD_UART_BAUD);
    LPUART_CR3 = LPUART_CR3_OVRDIS; /* an overrun loses a byte (the frame's CRC fails), never the link */
    LPUART_CR1 = LPUART_CR1_UE | LPUART_CR1_RE | LPUART_CR1_TE | LPUART_CR1_RXNEIE;
}

static void sensor_init(void)
{
#if TD_NUCLEO_INA219
    if (td_i2c_init(400000u) == TD_I2C_OK &&
        td_ina219_init(&g_ina219, TD_INA219_ADDR_DEFAULT, TD_INA219_SHUNT_UOHM, TD_INA219_MAX_UA) == TD_INA219_OK) {
        g_energy_kind = TD_ENERGY_MEASURED;
    }
#endif
}

int main(void)
{
    __asm__ volatile("cpsid i" ::: "memory");
    SCB_VTOR = (uint32_t)(uintptr_t)g_vectors;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    clock_init();
    td_ring_init(&g_ring, g_ring_buf, (uint16_t)sizeof(g_ring_buf));
    td_board_init();
    sensor_init();
    td_server_init(&g_server);
    uart_init();
    NVIC_ISER(LPUART1_IRQ / 32u) = 1u << (LPUART1_IRQ % 32u);
    __asm__ volatile("cpsie i" ::: "memory");

    for (;;) {
        int b;
        __asm__ volatile("cpsid i" ::: "memory");
        b = td_ring_pop(&g_ring);
        if (b < 0) {
            /* check-then-sleep with interrupts masked: a pending IRQ still ends WFI */
            __asm__ volatile("wfi" ::: "memory");
            __asm__ volatile("cpsie i" ::: "memory");
            continue;
        }
        (void)td_server_feed(&g_server, (uint8_t)b); /* masked: no ISR cycles in the count */
        __asm__ volatile("cpsie i" ::: "memory");
    }
}
