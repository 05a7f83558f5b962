/* Test harness (not the serial protocol): runs a batch of images through td_infer() and
 * writes every result, so that tests can compare the firmware with the numpy executor.
 *
 * td_in.bin:  "TDH2", u32 count, u8 policy, u8 gates_off, u8 budget_unit, 1 pad byte,
 *             u32 confidence_t16, u32 budget, i32 margin[8], then count images (C*H*W bytes, CHW).
 * td_out.bin: "TDR2", model_id (16 chars), u32 arena_bytes, u32 static_macs,
 *             u8 num_classes, u8 counter kind, u8 budget_units, 1 pad byte, u32 cost_model_id;
 *             then per image: i16 logits[num_classes], u8 predicted, u8 exit, u16 skipped_blocks,
 *             u16 skipped_channels, u32 macs, u32 counter delta around td_infer(),
 *             u32 energy_cost_nj, u32 cycles_cost, u32 gate_macs.
 * All little-endian. Exit status 0 when every image ran. */
#include <stdint.h>
#include <string.h>

#include "td_board.h"
#include "tinydyn_model.h"

#define HARNESS_MARGINS 8
#define MAX_IMAGE (3u * 64u * 64u)

static uint8_t image[MAX_IMAGE];
static uint8_t record[2u * TD_MAX_CLASSES + 28u];

static uint32_t get_u32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    *p++ = (uint8_t)v;
    *p++ = (uint8_t)(v >> 8);
    return p;
}

int main(void)
{
    uint8_t header[20 + 4 * HARNESS_MARGINS];
    td_config_t cfg;
    td_result_t res;
    td_board_init();
    const int in = td_board_open("td_in.bin", 0);
    const int out = td_board_open("td_out.bin", 1);
    if (in < 0 || out < 0) td_board_exit(2);
    if (td_board_read(in, header, sizeof header) != sizeof header || memcmp(header, "TDH2", 4) != 0) td_board_exit(3);
    const uint32_t count = get_u32(header + 4);
    memset(&cfg, 0, sizeof cfg);
    cfg.policy = header[8];
    cfg.gates_off = header[9];
    cfg.budget_unit = header[10];
    cfg.confidence_t16 = get_u32(header + 12);
    cfg.budget = get_u32(header + 16);
    for (int i = 0; i < HARNESS_MARGINS && i < TD_MAX_EXITS; i++) cfg.margin[i] = (int32_t)get_u32(header + 20 + 4 * i);

    const uint32_t size = (uint32_t)td_model_info.in_c * td_model_info.in_h * td_model_info.in_w;
    const uint8_t nc = td_model_info.num_classes;
    if (size > MAX_IMAGE) td_board_exit(4);
    uint8_t *p = record;
    memcpy(p, "TDR2", 4);
    memcpy(p + 4, td_model_info.model_id, 16);
    p = put_u32(p + 20, td_model_info.arena_bytes);
    p = put_u32(p, td_model_info.static_macs);
    *p++ = nc;
    *p++ = td_board_counter_kind;
    *p++ = td_model_info.budget_units;
    *p++ = 0;
    p = put_u32(p, td_model_info.cost_model_id);
    td_board_write(out, record, (uint32_t)(p - record));

    for (uint32_t n = 0; n < count; n++) {
        if (td_board_read(in, image, size) != size) td_board_exit(5);
        const uint32_t t0 = td_board_counter();
        const int rc = td_infer(image, &cfg, &res);
        const uint32_t t1 = td_board_counter();
        if (rc != TD_OK) td_board_exit(6);
        p = record;
        for (uint8_t k = 0; k < nc; k++) p = put_u16(p, (uint16_t)res.logits[k]);
        *p++ = res.predicted;
        *p++ = res.exit_index;
        p = put_u16(p, res.skipped_blocks);
        p = put_u16(p, res.skipped_channels);
        p = put_u32(p, res.macs);
        p = put_u32(p, t1 - t0);
        p = put_u32(p, res.energy_cost_nj);
        p = put_u32(p, res.cycles_cost);
        p = put_u32(p, res.gate_macs);
        td_board_write(out, record, (uint32_t)(p - record));
    }
    td_board_close(out);
    td_board_close(in);
    td_board_exit(0);
    return 0;
}
