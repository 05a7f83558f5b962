/* Test driver: runs protocol.c / td_server.c on hex input lines, prints hex results.
 *
 *   crc HEX                       -> crc32 as 8 hex digits
 *   cobs_enc HEX                  -> encoded hex
 *   cobs_dec HEX                  -> "ok HEX" or "err CODE"
 *   serve HEX                     -> wire bytes a fresh server replies to these wire bytes
 *   dec_config HEX                -> "ok policy flags t16 budget n m0 m1 ... unit U" or "err CODE DETAIL"
 *   dec_infer HEX                 -> "ok unit budget image_len" or "err CODE DETAIL"
 *   enc_info V seq id c h w classes exits ck ek clock arena macs maxp [min units cost_id] name
 *   enc_result V seq pred exit ck ek macs counter sb sc energy power tag n l0 ... l(n-1)
 *              [policy unit budget energy_cost cycles_cost gate_macs]
 *   enc_error V seq code detail
 *   enc_ack V seq
 * V is the protocol version; the bracketed v2 fields are given when V >= 2.
 *   ring SIZE OPS                 -> OPS is a string of 'p' (push the next counter byte) and
 *                                    'o' (pop); prints popped bytes as hex ("--" for empty),
 *                                    then " dropped N"
 * enc_* print the wire bytes (0x00 COBS(payload) 0x00). Board functions as in the host board. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"
#include "td_board.h"
#include "td_serial.h"
#include "td_server.h"

#define MAXB 16384

const td_serial_board_t td_serial_board = {"host", 0u, TD_ENERGY_MODELLED};

static uint8_t g_out[4 * MAXB];
static size_t g_out_len;

void td_serial_energy(uint32_t macs, uint32_t counter, uint32_t *energy_nj, uint32_t *power_uw)
{
    (void)counter;
    *energy_nj = (uint32_t)(((uint64_t)macs * 10u) / 1000u);
    *power_uw = 0;
}

void td_serial_write(const uint8_t *data, size_t n)
{
    if (g_out_len + n <= sizeof(g_out)) {
        memcpy(g_out + g_out_len, data, n);
        g_out_len += n;
    }
}

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (s[0] && s[1] && n < cap) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1) {
            break;
        }
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static void puthex(const uint8_t *b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        printf("%02x", b[i]);
    }
}

static void print_wire(const uint8_t *payload, size_t n)
{
    static uint8_t wire[TD_WIRE_MAX(MAXB)];
    size_t w = td_wire_encode(payload, n, wire, sizeof(wire));
    puthex(wire, w);
    printf("\n");
}

static td_server_t g_server;
static uint8_t in[MAXB], out[MAXB], pay[MAXB];
static char line[4 * MAXB];

int main(void)
{
    while (fgets(line, sizeof(line), stdin)) {
        char *cmd = strtok(line, " \n");
        char *arg = strtok(NULL, " \n");
        size_t n;
        if (cmd == NULL) {
            continue;
        }
        n = arg ? unhex(arg, in, sizeof(in)) : 0;
        if (strcmp(cmd, "crc") == 0) {
            printf("%08lx\n", (unsigned long)td_crc32(0, in, n));
        } else if (strcmp(cmd, "cobs_enc") == 0) {
            puthex(out, td_cobs_encode(in, n, out, sizeof(out)));
            printf("\n");
        } else if (strcmp(cmd, "cobs_dec") == 0) {
            size_t k;
            int err = td_cobs_decode(in, n, out, sizeof(out), &k);
            if (err) {
                printf("err %d\n", err);
            } else {
                printf("ok ");
                puthex(out, k);
                printf("\n");
            }
        } else if (strcmp(cmd, "serve") == 0) {
            size_t i;
            td_server_init(&g_server);
            g_out_len = 0;
            for (i = 0; i < n; i++) {
                td_server_feed(&g_server, in[i]);
            }
            puthex(g_out, g_out_len);
            printf("\n");
        } else if (strcmp(cmd, "ring") == 0) {
            static volatile uint8_t rb[1024];
            td_ring_t ring;
            const char *ops = strtok(NULL, " \n");
            unsigned size = (unsigned)strtoul(arg, NULL, 10);
            uint8_t next = 0;
            td_ring_init(&ring, rb, (uint16_t)size);
            for (; ops && *ops; ops++) {
                if (*ops == 'p') {
                    td_ring_push(&ring, next++);
                } else {
                    int b = td_ring_pop(&ring);
                    if (b < 0) {
                        printf("--");
                    } else {
                        printf("%02x", b);
                    }
                }
            }
            printf(" dropped %u\n", (unsigned)ring.dropped);
        } else if (strcmp(cmd, "dec_config") == 0 || strcmp(cmd, "dec_infer") == 0) {
            static uint8_t rxbuf[MAXB];
            td_rx_t rx;
            td_frame_t f;
            td_msg_config_t m;
            td_msg_infer_t q;
            uint32_t detail = 0;
            int r = 0, err;
            size_t i;
            td_rx_init(&rx, rxbuf, sizeof(rxbuf));
            for (i = 0; i < n; i++) {
                r = td_rx_feed(&rx, in[i], &f);
                if (r != TD_RX_NONE) {
                    break;
                }
            }
            if (r != TD_RX_FRAME) {
                printf("err %d 0\n", r < 0 ? -r : 0);
                continue;
            }
            if (strcmp(cmd, "dec_infer") == 0) {
                err = td_decode_infer(&f, &q, &detail);
                if (err) {
                    printf("err %d %lu\n", err, (unsigned long)detail);
                } else {
                    printf("ok %u %lu %lu\n", q.budget_unit, (unsigned long)q.budget, (unsigned long)q.image_len);
                }
                continue;
            }
            err = td_decode_config(&f, &m, &detail);
            if (err) {
                printf("err %d %lu\n", err, (unsigned long)detail);
                continue;
            }
            printf("ok %u %u %lu %lu %u", m.policy, m.flags, (unsigned long)m.confidence_t16,
                   (unsigned long)m.budget_macs, m.n_margins);
            for (i = 0; i < m.n_margins; i++) {
                printf(" %ld", (long)m.margin[i]);
            }
            printf(" unit %u\n", m.budget_unit);
        } else if (strcmp(cmd, "enc_error") == 0 || strcmp(cmd, "enc_ack") == 0 || strcmp(cmd, "enc_result") == 0 ||
                   strcmp(cmd, "enc_info") == 0) {
            /* numeric arguments: arg (the protocol version) is the first one, then the seq */
            unsigned long v[300];
            char *tok = arg, *name = NULL, *id = NULL;
            int k = 0;
            size_t len = 0;
            int16_t logits[256];
            const int info = strcmp(cmd, "enc_info") == 0;
            while (tok != NULL && k < 300) {
                if (info && k == 2 && id == NULL) {
                    id = tok; /* model id is a string */
                } else if (info && k == (v[0] >= 2 ? 17 : 14)) {
                    name = tok; /* the board name is the last argument */
                    break;
                } else {
                    v[k] = strtoul(tok, NULL, 0);
                }
                k++;
                tok = strtok(NULL, " \n");
            }
            if (strcmp(cmd, "enc_error") == 0) {
                len = td_encode_error_v(pay, sizeof(pay), (uint8_t)v[0], (uint16_t)v[1], (uint8_t)v[2], (uint32_t)v[3]);
            } else if (strcmp(cmd, "enc_ack") == 0) {
                len = td_encode_config_ack_v(pay, sizeof(pay), (uint8_t)v[0], (uint16_t)v[1]);
            } else if (strcmp(cmd, "enc_result") == 0) {
                td_msg_result_t m;
                td_msg_result2_t e;
                int i, x;
                m.predicted = (uint8_t)v[2];
                m.exit_index = (uint8_t)v[3];
                m.counter_kind = (uint8_t)v[4];
                m.energy_kind = (uint8_t)v[5];
                m.macs = (uint32_t)v[6];
                m.counter = (uint32_t)v[7];
                m.skipped_blocks = (uint16_t)v[8];
                m.skipped_channels = (uint16_t)v[9];
                m.energy_nj = (uint32_t)v[10];
                m.power_uw = (uint32_t)v[11];
                m.config_tag = (uint16_t)v[12];
                m.n_logits = (uint8_t)v[13];
                memset(logits, 0, sizeof(logits));
                /* logits follow n; strtoul wrapped negative values, the cast restores them */
                for (i = 0; i < m.n_logits && 14 + i < k; i++) {
                    logits[i] = (int16_t)(long)v[14 + i];
                }
                m.logits = logits;
                x = 14 + m.n_logits; /* v2: policy unit budget energy cycles gate_macs */
                e.policy = (uint8_t)v[x];
                e.budget_unit = (uint8_t)v[x + 1];
                e.budget = (uint32_t)v[x + 2];
                e.energy_cost_nj = (uint32_t)v[x + 3];
                e.cycles_cost = (uint32_t)v[x + 4];
                e.gate_macs = (uint32_t)v[x + 5];
                len = td_encode_result_v(pay, sizeof(pay), (uint8_t)v[0], (uint16_t)v[1], &m, v[0] >= 2 ? &e : NULL);
            } else {
                td_msg_info_t m;
                td_msg_info2_t e;
                memset(&m, 0, sizeof(m));
                memcpy(m.model_id, id ? id : "", id ? strlen(id) < 16 ? strlen(id) : 16 : 0);
                m.in_c = (uint16_t)v[3];
                m.in_h = (uint16_t)v[4];
                m.in_w = (uint16_t)v[5];
                m.num_classes = (uint8_t)v[6];
                m.num_exits = (uint8_t)v[7];
                m.counter_kind = (uint8_t)v[8];
                m.energy_kind = (uint8_t)v[9];
                m.clock_hz = (uint32_t)v[10];
                m.arena_bytes = (uint32_t)v[11];
                m.static_macs = (uint32_t)v[12];
                m.max_payload = (uint32_t)v[13];
                m.board_name = name;
                e.min_version = (uint8_t)v[14]; /* v2: min_version budget_units cost_model_id */
                e.budget_units = (uint8_t)v[15];
                e.cost_model_id = (uint32_t)v[16];
                len = td_encode_info_v(pay, sizeof(pay), (uint8_t)v[0], (uint16_t)v[1], &m, v[0] >= 2 ? &e : NULL);
            }
            print_wire(pay, len);
        } else {
            printf("unknown command %s\n", cmd);
        }
        fflush(stdout);
    }
    return 0;
}
