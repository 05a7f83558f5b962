/* Bare-metal bring-up of the ZedBoard's Zynq-7000 PS (Cortex-A9 core 0): MMU and caches, cache
 * maintenance by address range, UART1. td_zynq_boot.S calls td_zynq_mmu_init before main. */
#ifndef TD_ZYNQ_H
#define TD_ZYNQ_H

#include <stddef.h>
#include <stdint.h>

/* A9 data cache line (L1) and the PL310 L2's line: both 32 bytes */
#define TD_ZYNQ_CACHE_LINE 32u
/* UART1 (the ZedBoard's USB-UART, Cypress CY7C64225): the host link's default rate */
#ifndef TD_ZYNQ_UART_BAUD
#define TD_ZYNQ_UART_BAUD 921600u
#endif
/* UART reference clock as the ZedBoard's FSBL sets it (ps7_init: IO PLL 1000 MHz / 20) */
#define TD_ZYNQ_UART_REF_HZ 50000000u

/* Flat translation table (1 MiB sections, identity-mapped): DDR and OCM normal write-back
 * cacheable, the PL's AXI GP windows and the PS peripherals device memory, the rest faults;
 * then L1 I/D caches, branch prediction and the PL310 L2. */
void td_zynq_mmu_init(void);
/* Clean [addr, addr + n) from L1 and L2 to DDR (before a DMA engine reads it). */
void td_zynq_cache_clean(const void *addr, size_t n);
/* Invalidate [addr, addr + n) in L2 and L1 (before and after a DMA engine writes it). The range
 * must cover whole cache lines of memory nothing else writes through the cache meanwhile. */
void td_zynq_cache_invalidate(const void *addr, size_t n);
/* The translation table entry of the 1 MiB section holding addr (for tests and debugging). */
uint32_t td_zynq_section(uintptr_t addr);

/* UART1 at `baud` 8N1 (reference clock TD_ZYNQ_UART_REF_HZ); returns the rate it achieves. */
uint32_t td_zynq_uart_init(uint32_t baud);
void td_zynq_uart_write(const uint8_t *data, size_t n);
int td_zynq_uart_read(uint8_t *byte); /* 1: a byte was waiting, 0: none */

#endif
