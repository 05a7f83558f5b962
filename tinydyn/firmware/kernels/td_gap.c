/* tinydyn kernels: gap (see td_gap.h). */
#include "td_gap.h"

#include "td_internal.h"

static int32_t floor_div(int32_t n, int32_t d)
{
    int32_t qt = n / d;
    return (n % d != 0 && (n < 0) != (d < 0)) ? qt - 1 : qt;
}

/* The scratch td_gap carves: one int32 sum per channel. */
uint32_t td_gap_scratch_size(uint16_t c) { return (uint32_t)sizeof(int32_t) * c; }

void td_gap(td_ctx_t *ctx, uint16_t c, uint32_t hw, uint8_t type, const void *input, void *output)
{
    int32_t *sums = (int32_t *)(void *)ctx->scratch;
    for (uint16_t ch = 0; ch < c; ch++) sums[ch] = 0;
    if (type == TD_U8) {
        const uint8_t *x = (const uint8_t *)input;
        for (uint32_t p = 0; p < hw; p++, x += c) {
            for (uint16_t ch = 0; ch < c; ch++) sums[ch] += x[ch];
        }
    } else {
        for (uint32_t p = 0; p < hw; p++) {
            for (uint16_t ch = 0; ch < c; ch++) sums[ch] += load_elem(input, type, p * c + ch);
        }
    }
    for (uint16_t ch = 0; ch < c; ch++) {
        store_elem(output, type, ch, floor_div(sums[ch] + (int32_t)(hw / 2u), (int32_t)hw));
    }
}
