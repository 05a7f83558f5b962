/* QEMU mps2-an386 (Cortex-M4). QEMU has no cycle counter: CMSDK Timer0 (25 MHz) runs on
 * virtual time, so under `-icount shift=S` one tick is 40 / 2^S retired instructions. */
#include "td_board.h"

#define TIMER0_CTRL (*(volatile uint32_t *)0x40000000u)
#define TIMER0_VALUE (*(volatile uint32_t *)0x40000004u)
#define TIMER0_RELOAD (*(volatile uint32_t *)0x40000008u)

const uint8_t td_board_counter_kind = TD_BOARD_COUNTER_TIMER_TICKS;

void td_board_init(void)
{
    TIMER0_RELOAD = 0xFFFFFFFFu;
    TIMER0_VALUE = 0xFFFFFFFFu;
    TIMER0_CTRL = 1u; /* enable, no interrupt */
}

uint32_t td_board_counter(void) { return 0xFFFFFFFFu - TIMER0_VALUE; }
