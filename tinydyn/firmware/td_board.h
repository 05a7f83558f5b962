/* What a board supplies to the test harness: a counter read around each inference and
 * file-like I/O (stdio on the host, semihosting on Cortex-M boards). The serial firmware's
 * UART code lives with the protocol, not here. */
#ifndef TD_BOARD_H
#define TD_BOARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* what td_board_counter() counts */
#define TD_BOARD_COUNTER_NONE 0         /* host: no counter */
#define TD_BOARD_COUNTER_CYCLES 1       /* DWT CYCCNT */
#define TD_BOARD_COUNTER_TIMER_TICKS 2  /* QEMU: 25 MHz timer ticks of virtual time (-icount) */

extern const uint8_t td_board_counter_kind;
void td_board_init(void);
uint32_t td_board_counter(void);

/* open for reading (write = 0) or writing; returns a handle >= 0 or -1 */
int td_board_open(const char *path, int write);
/* bytes transferred (short on end of file or error) */
uint32_t td_board_read(int handle, void *buf, uint32_t n);
uint32_t td_board_write(int handle, const void *buf, uint32_t n);
void td_board_close(int handle);
void td_board_exit(int code);

#ifdef __cplusplus
}
#endif

#endif /* TD_BOARD_H */
