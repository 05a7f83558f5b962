/* tinydyn kernels: integer layers on HWC activations, bit-exact with the numpy executor
 * (tinydyn/quantize/executor.py). Every kernel has the same shape of signature, as in
 * CMSIS-NN: run context (counters, scratch), layer parameters (constant, in flash), gates,
 * then input, residual and output data.
 *
 * Two paths give identical results: a portable C path and a Cortex-M DSP path (SMLAD) that
 * is used when __ARM_FEATURE_DSP is defined. TD_PORTABLE forces the portable path;
 * TD_EMULATE_DSP runs the DSP path on any CPU with C versions of the intrinsics (tests). */
#ifndef TD_KERNELS_H
#define TD_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if (defined(__ARM_FEATURE_DSP) || defined(TD_EMULATE_DSP)) && !defined(TD_PORTABLE)
#define TD_USE_DSP 1
#else
#define TD_USE_DSP 0
#endif

/* element types of tensors in the arena */
enum td_type { TD_U8 = 0, TD_S8 = 1, TD_S16 = 2 };

/* Counters of one inference plus the scratch area of the op being run. */
typedef struct {
    uint32_t macs;
    uint16_t skipped_blocks;
    uint16_t skipped_channels;
    uint8_t *scratch; /* 4-byte aligned, sized per op by the codegen's memory planner */
} td_ctx_t;

/* Saliences steering a conv/linear (NULL where absent). */
typedef struct {
    const uint8_t *channel_gate; /* per output channel, 0 = not computed */
    const uint8_t *block_gate;   /* one scalar scaling every output */
    const uint8_t *input_mask;   /* per input channel, 0 = not read */
} td_gates_t;

/* Per-output-channel requantisation (y = clamp((acc*gate*mult + res*res_mult + r) >> shift)). */
typedef struct {
    const int32_t *bias;
    const int32_t *mult;     /* < 2^23, so gate*mult fits int32 */
    const int64_t *res_mult; /* NULL without residual (can exceed 32 bits: it shares the shift) */
    const uint8_t *shift;    /* 1..62 */
    int32_t out_min, out_max;
} td_quant_t;

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

typedef struct {
    const int8_t *weight; /* [out][row_len], packed like a groups == 1 conv */
    uint16_t row_len;
    uint16_t in_c, out_c;
    uint8_t in_type, out_type, res_type;
} td_linear_params_t;

typedef struct {
    uint16_t c, in_h, in_w, out_h, out_w;
    uint8_t kernel, stride, pad;
    uint8_t type;
} td_pool_params_t;

void td_conv2d(td_ctx_t *ctx, const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
               const void *input, const void *residual, void *output);
void td_linear(td_ctx_t *ctx, const td_linear_params_t *p, const td_quant_t *q, const td_gates_t *g,
               const void *input, const void *residual, void *output);
/* Global average pool, round half up: (sum + HW/2) / HW (floor division). */
void td_gap(td_ctx_t *ctx, uint16_t c, uint32_t hw, uint8_t type, const void *input, void *output);
void td_maxpool(td_ctx_t *ctx, const td_pool_params_t *p, const void *input, void *output);
/* Average pool; padding counts as zeros; rounds half away from zero. */
void td_avgpool(td_ctx_t *ctx, const td_pool_params_t *p, const void *input, void *output);
/* Per-channel requantisation of a tensor with a zero accumulator (a skipped block's output). */
void td_rescale(td_ctx_t *ctx, uint16_t c, uint32_t hw, const td_quant_t *q, uint8_t in_type,
                uint8_t out_type, const void *input, void *output);
/* The model input: CHW uint8 image to HWC. */
void td_chw_to_hwc(const uint8_t *chw, uint8_t *hwc, uint16_t c, uint16_t h, uint16_t w);
/* Index of the largest value, ties to the lowest index. */
uint8_t td_argmax(const int16_t *v, uint16_t n);

/* Exit policies (integer rules of tinydyn/quantize/policy.py). */
int td_confident(const int16_t *logits, uint16_t n, int64_t lut_mult, uint32_t t16, const uint16_t *exp_lut);
int td_margin_ok(const int16_t *logits, uint16_t n, int32_t margin);

#ifdef __cplusplus
}
#endif

#endif /* TD_KERNELS_H */
