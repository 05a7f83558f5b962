/* tinydyn kernels: gap, the global average pool of an HWC tensor to a vector. */
#ifndef TD_GAP_H
#define TD_GAP_H

#include "td_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Global average pool, round half up: (sum + HW/2) / HW (floor division). */
void td_gap(td_ctx_t *ctx, uint16_t c, uint32_t hw, uint8_t type, const void *input, void *output);
/* Bytes td_gap takes from ctx->scratch: what tinydyn.ops.gap reserves. */
uint32_t td_gap_scratch_size(uint16_t c);

#ifdef __cplusplus
}
#endif

#endif /* TD_GAP_H */
