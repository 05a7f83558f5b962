/* tinydyn kernels: rescale, a skipped block's output (its residual, requantised). */
#ifndef TD_RESCALE_H
#define TD_RESCALE_H

#include "td_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per-channel requantisation of a tensor with a zero accumulator (a skipped block's output). */
void td_rescale(td_ctx_t *ctx, uint16_t c, uint32_t hw, const td_quant_t *q, uint8_t in_type,
                uint8_t out_type, const void *input, void *output);
/* Bytes td_rescale takes from ctx->scratch: none. */
uint32_t td_rescale_scratch_size(uint16_t c, uint32_t hw);

#ifdef __cplusplus
}
#endif

#endif /* TD_RESCALE_H */
