/* tinydyn kernels: the out-of-line helpers conv2d and linear share (see td_internal.h) and
 * the model input's layout change. */
#include "td_internal.h"

#include <string.h>

#if TD_USE_DSP && defined(__ARM_FEATURE_DSP) && !defined(TD_EMULATE_DSP)
#include <arm_acle.h>
static inline int32_t td_sxtb16(int32_t x) { return __sxtb16(x); }
/* GCC 12's arm_acle.h has no __ror: the rotated form is one instruction in asm */
static inline int32_t td_sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline int32_t td_smlad(int32_t a, int32_t b, int32_t acc) { return __smlad(a, b, acc); }
#elif TD_USE_DSP
/* C versions of the intrinsics, so that the DSP path also runs (and is tested) on a PC */
static inline int32_t td_sxtb16(int32_t x)
{
    uint32_t u = (uint32_t)x;
    uint32_t lo = (uint16_t)(int16_t)(int8_t)(u & 0xFFu);
    uint32_t hi = (uint16_t)(int16_t)(int8_t)((u >> 16) & 0xFFu);
    return (int32_t)(lo | (hi << 16));
}
static inline int32_t td_sxtb16_ror8(int32_t x) { return td_sxtb16((int32_t)((uint32_t)x >> 8)); }
static inline int32_t td_smlad(int32_t a, int32_t b, int32_t acc)
{
    uint32_t ua = (uint32_t)a, ub = (uint32_t)b;
    return acc + (int32_t)(int16_t)(ua & 0xFFFFu) * (int16_t)(ub & 0xFFFFu) +
           (int32_t)(int16_t)(ua >> 16) * (int16_t)(ub >> 16);
}
#endif

/* ------------------------------------------------------------------ requantisation */
void td_write_skipped(const td_quant_t *q, const uint8_t *gate, uint16_t c, uint32_t hw, const void *residual,
                      uint8_t res_type, uint8_t out_type, void *output)
{
    if (residual == NULL) {
        /* every skipped output is the clamp of 0: one constant */
        const int32_t y = requant_q(q, 0, 0, 0, NULL, res_type, 0);
        for (uint16_t ch = 0; ch < c; ch++) {
            if (gate[ch] != 0) continue;
            if (out_type == TD_S16) {
                for (uint32_t p = 0; p < hw; p++) ((int16_t *)output)[p * c + ch] = (int16_t)y;
            } else {
                for (uint32_t p = 0; p < hw; p++) ((uint8_t *)output)[p * c + ch] = (uint8_t)y;
            }
        }
        return;
    }
    for (uint16_t ch = 0; ch < c; ch++) {
        if (gate[ch] != 0) continue;
        for (uint32_t p = 0; p < hw; p++) {
            uint32_t i = p * c + ch;
            store_elem(output, out_type, i, requant_q(q, ch, 0, 0, residual, res_type, i));
        }
    }
}

/* ------------------------------------------------------------------ dot products */
/* td_mm_2x2: see td_internal.h. */
#if TD_USE_DSP && defined(__ARM_FEATURE_DSP) && !defined(TD_EMULATE_DSP)
/* 17 instructions per 16 MACs; r0 = w0, r1 = w1, r2 = pair, r3 = groups (> 0), [sp] = acc */
__asm__(
    "    .syntax unified\n"
    "    .thumb\n"
    "    .text\n"
    "    .global td_mm_2x2_dsp\n"
    "    .type td_mm_2x2_dsp, %function\n"
    "    .thumb_func\n"
    "td_mm_2x2_dsp:\n"
    "    push {r4-r11, lr}\n"
    "    ldr r12, [sp, #36]\n"
    "    push {r12}\n"
    "    ldm r12, {r4, r5, r6, r7}\n"
    "1:" TD_ASM_MAC_2X2_STEP
    "    subs r3, r3, #1\n"
    "    bne 1b\n"
    "    pop {r12}\n"
    "    stm r12, {r4, r5, r6, r7}\n"
    "    pop {r4-r11, pc}\n"
    "    .size td_mm_2x2_dsp, .-td_mm_2x2_dsp\n");
#elif TD_USE_DSP
/* the same instruction sequence in C (intrinsics emulated): runs and is tested on a PC */
void td_mm_2x2(const int8_t *w0, const int8_t *w1, const int16_t *pair, uint32_t k4, int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (uint32_t i = 0; i < k4; i += 4, pair += 8) {
        int32_t x[4], wa, wb;
        memcpy(x, pair, 16);
        memcpy(&wa, w0 + i, 4);
        memcpy(&wb, w1 + i, 4);
        const int32_t wa01 = td_sxtb16(wa), wa23 = td_sxtb16_ror8(wa);
        const int32_t wb01 = td_sxtb16(wb), wb23 = td_sxtb16_ror8(wb);
        a0 = td_smlad(wa23, x[1], td_smlad(wa01, x[0], a0));
        a2 = td_smlad(wa23, x[3], td_smlad(wa01, x[2], a2));
        a1 = td_smlad(wb23, x[1], td_smlad(wb01, x[0], a1));
        a3 = td_smlad(wb23, x[3], td_smlad(wb01, x[2], a3));
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#else
void td_mm_2x2(const int8_t *w0, const int8_t *w1, const int16_t *pair, uint32_t k4, int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (uint32_t i = 0; i < k4; i += 4, pair += 8) {
        /* packed rows: element j of the group sits at byte {0, 2, 1, 3}[j] */
        const int32_t p0 = w0[i], p1 = w0[i + 2], p2 = w0[i + 1], p3 = w0[i + 3];
        const int32_t q0 = w1[i], q1 = w1[i + 2], q2 = w1[i + 1], q3 = w1[i + 3];
        const int16_t *x = pair, *y = pair + 4;
        a0 += p0 * x[0] + p1 * x[1] + p2 * x[2] + p3 * x[3];
        a1 += q0 * x[0] + q1 * x[1] + q2 * x[2] + q3 * x[3];
        a2 += p0 * y[0] + p1 * y[1] + p2 * y[2] + p3 * y[3];
        a3 += q0 * y[0] + q1 * y[1] + q2 * y[2] + q3 * y[3];
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#endif

void td_pair_zero(int16_t *pair, int j, uint32_t k, uint32_t n)
{
    uint32_t i = 0;
    if ((k & 3u) == 0) {
        uint32_t *dst = (uint32_t *)(void *)(pair + (k >> 2) * 8u + 4u * (uint32_t)j);
        for (; i + 4 <= n; i += 4, dst += 4) dst[0] = dst[1] = 0;
    }
    for (; i < n; i++) pair_put(pair, j, k + i, 0);
}

/* ------------------------------------------------------------------ layout */
void td_chw_to_hwc(const uint8_t *chw, uint8_t *hwc, uint16_t c, uint16_t h, uint16_t w)
{
    const uint32_t hw = (uint32_t)h * w;
    for (uint32_t p = 0; p < hw; p++) {
        for (uint16_t ch = 0; ch < c; ch++) hwc[p * c + ch] = chw[ch * hw + p];
    }
}
