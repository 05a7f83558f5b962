/* host board: a Linux process; files through stdio, no counter. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>

#include "td_board.h"

#define MAX_FILES 8
static FILE *files[MAX_FILES];

const uint8_t td_board_counter_kind = TD_BOARD_COUNTER_NONE;

void td_board_init(void) {}

uint32_t td_board_counter(void) { return 0; }

int td_board_open(const char *path, int write)
{
    for (int h = 0; h < MAX_FILES; h++) {
        if (files[h] == NULL) {
            files[h] = fopen(path, write ? "wb" : "rb");
            return files[h] ? h : -1;
        }
    }
    return -1;
}

uint32_t td_board_read(int handle, void *buf, uint32_t n) { return (uint32_t)fread(buf, 1, n, files[handle]); }

uint32_t td_board_write(int handle, const void *buf, uint32_t n)
{
    return (uint32_t)fwrite(buf, 1, n, files[handle]);
}

void td_board_close(int handle)
{
    fclose(files[handle]);
    files[handle] = NULL;
}

void td_board_exit(int code) { exit(code); }
