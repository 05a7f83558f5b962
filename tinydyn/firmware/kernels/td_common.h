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

#ifndef TD_ALWAYS_INLINE
#if defined(__GNUC__)
#define TD_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define TD_ALWAYS_INLINE inline
#endif
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

/* Per-output-channel requantisation (y = clamp((acc*gate*mult + res*res_mult + r) >> shift)).
 * Either the three arrays mult/res_mult/shift (the general form), or, where the codegen proved
 * it exact (every channel's shift made >= 33 by scaling mult and res_mult by a power of two),
 * the table rq: per channel {mult', res_lo, res_hi, sh} with a residual, {mult', sh} without,
 * where res_mult' = res_hi * 2^32 + res_lo (res_lo signed) and sh = shift' - 33: then
 * y = ((hi32(acc*gate*mult' + res*res_lo) + res*res_hi) >> sh) + 1) >> 1, i.e. SMULL, SMLAL,
 * MLA and the rounding on the high word only (see td_rq_high). */
typedef struct {
    const int32_t *bias;
    const int32_t *mult;     /* < 2^23, so gate*mult fits int32 */
    const int64_t *res_mult; /* NULL without residual (can exceed 32 bits: it shares the shift) */
    const uint8_t *shift;    /* 1..62 */
    int32_t out_min, out_max;
    const int32_t *rq; /* NULL, or the high-word table above (then mult/res_mult/shift are NULL) */
    int32_t rq_sh;     /* 1 + the sh every channel of rq shares (a compile-time constant), 0: per channel */
} td_quant_t;

/* ------------------------------------------------------------------ requantisation, inline */
/* The high-word form: exact for shift' = sh + 33 >= 33 because 2^(shift'-1) only touches the
 * high word (floor((H + 2^(sh))/2^(sh+1)) = ((H >> sh) + 1) >> 1); the 64-bit sum is formed
 * modulo 2^64 (the codegen proves the true value fits int64, so the high word is exact). */
static inline int32_t td_rq_hi(int32_t acc, int32_t gm, int32_t res, int32_t rl, int32_t rh, int has_res)
{
    int64_t v = (int64_t)acc * gm;
    uint32_t h;
    if (has_res) {
        v += (int64_t)res * rl;
        h = (uint32_t)((uint64_t)v >> 32) + (uint32_t)res * (uint32_t)rh;
    } else {
        h = (uint32_t)((uint64_t)v >> 32);
    }
    return (int32_t)h;
}

static inline int32_t td_rq_high(int32_t acc, int32_t gm, int32_t res, int32_t rl, int32_t rh, int32_t sh,
                                 int has_res)
{
    return ((td_rq_hi(acc, gm, res, rl, rh, has_res) >> sh) + 1) >> 1;
}

/* The general form (any shift 1..62): y before the clamp, saturated to [lo, hi] when its
 * 64-bit value leaves that range. */
static inline int32_t td_rq_general(int32_t acc, int32_t gm, int64_t res_term, uint32_t shift, int32_t lo,
                                    int32_t hi)
{
    const int64_t w = ((int64_t)acc * gm + res_term + ((int64_t)1 << (shift - 1u))) >> shift;
    return w < lo ? lo : (w > hi ? hi : (int32_t)w);
}

/* clamp(y, lo, hi): one USAT/SSAT where [lo, hi] is a saturation range (lo, hi are
 * compile-time constants in the generated layer functions, so the choice folds away). */
static inline int32_t td_sat(int32_t y, int32_t lo, int32_t hi)
{
#if defined(__ARM_FEATURE_SAT) && !defined(TD_PORTABLE)
    if (lo == 0 && hi == 255) {
        __asm__("usat %0, #8, %1" : "=r"(y) : "r"(y));
        return y;
    }
    if (lo == -128 && hi == 127) {
        __asm__("ssat %0, #8, %1" : "=r"(y) : "r"(y));
        return y;
    }
    if (lo == -32768 && hi == 32767) {
        __asm__("ssat %0, #16, %1" : "=r"(y) : "r"(y));
        return y;
    }
#endif
    return y < lo ? lo : (y > hi ? hi : y);
}

/* The rounding of the high-word form in one step: ((H >> sh) + 1) >> 1 = (H + 2^sh) >> (sh + 1)
 * (floor division both), and H + 2^sh cannot overflow: it is the high word of the true sum plus
 * its rounding constant 2^(sh+32), which the codegen proves < 2^63. Saturated to [lo, hi]. With
 * a compile-time sh and a saturation range this is ADD and one USAT/SSAT with its shift. */
static TD_ALWAYS_INLINE int32_t td_rq_round_sat(int32_t h, int32_t sh, int32_t lo, int32_t hi)
{
#if defined(__ARM_FEATURE_SAT) && !defined(TD_PORTABLE) && defined(__OPTIMIZE__)
    if (__builtin_constant_p(sh) && sh >= 0 && sh <= 30) {
        const int32_t t = h + (1 << sh);
        int32_t y;
        if (lo == 0 && hi == 255) {
            __asm__("usat %0, #8, %1, asr %2" : "=r"(y) : "r"(t), "i"(sh + 1));
            return y;
        }
        if (lo == -128 && hi == 127) {
            __asm__("ssat %0, #8, %1, asr %2" : "=r"(y) : "r"(t), "i"(sh + 1));
            return y;
        }
        if (lo == -32768 && hi == 32767) {
            __asm__("ssat %0, #16, %1, asr %2" : "=r"(y) : "r"(t), "i"(sh + 1));
            return y;
        }
    }
#endif
    return td_sat((h + (1 << sh)) >> (sh + 1), lo, hi);
}

/* The high-word rounding with a per-channel (run-time) sh, saturated to [lo, hi]:
 * sat(((H >> sh) + 1) >> 1) as ASR, ADD and one USAT/SSAT with its shift (the ">> 1" folded into
 * the saturation). (H >> sh) + 1 <= (H + 2^sh) >> sh cannot overflow (see td_rq_round_sat). */
static TD_ALWAYS_INLINE int32_t td_rq_shift_sat(int32_t h, int32_t sh, int32_t lo, int32_t hi)
{
    const int32_t t = (h >> sh) + 1;
#if defined(__ARM_FEATURE_SAT) && !defined(TD_PORTABLE)
    int32_t y;
    if (lo == 0 && hi == 255) {
        __asm__("usat %0, #8, %1, asr #1" : "=r"(y) : "r"(t));
        return y;
    }
    if (lo == -128 && hi == 127) {
        __asm__("ssat %0, #8, %1, asr #1" : "=r"(y) : "r"(t));
        return y;
    }
    if (lo == -32768 && hi == 32767) {
        __asm__("ssat %0, #16, %1, asr #1" : "=r"(y) : "r"(t));
        return y;
    }
#endif
    return td_sat(t >> 1, lo, hi);
}

/* The model input: CHW uint8 image to HWC. */
void td_chw_to_hwc(const uint8_t *chw, uint8_t *hwc, uint16_t c, uint16_t h, uint16_t w);

#ifdef __cplusplus
}
#endif

#endif /* TD_COMMON_H */
