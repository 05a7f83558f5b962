/* tinydyn kernels: conv2d, a grouped k x k convolution on HWC activations. */
#ifndef TD_CONV2D_H
#define TD_CONV2D_H

#include "td_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    /* weights, packed by tinydyn.codegen.packing:
     * groups == 1: one row per output channel, (ky, kx, ci) order, padded with zeros to a
     *   multiple of 4 (row_len), each group of 4 stored as [w0 w2 w1 w3] so that SXTB16
     *   yields the pairs (w0,w1) and (w2,w3) that SMLAD needs;
     * groups > 1: [co][ky][kx][ci_g], not padded. */
    const int8_t *weight;
    uint16_t row_len;
    uint16_t in_c, in_h, in_w, out_c, out_h, out_w;
    uint8_t kernel, stride, pad;
    uint16_t groups;
    uint8_t in_type, out_type, res_type;
    uint16_t row_group; /* output rows compacted at once when input channels are masked */
} td_conv_params_t;

void td_conv2d(td_ctx_t *ctx, const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
               const void *input, const void *residual, void *output);
/* Bytes td_conv2d takes from ctx->scratch for these parameters and gates (only whether
 * g->input_mask is NULL matters): what tinydyn.ops.conv2d reserves. */
uint32_t td_conv2d_scratch_size(const td_conv_params_t *p, const td_gates_t *g);

#ifdef __cplusplus
}
#endif

#endif /* TD_CONV2D_H */
