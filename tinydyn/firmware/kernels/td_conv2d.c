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

/* Elements of a compacted column (and bytes of a compacted weight row) at most: k kernel rows of
 * k * in_c elements, each rounded up to 4 (masked input only; >= row_len). */
static uint32_t masked_len(const td_conv_params_t *p)
{
    return (uint32_t)p->kernel * TD_ALIGN4((uint32_t)p->kernel * p->in_c);
}

/* int16 elements of one ring row for n active input channels: the padded input row, plus the 3
 * elements the last window's kernel row, read as whole groups of 4, may pass its end by; even,
 * so that every row starts on a word. */
static uint32_t ring_stride(const td_conv_params_t *p, uint32_t n)
{
    return (((uint32_t)p->in_w + 2u * p->pad) * n + 3u + 1u) & ~1u;
}

/* The int16 ring: masked 8-bit convs always, unmasked 8-bit ones where the planner granted it. */
static int has_ring(const td_conv_params_t *p, const td_gates_t *g)
{
    return p->in_type != TD_S16 && (g->input_mask != NULL || p->ring);
}

/* k ring rows, k + stride when an output row has an odd width: then a pixel pair can end one
 * output row and start the next, whose input rows the ring must hold at the same time */
static uint32_t ring_rows(const td_conv_params_t *p)
{
    return (uint32_t)p->kernel + ((p->out_w & 1u) ? p->stride : 0u);
}

static uint32_t ring_bytes(const td_conv_params_t *p) { return 2u * ring_rows(p) * ring_stride(p, p->in_c); }

/* The scratch td_conv2d carves, in its order: the active output channel list; with an input
 * mask the active input channel list and the compaction's source list (round4(k*k*in_c)
 * uint16); for 8-bit input, the ring of k input rows; the row-pair
 * table and the accumulators (16 bytes per output-channel pair each); a column pair (2 x the
 * column length int16); with an input mask, row_group compacted weight rows (all when row_group
 * is 0) of at most masked_len bytes. Grouped: both lists and one flag per input channel. */
uint32_t td_conv2d_scratch_size(const td_conv_params_t *p, const td_gates_t *g)
{
    const uint32_t outs = TD_ALIGN4(2u * p->out_c);
    if (p->groups != 1) return outs + TD_ALIGN4(2u * p->in_c) + TD_ALIGN4(p->in_c);
    const uint32_t ring = has_ring(p, g) ? ring_bytes(p) : 0u;
    if (g->input_mask == NULL) {
        const uint32_t plain = outs + ring + 32u * pairs_of(p) + 4u * p->row_len;
        /* a one-channel 3x3 stem (td_conv2d_stem3): 7 words per output channel */
        if (p->in_c == 1 && p->kernel == 3 && p->in_type == TD_U8 && 28u * p->out_c > plain) return 28u * p->out_c;
        return plain;
    }
    const uint32_t k = p->kernel, len = masked_len(p);
    const uint32_t lists = TD_ALIGN4(2u * p->in_c) + 2u * TD_ALIGN4(k * k * p->in_c);
    const uint32_t rows = p->row_group != 0 ? p->row_group : p->out_c;
    return outs + lists + ring + 32u * pairs_of(p) + 4u * len + rows * len;
}

/* Packed position of element k of a weight row: groups of 4 are stored [w0 w2 w1 w3]. */
static inline uint32_t packed_pos(uint32_t k) { return (k & ~3u) | ((k & 1u) << 1) | ((k >> 1) & 1u); }

/* ------------------------------------------------------------------ set-up */
void td_conv2d_begin(td_ctx_t *ctx, const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
                     const void *residual, void *output, td_conv_run_t *run)
{
    uint8_t *s = ctx->scratch;
    const uint32_t k = p->kernel, kk = k * k, hw = (uint32_t)p->out_h * p->out_w;
    const int masked = g->input_mask != NULL;
    run->out_idx = (uint16_t *)(void *)s;
    s += TD_ALIGN4(2u * p->out_c);
    run->in_idx = (uint16_t *)(void *)s;
    run->src_list = NULL;
    run->ring = NULL;
    if (masked) {
        s += TD_ALIGN4(2u * p->in_c);
        run->src_list = (uint16_t *)(void *)s;
        s += 2u * TD_ALIGN4(kk * p->in_c);
    }
    if (has_ring(p, g)) {
        run->ring = (int16_t *)(void *)s;
        s += ring_bytes(p);
    }
    run->tab = (td_rowpair_t *)(void *)s; /* 32 bytes per pair: rows, biases, accumulators */
    s += 32u * pairs_of(p);
    run->pair = (int16_t *)(void *)s;
    const uint32_t len = masked ? masked_len(p) : p->row_len;
    s += 4u * len;
    run->wbuf = (int8_t *)s;
    run->n_out = active_list(g->channel_gate, p->out_c, run->out_idx);
    run->n_in = masked ? active_list(g->input_mask, p->in_c, run->in_idx) : p->in_c;
    const int full = run->n_in == p->in_c;
    run->kr = (uint16_t)(k * run->n_in);
    if (!full) {
        /* compacted layout: element (ky, kx, j) of a column or row at (ky*k + kx)*n_in + j (the
         * full rows' layout with the active channels only), zero-padded to a multiple of 4. */
        const uint32_t n = run->n_in, total = kk * n, kn = k * n, krp = TD_ALIGN4(kn);
        if (n == 0) run->ring = NULL; /* no active input: the element path writes zeros */
        /* Through the ring, when padding every kernel row to whole groups of 4 costs no column
         * element more than padding the end (k * round4(k*n) == round4(k*k*n)): kernel row ky at
         * ky * round4(k*n), so the column pair is whole-group copies (td_ring_cols_aligned where
         * the sources are word-aligned), no partial first groups. run->kr = round4(k*n) marks
         * this layout. */
        if (run->ring != NULL && (kn & 3u) != 0 && k * krp == TD_ALIGN4(total)) run->kr = (uint16_t)krp;
        /* The source byte, in the packed full row, of each packed byte of a compacted row (byte b
         * holds element packed_pos(b)): element (ky, kx, j) comes from (ky*k + kx)*in_c + in_idx[j].
         * Padding bytes read byte 0 and their word is masked (pad_*): the gather has no branch. */
        uint16_t *src = run->src_list;
        const uint32_t krow = run->kr != kn ? krp : kn; /* layout elements from one kernel row to the next */
        for (uint32_t ky = 0; ky < k; ky++) {
            for (uint32_t kx = 0; kx < k; kx++) {
                const uint32_t from = (ky * k + kx) * p->in_c, to = ky * krow + kx * n;
                for (uint32_t j = 0; j < n; j++) src[packed_pos(to + j)] = (uint16_t)packed_pos(from + run->in_idx[j]);
            }
        }
        /* padded words: each kernel row's last (row-padded), else the row's last (none when the
         * elements fill whole words; the one word of zeros without active input) */
        const uint32_t valid = (run->kr != kn ? kn : total) & 3u;
        static const uint32_t keep[4] = {0u, 0x000000FFu, 0x00FF00FFu, 0x00FFFFFFu}; /* elements 0..v-1, packed */
        run->pad_mask = keep[valid];
        run->pad_first = (uint16_t)((run->kr != kn ? kn : total) >> 2);
        run->pad_step = (uint16_t)(krp >> 2);
        run->pad_count = (uint16_t)(run->kr != kn ? k : (valid != 0 || n == 0));
        for (uint32_t i = 0; i < run->pad_count; i++) {
            for (uint32_t e = valid; e < 4u; e++) src[4u * (run->pad_first + i * run->pad_step) + packed_pos(e)] = 0;
        }
    }
    if (run->ring != NULL) {
        run->ring_stride = ring_stride(p, run->n_in);
        run->ring_rows = ring_rows(p);
        const uint32_t size = 2u * run->ring_rows * run->ring_stride;
        run->copy.groups = run->kr / 4u;
        run->copy.k = k;
        run->copy.adv = 2u * run->ring_stride - 8u * run->copy.groups;
        run->copy.size = size;
        run->copy.end = (uintptr_t)run->ring + size;
        run->copy.kn = run->kr;
        run->copy.row_bytes = 2u * run->ring_stride;
    }
    ctx->macs += (uint32_t)run->n_out * run->n_in * kk * hw;
    if (g->channel_gate) {
        ctx->skipped_channels = (uint16_t)(ctx->skipped_channels + (p->out_c - run->n_out));
        if (run->n_out != p->out_c && !p->skipped_dead) {
            td_write_skipped(q, g->channel_gate, p->out_c, hw, residual, p->res_type, p->out_type, output);
        }
    }
    /* no active input: one group of zeros (the dot product needs at least one) */
    run->k4 = full ? p->row_len : (run->n_in == 0 ? 4u : TD_ALIGN4(kk * run->n_in));
    if (full || p->row_group == 0) {
        run->group = run->n_out;
    } else {
        /* as many compacted rows as the granted bytes hold at this call's row length (even) */
        uint32_t rows = ((uint32_t)p->row_group * len / run->k4) & ~1u;
        if (rows < 2u) rows = 2u;
        run->group = (uint16_t)(rows < run->n_out ? rows : run->n_out);
    }
    if (run->group == 0) run->group = 1; /* no active output: the pixel loop does not run */
}

/* words packed words of 4 bytes each for two rows at once, byte i of word w of row j from
 * sj[sl[4w + i]]: each source index is loaded once for both rows (13 instructions a word on
 * the M4 instead of 15 row by row). One row: the same source and output twice. */
static void td_gather_words2(uint32_t *out0, uint32_t *out1, const uint8_t *s0, const uint8_t *s1, const uint16_t *sl,
                             uint32_t words)
{
    for (uint32_t w = 0; w < words; w++, sl += 4) {
        const uint32_t i0 = sl[0], i1 = sl[1], i2 = sl[2], i3 = sl[3];
        out0[w] = (uint32_t)s0[i0] | ((uint32_t)s0[i1] << 8) | ((uint32_t)s0[i2] << 16) | ((uint32_t)s0[i3] << 24);
        out1[w] = (uint32_t)s1[i0] | ((uint32_t)s1[i1] << 8) | ((uint32_t)s1[i2] << 16) | ((uint32_t)s1[i3] << 24);
    }
}

/* a compacted row's padded words: only the bytes that hold weights kept */
static void td_mask_pad(uint32_t *out, const td_conv_run_t *run)
{
    for (uint32_t i = 0, w = run->pad_first; i < run->pad_count; i++, w += run->pad_step) out[w] &= run->pad_mask;
}

uint32_t td_conv2d_rows(const td_conv_params_t *p, const td_quant_t *q, td_conv_run_t *run, uint32_t g0,
                        uint32_t gn)
{
    const int full = run->n_in == p->in_c;
    const uint32_t k4 = run->k4;
    run->rows = full ? p->weight : run->wbuf;
    for (uint32_t r = 0; r < gn; r++) {
        const uint32_t co = run->out_idx[g0 + r];
        uint32_t row = co * p->row_len;
        if (!full) {
            /* the rows with only the active input channels, in the compacted layout: packed words
             * of 4 gathered bytes, two rows at a time, then the padded words masked */
            if ((r & 1u) == 0) {
                const int two = r + 1 < gn;
                uint32_t *out0 = (uint32_t *)(void *)(run->wbuf + r * k4), *out1 = two ? out0 + k4 / 4u : out0;
                const uint8_t *w = (const uint8_t *)p->weight;
                const uint32_t row1 = two ? run->out_idx[g0 + r + 1] * p->row_len : row;
                td_gather_words2(out0, out1, w + row, w + row1, run->src_list, k4 / 4u);
                td_mask_pad(out0, run);
                td_mask_pad(out1, run);
            }
            row = r * k4;
        }
        td_rowpair_t *t = &run->tab[r >> 1];
        const uint32_t ref = TD_ROW_REF(run->rows, row);
        if (r & 1u) {
            t->w1 = ref;
            t->b1 = q->bias[co];
        } else {
            t->w0 = t->w1 = ref;
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

/* n elements of type `type` from src as elements k.. of the column: 8-bit input element by
 * element up to the column's next group of 4, whole words from there (a run that starts inside
 * a group, e.g. the second kernel row of 3 x 6 channels at k = 18, still widens by words), the
 * rest element by element. */
static void col_run(int16_t *col, uint32_t k, const void *src, uint32_t n, uint8_t type)
{
    uint32_t i = 0;
    if (type == TD_S16) {
        for (; i < n; i++) col_put(col, k + i, ((const int16_t *)src)[i]);
        return;
    }
    const uint32_t head = (4u - (k & 3u)) & 3u;
    if (n >= head + 4u) {
        for (; i < head; i++) {
            col_put(col, k + i, type == TD_S8 ? ((const int8_t *)src)[i] : ((const uint8_t *)src)[i]);
        }
        uint32_t *dst = (uint32_t *)(void *)(col + ((k + i) >> 2) * 8u);
        const uint32_t n4 = (n - i) >> 2;
        if (type == TD_S8) {
            widen_s8(dst, (const int8_t *)src + i, n4);
        } else {
            widen_u8(dst, (const uint8_t *)src + i, n4);
        }
        i += 4u * n4;
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

/* 1x1 (any stride, no padding): the column is the input pixel's channel vector. uint8 input with
 * whole groups of 4 channels (the bundled models' shortcuts): both pixels' vectors in one loop, a
 * word of each widened per group (17 instructions per group of 4 channels of both pixels);
 * otherwise col_run per column. */
void td_im2col_1x1(const td_conv_params_t *p, const void *input, uint32_t pix, int two, const td_conv_run_t *run)
{
    const uint32_t in_c = p->in_c, s = p->stride, out_w = p->out_w;
    if (p->in_type == TD_U8 && (in_c & 3u) == 0) {
        uint32_t oy = pix / out_w, ox = pix - oy * out_w;
        const uint8_t *a = (const uint8_t *)input + (oy * s * p->in_w + ox * s) * in_c, *b = a;
        if (two) {
            if (++ox == out_w) {
                ox = 0;
                oy++;
            }
            b = (const uint8_t *)input + (oy * s * p->in_w + ox * s) * in_c; /* else column 1 repeats 0 */
        }
        for (uint32_t *d = (uint32_t *)(void *)run->pair, *const end = d + in_c; d != end; d += 4, a += 4, b += 4) {
            uint32_t wa, wb, a0, a1, b0, b1;
            memcpy(&wa, a, 4);
            memcpy(&wb, b, 4);
            TD_WIDEN_U8(wa, a0, a1);
            TD_WIDEN_U8(wb, b0, b1);
            d[0] = a0;
            d[1] = a1;
            d[2] = b0;
            d[3] = b1;
        }
        return; /* k4 = row_len = in_c: no padding */
    }
    for (int j = 0; j <= two; j++, pix++) {
        const uint32_t oy = pix / out_w, ox = pix % out_w;
        int16_t *col = run->pair + 4 * j;
        col_run(col, 0, elem_ptr(input, p->in_type, (oy * s * p->in_w + ox * s) * in_c), in_c, p->in_type);
        if (in_c < run->k4) col_zero(col, in_c, run->k4 - in_c);
    }
}

/* Masked input channels, element by element, in the compacted layout (see td_conv2d_begin). */
void td_im2col_masked(const td_conv_params_t *p, const void *input, uint32_t pix, int two, const td_conv_run_t *run)
{
    const int32_t kernel = p->kernel, in_h = p->in_h, in_w = p->in_w;
    const uint32_t in_c = p->in_c, n_in = run->n_in, kn = (uint32_t)kernel * n_in, total = kn * (uint32_t)kernel;
    const uint16_t *idx = run->in_idx;
    for (int j = 0; j <= two; j++, pix++) {
        int16_t *col = run->pair + 4 * j;
        if (n_in == 0) {
            col_zero(col, 0, 4);
            continue;
        }
        const int32_t oy = (int32_t)(pix / p->out_w), ox = (int32_t)(pix % p->out_w);
        const int32_t iy0 = oy * p->stride - p->pad, ix0 = ox * p->stride - p->pad;
        for (int32_t ky = 0; ky < kernel; ky++) {
            const int32_t iy = iy0 + ky;
            const uint32_t k0 = (uint32_t)ky * kn;
            for (int32_t kx = 0; kx < kernel; kx++) {
                const int32_t ix = ix0 + kx;
                const uint32_t k = k0 + (uint32_t)kx * n_in;
                if (iy < 0 || iy >= in_h || ix < 0 || ix >= in_w) {
                    col_zero(col, k, n_in);
                    continue;
                }
                const uint32_t base = ((uint32_t)iy * (uint32_t)in_w + (uint32_t)ix) * in_c;
                for (uint32_t c = 0; c < n_in; c++) col_put(col, k + c, load_elem(input, p->in_type, base + idx[c]));
            }
        }
        if (total < run->k4) col_zero(col, total, run->k4 - total);
    }
}

/* count 8-bit elements from src (any alignment) to int16 at dst (on a half-word): after at most
 * one element, 8 at a time as two words (UXTB16/SXTB16 and PKHBT/PKHTB, as for a column), the
 * rest one by one. */
static void widen_run16(int16_t *dst, const void *src, uint32_t count, uint8_t type)
{
    if (((uintptr_t)dst & 3u) != 0 && count != 0) { /* one element first: dst on a word */
        *dst++ = type == TD_S8 ? *(const int8_t *)src : *(const uint8_t *)src;
        src = (const uint8_t *)src + 1;
        count--;
    }
    uint32_t i = 0;
    {
        /* two words (8 elements) a step, the element type chosen once */
        uint32_t *d = (uint32_t *)(void *)dst;
        const uint8_t *s = (const uint8_t *)src;
        const uint32_t n8 = count / 8u;
        i = 8u * n8;
        if (type == TD_S8) {
            for (uint32_t j = 0; j < n8; j++, s += 8, d += 4) {
                uint32_t w0, w1, a0, b0, a1, b1;
                memcpy(&w0, s, 4);
                memcpy(&w1, s + 4, 4);
                TD_WIDEN_S8(w0, a0, b0);
                TD_WIDEN_S8(w1, a1, b1);
                d[0] = a0;
                d[1] = b0;
                d[2] = a1;
                d[3] = b1;
            }
        } else {
            for (uint32_t j = 0; j < n8; j++, s += 8, d += 4) {
                uint32_t w0, w1, a0, b0, a1, b1;
                memcpy(&w0, s, 4);
                memcpy(&w1, s + 4, 4);
                TD_WIDEN_U8(w0, a0, b0);
                TD_WIDEN_U8(w1, a1, b1);
                d[0] = a0;
                d[1] = b0;
                d[2] = a1;
                d[3] = b1;
            }
        }
    }
    if (type == TD_S8) {
        for (; i < count; i++) dst[i] = ((const int8_t *)src)[i];
    } else {
        for (; i < count; i++) dst[i] = ((const uint8_t *)src)[i];
    }
}

static void zero16(int16_t *dst, int16_t *end)
{
    while (dst < end && ((uintptr_t)dst & 3u) != 0) *dst++ = 0;
    for (; dst + 2 <= end; dst += 2) *(uint32_t *)(void *)dst = 0;
    if (dst < end) *dst = 0;
}

/* The input rows output row oy reads, up to its last, into the ring (zeros outside the input):
 * row iy into slot (iy + pad) mod ring_rows, the padded row's pixels with their active
 * channels only, widened to int16, then zeros to the end of the slot. */
void td_conv2d_ring_fill(const td_conv_params_t *p, const void *input, td_conv_run_t *run, uint32_t oy)
{
    const int32_t k = p->kernel, pad = p->pad;
    const int32_t first = (int32_t)oy * p->stride - pad, last = first + k - 1;
    const uint32_t n = run->n_in, in_c = p->in_c, stride = run->ring_stride, rows = run->ring_rows;
    const uint16_t *idx = run->in_idx;
    if (run->ring_next < first) run->ring_next = first; /* rows no window reads (stride > k) */
    for (; run->ring_next <= last; run->ring_next++) {
        const int32_t iy = run->ring_next;
        int16_t *dst = run->ring + (uint32_t)(iy + pad) % rows * stride, *end = dst + stride;
        if (iy < 0 || iy >= (int32_t)p->in_h) {
            zero16(dst, end);
            continue;
        }
        zero16(dst, dst + (uint32_t)pad * n);
        dst += (uint32_t)pad * n;
        if (n == in_c || p->compact_in) {
            /* every channel, or a compact input (its n active channels per pixel): one run */
            const uint8_t *src = (const uint8_t *)input + (uint32_t)iy * p->in_w * n;
            widen_run16(dst, src, (uint32_t)p->in_w * n, p->in_type);
            dst += (uint32_t)p->in_w * n;
            zero16(dst, end);
            continue;
        }
        const uint8_t *src = (const uint8_t *)input + (uint32_t)iy * p->in_w * in_c;
        if (p->in_type == TD_S8) {
            for (uint32_t ix = 0; ix < p->in_w; ix++, src += in_c) {
                for (uint32_t j = 0; j < n; j++) *dst++ = (int8_t)src[idx[j]];
            }
        } else {
            for (uint32_t ix = 0; ix < p->in_w; ix++, src += in_c) {
                uint32_t j = 0;
                for (; j + 2 <= n; j += 2, dst += 2) {
                    const int16_t a = src[idx[j]], b = src[idx[j + 1]];
                    dst[0] = a;
                    dst[1] = b;
                }
                if (j < n) *dst++ = src[idx[j]];
            }
        }
        zero16(dst, end);
    }
}

/* The column pair from the ring: for each of c->k kernel rows, c->groups groups of 4 int16 from
 * x0 and from x1 into the pair (x0[k..k+3], x1[k..k+3]); after a kernel row both sources move
 * to the next ring row (c->adv bytes on from where the copy stopped, wrapping around the ring's
 * end). td_ring_cols_rows below takes every other case. */
#if TD_WIDEN_DSP && defined(__thumb2__) && !defined(TD_EMULATE_DSP)
/* r0 = dst, r1 = x0, r2 = x1, r3 = c ({adv, end, size, groups, k}), word-aligned sources: two
 * groups per LDM of each column and two STMs (3 instructions a group). An odd group count copies
 * one group first. */
#define TD_ASM_RING_COLS(name, one, two)                                                                       \
    "    .global " name "\n"                                                                                   \
    "    .type " name ", %function\n"                                                                          \
    "    .thumb_func\n" name ":\n"                                                                             \
    "    push {r4-r11, lr}\n"                                                                                  \
    "    ldr lr, [r3, #16]\n"                                                                                  \
    "0:  ldr r12, [r3, #12]\n"                                                                                 \
    "    lsrs r12, r12, #1\n"                                                                                  \
    "    bcc 1f\n" one "    stmia r0!, {r4-r7}\n"                                                              \
    "1:  beq 3f\n"                                                                                             \
    "2:" two "    stmia r0!, {r4-r7}\n"                                                                        \
    "    stmia r0!, {r8-r11}\n"                                                                                \
    "    subs r12, r12, #1\n"                                                                                  \
    "    bne 2b\n"                                                                                             \
    "3:  ldm r3, {r4, r5, r6}\n"                                                                               \
    "    add r1, r1, r4\n"                                                                                     \
    "    cmp r1, r5\n"                                                                                         \
    "    it hs\n"                                                                                              \
    "    subhs r1, r1, r6\n"                                                                                   \
    "    add r2, r2, r4\n"                                                                                     \
    "    cmp r2, r5\n"                                                                                         \
    "    it hs\n"                                                                                              \
    "    subhs r2, r2, r6\n"                                                                                   \
    "    subs lr, lr, #1\n"                                                                                    \
    "    bne 0b\n"                                                                                             \
    "    pop {r4-r11, pc}\n"                                                                                   \
    "    .size " name ", .-" name "\n"
__asm__(
    "    .syntax unified\n"
    "    .thumb\n"
    "    .text\n"
    TD_ASM_RING_COLS("td_ring_cols_aligned",
                     "    ldrd r4, r5, [r1], #8\n    ldrd r6, r7, [r2], #8\n",
                     "    ldmia r1!, {r4, r5, r8, r9}\n    ldmia r2!, {r6, r7, r10, r11}\n"));

#undef TD_ASM_RING_COLS
/* Kernel rows of kn elements, not whole groups of 4, packed back to back (the compacted layout of
 * a masked conv): row ky starts at column element c0 = ky*kn, r = c0 mod 4 elements into a group.
 * Its first (4 - r) mod 4 elements complete that group (partial stores into the group the
 * previous row's copy ended in: nothing to save and put back), the rest are whole groups, each
 * column loaded with LDM where its source is word-aligned, with LDRs (unaligned) otherwise.
 * Elements a row's last group reads past its end are overwritten by the next row's first ones,
 * or lie in the column's padding (zero weights). r0 = dst, r1 = x0, r2 = x1, r3 = c; lr = c0;
 * stack: [sp] x0's row start, [sp, #4] x1's, [sp, #8] rows left. In its own section: a build
 * without masked convs drops it (--gc-sections). */
#define TD_ASM_GROUPS(lbl, one, two)                                                                           \
    "    lsrs r12, r12, #1\n"                                                                                  \
    "    bcc " lbl "1f\n" one "    stmia r0!, {r4-r7}\n" lbl "1:\n"                                            \
    "    beq 9f\n" lbl "2:" two "    stmia r0!, {r4-r7}\n"                                                     \
    "    stmia r0!, {r8-r11}\n"                                                                                \
    "    subs r12, r12, #1\n"                                                                                  \
    "    bne " lbl "2b\n"                                                                                      \
    "    b 9f\n"
#define TD_ASM_X0_LDM1 "    ldrd r4, r5, [r1], #8\n"
#define TD_ASM_X1_LDM1 "    ldrd r6, r7, [r2], #8\n"
#define TD_ASM_X0_LDR1 "    ldr r4, [r1], #4\n    ldr r5, [r1], #4\n"
#define TD_ASM_X1_LDR1 "    ldr r6, [r2], #4\n    ldr r7, [r2], #4\n"
#define TD_ASM_X0_LDM2 "    ldmia r1!, {r4, r5, r8, r9}\n"
#define TD_ASM_X1_LDM2 "    ldmia r2!, {r6, r7, r10, r11}\n"
#define TD_ASM_X0_LDR2 "    ldr r4, [r1], #4\n    ldr r5, [r1], #4\n    ldr r8, [r1], #4\n    ldr r9, [r1], #4\n"
#define TD_ASM_X1_LDR2 "    ldr r6, [r2], #4\n    ldr r7, [r2], #4\n    ldr r10, [r2], #4\n    ldr r11, [r2], #4\n"
__asm__(
    "    .syntax unified\n"
    "    .thumb\n"
    "    .section .text.td_ring_cols_rows,\"ax\",%progbits\n"
    "    .global td_ring_cols_rows\n"
    "    .type td_ring_cols_rows, %function\n"
    "    .thumb_func\n"
    "td_ring_cols_rows:\n"
    "    push {r4-r11, lr}\n"
    "    sub sp, sp, #12\n"
    "    ldr r4, [r3, #16]\n"                 /* k */
    "    str r4, [sp, #8]\n"
    "    movs lr, #0\n"
    "0:  strd r1, r2, [sp]\n"
    "    ands r4, lr, #3\n"                   /* r */
    "    beq 5f\n"
    "    sub r5, r0, #16\n"                   /* the group the previous row ended in */
    "    add r5, r5, r4, lsl #1\n"            /* its element r, column 0 (column 1: 8 bytes on) */
    "    cmp r4, #2\n"
    "    beq 42f\n"
    "    bhi 43f\n"
    "    ldrh r6, [r1], #2\n"                 /* r = 1: one element, then two */
    "    ldr r7, [r1], #4\n"
    "    ldrh r8, [r2], #2\n"
    "    ldr r9, [r2], #4\n"
    "    strh r6, [r5]\n"
    "    str r7, [r5, #2]\n"
    "    strh r8, [r5, #8]\n"
    "    str r9, [r5, #10]\n"
    "    b 5f\n"
    "42: ldr r6, [r1], #4\n"                  /* r = 2: two elements */
    "    ldr r7, [r2], #4\n"
    "    str r6, [r5]\n"
    "    str r7, [r5, #8]\n"
    "    b 5f\n"
    "43: ldrh r6, [r1], #2\n"                 /* r = 3: one element */
    "    ldrh r7, [r2], #2\n"
    "    strh r6, [r5]\n"
    "    strh r7, [r5, #8]\n"
    "5:  add r4, lr, #3\n"                    /* whole groups: ceil(c1 / 4) - ceil(c0 / 4) */
    "    ldr r12, [r3, #20]\n"
    "    add lr, lr, r12\n"
    "    add r12, lr, #3\n"
    "    lsrs r12, r12, #2\n"
    "    sub r12, r12, r4, lsr #2\n"
    "    tst r1, #2\n"
    "    bne 60f\n"
    "    tst r2, #2\n"
    "    bne 70f\n"
    TD_ASM_GROUPS("5", TD_ASM_X0_LDM1 TD_ASM_X1_LDM1, TD_ASM_X0_LDM2 TD_ASM_X1_LDM2)
    "60: tst r2, #2\n"
    "    bne 80f\n"
    TD_ASM_GROUPS("6", TD_ASM_X0_LDR1 TD_ASM_X1_LDM1, TD_ASM_X0_LDR2 TD_ASM_X1_LDM2)
    "70:\n"
    TD_ASM_GROUPS("7", TD_ASM_X0_LDM1 TD_ASM_X1_LDR1, TD_ASM_X0_LDM2 TD_ASM_X1_LDR2)
    "80:\n"
    TD_ASM_GROUPS("8", TD_ASM_X0_LDR1 TD_ASM_X1_LDR1, TD_ASM_X0_LDR2 TD_ASM_X1_LDR2)
    "9:  ldrd r1, r2, [sp]\n"                 /* the next ring row, wrapping around the end */
    "    ldr r4, [r3, #24]\n"
    "    ldrd r5, r6, [r3, #4]\n"
    "    add r1, r1, r4\n"
    "    cmp r1, r5\n"
    "    it hs\n"
    "    subhs r1, r1, r6\n"
    "    add r2, r2, r4\n"
    "    cmp r2, r5\n"
    "    it hs\n"
    "    subhs r2, r2, r6\n"
    "    ldr r4, [sp, #8]\n"
    "    subs r4, r4, #1\n"
    "    str r4, [sp, #8]\n"
    "    bne 0b\n"
    "    add sp, sp, #12\n"
    "    pop {r4-r11, pc}\n"
    "    .size td_ring_cols_rows, .-td_ring_cols_rows\n"
    "    .text\n");
#undef TD_ASM_GROUPS
#undef TD_ASM_X0_LDM1
#undef TD_ASM_X1_LDM1
#undef TD_ASM_X0_LDR1
#undef TD_ASM_X1_LDR1
#undef TD_ASM_X0_LDM2
#undef TD_ASM_X1_LDM2
#undef TD_ASM_X0_LDR2
#undef TD_ASM_X1_LDR2
#else
void td_ring_cols_aligned(uint32_t *dst, const int16_t *x0, const int16_t *x1, const td_ring_copy_t *c)
{
    const uint8_t *a = (const uint8_t *)x0, *b = (const uint8_t *)x1;
    for (uint32_t ky = 0; ky < c->k; ky++) {
        for (uint32_t i = 0; i < c->groups; i++, dst += 4, a += 8, b += 8) {
            memcpy(dst, a, 8);
            memcpy(dst + 2, b, 8);
        }
        a += c->adv;
        b += c->adv;
        if ((uintptr_t)a >= c->end) a -= c->size;
        if ((uintptr_t)b >= c->end) b -= c->size;
    }
}
void td_ring_cols_rows(uint32_t *dst, const int16_t *x0, const int16_t *x1, const td_ring_copy_t *c)
{
    /* the assembly's walk: per kernel row, the elements completing the previous row's last group,
     * then whole groups (what they read past the row's end is overwritten or multiplies zeros) */
    int16_t *const d = (int16_t *)(void *)dst;
    const uint8_t *a = (const uint8_t *)x0, *b = (const uint8_t *)x1;
    for (uint32_t ky = 0, c0 = 0; ky < c->k; ky++, c0 += c->kn) {
        const uint32_t r = c0 & 3u, head = (4u - r) & 3u, groups = ((c0 + c->kn + 3u) >> 2) - ((c0 + 3u) >> 2);
        const uint8_t *sa = a, *sb = b;
        int16_t *g = d + ((c0 + 3u) >> 2) * 8u; /* 8 int16 per group of the pair */
        if (head) {
            memcpy(g - 8 + r, sa, 2u * head);
            memcpy(g - 4 + r, sb, 2u * head);
            sa += 2u * head;
            sb += 2u * head;
        }
        for (uint32_t i = 0; i < groups; i++, g += 8, sa += 8, sb += 8) {
            memcpy(g, sa, 8);
            memcpy(g + 4, sb, 8);
        }
        a += c->row_bytes;
        b += c->row_bytes;
        if ((uintptr_t)a >= c->end) a -= c->size;
        if ((uintptr_t)b >= c->end) b -= c->size;
    }
}
#endif

/* ------------------------------------------------------------------ dot products */
#if TD_USE_DSP && defined(__ARM_FEATURE_DSP) && !defined(TD_EMULATE_DSP)
/* r0 = tab, r1 = n_pairs (> 0), r2 = pair, r3 = groups (> 0); the table holds the rows'
 * addresses. Per group of 4 elements: one LDM for both columns, one LDR + two SXTB16 per weight
 * row, 8 SMLAD; the loop is unrolled twice, and an odd group count enters it in the middle
 * through its own copy of the pair loop (chosen once per call). Per pair: one LDM of rows and
 * biases, one STM of the accumulators through the same pointer, 10 instructions in all.
 * Stack: [sp] pair, [sp, #4] (groups + 1) / 2, [sp, #8] end of the table, [sp, #12] table
 * position. */
#define TD_ASM_PAIR_LOOP(lbl, entry)                                                                           \
    lbl "0: ldmia r12!, {r0, r1, r4, r5}\n"   /* w0, w1, b0, b1 */                                        \
    "    str r12, [sp, #12]\n"                                                                                 \
    "    mov r6, r4\n"                                                                                         \
    "    mov r7, r5\n"                                                                                         \
    "    ldrd r2, r3, [sp]\n" entry                                                                            \
    lbl "1:" TD_ASM_MAC_2X2_STEP                                                                               \
    lbl "2:" TD_ASM_MAC_2X2_STEP                                                                               \
    "    subs r3, r3, #1\n"                                                                                    \
    "    bne " lbl "1b\n"                                                                                      \
    "    ldr r12, [sp, #12]\n"                                                                                 \
    "    stmia r12!, {r4, r5, r6, r7}\n"                                                                       \
    "    ldr lr, [sp, #8]\n"                                                                                   \
    "    cmp r12, lr\n"                                                                                        \
    "    bne " lbl "0b\n"                                                                                      \
    "    add sp, sp, #16\n"                                                                                    \
    "    pop {r4-r11, pc}\n"
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
    "    mov r12, r0\n"
    "    add r1, r0, r1, lsl #5\n"           /* end of the table: 32 bytes per pair */
    "    str r1, [sp, #8]\n"
    "    str r2, [sp]\n"
    "    adds r1, r3, #1\n"
    "    lsrs r1, r1, #1\n"
    "    str r1, [sp, #4]\n"
    "    lsls r3, r3, #31\n"                 /* odd group count: the second copy */
    "    bne 3f\n"
    TD_ASM_PAIR_LOOP("", "")
    "3:\n"
    TD_ASM_PAIR_LOOP("5", "    b 52f\n")
    "    .size td_mm_rows, .-td_mm_rows\n");
#undef TD_ASM_PAIR_LOOP

/* r0 = w, r1 = bias, r2 = pair, r3 = groups (> 0), [sp] = acc: the loop unrolled twice (an odd
 * count enters in the middle), 9 instructions per 8 MACs */
#define TD_ASM_MAC_1X2_STEP                                                                                   \
    "ldmia r2!, {r4, r5, r7, r12}\n" /* x0 k01, x0 k23, x1 k01, x1 k23 */                                    \
    "ldr lr, [r0], #4\n"                                                                                       \
    "sxtb16 r8, lr\n"                                                                                          \
    "smlad r1, r8, r4, r1\n"                                                                                   \
    "smlad r6, r8, r7, r6\n"                                                                                   \
    "sxtb16 lr, lr, ror #8\n"                                                                                  \
    "smlad r1, lr, r5, r1\n"                                                                                   \
    "smlad r6, lr, r12, r6\n"
__asm__(
    "    .syntax unified\n"
    "    .thumb\n"
    "    .text\n"
    "    .global td_mm_row1\n"
    "    .type td_mm_row1, %function\n"
    "    .thumb_func\n"
    "td_mm_row1:\n"
    "    push {r4-r8, lr}\n"
    "    mov r6, r1\n"
    "    lsrs r3, r3, #1\n"
    "    bcc 1f\n"
    "    adds r3, r3, #1\n"
    "    b 2f\n"
    "1:" TD_ASM_MAC_1X2_STEP
    "2:" TD_ASM_MAC_1X2_STEP
    "    subs r3, r3, #1\n"
    "    bne 1b\n"
    "    ldr r12, [sp, #24]\n"
    "    str r1, [r12]\n"
    "    str r6, [r12, #8]\n"
    "    pop {r4-r8, pc}\n"
    "    .size td_mm_row1, .-td_mm_row1\n");
#undef TD_ASM_MAC_1X2_STEP
#else
/* the same arithmetic in C: the 2x2 dot product of td_internal.h (emulated intrinsics with
 * TD_EMULATE_DSP, plain C otherwise) for each pair */
void td_mm_rows(td_rowpair_t *tab, uint32_t n_pairs, const int16_t *pair, uint32_t groups, const int8_t *rows)
{
    for (uint32_t r = 0; r < n_pairs; r++) {
        int32_t *acc = tab[r].acc;
        acc[0] = acc[2] = tab[r].b0;
        acc[1] = acc[3] = tab[r].b1;
        td_mm_2x2(TD_ROW_PTR(rows, tab[r].w0), TD_ROW_PTR(rows, tab[r].w1), pair, 4u * groups, acc);
    }
}

void td_mm_row1(const int8_t *w, int32_t bias, const int16_t *pair, uint32_t groups, int32_t *acc)
{
    int32_t a[4] = {bias, bias, bias, bias};
    td_mm_2x2(w, w, pair, 4u * groups, a);
    acc[0] = a[0];
    acc[2] = a[2];
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
