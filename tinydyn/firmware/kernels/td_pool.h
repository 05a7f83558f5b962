/* tinydyn kernels: maxpool and avgpool, k x k windows on HWC activations. */
#ifndef TD_POOL_H
#define TD_POOL_H

#include "td_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint16_t c, in_h, in_w, out_h, out_w;
    uint8_t kernel, stride, pad;
    uint8_t type;
} td_pool_params_t;

void td_maxpool(td_ctx_t *ctx, const td_pool_params_t *p, const void *input, void *output);
/* Average pool; padding counts as zeros; rounds half away from zero. */
void td_avgpool(td_ctx_t *ctx, const td_pool_params_t *p, const void *input, void *output);
/* Bytes td_maxpool / td_avgpool take from ctx->scratch: none. */
uint32_t td_maxpool_scratch_size(const td_pool_params_t *p);
uint32_t td_avgpool_scratch_size(const td_pool_params_t *p);

#ifdef __cplusplus
}
#endif

#endif /* TD_POOL_H */
