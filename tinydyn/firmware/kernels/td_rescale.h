/* tinydyn kernels: rescale, a skipped block's output (its residual, requantised).
 *
 * td_rescale is static inline, like td_conv2d: each generated layer function passes its own
 * `static const` parameters, so element types and the saturation range are compile-time
 * constants. With the high-word table (td_quant_t.rq, rows {0, res_lo, res_hi, sh}) an element
 * costs SMULL, MLA, the rounding on the high word and one USAT/SSAT, channel by channel (the
 * channel's three constants loaded once); otherwise the general 64-bit form, out of line. */
#ifndef TD_RESCALE_H
#define TD_RESCALE_H

#include <stddef.h>

#include "td_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint16_t c;
    uint32_t hw;
    uint8_t in_type, out_type;
} td_rescale_params_t;

/* the general form (mult/res_mult/shift arrays), any types */
void td_rescale_general(const td_rescale_params_t *p, const td_quant_t *q, const void *input, void *output);
/* Bytes td_rescale takes from ctx->scratch: none. */
uint32_t td_rescale_scratch_size(const td_rescale_params_t *p);

/* Per-channel requantisation of a tensor with a zero accumulator (a skipped block's output). */
static TD_ALWAYS_INLINE void td_rescale(td_ctx_t *ctx, const td_rescale_params_t *p, const td_quant_t *q,
                                        const void *input, void *output)
{
    (void)ctx;
    if (q->rq == NULL) {
        td_rescale_general(p, q, input, output);
        return;
    }
    const uint32_t c = p->c, hw = p->hw;
    const int32_t lo = q->out_min, hi = q->out_max;
    for (uint32_t ch = 0; ch < c; ch++) {
        const int32_t *t = q->rq + 4u * ch;
        const int32_t rl = t[1], rh = t[2], sh = q->rq_sh != 0 ? q->rq_sh - 1 : t[3];
        for (uint32_t i = ch; i < hw * c; i += c) {
            int32_t r;
            if (p->in_type == TD_U8) {
                r = ((const uint8_t *)input)[i];
            } else if (p->in_type == TD_S8) {
                r = ((const int8_t *)input)[i];
            } else {
                r = ((const int16_t *)input)[i];
            }
            /* a layer-wide sh (rq_sh) is a constant: ADD and USAT/SSAT with its shift; a channel's
             * own: ASR, ADD and USAT/SSAT */
            const int32_t h = td_rq_hi(0, 0, r, rl, rh, 1);
            const int32_t y = q->rq_sh != 0 ? td_rq_round_sat(h, sh, lo, hi) : td_rq_shift_sat(h, sh, lo, hi);
            if (p->out_type == TD_U8) {
                ((uint8_t *)output)[i] = (uint8_t)y;
            } else if (p->out_type == TD_S8) {
                ((int8_t *)output)[i] = (int8_t)y;
            } else {
                ((int16_t *)output)[i] = (int16_t)y;
            }
        }
    }
}

#ifdef __cplusplus
}
#endif

#endif /* TD_RESCALE_H */
