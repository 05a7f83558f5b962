/* Board "host": the firmware as a Linux process serving the protocol on a pseudo-terminal.
 *
 *   board_host [--drop-reply N] [--reset-after N]
 *
 * Prints "tinydyn-board: serving on /dev/pts/N" on stdout, then serves until stdin reaches EOF
 * or SIGTERM. Test hooks: --drop-reply N never sends the N-th reply (1-based), to exercise host
 * retries; --reset-after N re-initialises the server after N frames, as a board reset would.
 * Link with boards/host/board.c (td_board.h: no counter) and a model (tinydyn_model.h). */
#define _XOPEN_SOURCE 600
#define _DEFAULT_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "td_board.h"
#include "td_serial.h"
#include "td_server.h"

#ifndef TD_HOST_PJ_PER_MAC
#define TD_HOST_PJ_PER_MAC 10u /* energy model of this pretend board: 10 pJ per MAC */
#endif

const td_serial_board_t td_serial_board = {"host", 0u, TD_ENERGY_MODELLED};

static int g_master = -1;
static unsigned long g_replies = 0;
static unsigned long g_drop_reply = 0;

void td_serial_energy(uint32_t macs, uint32_t counter, uint32_t *energy_nj, uint32_t *power_uw)
{
    (void)counter;
    *energy_nj = (uint32_t)(((uint64_t)macs * TD_HOST_PJ_PER_MAC) / 1000u);
    *power_uw = 0; /* no time base */
}

void td_serial_write(const uint8_t *data, size_t n)
{
    g_replies++;
    if (g_replies == g_drop_reply) {
        return;
    }
    while (n > 0) {
        ssize_t w = write(g_master, data, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            perror("tinydyn-board: write");
            exit(1);
        }
        data += w;
        n -= (size_t)w;
    }
}

static unsigned long parse_count(const char *s, const char *opt)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0') {
        fprintf(stderr, "tinydyn-board: %s needs a number, got '%s'\n", opt, s);
        exit(2);
    }
    return v;
}

static td_server_t g_server;

int main(int argc, char **argv)
{
    unsigned long reset_after = 0, frames = 0;
    struct termios tio;
    const char *slave_name;
    int slave, i;
    uint8_t buf[4096];

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--drop-reply") == 0 && i + 1 < argc) {
            g_drop_reply = parse_count(argv[++i], "--drop-reply");
        } else if (strcmp(argv[i], "--reset-after") == 0 && i + 1 < argc) {
            reset_after = parse_count(argv[++i], "--reset-after");
        } else {
            fprintf(stderr, "usage: %s [--drop-reply N] [--reset-after N]\n", argv[0]);
            return 2;
        }
    }

    g_master = posix_openpt(O_RDWR | O_NOCTTY);
    if (g_master < 0 || grantpt(g_master) != 0 || unlockpt(g_master) != 0 || (slave_name = ptsname(g_master)) == NULL) {
        perror("tinydyn-board: pty");
        return 1;
    }
    /* Keep a slave descriptor open: the master then never sees EIO/hang-up while the host closes
     * and reopens the port, and the line is raw (no echo, no CR/LF mangling) before anyone opens
     * it, like a real UART. */
    slave = open(slave_name, O_RDWR | O_NOCTTY);
    if (slave < 0 || tcgetattr(slave, &tio) != 0) {
        perror("tinydyn-board: open slave");
        return 1;
    }
    cfmakeraw(&tio);
    tcsetattr(slave, TCSANOW, &tio);

    td_board_init();
    td_server_init(&g_server);
    printf("tinydyn-board: serving on %s\n", slave_name);
    fflush(stdout);

    for (;;) {
        struct pollfd fds[2] = {{g_master, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("tinydyn-board: poll");
            return 1;
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            /* stdin closed (or anything typed): the parent is gone or wants us to stop */
            ssize_t r = read(STDIN_FILENO, buf, sizeof(buf));
            if (r <= 0) {
                return 0;
            }
        }
        if (fds[0].revents & POLLIN) {
            ssize_t r = read(g_master, buf, sizeof(buf));
            ssize_t k;
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN || errno == EIO) {
                    continue;
                }
                perror("tinydyn-board: read");
                return 1;
            }
            for (k = 0; k < r; k++) {
                if (td_server_feed(&g_server, buf[k]) >= 0) {
                    frames++;
                    if (reset_after != 0 && frames == reset_after) {
                        td_server_init(&g_server); /* as after a reset: config back to default */
                    }
                }
            }
        }
    }
}
