/* tinydyn kernels: concat, the channel concatenation of HWC tensors of one dtype and scale. */
#ifndef TD_CONCAT_H
#define TD_CONCAT_H

#include "td_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* For each of the hw pixels, the n inputs' channel runs one after the other (part_bytes[i]
 * bytes of input i per pixel) into the output. No arithmetic (tinydyn.ops.concat). */
void td_concat(td_ctx_t *ctx, uint8_t n, const uint16_t *part_bytes, uint32_t hw, const void *const *inputs,
               void *output);
/* Bytes td_concat takes from ctx->scratch: none. */
uint32_t td_concat_scratch_size(void);

#ifdef __cplusplus
}
#endif

#endif /* TD_CONCAT_H */
