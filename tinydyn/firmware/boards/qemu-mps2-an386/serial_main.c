/* Serial firmware for QEMU mps2-an386: the protocol server (td_server.h) on CMSDK APB UART0.
 *
 *   qemu-system-arm -M mps2-an386 -nographic -monitor none -serial pty \
 *       -icount shift=S,align=off -kernel firmware.elf -no-reboot
 *
 * Build with -DTD_ICOUNT_SHIFT=S (the same S): RESULT.counter is then retired instructions
 * (Timer0 ticks of virtual time x 40 / 2^S, see board.c). What the QEMU model needs
 * (notes/mcu-emulation.md):
 *  - RX by interrupt (IRQ0) and WFI when idle: a busy-polling guest starves QEMU's I/O thread,
 *    which delivers the host's bytes one at a time;
 *  - the ISR clears INTSTATUS.RX *before* draining DATA, else a byte arriving in between is
 *    never signalled and the link deadlocks;
 *  - bytes that arrived before RXIE was set raise no interrupt: the main loop also polls
 *    STATE.RXFULL before it sleeps;
 *  - interrupts are masked while a byte is fed to the server, so the ISR never adds instructions
 *    to a counted inference (the UART holds the next byte and QEMU waits for the guest to read
 *    it, so nothing is lost while masked).
 * The startup code's vector table has no external interrupts, so this file installs its own
 * (VTOR) with UART0 RX at IRQ0. */
#include <stddef.h>
#include <stdint.h>

#include "protocol.h"
#include "td_board.h"
#include "td_serial.h"
#include "td_server.h"

#ifndef TD_ICOUNT_SHIFT
#define TD_ICOUNT_SHIFT 6
#endif
/* The clock INFO reports and latency is quoted at: the AN386 FPGA image runs the Cortex-M4 at
 * 25 MHz. QEMU's instruction count, at one instruction per cycle, is a lower bound on cycles. */
#ifndef TD_QEMU_CLOCK_HZ
#define TD_QEMU_CLOCK_HZ 25000000u
#endif

/* ---- modelled energy ----
 * tinydyn.host.firmware.build_firmware writes board/td_energy_model.h (tinydyn.cost.energy.c_header:
 * DDI-form model E = sum accesses_i * e_i + MACs * e_MAC + cycles * e_cycle, docs/ENERGY.md), whose
 * td_emodel_from_macs() the host reproduces bit for bit. A project built by hand without it falls
 * back to a per-instruction stand-in. Either way the energy is reported as MODELLED. */
#if defined(__has_include)
#if __has_include("td_energy_model.h")
#include "td_energy_model.h"
#endif
#endif
#ifndef TD_ENERGY_PJ_PER_INSN
#define TD_ENERGY_PJ_PER_INSN 495u /* the generic Cortex-M4F at 25 MHz of docs/ENERGY.md */
#endif

#define TD_STR2(x) #x
#define TD_STR(x) TD_STR2(x)

/* ---- CMSDK APB UART0 ---- */
#define UART0_BASE 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0_BASE + 0x00u))
#define UART_STATE (*(volatile uint32_t *)(UART0_BASE + 0x04u))
#define UART_CTRL (*(volatile uint32_t *)(UART0_BASE + 0x08u))
#define UART_INTSTATUS (*(volatile uint32_t *)(UART0_BASE + 0x0Cu))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0_BASE + 0x10u))
#define UART_STATE_TXFULL (1u << 0)
#define UART_STATE_RXFULL (1u << 1)
#define UART_CTRL_TXEN (1u << 0)
#define UART_CTRL_RXEN (1u << 1)
#define UART_CTRL_RXIE (1u << 3)
#define UART_INT_RX (1u << 1)

/* ---- core ---- */
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define SCB_VTOR (*(volatile uint32_t *)0xE000ED08u)
#define UART0_RX_IRQ 0u
#define N_EXT_IRQS 32u

const td_serial_board_t td_serial_board = {"qemu-mps2-an386", TD_QEMU_CLOCK_HZ, TD_ENERGY_MODELLED};

/* The host reads this from the ELF to start QEMU with the matching -icount shift. */
const char td_icount_marker[] = "tinydyn-icount-shift=" TD_STR(TD_ICOUNT_SHIFT) ";";

static td_server_t g_server;
static volatile uint8_t g_ring_buf[2048]; /* > one INFER frame: the host never has two in flight */
static td_ring_t g_ring;

void td_serial_energy(uint32_t macs, uint32_t counter, uint32_t *energy_nj, uint32_t *power_uw)
{
#if defined(TD_ENERGY_MODEL_H) && (TD_EMODEL_CLOCK_KHZ * 1000u == TD_QEMU_CLOCK_HZ)
    td_emodel_from_macs(macs, counter, energy_nj, power_uw);
#else
    uint64_t nj = (uint64_t)counter * TD_ENERGY_PJ_PER_INSN / 1000u;
    (void)macs;
    *energy_nj = nj > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)nj;
    /* mean power at the quoted clock, one instruction per cycle: uW = nJ * f_kHz / counter */
    *power_uw = counter == 0u ? 0u : (uint32_t)(nj * (TD_QEMU_CLOCK_HZ / 1000u) / counter);
#endif
}

void td_serial_write(const uint8_t *data, size_t n)
{
    while (n-- > 0u) {
        while (UART_STATE & UART_STATE_TXFULL) {
        }
        UART_DATA = *data++;
    }
}

static void uart0_rx_isr(void)
{
    UART_INTSTATUS = UART_INT_RX; /* clear first: a byte landing after the drain re-raises it */
    while (UART_STATE & UART_STATE_RXFULL) {
        (void)td_ring_push(&g_ring, (uint8_t)UART_DATA);
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
/* 16 + 32 entries = 192 bytes; VTOR needs the table aligned to the next power of two */
__attribute__((aligned(256))) static const td_vector_t g_vectors[16u + N_EXT_IRQS] = {
    (td_vector_t)(uintptr_t)&_estack, td_reset_handler, D, D, D, D, D, 0, 0, 0, 0, D, D, 0, D, D,
    uart0_rx_isr, D, D, D, D4, D4, D4, D4, D4, D4, D4, /* IRQ0 = UART0 RX, IRQ1..31 unused */
};
#undef D4
#undef D

static void uart_init(void)
{
    UART_BAUDDIV = 217u; /* 25 MHz / 115200; QEMU ignores rates but rejects dividers < 16 */
    UART_INTSTATUS = 0xFu;
    UART_CTRL = UART_CTRL_TXEN | UART_CTRL_RXEN | UART_CTRL_RXIE;
}

int main(void)
{
    /* keep the marker in the image (--gc-sections drops what no code references) */
    (void)*(const volatile char *)&td_icount_marker[0];
    __asm__ volatile("cpsid i" ::: "memory");
    SCB_VTOR = (uint32_t)(uintptr_t)g_vectors;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    td_ring_init(&g_ring, g_ring_buf, (uint16_t)sizeof(g_ring_buf));
    td_board_init();
    td_server_init(&g_server);
    uart_init();
    NVIC_ISER0 = 1u << UART0_RX_IRQ;
    __asm__ volatile("cpsie i" ::: "memory");

    for (;;) {
        int b;
        __asm__ volatile("cpsid i" ::: "memory");
        b = td_ring_pop(&g_ring);
        if (b < 0 && (UART_STATE & UART_STATE_RXFULL)) {
            b = (int)(UART_DATA & 0xFFu); /* arrived unsignalled (before RXIE, or a lost edge) */
        }
        if (b < 0) {
            /* WFI with PRIMASK set still wakes on a pending IRQ; the ISR runs at cpsie. Checking
             * and sleeping with interrupts masked closes the check-then-sleep race. */
            __asm__ volatile("wfi" ::: "memory");
            __asm__ volatile("cpsie i" ::: "memory");
            continue;
        }
        /* masked: td_infer's instruction count must not include ISRs */
        (void)td_server_feed(&g_server, (uint8_t)b);
        __asm__ volatile("cpsie i" ::: "memory");
    }
}
