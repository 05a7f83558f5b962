/* tinydyn kernels: what every kernel's interface shares (element types, run context, gates,
 * requantisation parameters) and the model input's layout change. Included through
 * td_kernels.h; each op's kernel has its own header and source file beside this one. */
#ifndef TD_COMMON_H
#define TD_COMMON_H

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

/* The model input: CHW uint8 image to HWC. */
void td_chw_to_hwc(const uint8_t *chw, uint8_t *hwc, uint16_t c, uint16_t h, uint16_t w);

#ifdef __cplusplus
}
#endif

#endif /* TD_COMMON_H */
