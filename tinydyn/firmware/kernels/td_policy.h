/* tinydyn kernels: the prediction and the exit policies' integer rules on int16 logits. */
#ifndef TD_POLICY_H
#define TD_POLICY_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Index of the largest value, ties to the lowest index. */
uint8_t td_argmax(const int16_t *v, uint16_t n);

/* Exit policies (integer rules of tinydyn/quantize/policy.py). */
int td_confident(const int16_t *logits, uint16_t n, int64_t lut_mult, uint32_t t16, const uint16_t *exp_lut);
int td_margin_ok(const int16_t *logits, uint16_t n, int32_t margin);

#ifdef __cplusplus
}
#endif

#endif /* TD_POLICY_H */
