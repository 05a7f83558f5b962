/* UART1 of the Zynq-7000 PS (Cadence UART, UG585 chapter 19): the ZedBoard's USB-UART. */
#include "td_zynq.h"

#define UART1_BASE 0xE0001000u
#define UART_CR 0x00u
#define UART_MR 0x04u
#define UART_IDR 0x0Cu
#define UART_BAUDGEN 0x18u
#define UART_SR 0x2Cu
#define UART_FIFO 0x30u
#define UART_BAUDDIV 0x34u
#define CR_RXRST 0x01u
#define CR_TXRST 0x02u
#define CR_RX_EN 0x04u
#define CR_RX_DIS 0x08u
#define CR_TX_EN 0x10u
#define CR_TX_DIS 0x20u
#define CR_STOPBRK 0x100u
#define MR_8N1 0x20u /* 8 data bits, no parity, 1 stop bit, reference clock undivided */
#define SR_RXEMPTY 0x02u
#define SR_TXFULL 0x10u

static volatile uint32_t *reg(uint32_t off) { return (volatile uint32_t *)(uintptr_t)(UART1_BASE + off); }

uint32_t td_zynq_uart_init(uint32_t baud) {
    /* baud = ref / (CD * (BDIV + 1)), CD 1..65535, BDIV 4..255: the closest pair */
    uint32_t best_cd = 1u, best_div = 4u, best_err = 0xFFFFFFFFu;
    for (uint32_t div = 4u; div < 256u; ++div) {
        uint32_t cd = (TD_ZYNQ_UART_REF_HZ + baud * (div + 1u) / 2u) / (baud * (div + 1u));
        if (cd == 0u || cd > 65535u) continue;
        uint32_t got = TD_ZYNQ_UART_REF_HZ / (cd * (div + 1u));
        uint32_t err = got > baud ? got - baud : baud - got;
        if (err < best_err) best_err = err, best_cd = cd, best_div = div;
    }
    *reg(UART_CR) = CR_RX_DIS | CR_TX_DIS;
    *reg(UART_IDR) = 0x1FFFu; /* polled: no interrupts */
    *reg(UART_MR) = MR_8N1;
    *reg(UART_BAUDGEN) = best_cd;
    *reg(UART_BAUDDIV) = best_div;
    *reg(UART_CR) = CR_RXRST | CR_TXRST | CR_RX_DIS | CR_TX_DIS;
    while (*reg(UART_CR) & (CR_RXRST | CR_TXRST)) {
    }
    *reg(UART_CR) = CR_RX_EN | CR_TX_EN | CR_STOPBRK;
    return TD_ZYNQ_UART_REF_HZ / (best_cd * (best_div + 1u));
}

void td_zynq_uart_write(const uint8_t *data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        while (*reg(UART_SR) & SR_TXFULL) {
        }
        *reg(UART_FIFO) = data[i];
    }
}

int td_zynq_uart_read(uint8_t *byte) {
    if (*reg(UART_SR) & SR_RXEMPTY) return 0;
    *byte = (uint8_t)*reg(UART_FIFO);
    return 1;
}

static void put_hex(uint32_t v) {
    uint8_t text[10] = {'0', 'x'};
    for (int i = 0; i < 8; ++i) text[2 + i] = (uint8_t)"0123456789abcdef"[(v >> (28 - 4 * i)) & 0xFu];
    td_zynq_uart_write(text, sizeof(text));
}

/* Called by the exception vectors (td_zynq_boot.S): last words on UART1, then halt. */
void td_zynq_fault(uint32_t kind, uint32_t address, uint32_t pc) __attribute__((noreturn));
void td_zynq_fault(uint32_t kind, uint32_t address, uint32_t pc) {
    static const char *const names[] = {"?", "undefined instruction", "prefetch abort", "data abort"};
    const char *name = names[kind < 4u ? kind : 0u];
    size_t len = 0;
    while (name[len]) ++len;
    td_zynq_uart_write((const uint8_t *)"\r\ntd_zynq fault: ", 17);
    td_zynq_uart_write((const uint8_t *)name, len);
    td_zynq_uart_write((const uint8_t *)" at ", 4);
    put_hex(address);
    td_zynq_uart_write((const uint8_t *)" pc ", 4);
    put_hex(pc);
    td_zynq_uart_write((const uint8_t *)"\r\n", 2);
    for (;;) __asm__ volatile("wfe");
}
