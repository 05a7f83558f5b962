/* tinydyn kernels: gap (see td_gap.h). */
#include "td_gap.h"

#include <string.h>

#include "td_internal.h"

static int32_t floor_div(int32_t n, int32_t d)
{
    int32_t qt = n / d;
    return (n % d != 0 && (n < 0) != (d < 0)) ? qt - 1 : qt;
}

/* The scratch td_gap carves: one int32 sum per channel. */
uint32_t td_gap_scratch_size(uint16_t c) { return (uint32_t)sizeof(int32_t) * c; }

/* uint8 input with c a multiple of 4: each word holds 4 channels; its even and odd bytes are
 * added to two words of 16-bit lane sums (UXTAB16 on the DSP path, masks in plain C), so a word
 * costs two additions. A lane holds at most 257 x 255 = 65535: the lanes go to the int32 sums
 * every 257 pixels. */
#define TD_GAP_CHUNK 257u

#if defined(__ARM_FEATURE_DSP) && !defined(TD_PORTABLE)
#include <arm_acle.h>
#define TD_LANES_ADD(even, odd, w)                                                                            \
    do {                                                                                                       \
        even = __uxtab16(even, w);                                                                             \
        __asm__("uxtab16 %0, %0, %1, ror #8" : "+r"(odd) : "r"(w));                                            \
    } while (0)
#else
#define TD_LANES_ADD(even, odd, w)                                                                            \
    do {                                                                                                       \
        even += (w) & 0x00FF00FFu;                                                                             \
        odd += ((w) >> 8) & 0x00FF00FFu;                                                                       \
    } while (0)
#endif

static void gap_words(int32_t *sums, uint16_t c, uint32_t hw, const uint8_t *x)
{
    for (uint32_t p0 = 0; p0 < hw; p0 += TD_GAP_CHUNK) {
        const uint32_t n = hw - p0 < TD_GAP_CHUNK ? hw - p0 : TD_GAP_CHUNK;
        for (uint16_t ch = 0; ch < c; ch = (uint16_t)(ch + 4)) {
            const uint8_t *src = x + p0 * c + ch;
            uint32_t even = 0, odd = 0, i = 0;
            for (; i + 2 <= n; i += 2, src += 2u * c) {
                uint32_t w0, w1;
                memcpy(&w0, src, 4);
                memcpy(&w1, src + c, 4);
                TD_LANES_ADD(even, odd, w0);
                TD_LANES_ADD(even, odd, w1);
            }
            if (i < n) {
                uint32_t w;
                memcpy(&w, src, 4);
                TD_LANES_ADD(even, odd, w);
            }
            sums[ch] += (int32_t)(even & 0xFFFFu);
            sums[ch + 1] += (int32_t)(odd & 0xFFFFu);
            sums[ch + 2] += (int32_t)(even >> 16);
            sums[ch + 3] += (int32_t)(odd >> 16);
        }
    }
}

void td_gap(td_ctx_t *ctx, uint16_t c, uint32_t hw, uint8_t type, const void *input, void *output)
{
    int32_t *sums = (int32_t *)(void *)ctx->scratch;
    for (uint16_t ch = 0; ch < c; ch++) sums[ch] = 0;
    if (type == TD_U8 && (c & 3u) == 0) {
        gap_words(sums, c, hw, (const uint8_t *)input);
    } else if (type == TD_U8) {
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
