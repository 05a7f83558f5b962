/* NUCLEO-L4R5ZI (STM32L4R5, Cortex-M4F): DWT cycle counter. Harness I/O is semihosting
 * (needs a debugger); the serial firmware uses the ST-LINK virtual COM port instead. */
#include "td_board.h"

#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)

const uint8_t td_board_counter_kind = TD_BOARD_COUNTER_CYCLES;

void td_board_init(void)
{
    DEMCR |= 1u << 24; /* TRCENA */
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
}

uint32_t td_board_counter(void) { return DWT_CYCCNT; }
