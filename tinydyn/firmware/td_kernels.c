/* tinydyn kernels: see td_kernels.h. All arithmetic is exact integer arithmetic; the
 * codegen proves that every accumulator fits int32 and every requantisation int64. */
#include "td_kernels.h"

#include <string.h>

#if TD_USE_DSP && defined(__ARM_FEATURE_DSP) && !defined(TD_EMULATE_DSP)
#include <arm_acle.h>
static inline int32_t td_sxtb16(int32_t x) { return __sxtb16(x); }
/* GCC 12's arm_acle.h has no __ror: the rotated form is one instruction in asm */
static inline int32_t td_sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline int32_t td_smlad(int32_t a, int32_t b, int32_t acc) { return __smlad(a, b, acc); }
#elif TD_USE_DSP
/* C versions of the intrinsics, so that the DSP path also runs (and is tested) on a PC */
static inline int32_t td_sxtb16(int32_t x)
{
    uint32_t u = (uint32_t)x;
    uint32_t lo = (uint16_t)(int16_t)(int8_t)(u & 0xFFu);
    uint32_t hi = (uint16_t)(int16_t)(int8_t)((u >> 16) & 0xFFu);
    return (int32_t)(lo | (hi << 16));
}
static inline int32_t td_sxtb16_ror8(int32_t x) { return td_sxtb16((int32_t)((uint32_t)x >> 8)); }
static inline int32_t td_smlad(int32_t a, int32_t b, int32_t acc)
{
    uint32_t ua = (uint32_t)a, ub = (uint32_t)b;
    return acc + (int32_t)(int16_t)(ua & 0xFFFFu) * (int16_t)(ub & 0xFFFFu) +
           (int32_t)(int16_t)(ua >> 16) * (int16_t)(ub >> 16);
}
#endif

#define TD_ALIGN4(n) (((uint32_t)(n) + 3u) & ~3u)

/* ------------------------------------------------------------------ element access */
static inline int32_t load_elem(const void *p, uint8_t type, uint32_t i)
{
    switch (type) {
    case TD_U8: return ((const uint8_t *)p)[i];
    case TD_S8: return ((const int8_t *)p)[i];
    default: return ((const int16_t *)p)[i];
    }
}

static inline void store_elem(void *p, uint8_t type, uint32_t i, int32_t v)
{
    switch (type) {
    case TD_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case TD_S8: ((int8_t *)p)[i] = (int8_t)v; break;
    default: ((int16_t *)p)[i] = (int16_t)v; break;
    }
}

/* ------------------------------------------------------------------ requantisation */
/* y = clamp((acc*gm + res_term + 2^(shift-1)) >> shift); gm = gate*mult (< 2^31).
 * >> of a negative int64 is an arithmetic shift on GCC (two's complement), as in numpy. */
static inline int32_t requant(int32_t acc, int32_t gm, int64_t res_term, uint8_t shift, int32_t lo, int32_t hi)
{
    const int64_t v = (int64_t)acc * gm + res_term;
    int32_t y;
    if (shift > 32) {
        /* 2^(shift-1) only touches the high word: round and shift there, in 32 bits */
        const int32_t high = (int32_t)(v >> 32) + (int32_t)(1u << (shift - 33u));
        y = high >> (shift - 32u);
    } else {
        const int64_t w = (v + ((int64_t)1 << (shift - 1u))) >> shift;
        y = w < lo ? lo : (w > hi ? hi : (int32_t)w);
    }
    return y < lo ? lo : (y > hi ? hi : y);
}

/* Per-output-channel requantisation constants, computed once per layer call: for a
 * shift > 32 the rounding constant and the shift apply to the high word only. */
typedef struct {
    int32_t gm;    /* gate * mult */
    int32_t round; /* 2^(shift-33) when fast, else unused */
    uint32_t sh;   /* shift - 32 when fast, else shift */
    uint32_t fast;
} td_chq_t;

static void channel_table(const td_quant_t *q, const td_gates_t *g, uint16_t c, td_chq_t *tab)
{
    const int32_t block_gate = g->block_gate ? g->block_gate[0] : 1;
    for (uint16_t ch = 0; ch < c; ch++) {
        const uint8_t shift = q->shift[ch];
        tab[ch].gm = (g->channel_gate ? g->channel_gate[ch] : block_gate) * q->mult[ch];
        tab[ch].fast = shift > 32;
        tab[ch].round = shift > 32 ? (int32_t)(1u << (shift - 33u)) : 0;
        tab[ch].sh = shift > 32 ? shift - 32u : shift;
    }
}

static inline int32_t requant_tab(int32_t acc, const td_chq_t *t, int64_t res_term, int32_t lo, int32_t hi)
{
    const int64_t v = (int64_t)acc * t->gm + res_term;
    int32_t y;
    if (t->fast) {
        y = ((int32_t)(v >> 32) + t->round) >> t->sh;
    } else {
        const int64_t w = (v + ((int64_t)1 << (t->sh - 1u))) >> t->sh;
        y = w < lo ? lo : (w > hi ? hi : (int32_t)w);
    }
    return y < lo ? lo : (y > hi ? hi : y);
}

static inline int64_t res_term(const td_quant_t *q, const void *residual, uint8_t res_type, uint32_t i, uint16_t c)
{
    return residual ? (int64_t)load_elem(residual, res_type, i) * q->res_mult[c] : 0;
}

static inline int32_t gate_of(const td_gates_t *g, uint16_t c)
{
    if (g->channel_gate) return g->channel_gate[c];
    if (g->block_gate) return g->block_gate[0];
    return 1;
}

/* Indices of the channels whose salience is non-zero (all channels without saliences). */
static uint16_t active_list(const uint8_t *salience, uint16_t n, uint16_t *idx)
{
    uint16_t m = 0;
    for (uint16_t i = 0; i < n; i++) {
        if (salience == NULL || salience[i] != 0) idx[m++] = i;
    }
    return m;
}

/* Outputs of channels a channel gate switched off: the requantisation of a zero
 * accumulator (0 without a residual). No multiply-accumulate is spent on them. */
static void write_skipped(const td_quant_t *q, const uint8_t *gate, uint16_t c, uint32_t hw, const void *residual,
                          uint8_t res_type, uint8_t out_type, void *output)
{
    for (uint16_t ch = 0; ch < c; ch++) {
        if (gate[ch] != 0) continue;
        for (uint32_t p = 0; p < hw; p++) {
            uint32_t i = p * c + ch;
            int32_t y = requant(0, 0, res_term(q, residual, res_type, i, ch), q->shift[ch], q->out_min, q->out_max);
            store_elem(output, out_type, i, y);
        }
    }
}

/* Packed position of element k of a weight row: groups of 4 are stored [w0 w2 w1 w3]. */
static inline uint32_t packed_pos(uint32_t k) { return (k & ~3u) | ((k & 1u) << 1) | ((k >> 1) & 1u); }

/* ------------------------------------------------------------------ dot products */
/* A column pair is stored interleaved per group of 4 elements: x0[k..k+3] then x1[k..k+3]
 * (int16), so that one LDM fetches both columns' words for 16 multiply-accumulates.
 * acc[0] += w0.x0, acc[1] += w1.x0, acc[2] += w0.x1, acc[3] += w1.x1 over `groups` groups:
 * the 2x2 block reuses every loaded weight word for two pixels and every column word for
 * two rows. Weight rows are packed (see td_kernels.h). */
#if TD_USE_DSP && defined(__ARM_FEATURE_DSP) && !defined(TD_EMULATE_DSP)
void td_mm_2x2_dsp(const int8_t *w0, const int8_t *w1, const int16_t *pair, uint32_t groups, int32_t *acc);
/* 17 instructions per 16 MACs; r0 = w0, r1 = w1, r2 = pair, r3 = groups (> 0), [sp] = acc */
__asm__(
    "    .syntax unified\n"
    "    .thumb\n"
    "    .text\n"
    "    .global td_mm_2x2_dsp\n"
    "    .type td_mm_2x2_dsp, %function\n"
    "    .thumb_func\n"
    "td_mm_2x2_dsp:\n"
    "    push {r4-r11, lr}\n"
    "    ldr r12, [sp, #36]\n"
    "    push {r12}\n"
    "    ldm r12, {r4, r5, r6, r7}\n"
    "1:  ldmia r2!, {r8, r9, r10, r11}\n" /* x0 k01, x0 k23, x1 k01, x1 k23 */
    "    ldr r12, [r0], #4\n"               /* w0: [w0 w2 w1 w3] */
    "    sxtb16 lr, r12\n"                  /* (w0, w1) */
    "    smlad r4, lr, r8, r4\n"
    "    smlad r6, lr, r10, r6\n"
    "    sxtb16 r12, r12, ror #8\n"         /* (w2, w3) */
    "    smlad r4, r12, r9, r4\n"
    "    smlad r6, r12, r11, r6\n"
    "    ldr r12, [r1], #4\n"
    "    sxtb16 lr, r12\n"
    "    smlad r5, lr, r8, r5\n"
    "    smlad r7, lr, r10, r7\n"
    "    sxtb16 r12, r12, ror #8\n"
    "    smlad r5, r12, r9, r5\n"
    "    smlad r7, r12, r11, r7\n"
    "    subs r3, r3, #1\n"
    "    bne 1b\n"
    "    pop {r12}\n"
    "    stm r12, {r4, r5, r6, r7}\n"
    "    pop {r4-r11, pc}\n"
    "    .size td_mm_2x2_dsp, .-td_mm_2x2_dsp\n");

static inline void mm_2x2(const int8_t *w0, const int8_t *w1, const int16_t *pair, uint32_t k4, int32_t *acc)
{
    if (k4 != 0) td_mm_2x2_dsp(w0, w1, pair, k4 / 4u, acc); /* a zero count would loop 2^32 times */
}
#elif TD_USE_DSP
/* the same instruction sequence in C (intrinsics emulated): runs and is tested on a PC */
static void mm_2x2(const int8_t *w0, const int8_t *w1, const int16_t *pair, uint32_t k4, int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (uint32_t i = 0; i < k4; i += 4, pair += 8) {
        int32_t x[4], wa, wb;
        memcpy(x, pair, 16);
        memcpy(&wa, w0 + i, 4);
        memcpy(&wb, w1 + i, 4);
        const int32_t wa01 = td_sxtb16(wa), wa23 = td_sxtb16_ror8(wa);
        const int32_t wb01 = td_sxtb16(wb), wb23 = td_sxtb16_ror8(wb);
        a0 = td_smlad(wa23, x[1], td_smlad(wa01, x[0], a0));
        a2 = td_smlad(wa23, x[3], td_smlad(wa01, x[2], a2));
        a1 = td_smlad(wb23, x[1], td_smlad(wb01, x[0], a1));
        a3 = td_smlad(wb23, x[3], td_smlad(wb01, x[2], a3));
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#else
static void mm_2x2(const int8_t *w0, const int8_t *w1, const int16_t *pair, uint32_t k4, int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (uint32_t i = 0; i < k4; i += 4, pair += 8) {
        /* packed rows: element j of the group sits at byte {0, 2, 1, 3}[j] */
        const int32_t p0 = w0[i], p1 = w0[i + 2], p2 = w0[i + 1], p3 = w0[i + 3];
        const int32_t q0 = w1[i], q1 = w1[i + 2], q2 = w1[i + 1], q3 = w1[i + 3];
        const int16_t *x = pair, *y = pair + 4;
        a0 += p0 * x[0] + p1 * x[1] + p2 * x[2] + p3 * x[3];
        a1 += q0 * x[0] + q1 * x[1] + q2 * x[2] + q3 * x[3];
        a2 += p0 * y[0] + p1 * y[1] + p2 * y[2] + p3 * y[3];
        a3 += q0 * y[0] + q1 * y[1] + q2 * y[2] + q3 * y[3];
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}
#endif

/* Writing column j (0 or 1) of a column pair: element k lives at pair[(k/4)*8 + 4j + k%4]. */
static inline void pair_put(int16_t *pair, int j, uint32_t k, int32_t v)
{
    pair[(k >> 2) * 8u + 4u * (uint32_t)j + (k & 3u)] = (int16_t)v;
}

/* n uint8 values from src as elements k.. of column j. Runs that start on a group of 4 are
 * widened a word at a time: (b0 b1 b2 b3) -> (b0, b1), (b2, b3) with masks and pack-halfword
 * (PKHBT/PKHTB on Cortex-M), two stores per four elements. */
static void pair_put_u8(int16_t *pair, int j, uint32_t k, const uint8_t *src, uint32_t n)
{
    uint32_t i = 0;
    if ((k & 3u) == 0) {
        uint32_t *dst = (uint32_t *)(void *)(pair + (k >> 2) * 8u + 4u * (uint32_t)j);
        for (; i + 4 <= n; i += 4, dst += 4) {
            uint32_t w;
            memcpy(&w, src + i, 4);
            const uint32_t even = w & 0x00FF00FFu, odd = (w >> 8) & 0x00FF00FFu;
            dst[0] = (even & 0xFFFFu) | (odd << 16);
            dst[1] = (even >> 16) | (odd & 0xFFFF0000u);
        }
    }
    for (; i < n; i++) pair_put(pair, j, k + i, src[i]);
}

static void pair_zero(int16_t *pair, int j, uint32_t k, uint32_t n)
{
    uint32_t i = 0;
    if ((k & 3u) == 0) {
        uint32_t *dst = (uint32_t *)(void *)(pair + (k >> 2) * 8u + 4u * (uint32_t)j);
        for (; i + 4 <= n; i += 4, dst += 4) dst[0] = dst[1] = 0;
    }
    for (; i < n; i++) pair_put(pair, j, k + i, 0);
}

/* ------------------------------------------------------------------ convolution */
/* One im2col column, written as column j of the pair: the k*k patch of output pixel pix,
 * active input channels only, widened to int16 and zero-padded to k4 elements. */
static void im2col(const td_conv_params_t *p, const void *input, uint32_t pix, const uint16_t *in_idx,
                   uint16_t n_in, int16_t *pair, int j, uint32_t k4)
{
    /* locals: stores through int16_t* may alias the parameter struct, locals do not */
    const int32_t kernel = p->kernel, in_h = p->in_h, in_w = p->in_w, in_c = p->in_c;
    const int32_t oy = (int32_t)(pix / p->out_w), ox = (int32_t)(pix % p->out_w);
    const int32_t iy0 = oy * p->stride - p->pad, ix0 = ox * p->stride - p->pad;
    const int full = n_in == in_c, u8 = p->in_type == TD_U8;
    uint32_t k = 0;
    for (int32_t ky = 0; ky < kernel; ky++) {
        const int32_t iy = iy0 + ky;
        if (iy < 0 || iy >= in_h) {
            pair_zero(pair, j, k, (uint32_t)(kernel * n_in));
            k += (uint32_t)(kernel * n_in);
            continue;
        }
        if (full && u8 && ix0 >= 0 && ix0 + kernel <= in_w) {
            /* the whole kernel row is inside and contiguous in HWC */
            const uint8_t *src = (const uint8_t *)input + ((uint32_t)iy * (uint32_t)in_w + (uint32_t)ix0) * (uint32_t)in_c;
            pair_put_u8(pair, j, k, src, (uint32_t)(kernel * in_c));
            k += (uint32_t)(kernel * in_c);
            continue;
        }
        for (int32_t kx = 0; kx < kernel; kx++, k += n_in) {
            const int32_t ix = ix0 + kx;
            if (ix < 0 || ix >= in_w) {
                pair_zero(pair, j, k, n_in);
                continue;
            }
            const uint32_t base = ((uint32_t)iy * (uint32_t)in_w + (uint32_t)ix) * (uint32_t)in_c;
            if (full && u8) {
                pair_put_u8(pair, j, k, (const uint8_t *)input + base, n_in);
            } else {
                for (uint16_t c = 0; c < n_in; c++) pair_put(pair, j, k + c, load_elem(input, p->in_type, base + in_idx[c]));
            }
        }
    }
    pair_zero(pair, j, k, k4 - k);
}

/* Rows of the active output channels with only the active input channels, repacked. */
static void compact_rows(const td_conv_params_t *p, const uint16_t *rows, uint16_t n_rows, const uint16_t *in_idx,
                         uint16_t n_in, int8_t *dst, uint32_t k4)
{
    const uint32_t kk = (uint32_t)p->kernel * p->kernel;
    for (uint16_t r = 0; r < n_rows; r++) {
        const int8_t *src = p->weight + (uint32_t)rows[r] * p->row_len;
        int8_t *out = dst + (uint32_t)r * k4;
        uint32_t k = 0;
        for (uint32_t pos = 0; pos < kk; pos++) {
            for (uint16_t j = 0; j < n_in; j++, k++) out[packed_pos(k)] = src[packed_pos(pos * p->in_c + in_idx[j])];
        }
        for (; k < k4; k++) out[packed_pos(k)] = 0;
    }
}

/* Grouped or depthwise convolution, direct loops (portable on every target). */
static void conv_grouped(td_ctx_t *ctx, const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
                         const void *input, const void *residual, void *output, const uint8_t *in_active)
{
    const uint16_t cin_g = p->in_c / p->groups, cout_g = p->out_c / p->groups;
    const uint32_t hw = (uint32_t)p->out_h * p->out_w;
    for (uint32_t pix = 0; pix < hw; pix++) {
        const int32_t oy = (int32_t)(pix / p->out_w), ox = (int32_t)(pix % p->out_w);
        for (uint16_t co = 0; co < p->out_c; co++) {
            if (g->channel_gate && g->channel_gate[co] == 0) continue;
            const uint16_t ci0 = (uint16_t)(co / cout_g * cin_g);
            const int8_t *w = p->weight + (uint32_t)co * p->kernel * p->kernel * cin_g;
            int32_t acc = q->bias[co];
            for (int32_t ky = 0; ky < p->kernel; ky++) {
                const int32_t iy = oy * p->stride - p->pad + ky;
                for (int32_t kx = 0; kx < p->kernel; kx++, w += cin_g) {
                    const int32_t ix = ox * p->stride - p->pad + kx;
                    if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) continue;
                    const uint32_t base = ((uint32_t)iy * p->in_w + (uint32_t)ix) * p->in_c + ci0;
                    for (uint16_t j = 0; j < cin_g; j++) {
                        if (in_active[ci0 + j]) acc += w[j] * load_elem(input, p->in_type, base + j);
                    }
                }
            }
            const uint32_t i = pix * p->out_c + co;
            store_elem(output, p->out_type, i,
                       requant(acc, gate_of(g, co) * q->mult[co], res_term(q, residual, p->res_type, i, co),
                               q->shift[co], q->out_min, q->out_max));
        }
    }
    (void)ctx;
}

void td_conv2d(td_ctx_t *ctx, const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
               const void *input, const void *residual, void *output)
{
    uint8_t *s = ctx->scratch;
    uint16_t *out_idx = (uint16_t *)(void *)s;
    s += TD_ALIGN4(2u * p->out_c);
    uint16_t *in_idx = (uint16_t *)(void *)s;
    s += TD_ALIGN4(2u * p->in_c);
    const uint16_t n_out = active_list(g->channel_gate, p->out_c, out_idx);
    const uint16_t n_in = active_list(g->input_mask, p->in_c, in_idx);
    const uint32_t kk = (uint32_t)p->kernel * p->kernel, hw = (uint32_t)p->out_h * p->out_w;

    if (g->channel_gate) {
        ctx->skipped_channels = (uint16_t)(ctx->skipped_channels + (p->out_c - n_out));
        write_skipped(q, g->channel_gate, p->out_c, hw, residual, p->res_type, p->out_type, output);
    }
    if (p->groups != 1) {
        /* MACs per group: active outputs x active inputs of that group */
        const uint16_t cin_g = p->in_c / p->groups, cout_g = p->out_c / p->groups;
        uint8_t *in_active = s;
        for (uint16_t c = 0; c < p->in_c; c++) in_active[c] = (uint8_t)(g->input_mask == NULL || g->input_mask[c] != 0);
        for (uint16_t grp = 0; grp < p->groups; grp++) {
            uint32_t outs = 0, ins = 0;
            for (uint16_t c = 0; c < cout_g; c++) outs += (g->channel_gate == NULL || g->channel_gate[grp * cout_g + c] != 0);
            for (uint16_t c = 0; c < cin_g; c++) ins += in_active[grp * cin_g + c];
            ctx->macs += outs * ins * kk * hw;
        }
        conv_grouped(ctx, p, q, g, input, residual, output, in_active);
        return;
    }
    ctx->macs += (uint32_t)n_out * n_in * kk * hw;

    td_chq_t *tab = (td_chq_t *)(void *)s;
    s += sizeof(td_chq_t) * p->out_c;
    channel_table(q, g, p->out_c, tab);
    int16_t *pair = (int16_t *)(void *)s; /* two im2col columns, interleaved per 4 elements */
    s += 4u * p->row_len;
    int8_t *wbuf = (int8_t *)s;
    const int full = n_in == p->in_c;
    const uint32_t k4 = full ? p->row_len : TD_ALIGN4(kk * n_in);
    const uint16_t group = (full || p->row_group == 0) ? n_out : p->row_group;
    /* locals, not struct reads: output stores may alias anything, locals stay in registers */
    const int8_t *weight = p->weight;
    const uint32_t row_len = p->row_len, out_c = p->out_c;
    const int32_t *bias = q->bias;
    const int64_t *res_mult = q->res_mult;
    const int32_t lo = q->out_min, hi = q->out_max;
    const uint8_t out_type = p->out_type, res_type = p->res_type;

    for (uint16_t g0 = 0; g0 < n_out; g0 = (uint16_t)(g0 + group)) {
        const uint16_t gn = (uint16_t)(n_out - g0 < group ? n_out - g0 : group);
        if (!full) compact_rows(p, out_idx + g0, gn, in_idx, n_in, wbuf, k4);
        for (uint32_t pix = 0; pix < hw; pix += 2) {
            const int two = pix + 1 < hw;
            im2col(p, input, pix, in_idx, n_in, pair, 0, k4);
            if (two) im2col(p, input, pix + 1, in_idx, n_in, pair, 1, k4);
            for (uint16_t r = 0; r < gn; r = (uint16_t)(r + 2)) {
                const int both = r + 1 < gn;
                const uint16_t cos[2] = {out_idx[g0 + r], both ? out_idx[g0 + r + 1] : out_idx[g0 + r]};
                const int8_t *w0 = full ? weight + cos[0] * row_len : wbuf + (uint32_t)r * k4;
                const int8_t *w1 = full ? weight + cos[1] * row_len : (both ? w0 + k4 : w0);
                int32_t acc[4] = {bias[cos[0]], bias[cos[1]], bias[cos[0]], bias[cos[1]]};
                mm_2x2(w0, w1, pair, k4, acc);
                for (int jr = 0; jr <= both; jr++) {
                    const uint16_t co = cos[jr];
                    const td_chq_t *t = &tab[co];
                    const int64_t rm = residual ? res_mult[co] : 0;
                    for (int jp = 0; jp <= two; jp++) {
                        const uint32_t i = (pix + (uint32_t)jp) * out_c + co;
                        const int64_t rt = residual ? (int64_t)load_elem(residual, res_type, i) * rm : 0;
                        const int32_t y = requant_tab(acc[2 * jp + jr], t, rt, lo, hi);
                        if (out_type == TD_U8) {
                            ((uint8_t *)output)[i] = (uint8_t)y;
                        } else {
                            store_elem(output, out_type, i, y);
                        }
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ fully connected */
void td_linear(td_ctx_t *ctx, const td_linear_params_t *p, const td_quant_t *q, const td_gates_t *g,
               const void *input, const void *residual, void *output)
{
    uint8_t *s = ctx->scratch;
    uint16_t *out_idx = (uint16_t *)(void *)s;
    s += TD_ALIGN4(2u * p->out_c);
    uint16_t *in_idx = (uint16_t *)(void *)s;
    s += TD_ALIGN4(2u * p->in_c);
    int16_t *pair = (int16_t *)(void *)s;
    const uint16_t n_out = active_list(g->channel_gate, p->out_c, out_idx);
    const uint16_t n_in = active_list(g->input_mask, p->in_c, in_idx);
    ctx->macs += (uint32_t)n_out * n_in;
    if (g->channel_gate) {
        ctx->skipped_channels = (uint16_t)(ctx->skipped_channels + (p->out_c - n_out));
        write_skipped(q, g->channel_gate, p->out_c, 1, residual, p->res_type, p->out_type, output);
    }
    /* masked inputs read as zero in the widened column: they add nothing, and are not
     * counted; the vector is tiny next to the convolutions */
    pair_zero(pair, 0, 0, p->row_len);
    for (uint16_t j = 0; j < n_in; j++) pair_put(pair, 0, in_idx[j], load_elem(input, p->in_type, in_idx[j]));
    memcpy(pair + 4, pair, 8); /* both columns the same vector: the 2x2 kernel's second column */
    for (uint32_t grp = 1; grp < p->row_len / 4u; grp++) memcpy(pair + 8 * grp + 4, pair + 8 * grp, 8);
    const int32_t block_gate = g->block_gate ? g->block_gate[0] : 1;
    for (uint16_t r = 0; r < n_out; r = (uint16_t)(r + 2)) {
        const int both = r + 1 < n_out;
        const uint16_t co0 = out_idx[r], co1 = both ? out_idx[r + 1] : co0;
        int32_t acc[4] = {q->bias[co0], q->bias[co1], 0, 0};
        mm_2x2(p->weight + (uint32_t)co0 * p->row_len, p->weight + (uint32_t)co1 * p->row_len, pair, p->row_len, acc);
        for (int j = 0; j < 1 + both; j++) {
            const uint16_t co = j ? co1 : co0;
            const int32_t gate = g->channel_gate ? g->channel_gate[co] : block_gate;
            store_elem(output, p->out_type, co,
                       requant(acc[j], gate * q->mult[co], res_term(q, residual, p->res_type, co, co), q->shift[co],
                               q->out_min, q->out_max));
        }
    }
}

/* ------------------------------------------------------------------ pooling */
static int32_t floor_div(int32_t n, int32_t d)
{
    int32_t qt = n / d;
    return (n % d != 0 && (n < 0) != (d < 0)) ? qt - 1 : qt;
}

void td_gap(td_ctx_t *ctx, uint16_t c, uint32_t hw, uint8_t type, const void *input, void *output)
{
    int32_t *sums = (int32_t *)(void *)ctx->scratch;
    for (uint16_t ch = 0; ch < c; ch++) sums[ch] = 0;
    if (type == TD_U8) {
        const uint8_t *x = (const uint8_t *)input;
        for (uint32_t p = 0; p < hw; p++, x += c) {
            for (uint16_t ch = 0; ch < c; ch++) sums[ch] += x[ch];
        }
    } else {
        for (uint32_t p = 0; p < hw; p++) {
            for (uint16_t ch = 0; ch < c; ch++) sums[ch] += load_elem(input, type, p * c + ch);
        }
    }
    for (uint16_t ch = 0; ch < c; ch++) {
        store_elem(output, type, ch, floor_div(sums[ch] + (int32_t)(hw / 2u), (int32_t)hw));
    }
}

void td_maxpool(td_ctx_t *ctx, const td_pool_params_t *p, const void *input, void *output)
{
    for (uint32_t oy = 0; oy < p->out_h; oy++) {
        for (uint32_t ox = 0; ox < p->out_w; ox++) {
            for (uint16_t ch = 0; ch < p->c; ch++) {
                int32_t best = INT32_MIN;
                for (int32_t ky = 0; ky < p->kernel; ky++) {
                    const int32_t iy = (int32_t)oy * p->stride - p->pad + ky;
                    for (int32_t kx = 0; kx < p->kernel; kx++) {
                        const int32_t ix = (int32_t)ox * p->stride - p->pad + kx;
                        if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) continue;
                        const int32_t v = load_elem(input, p->type, ((uint32_t)iy * p->in_w + (uint32_t)ix) * p->c + ch);
                        if (v > best) best = v;
                    }
                }
                store_elem(output, p->type, (oy * p->out_w + ox) * p->c + ch, best);
            }
        }
    }
    (void)ctx;
}

void td_avgpool(td_ctx_t *ctx, const td_pool_params_t *p, const void *input, void *output)
{
    const int32_t area = (int32_t)p->kernel * p->kernel;
    for (uint32_t oy = 0; oy < p->out_h; oy++) {
        for (uint32_t ox = 0; ox < p->out_w; ox++) {
            for (uint16_t ch = 0; ch < p->c; ch++) {
                int32_t sum = 0;
                for (int32_t ky = 0; ky < p->kernel; ky++) {
                    const int32_t iy = (int32_t)oy * p->stride - p->pad + ky;
                    for (int32_t kx = 0; kx < p->kernel; kx++) {
                        const int32_t ix = (int32_t)ox * p->stride - p->pad + kx;
                        if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) continue;
                        sum += load_elem(input, p->type, ((uint32_t)iy * p->in_w + (uint32_t)ix) * p->c + ch);
                    }
                }
                const int32_t v = sum >= 0 ? (sum + area / 2) / area : -((-sum + area / 2) / area);
                store_elem(output, p->type, (oy * p->out_w + ox) * p->c + ch, v);
            }
        }
    }
    (void)ctx;
}

void td_rescale(td_ctx_t *ctx, uint16_t c, uint32_t hw, const td_quant_t *q, uint8_t in_type, uint8_t out_type,
                const void *input, void *output)
{
    for (uint32_t p = 0; p < hw; p++) {
        for (uint16_t ch = 0; ch < c; ch++) {
            const uint32_t i = p * c + ch;
            store_elem(output, out_type, i,
                       requant(0, 0, res_term(q, input, in_type, i, ch), q->shift[ch], q->out_min, q->out_max));
        }
    }
    (void)ctx;
}

void td_chw_to_hwc(const uint8_t *chw, uint8_t *hwc, uint16_t c, uint16_t h, uint16_t w)
{
    const uint32_t hw = (uint32_t)h * w;
    for (uint32_t p = 0; p < hw; p++) {
        for (uint16_t ch = 0; ch < c; ch++) hwc[p * c + ch] = chw[ch * hw + p];
    }
}

uint8_t td_argmax(const int16_t *v, uint16_t n)
{
    uint16_t best = 0;
    for (uint16_t i = 1; i < n; i++) {
        if (v[i] > v[best]) best = i;
    }
    return (uint8_t)best;
}

/* ------------------------------------------------------------------ exit policies */
#define TD_LUT_SHIFT 24
#define TD_LUT_SIZE 256

int td_confident(const int16_t *logits, uint16_t n, int64_t lut_mult, uint32_t t16, const uint16_t *exp_lut)
{
    int32_t top = logits[td_argmax(logits, n)];
    uint32_t sum = 0;
    for (uint16_t k = 0; k < n; k++) {
        int64_t steps = ((int64_t)(top - logits[k]) * lut_mult + ((int64_t)1 << (TD_LUT_SHIFT - 1))) >> TD_LUT_SHIFT;
        sum += exp_lut[steps < TD_LUT_SIZE - 1 ? steps : TD_LUT_SIZE - 1];
    }
    return (uint64_t)65535u * 65536u >= (uint64_t)t16 * sum;
}

int td_margin_ok(const int16_t *logits, uint16_t n, int32_t margin)
{
    const uint16_t best = td_argmax(logits, n);
    int32_t second = INT32_MIN;
    for (uint16_t k = 0; k < n; k++) {
        if (k != best && logits[k] > second) second = logits[k];
    }
    if (n < 2) second = logits[best];
    return (int32_t)logits[best] - second >= margin;
}
