/* Semihosting file I/O for Cortex-M boards (QEMU -semihosting, or a debugger on a real
 * board): the test harness reads images and writes results through the host's files. */
#include <string.h>

#include "td_board.h"

enum { SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITE = 0x05, SYS_READ = 0x06, SYS_EXIT = 0x18 };

static int semihost(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int td_board_open(const char *path, int write)
{
    /* modes: 1 = "rb", 5 = "wb" */
    uint32_t args[3] = {(uint32_t)path, write ? 5u : 1u, (uint32_t)strlen(path)};
    return semihost(SYS_OPEN, args);
}

uint32_t td_board_read(int handle, void *buf, uint32_t n)
{
    uint32_t args[3] = {(uint32_t)handle, (uint32_t)buf, n};
    return n - (uint32_t)semihost(SYS_READ, args); /* returns the bytes NOT read */
}

uint32_t td_board_write(int handle, const void *buf, uint32_t n)
{
    uint32_t args[3] = {(uint32_t)handle, (uint32_t)buf, n};
    return n - (uint32_t)semihost(SYS_WRITE, args);
}

void td_board_close(int handle)
{
    uint32_t args[1] = {(uint32_t)handle};
    semihost(SYS_CLOSE, args);
}

void td_board_exit(int code)
{
    /* ADP_Stopped_ApplicationExit (QEMU exits 0) or RunTimeErrorUnknown (exits 1) */
    semihost(SYS_EXIT, (void *)(code == 0 ? 0x20026u : 0x20023u));
    for (;;) {
    }
}
