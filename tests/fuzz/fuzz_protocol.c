/* Fuzz target for the board-side protocol code (libFuzzer entry point; fuzz_main.c drives it
 * without libFuzzer). Built with ASan + UBSan. Per input it checks:
 *  - td_rx_feed into a heap buffer of exactly cap bytes (cap taken from the input): no
 *    out-of-bounds access, every frame it returns is CRC-valid and within cap;
 *  - the whole server: every delimiter-terminated non-empty chunk gets exactly one reply, and
 *    every reply is itself a valid frame;
 *  - COBS: decode into an exact-size heap buffer, encode with a too-small and an exact cap,
 *    and decode(encode(x)) == x. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"
#include "td_board.h"
#include "td_serial.h"
#include "td_server.h"

const td_serial_board_t td_serial_board = {"fuzz", 0u, TD_ENERGY_NONE};

static size_t g_replies;
static int g_bad_reply;

void td_serial_energy(uint32_t macs, uint32_t counter, uint32_t *energy_nj, uint32_t *power_uw)
{
    (void)macs;
    (void)counter;
    *energy_nj = 0;
    *power_uw = 0;
}

/* Every reply must be one complete valid frame: 0x00 COBS 0x00. */
void td_serial_write(const uint8_t *data, size_t n)
{
    static uint8_t buf[TD_SERVER_TX_CAP];
    td_rx_t rx;
    td_frame_t f;
    size_t i;
    int frames = 0;
    g_replies++;
    td_rx_init(&rx, buf, sizeof(buf));
    if (n < 2 || data[0] != 0 || data[n - 1] != 0) {
        g_bad_reply = 1;
        return;
    }
    for (i = 0; i < n; i++) {
        int r = td_rx_feed(&rx, data[i], &f);
        if (r < 0 || (r == TD_RX_FRAME && (f.version < TD_PROTO_VERSION_MIN || f.version > TD_PROTO_VERSION || (f.type & 0x80u) == 0))) {
            g_bad_reply = 1;
        }
        frames += r == TD_RX_FRAME;
    }
    if (frames != 1) {
        g_bad_reply = 1;
    }
}

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

static td_server_t g_server;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cap, i, chunks = 0, open_chunk = 0;
    uint8_t *buf, *dec, *enc;
    td_rx_t rx;
    td_frame_t f;
    int err;

    /* 1. receiver with an exact-size heap buffer: ASan sees any write past cap */
    cap = size > 0 ? (size_t)data[0] * 8u % 700u : 0u;
    buf = (uint8_t *)malloc(cap ? cap : 1u);
    td_rx_init(&rx, buf, cap);
    for (i = 0; i < size; i++) {
        int r = td_rx_feed(&rx, data[i], &f);
        CHECK(rx.len <= cap);
        if (r == TD_RX_FRAME) {
            CHECK(f.body_len + TD_PROTO_OVERHEAD <= cap);
            CHECK(td_crc32(0, buf, f.body_len + TD_PROTO_HEADER_LEN) ==
                  ((uint32_t)f.body[f.body_len] | ((uint32_t)f.body[f.body_len + 1] << 8) |
                   ((uint32_t)f.body[f.body_len + 2] << 16) | ((uint32_t)f.body[f.body_len + 3] << 24)));
        } else if (r < 0) {
            CHECK(r == -TD_ERR_BAD_FRAME || r == -TD_ERR_BAD_CRC || r == -TD_ERR_BAD_LENGTH);
            CHECK(f.seq == TD_SEQ_UNKNOWN);
        }
    }
    free(buf);

    /* 2. the server answers each non-empty delimited chunk exactly once, with a valid frame */
    td_server_init(&g_server);
    g_replies = 0;
    g_bad_reply = 0;
    for (i = 0; i < size; i++) {
        int r = td_server_feed(&g_server, data[i]);
        if (data[i] == 0) {
            CHECK((r >= 0) == (open_chunk != 0)); /* a reply exactly when a frame ends */
            chunks += open_chunk;
            open_chunk = 0;
        } else {
            open_chunk = 1;
            CHECK(r == -1);
        }
    }
    CHECK(g_replies == chunks);
    CHECK(!g_bad_reply);

    /* 3. COBS both ways with exact buffers */
    dec = (uint8_t *)malloc(size ? size : 1u);
    {
        size_t n = 0;
        err = td_cobs_decode(data, size, dec, size, &n);
        CHECK(err == TD_ERR_NONE || err == TD_ERR_BAD_FRAME);
        CHECK(n <= size);
        /* and into a buffer too small for it: BAD_LENGTH, nothing written past half */
        if (err == TD_ERR_NONE && n > 1) {
            uint8_t *half = (uint8_t *)malloc(n / 2u);
            size_t m = 0;
            CHECK(td_cobs_decode(data, size, half, n / 2u, &m) == TD_ERR_BAD_LENGTH);
            free(half);
        }
    }
    free(dec);
    {
        size_t need = size + size / 254u + 1u, k, n = 0;
        enc = (uint8_t *)malloc(need);
        dec = (uint8_t *)malloc(size ? size : 1u);
        {
            /* a heap buffer of exactly cap bytes, cap one short of the true encoded length:
             * the encoder must return 0 without touching anything past it */
            size_t exact = td_cobs_encode(data, size, enc, need), short_cap = exact - 1u;
            uint8_t *tight = (uint8_t *)malloc(short_cap ? short_cap : 1u);
            CHECK(td_cobs_encode(data, size, tight, short_cap) == 0);
            free(tight);
        }
        k = td_cobs_encode(data, size, enc, need);
        CHECK(k > 0 && k <= need);
        for (i = 0; i < k; i++) {
            CHECK(enc[i] != 0);
        }
        CHECK(td_cobs_decode(enc, k, dec, size, &n) == TD_ERR_NONE);
        CHECK(n == size && (size == 0 || memcmp(dec, data, size) == 0));
        free(enc);
        free(dec);
    }
    return 0;
}
