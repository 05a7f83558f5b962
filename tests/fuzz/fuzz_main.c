/* Standalone fuzz driver (no libFuzzer needed): N generated inputs into LLVMFuzzerTestOneInput.
 *   fuzz_main N [SEED]
 * Inputs are valid request frames (built here with the protocol's own CRC and COBS), mutated:
 * bit flips, byte insert/delete/overwrite, truncation, splices, stray delimiters, oversized
 * frames, plus plain random bytes. A watchdog alarm turns a hang into a failure. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t g_rng;

static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

#define MAXIN 8192

static size_t make_frame(uint8_t *out, size_t cap)
{
    uint8_t payload[4096];
    size_t body = 0, n, i;
    uint32_t crc;
    uint8_t types[] = {TD_MSG_INFO_REQ, TD_MSG_CONFIG, TD_MSG_INFER, TD_MSG_INFER, TD_MSG_RESULT, 0x42};
    payload[0] = (rnd() % 16u) ? ((rnd() & 1u) ? TD_PROTO_VERSION : TD_PROTO_VERSION_MIN) : (uint8_t)rnd();
    payload[1] = types[rnd() % sizeof(types)];
    payload[2] = (uint8_t)rnd();
    payload[3] = (uint8_t)rnd();
    switch (payload[1]) {
    case TD_MSG_CONFIG: {
        uint8_t n_m = (uint8_t)((rnd() % 8u) ? rnd() % 5u : rnd() % 24u);
        payload[4] = (uint8_t)(rnd() % 5u);
        payload[5] = (uint8_t)(rnd() % 6u);
        for (i = 6; i < 15; i++) {
            payload[i] = (uint8_t)((rnd() % 4u) ? 0u : rnd());
        }
        payload[14] = n_m;
        body = 11u + 4u * n_m;
        if (rnd() % 8u == 0) {
            body = rnd() % (body + 8u); /* length disagreeing with the margin count */
        }
        for (i = 15; i < 4u + body; i++) {
            payload[i] = (uint8_t)rnd();
        }
        break;
    }
    case TD_MSG_INFER: {
        uint32_t r = rnd() % 8u;
        body = r < 5 ? 16u : r == 5 ? rnd() % 32u : rnd() % 3500u;
        for (i = 0; i < body; i++) {
            payload[4 + i] = (uint8_t)((rnd() % 3u) ? rnd() : 0u);
        }
        break;
    }
    default:
        body = (rnd() % 8u) ? 0u : rnd() % 8u;
        for (i = 0; i < body; i++) {
            payload[4 + i] = (uint8_t)rnd();
        }
    }
    n = 4u + body;
    crc = td_crc32(0, payload, n);
    payload[n] = (uint8_t)crc;
    payload[n + 1] = (uint8_t)(crc >> 8);
    payload[n + 2] = (uint8_t)(crc >> 16);
    payload[n + 3] = (uint8_t)(crc >> 24);
    return td_wire_encode(payload, n + 4u, out, cap);
}

static size_t generate(uint8_t *buf)
{
    size_t n = 0, k, i;
    uint32_t frames = 1u + rnd() % 3u;
    if (rnd() % 10u == 0) {
        n = rnd() % 600u;
        for (i = 0; i < n; i++) {
            buf[i] = (uint8_t)((rnd() % 4u) ? rnd() : 0u);
        }
        return n;
    }
    for (k = 0; k < frames && n < MAXIN - 4200; k++) {
        n += make_frame(buf + n, MAXIN - n);
    }
    /* mutations */
    k = rnd() % 6u;
    while (k-- > 0 && n > 0) {
        size_t pos = rnd() % n;
        switch (rnd() % 6u) {
        case 0:
            buf[pos] ^= (uint8_t)(1u << (rnd() % 8u));
            break;
        case 1:
            buf[pos] = (uint8_t)rnd();
            break;
        case 2:
            if (n < MAXIN) {
                memmove(buf + pos + 1, buf + pos, n - pos);
                buf[pos] = (uint8_t)((rnd() % 2u) ? 0u : rnd());
                n++;
            }
            break;
        case 3:
            memmove(buf + pos, buf + pos + 1, n - pos - 1);
            n--;
            break;
        case 4:
            n = pos; /* truncate */
            break;
        default:
            buf[pos] = 0; /* stray delimiter */
        }
    }
    return n;
}

int main(int argc, char **argv)
{
    static uint8_t buf[MAXIN];
    unsigned long total = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000ul, i;
    g_rng = argc > 2 ? strtoull(argv[2], NULL, 10) : 0x9E3779B97F4A7C15ull;
    if (g_rng == 0) {
        g_rng = 1;
    }
    for (i = 0; i < total; i++) {
        if (i % 20000u == 0) {
            alarm(20); /* no 20000 inputs take 20 s unless something hangs */
        }
        LLVMFuzzerTestOneInput(buf, generate(buf));
    }
    alarm(0);
    printf("fuzz: %lu inputs, no crash\n", total);
    return 0;
}
