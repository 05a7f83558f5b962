/* tinydyn kernels: linear, a fully connected layer on vectors (also gates and exit heads). */
#ifndef TD_LINEAR_H
#define TD_LINEAR_H

#include "td_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const int8_t *weight; /* [out][row_len], packed like a groups == 1 conv */
    uint16_t row_len;
    uint16_t in_c, out_c;
    uint8_t in_type, out_type, res_type;
} td_linear_params_t;

void td_linear(td_ctx_t *ctx, const td_linear_params_t *p, const td_quant_t *q, const td_gates_t *g,
               const void *input, const void *residual, void *output);
/* Bytes td_linear takes from ctx->scratch: what tinydyn.ops.linear reserves. */
uint32_t td_linear_scratch_size(const td_linear_params_t *p);

#ifdef __cplusplus
}
#endif

#endif /* TD_LINEAR_H */
