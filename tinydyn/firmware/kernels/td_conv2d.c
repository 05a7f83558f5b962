/* tinydyn kernels: conv2d, the out-of-line parts (see td_conv2d.h for the layer itself):
 * scratch carving, active channels, row pairs, the im2col variants, the multi-pair 2x2 dot
 * product and the grouped direct loops. */
#include "td_conv2d.h"

#include <string.h>

#include "td_internal.h"

#if defined(__ARM_FEATURE_DSP) && !defined(TD_PORTABLE)
#include <arm_acle.h>
#define TD_WIDEN_DSP 1
#else
#define TD_WIDEN_DSP 0
#endif

/* ------------------------------------------------------------------ scratch */
static uint32_t pairs_of(const td_conv_params_t *p) { return ((uint32_t)p->out_c + 1u) / 2u; }

/* The scratch td_conv2d carves, in its order: the active output channel list; with an input
 * mask the active input channel list and the column's input offsets (k*k*in_c uint16); the row-pair table and the accumulators (16 bytes per
 * output-channel pair each); a column pair (2 x row_len int16); with an input mask, row_group
 * compacted weight rows (all the active ones when row_group is 0) of at most row_len bytes.
 * Grouped: both lists and one flag per input channel. */
uint32_t td_conv2d_scratch_size(const td_conv_params_t *p, const td_gates_t *g)
{
    const uint32_t outs = TD_ALIGN4(2u * p->out_c);
    if (p->groups != 1) return outs + TD_ALIGN4(2u * p->in_c) + TD_ALIGN4(p->in_c);
    const uint32_t kk = (uint32_t)p->kernel * p->kernel;
    const uint32_t ins = g->input_mask == NULL ? 0u : TD_ALIGN4(2u * p->in_c) + TD_ALIGN4(2u * kk * p->in_c);
    const uint32_t rows = g->input_mask == NULL ? 0u : (p->row_group != 0 ? p->row_group : p->out_c);
    return outs + ins + 32u * pairs_of(p) + 4u * p->row_len + rows * p->row_len;
}

/* ------------------------------------------------------------------ set-up */
void td_conv2d_begin(td_ctx_t *ctx, const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
                     const void *residual, void *output, td_conv_run_t *run)
{
    uint8_t *s = ctx->scratch;
    run->out_idx = (uint16_t *)(void *)s;
    s += TD_ALIGN4(2u * p->out_c);
    const uint32_t kk = (uint32_t)p->kernel * p->kernel, hw = (uint32_t)p->out_h * p->out_w;
    run->in_idx = (uint16_t *)(void *)s;
    run->in_off = NULL;
    if (g->input_mask != NULL) {
        s += TD_ALIGN4(2u * p->in_c);
        run->in_off = (uint16_t *)(void *)s;
        s += TD_ALIGN4(2u * kk * p->in_c);
    }
    run->tab = (td_rowpair_t *)(void *)s;
    s += 16u * pairs_of(p);
    run->acc = (int32_t *)(void *)s;
    s += 16u * pairs_of(p);
    run->pair = (int16_t *)(void *)s;
    s += 4u * p->row_len;
    run->wbuf = (int8_t *)s;
    run->n_out = active_list(g->channel_gate, p->out_c, run->out_idx);
    run->n_in = g->input_mask != NULL ? active_list(g->input_mask, p->in_c, run->in_idx) : p->in_c;
    if (run->in_off != NULL) {
        /* the gather offsets of one window, computed once per call */
        const uint32_t k = p->kernel, in_c = p->in_c;
        if (((k - 1u) * (p->in_w + 1u) + 1u) * in_c <= 65535u && p->in_type == TD_U8) {
            uint32_t e = 0;
            for (uint32_t ky = 0; ky < k; ky++) {
                for (uint32_t kx = 0; kx < k; kx++) {
                    const uint32_t base = (ky * p->in_w + kx) * in_c;
                    for (uint32_t c = 0; c < run->n_in; c++) run->in_off[e++] = (uint16_t)(base + run->in_idx[c]);
                }
            }
        } else {
            run->in_off = NULL;
        }
    }
    ctx->macs += (uint32_t)run->n_out * run->n_in * kk * hw;
    if (g->channel_gate) {
        ctx->skipped_channels = (uint16_t)(ctx->skipped_channels + (p->out_c - run->n_out));
        if (run->n_out != p->out_c) {
            td_write_skipped(q, g->channel_gate, p->out_c, hw, residual, p->res_type, p->out_type, output);
        }
    }
    const int full = run->n_in == p->in_c;
    /* no active input: one group of zeros (the dot product needs at least one) */
    run->k4 = full ? p->row_len : (run->n_in == 0 ? 4u : TD_ALIGN4(kk * run->n_in));
    run->group = (full || p->row_group == 0) ? run->n_out : p->row_group;
    if (run->group == 0) run->group = 1; /* no active output: the pixel loop does not run */
}

/* Packed position of element k of a weight row: groups of 4 are stored [w0 w2 w1 w3]. */
static inline uint32_t packed_pos(uint32_t k) { return (k & ~3u) | ((k & 1u) << 1) | ((k >> 1) & 1u); }

uint32_t td_conv2d_rows(const td_conv_params_t *p, const td_quant_t *q, td_conv_run_t *run, uint32_t g0,
                        uint32_t gn)
{
    const int full = run->n_in == p->in_c;
    const uint32_t kk = (uint32_t)p->kernel * p->kernel, k4 = run->k4;
    run->rows = full ? p->weight : run->wbuf;
    for (uint32_t r = 0; r < gn; r++) {
        const uint32_t co = run->out_idx[g0 + r];
        uint32_t row = co * p->row_len;
        if (!full) {
            /* the row with only the active input channels, repacked */
            const int8_t *src = p->weight + row;
            int8_t *out = run->wbuf + r * k4;
            uint32_t k = 0;
            for (uint32_t pos = 0; pos < kk; pos++) {
                for (uint32_t j = 0; j < run->n_in; j++, k++) {
                    out[packed_pos(k)] = src[packed_pos(pos * p->in_c + run->in_idx[j])];
                }
            }
            for (; k < k4; k++) out[packed_pos(k)] = 0;
            row = r * k4;
        }
        td_rowpair_t *t = &run->tab[r >> 1];
        if (r & 1u) {
            t->w1 = row;
            t->b1 = q->bias[co];
        } else {
            t->w0 = t->w1 = row;
            t->b0 = t->b1 = q->bias[co];
        }
    }
    return (gn + 1u) / 2u;
}

/* ------------------------------------------------------------------ im2col */
/* Column j of a pair starts at pair + 4j; element k sits at (k/4)*8 + k%4 from there. */
static inline void col_put(int16_t *col, uint32_t k, int32_t v) { col[(k >> 2) * 8u + (k & 3u)] = (int16_t)v; }

static void col_zero(int16_t *col, uint32_t k, uint32_t n)
{
    uint32_t i = 0;
    if ((k & 3u) == 0) {
        uint32_t *dst = (uint32_t *)(void *)(col + (k >> 2) * 8u);
        for (; i + 4 <= n; i += 4, dst += 4) dst[0] = dst[1] = 0;
    }
    for (; i < n; i++) col_put(col, k + i, 0);
}

/* n4 groups of four bytes (b0 b1 b2 b3) from src to the column's int16 pairs (b0, b1), (b2, b3)
 * at dst (4 words apart): UXTB16/SXTB16 of the word and of the word rotated by 8 give (b0, b2)
 * and (b1, b3); PKHBT/PKHTB interleave them. 6 instructions per 4 elements on Cortex-M4. */
#if TD_WIDEN_DSP
#define TD_WIDEN_WORD(ext, w, a, b)                                                                            \
    do {                                                                                                       \
        uint32_t e_, o_;                                                                                       \
        __asm__(ext " %[e], %[x]\n\t" ext " %[o], %[x], ror #8\n\t"                                            \
                "pkhbt %[pa], %[e], %[o], lsl #16\n\t"                                                          \
                "pkhtb %[pb], %[o], %[e], asr #16"                                                              \
                : [pa] "=&r"(a), [pb] "=&r"(b), [e] "=&r"(e_), [o] "=&r"(o_)                                     \
                : [x] "r"(w));                                                                                 \
    } while (0)
#define TD_WIDEN_U8(w, a, b) TD_WIDEN_WORD("uxtb16", w, a, b)
#define TD_WIDEN_S8(w, a, b) TD_WIDEN_WORD("sxtb16", w, a, b)
#else
#define TD_WIDEN_U8(w, a, b)                                                                                   \
    do {                                                                                                       \
        const uint32_t e_ = (w) & 0x00FF00FFu, o_ = ((w) >> 8) & 0x00FF00FFu;                                  \
        a = (e_ & 0xFFFFu) | (o_ << 16);                                                                       \
        b = (o_ & 0xFFFF0000u) | (e_ >> 16);                                                                   \
    } while (0)
#define TD_S8_H(w, sh) ((uint32_t)(uint16_t)(int16_t)(int8_t)(uint8_t)((w) >> (sh)))
#define TD_WIDEN_S8(w, a, b)                                                                                   \
    do {                                                                                                       \
        a = TD_S8_H(w, 0) | (TD_S8_H(w, 8) << 16);                                                             \
        b = TD_S8_H(w, 16) | (TD_S8_H(w, 24) << 16);                                                           \
    } while (0)
#endif

static void widen_u8(uint32_t *dst, const uint8_t *src, uint32_t n4)
{
    for (; n4 >= 2; n4 -= 2, src += 8, dst += 8) {
        uint32_t w0, w1, a0, b0, a1, b1;
        memcpy(&w0, src, 4);
        memcpy(&w1, src + 4, 4);
        TD_WIDEN_U8(w0, a0, b0);
        TD_WIDEN_U8(w1, a1, b1);
        dst[0] = a0;
        dst[1] = b0;
        dst[4] = a1;
        dst[5] = b1;
    }
    if (n4) {
        uint32_t w, a, b;
        memcpy(&w, src, 4);
        TD_WIDEN_U8(w, a, b);
        dst[0] = a;
        dst[1] = b;
    }
}

static void widen_s8(uint32_t *dst, const int8_t *src, uint32_t n4)
{
    for (; n4; n4--, src += 4, dst += 4) {
        uint32_t w, a, b;
        memcpy(&w, src, 4);
        TD_WIDEN_S8(w, a, b);
        dst[0] = a;
        dst[1] = b;
    }
}

/* n elements of type `type` from src as elements k.. of the column; whole words where k is on
 * a group of 4 and the input is 8-bit. */
static void col_run(int16_t *col, uint32_t k, const void *src, uint32_t n, uint8_t type)
{
    uint32_t i = 0;
    if (type == TD_S16) {
        for (; i < n; i++) col_put(col, k + i, ((const int16_t *)src)[i]);
        return;
    }
    if ((k & 3u) == 0) {
        uint32_t *dst = (uint32_t *)(void *)(col + (k >> 2) * 8u);
        i = n & ~3u;
        if (type == TD_S8) {
            widen_s8(dst, (const int8_t *)src, n >> 2);
        } else {
            widen_u8(dst, (const uint8_t *)src, n >> 2);
        }
    }
    if (type == TD_S8) {
        for (; i < n; i++) col_put(col, k + i, ((const int8_t *)src)[i]);
    } else {
        for (; i < n; i++) col_put(col, k + i, ((const uint8_t *)src)[i]);
    }
}

static const void *elem_ptr(const void *base, uint8_t type, uint32_t i)
{
    return (const uint8_t *)base + (type == TD_S16 ? 2u * i : i);
}

/* One k x k column, every input channel: contiguous kernel rows are one run. */
static void col_kxk(const td_conv_params_t *p, const void *input, uint32_t pix, int16_t *col, uint32_t k4)
{
    const int32_t kernel = p->kernel, in_h = p->in_h, in_w = p->in_w;
    const uint32_t in_c = p->in_c, row = (uint32_t)kernel * in_c;
    const uint8_t type = p->in_type;
    const int32_t oy = (int32_t)(pix / p->out_w), ox = (int32_t)(pix % p->out_w);
    const int32_t iy0 = oy * p->stride - p->pad, ix0 = ox * p->stride - p->pad;
    uint32_t k = 0;
    for (int32_t ky = 0; ky < kernel; ky++, k += row) {
        const int32_t iy = iy0 + ky;
        if (iy < 0 || iy >= in_h) {
            col_zero(col, k, row);
        } else if (ix0 >= 0 && ix0 + kernel <= in_w) {
            col_run(col, k, elem_ptr(input, type, ((uint32_t)iy * (uint32_t)in_w + (uint32_t)ix0) * in_c), row, type);
        } else {
            for (int32_t kx = 0; kx < kernel; kx++) {
                const int32_t ix = ix0 + kx;
                if (ix < 0 || ix >= in_w) {
                    col_zero(col, k + (uint32_t)kx * in_c, in_c);
                } else {
                    col_run(col, k + (uint32_t)kx * in_c,
                            elem_ptr(input, type, ((uint32_t)iy * (uint32_t)in_w + (uint32_t)ix) * in_c), in_c, type);
                }
            }
        }
    }
    if (k < k4) col_zero(col, k, k4 - k);
}

void td_im2col_col(const td_conv_params_t *p, const void *input, uint32_t pix, int j, const td_conv_run_t *run)
{
    col_kxk(p, input, pix, run->pair + 4 * j, run->k4);
}

void td_im2col_kxk(const td_conv_params_t *p, const void *input, uint32_t pix, int two, const td_conv_run_t *run)
{
    col_kxk(p, input, pix, run->pair, run->k4);
    if (two) col_kxk(p, input, pix + 1, run->pair + 4, run->k4);
}

/* 1x1 (any stride, no padding): the column is the input pixel's channel vector. */
void td_im2col_1x1(const td_conv_params_t *p, const void *input, uint32_t pix, int two, const td_conv_run_t *run)
{
    const uint32_t in_c = p->in_c, s = p->stride, out_w = p->out_w;
    for (int j = 0; j <= two; j++, pix++) {
        const uint32_t oy = pix / out_w, ox = pix % out_w;
        int16_t *col = run->pair + 4 * j;
        col_run(col, 0, elem_ptr(input, p->in_type, (oy * s * p->in_w + ox * s) * in_c), in_c, p->in_type);
        if (in_c < run->k4) col_zero(col, in_c, run->k4 - in_c);
    }
}

/* Masked input channels: the active ones only, gathered through the index list. */
void td_im2col_masked(const td_conv_params_t *p, const void *input, uint32_t pix, int two, const td_conv_run_t *run)
{
    const int32_t kernel = p->kernel, in_h = p->in_h, in_w = p->in_w;
    const uint32_t in_c = p->in_c, n_in = run->n_in;
    const uint16_t *idx = run->in_idx;
    for (int j = 0; j <= two; j++, pix++) {
        int16_t *col = run->pair + 4 * j;
        const int32_t oy = (int32_t)(pix / p->out_w), ox = (int32_t)(pix % p->out_w);
        const int32_t iy0 = oy * p->stride - p->pad, ix0 = ox * p->stride - p->pad;
        if (run->in_off != NULL && iy0 >= 0 && ix0 >= 0 && iy0 + kernel <= in_h && ix0 + kernel <= in_w) {
            /* the whole window inside: gather through the offsets, two elements per word */
            const uint8_t *src = (const uint8_t *)input + ((uint32_t)iy0 * (uint32_t)in_w + (uint32_t)ix0) * in_c;
            const uint16_t *off = run->in_off;
            const uint32_t n = (uint32_t)kernel * (uint32_t)kernel * n_in;
            uint32_t *dst = (uint32_t *)(void *)col;
            uint32_t e = 0;
            for (; e + 4 <= n; e += 4, dst += 4, off += 4) {
                dst[0] = (uint32_t)src[off[0]] | ((uint32_t)src[off[1]] << 16);
                dst[1] = (uint32_t)src[off[2]] | ((uint32_t)src[off[3]] << 16);
            }
            for (; e < n; e++, off++) col_put(col, e, src[off[0]]);
            if (n < run->k4) col_zero(col, n, run->k4 - n);
            continue;
        }
        uint32_t k = 0;
        for (int32_t ky = 0; ky < kernel; ky++) {
            const int32_t iy = iy0 + ky;
            for (int32_t kx = 0; kx < kernel; kx++, k += n_in) {
                const int32_t ix = ix0 + kx;
                if (iy < 0 || iy >= in_h || ix < 0 || ix >= in_w) {
                    col_zero(col, k, n_in);
                    continue;
                }
                const uint32_t base = ((uint32_t)iy * (uint32_t)in_w + (uint32_t)ix) * in_c;
                if (p->in_type == TD_U8) {
                    const uint8_t *src = (const uint8_t *)input + base;
                    for (uint32_t c = 0; c < n_in; c++) col_put(col, k + c, src[idx[c]]);
                } else {
                    for (uint32_t c = 0; c < n_in; c++) col_put(col, k + c, load_elem(input, p->in_type, base + idx[c]));
                }
            }
        }
        if (k < run->k4) col_zero(col, k, run->k4 - k);
    }
}

/* ------------------------------------------------------------------ dot products */
#if TD_USE_DSP && defined(__ARM_FEATURE_DSP) && !defined(TD_EMULATE_DSP)
/* r0 = rows, r1 = tab, r2 = n_pairs (> 0), r3 = pair, [sp] = groups (> 0), [sp, #4] = acc. Per group of 4
 * elements: one LDM for both columns, one LDR + two SXTB16 per weight row, 8 SMLAD; the loop
 * is unrolled twice (an odd count enters in the middle): 32 instructions per 32 MACs. */
__asm__(
    "    .syntax unified\n"
    "    .thumb\n"
    "    .text\n"
    "    .global td_mm_rows\n"
    "    .type td_mm_rows, %function\n"
    "    .thumb_func\n"
    "td_mm_rows:\n"
    "    push {r4-r11, lr}\n"
    "    sub sp, sp, #16\n"
    "    stm sp, {r0, r1, r2, r3}\n"        /* [sp] rows, tab, n_pairs, pair; groups, acc at [sp, #52] */
    "0:  ldr r12, [sp, #4]\n"
    "    ldmia r12!, {r0, r1, r4, r5}\n"    /* w0, w1 (offsets), b0, b1 */
    "    str r12, [sp, #4]\n"
    "    ldr r12, [sp]\n"
    "    add r0, r0, r12\n"
    "    add r1, r1, r12\n"
    "    mov r6, r4\n"
    "    mov r7, r5\n"
    "    ldr r2, [sp, #12]\n"
    "    ldr r3, [sp, #52]\n"
    "    lsrs r3, r3, #1\n"
    "    bcc 1f\n"
    "    adds r3, r3, #1\n"
    "    b 2f\n"
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
    "2:  ldmia r2!, {r8, r9, r10, r11}\n"
    "    ldr r12, [r0], #4\n"
    "    sxtb16 lr, r12\n"
    "    smlad r4, lr, r8, r4\n"
    "    smlad r6, lr, r10, r6\n"
    "    sxtb16 r12, r12, ror #8\n"
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
    "    ldr r12, [sp, #56]\n"
    "    stmia r12!, {r4, r5, r6, r7}\n"
    "    str r12, [sp, #56]\n"
    "    ldr r12, [sp, #8]\n"
    "    subs r12, r12, #1\n"
    "    str r12, [sp, #8]\n"
    "    bne 0b\n"
    "    add sp, sp, #16\n"
    "    pop {r4-r11, pc}\n"
    "    .size td_mm_rows, .-td_mm_rows\n");
#else
/* the same arithmetic in C: the 2x2 dot product of td_internal.h (emulated intrinsics with
 * TD_EMULATE_DSP, plain C otherwise) for each pair */
void td_mm_rows(const int8_t *rows, const td_rowpair_t *tab, uint32_t n_pairs, const int16_t *pair, uint32_t groups,
                int32_t *acc)
{
    for (uint32_t r = 0; r < n_pairs; r++, acc += 4) {
        acc[0] = acc[2] = tab[r].b0;
        acc[1] = acc[3] = tab[r].b1;
        td_mm_2x2(rows + tab[r].w0, rows + tab[r].w1, pair, 4u * groups, acc);
    }
}
#endif

/* ------------------------------------------------------------------ grouped */
static inline int32_t gate_of(const td_gates_t *g, uint16_t c)
{
    if (g->channel_gate) return g->channel_gate[c];
    if (g->block_gate) return g->block_gate[0];
    return 1;
}

/* Grouped or depthwise convolution, direct loops (portable on every target). */
void td_conv2d_grouped(td_ctx_t *ctx, const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
                       const void *input, const void *residual, void *output)
{
    uint8_t *s = ctx->scratch;
    uint16_t *out_idx = (uint16_t *)(void *)s;
    s += TD_ALIGN4(2u * p->out_c);
    uint16_t *in_idx = (uint16_t *)(void *)s;
    s += TD_ALIGN4(2u * p->in_c);
    const uint16_t n_out = active_list(g->channel_gate, p->out_c, out_idx);
    (void)active_list(g->input_mask, p->in_c, in_idx);
    const uint32_t kk = (uint32_t)p->kernel * p->kernel, hw = (uint32_t)p->out_h * p->out_w;
    if (g->channel_gate) {
        ctx->skipped_channels = (uint16_t)(ctx->skipped_channels + (p->out_c - n_out));
        td_write_skipped(q, g->channel_gate, p->out_c, hw, residual, p->res_type, p->out_type, output);
    }
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
            store_elem(output, p->out_type, i, requant_q(q, co, acc, gate_of(g, co), residual, p->res_type, i));
        }
    }
}
