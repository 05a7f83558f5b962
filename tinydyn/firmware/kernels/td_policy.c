/* tinydyn kernels: argmax and the exit policies (see td_policy.h). */
#include "td_policy.h"

uint8_t td_argmax(const int16_t *v, uint16_t n)
{
    uint16_t best = 0;
    for (uint16_t i = 1; i < n; i++) {
        if (v[i] > v[best]) best = i;
    }
    return (uint8_t)best;
}

/* ------------------------------------------------------------------ exit policies */
#define TD_LUT_SHIFT 24
#define TD_LUT_SIZE 256

int td_confident(const int16_t *logits, uint16_t n, int64_t lut_mult, uint32_t t16, const uint16_t *exp_lut)
{
    int32_t top = logits[td_argmax(logits, n)];
    uint32_t sum = 0;
    for (uint16_t k = 0; k < n; k++) {
        int64_t steps = ((int64_t)(top - logits[k]) * lut_mult + ((int64_t)1 << (TD_LUT_SHIFT - 1))) >> TD_LUT_SHIFT;
        sum += exp_lut[steps < TD_LUT_SIZE - 1 ? steps : TD_LUT_SIZE - 1];
    }
    return (uint64_t)65535u * 65536u >= (uint64_t)t16 * sum;
}

int td_margin_ok(const int16_t *logits, uint16_t n, int32_t margin)
{
    const uint16_t best = td_argmax(logits, n);
    int32_t second = INT32_MIN;
    for (uint16_t k = 0; k < n; k++) {
        if (k != best && logits[k] > second) second = logits[k];
    }
    if (n < 2) second = logits[best];
    return (int32_t)logits[best] - second >= margin;
}
