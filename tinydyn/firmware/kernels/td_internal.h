/* tinydyn kernels, private: the helpers several kernels share (element access,
 * requantisation, active-channel lists, the im2col column pair and the 2x2 dot product).
 * Included by the kernel sources only, never by the generated model. All arithmetic is
 * exact integer arithmetic; the codegen proves that every accumulator fits int32 and every
 * requantisation int64. */
#ifndef TD_INTERNAL_H
#define TD_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "td_common.h"

#define TD_ALIGN4(n) (((uint32_t)(n) + 3u) & ~3u)

/* ------------------------------------------------------------------ element access */
static inline int32_t load_elem(const void *p, uint8_t type, uint32_t i)
{
    switch (type) {
    case TD_U8: return ((const uint8_t *)p)[i];
    case TD_S8: return ((const int8_t *)p)[i];
    default: return ((const int16_t *)p)[i];
    }
}

static inline void store_elem(void *p, uint8_t type, uint32_t i, int32_t v)
{
    switch (type) {
    case TD_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case TD_S8: ((int8_t *)p)[i] = (int8_t)v; break;
    default: ((int16_t *)p)[i] = (int16_t)v; break;
    }
}

/* ------------------------------------------------------------------ requantisation */
/* y = clamp((acc*gm + res_term + 2^(shift-1)) >> shift); gm = gate*mult (< 2^31).
 * >> of a negative int64 is an arithmetic shift on GCC (two's complement), as in numpy. */
static inline int32_t requant(int32_t acc, int32_t gm, int64_t res_term, uint8_t shift, int32_t lo, int32_t hi)
{
    const int64_t v = (int64_t)acc * gm + res_term;
    int32_t y;
    if (shift > 32) {
        /* 2^(shift-1) only touches the high word: round and shift there, in 32 bits */
        const int32_t high = (int32_t)(v >> 32) + (int32_t)(1u << (shift - 33u));
        y = high >> (shift - 32u);
    } else {
        const int64_t w = (v + ((int64_t)1 << (shift - 1u))) >> shift;
        y = w < lo ? lo : (w > hi ? hi : (int32_t)w);
    }
    return y < lo ? lo : (y > hi ? hi : y);
}

static inline int64_t res_term(const td_quant_t *q, const void *residual, uint8_t res_type, uint32_t i, uint16_t c)
{
    return residual ? (int64_t)load_elem(residual, res_type, i) * q->res_mult[c] : 0;
}

/* The requantisation of channel c's accumulator, either form of td_quant_t (element i of the
 * residual, if any). */
static inline int32_t requant_q(const td_quant_t *q, uint16_t c, int32_t acc, int32_t gate, const void *residual,
                                uint8_t res_type, uint32_t i)
{
    const int32_t r = residual ? load_elem(residual, res_type, i) : 0;
    if (q->rq != NULL) {
        const int32_t *t = q->rq + (residual ? 4u : 2u) * c;
        const int32_t y = residual ? td_rq_high(acc, gate * t[0], r, t[1], t[2], t[3], 1)
                                   : td_rq_high(acc, gate * t[0], 0, 0, 0, t[1], 0);
        return y < q->out_min ? q->out_min : (y > q->out_max ? q->out_max : y);
    }
    return requant(acc, gate * q->mult[c], residual ? (int64_t)r * q->res_mult[c] : 0, q->shift[c], q->out_min,
                   q->out_max);
}

/* Indices of the channels whose salience is non-zero (all channels without saliences). */
static inline uint16_t active_list(const uint8_t *salience, uint16_t n, uint16_t *idx)
{
    uint16_t m = 0;
    for (uint16_t i = 0; i < n; i++) {
        if (salience == NULL || salience[i] != 0) idx[m++] = i;
    }
    return m;
}

/* Outputs of channels a channel gate switched off: the requantisation of a zero
 * accumulator (0 without a residual). No multiply-accumulate is spent on them. (td_common.c) */
void td_write_skipped(const td_quant_t *q, const uint8_t *gate, uint16_t c, uint32_t hw, const void *residual,
                      uint8_t res_type, uint8_t out_type, void *output);

/* ------------------------------------------------------------------ dot products */
/* A column pair is stored interleaved per group of 4 elements: x0[k..k+3] then x1[k..k+3]
 * (int16), so that one LDM fetches both columns' words for 16 multiply-accumulates.
 * acc[0] += w0.x0, acc[1] += w1.x0, acc[2] += w0.x1, acc[3] += w1.x1 over `groups` groups:
 * the 2x2 block reuses every loaded weight word for two pixels and every column word for
 * two rows. Weight rows are packed (see td_conv2d.h). Defined in td_common.c. */
#if TD_USE_DSP && defined(__ARM_FEATURE_DSP) && !defined(TD_EMULATE_DSP)
void td_mm_2x2_dsp(const int8_t *w0, const int8_t *w1, const int16_t *pair, uint32_t groups, int32_t *acc);

static inline void td_mm_2x2(const int8_t *w0, const int8_t *w1, const int16_t *pair, uint32_t k4, int32_t *acc)
{
    if (k4 != 0) td_mm_2x2_dsp(w0, w1, pair, k4 / 4u, acc); /* a zero count would loop 2^32 times */
}
#else
void td_mm_2x2(const int8_t *w0, const int8_t *w1, const int16_t *pair, uint32_t k4, int32_t *acc);
#endif

/* Writing column j (0 or 1) of a column pair: element k lives at pair[(k/4)*8 + 4j + k%4]. */
static inline void pair_put(int16_t *pair, int j, uint32_t k, int32_t v)
{
    pair[(k >> 2) * 8u + 4u * (uint32_t)j + (k & 3u)] = (int16_t)v;
}

/* n zeros as elements k.. of column j (td_common.c). */
void td_pair_zero(int16_t *pair, int j, uint32_t k, uint32_t n);

/* One step of the DSP 2x2 dot-product loops (td_mm_2x2_dsp in td_common.c, the unrolled loop in
 * td_conv2d.c): 4 int8 weights of each of two rows (r0, r1; SXTB16 pairs) against two 4-byte
 * im2col columns (r2), accumulated by SMLAD into r4..r7. Concatenated into their asm strings. */
#define TD_ASM_MAC_2X2_STEP \
    "ldmia r2!, {r8, r9, r10, r11}\n" /* x0 k01, x0 k23, x1 k01, x1 k23 */ \
    "ldr r12, [r0], #4\n"              /* w0: [w0 w2 w1 w3] */ \
    "sxtb16 lr, r12\n"                 /* (w0, w1) */ \
    "smlad r4, lr, r8, r4\n" \
    "smlad r6, lr, r10, r6\n" \
    "sxtb16 r12, r12, ror #8\n"        /* (w2, w3) */ \
    "smlad r4, r12, r9, r4\n" \
    "smlad r6, r12, r11, r6\n" \
    "ldr r12, [r1], #4\n" \
    "sxtb16 lr, r12\n" \
    "smlad r5, lr, r8, r5\n" \
    "smlad r7, lr, r10, r7\n" \
    "sxtb16 r12, r12, ror #8\n" \
    "smlad r5, r12, r9, r5\n" \
    "smlad r7, r12, r11, r7\n"

#endif /* TD_INTERNAL_H */
