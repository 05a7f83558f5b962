/* tinydyn kernels: conv2d, a grouped k x k convolution on HWC activations.
 *
 * td_conv2d is a static inline function: every generated layer function passes its own
 * `static const` parameters, so the compiler specialises the call for that layer (kernel size,
 * stride, channel counts, element types, residual or not, gates present, saturation range) and
 * no type or path is chosen at run time. Per pair of output pixels it
 *   1. builds the two im2col columns: from the int16 ring of input rows (each input row widened
 *      once, the columns word copies; masked input channels always, with the active channels
 *      only in a compacted layout the weight rows are compacted to once per call; unmasked
 *      convs where the planner granted it), else td_im2col_* (whole words widened with
 *      UXTB16/SXTB16; dedicated 1x1 and few-channel stem paths),
 *   2. multiplies them with every active output-channel pair in one call (td_mm_rows: the loop
 *      over pairs is inside, accumulators and biases in registers; an odd count's last row
 *      alone, td_mm_row1),
 *   3. requantises the accumulators inline (td_rq_high: SMULL/SMLAL/MLA, rounding on the high
 *      word, USAT/SSAT), no branch on the element types.
 * docs/KERNELS.md describes the layouts and the exactness conditions.
 * Grouped convolutions take the portable direct loops (td_conv2d_grouped). */
#ifndef TD_CONV2D_H
#define TD_CONV2D_H

#include <stddef.h>

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
    uint8_t skipped_dead; /* 1: no op reads the outputs the channel gate switches off (every reader
                           * masks its input with the same salience): they are not written */
    uint8_t ring;         /* 1: the planner granted an unmasked conv the int16 ring of k input rows
                           * (8-bit input, k > 1, in_c >= 4 or k*in_c a multiple of 4); masked 8-bit
                           * convs always have it */
    uint8_t compact_out;  /* 1: skipped_dead, 8-bit, no residual: the active channels only are
                           * written, pixel by pixel (n_out per pixel, in channel order) */
    uint8_t compact_in;   /* 1: the input was written so (compact_out) by a conv gated by the
                           * salience that masks this one's input: n_in channels per pixel */
} td_conv_params_t;

/* One output-channel pair for td_mm_rows: its two weight rows (TD_ROW_REF), biases and the
 * pair's four accumulators after td_mm_rows: (row0, px0), (row1, px0), (row0, px1),
 * (row1, px1). 32 bytes on every target; one pointer walks the table and the accumulators. */
typedef struct {
    uint32_t w0, w1;
    int32_t b0, b1;
    int32_t acc[4];
} td_rowpair_t;

/* A weight row in td_rowpair_t: its address on 32-bit targets (the assembly loads the pointer
 * straight from the table), its byte offset from the rows' base elsewhere. */
#if UINTPTR_MAX == 0xFFFFFFFFu
#define TD_ROW_REF(rows, off) ((uint32_t)(uintptr_t)((rows) + (off)))
#define TD_ROW_PTR(rows, ref) ((void)(rows), (const int8_t *)(uintptr_t)(ref))
#else
#define TD_ROW_REF(rows, off) ((uint32_t)(off))
#define TD_ROW_PTR(rows, ref) ((rows) + (ref))
#endif

/* How td_im2col_ring walks the ring (the assembly reads the fields in this order): after a
 * kernel row's groups of 4, adv bytes on to the next ring row, minus size at or past end. Kernel
 * rows of kn elements, not whole groups of 4 (td_ring_cols_rows): row_bytes from one kernel row's
 * start to the next's. */
typedef struct {
    uintptr_t adv, end, size;
    uint32_t groups, k, kn, row_bytes;
} td_ring_copy_t;

/* What td_conv2d_begin prepares in the scratch for the pixel loop. */
typedef struct {
    uint16_t *out_idx; /* active output channels (all without a channel gate) */
    uint16_t *in_idx;  /* active input channels (input mask only) */
    uint16_t *src_list; /* input mask: packed source byte, within a weight row, of each compacted byte */
    int16_t *ring;      /* k input rows widened to int16, active channels only, zero padded (NULL: none) */
    const int8_t *rows; /* base of the current group's weight rows */
    td_rowpair_t *tab;  /* the current group's channel pairs (and their accumulators) */
    int16_t *pair;     /* two im2col columns, interleaved per 4 elements */
    int8_t *wbuf;      /* compacted weight rows (input mask only) */
    uint32_t k4;       /* column length (elements, multiple of 4) */
    uint32_t ring_stride; /* int16 elements per ring row (even) */
    int32_t ring_next;    /* next input row the ring loads */
    uint32_t ring_rows;   /* ring slots: k, or k + stride when a pixel pair can span two output rows */
    td_ring_copy_t copy;  /* the column pair's walk through the ring */
    uint16_t n_out, n_in, group;
    uint16_t kr;          /* ring or input mask: column elements per kernel row (k * n_in rounded up to 4) */
    uint16_t pad_first, pad_step, pad_count; /* input mask: the compacted row's padded words (word index
                                              * of the first, step between them, count) */
    uint32_t pad_mask;    /* the bytes of a padded word that hold weights (the rest read byte 0) */
} td_conv_run_t;

/* Bytes td_conv2d takes from ctx->scratch for these parameters and gates (only which gates are
 * NULL matters): what tinydyn.ops.conv2d reserves. */
uint32_t td_conv2d_scratch_size(const td_conv_params_t *p, const td_gates_t *g);

/* out-of-line parts (td_conv2d.c) */
void td_conv2d_grouped(td_ctx_t *ctx, const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
                       const void *input, const void *residual, void *output);
void td_conv2d_begin(td_ctx_t *ctx, const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
                     const void *residual, void *output, td_conv_run_t *run);
/* the row pairs of active outputs g0 .. g0+gn-1 (compacting their rows when masked); pairs */
uint32_t td_conv2d_rows(const td_conv_params_t *p, const td_quant_t *q, td_conv_run_t *run, uint32_t g0,
                        uint32_t gn);
/* im2col of output pixels pix and pix+1 (when two) into run->pair */
void td_im2col_kxk(const td_conv_params_t *p, const void *input, uint32_t pix, int two, const td_conv_run_t *run);
void td_im2col_1x1(const td_conv_params_t *p, const void *input, uint32_t pix, int two, const td_conv_run_t *run);
/* one column (j = 0 or 1) of any ungrouped conv with every input channel */
void td_im2col_col(const td_conv_params_t *p, const void *input, uint32_t pix, int j, const td_conv_run_t *run);
/* masked input channels, element by element (int16 input, or no active input) */
void td_im2col_masked(const td_conv_params_t *p, const void *input, uint32_t pix, int two,
                      const td_conv_run_t *run);
/* 8-bit input through the int16 ring (masked input channels, or an unmasked conv granted one,
 * td_im2col_ring below): the input rows up to output row oy's last into the ring (active
 * channels only, widened to int16, each input row once per group; run->ring_next = -pad first) */
void td_conv2d_ring_fill(const td_conv_params_t *p, const void *input, td_conv_run_t *run, uint32_t oy);
/* the column pair, kernel rows of c->kn elements packed back to back (any kn, any alignment):
 * each row's first elements complete the group the previous row ended in, the rest whole groups
 * (LDM for a word-aligned source, LDRs otherwise, chosen per row and column) */
void td_ring_cols_rows(uint32_t *dst, const int16_t *x0, const int16_t *x1, const td_ring_copy_t *c);
/* the column pair, kernel rows of whole groups of 4 and word-aligned sources: every kernel row of
 * both columns in one call */
void td_ring_cols_aligned(uint32_t *dst, const int16_t *x0, const int16_t *x1, const td_ring_copy_t *c);
/* tab[r].acc = bias + the 2x2 block of pair r against the column pair, r < n_pairs (>= 1),
 * groups (>= 1) groups of 4 elements; rows: the base TD_ROW_REF offsets are relative to */
void td_mm_rows(td_rowpair_t *tab, uint32_t n_pairs, const int16_t *pair, uint32_t groups, const int8_t *rows);
/* one weight row (an odd active count's last): acc[0] = bias + w.x0, acc[2] = bias + w.x1 */
void td_mm_row1(const int8_t *w, int32_t bias, const int16_t *pair, uint32_t groups, int32_t *acc);

/* ------------------------------------------------------------------ the int16 ring */
/* The column pair of output pixels pix and pix + 1 (when two; the pair may end one output row and
 * start the next) from the ring, loading the input rows they need first: per kernel row k*n int16
 * at the window's left edge in the ring row of input row oy*stride - pad + ky (slot
 * oy*stride + ky mod ring_rows), whole words copied, nothing widened; the (at most 3) elements
 * read past a kernel row multiply zero weights. Without a second pixel column 1 repeats column 0.
 * Inline: the layer's constants (width, stride, kernel, channels when unmasked) fold in. */
static TD_ALWAYS_INLINE void td_im2col_ring(const td_conv_params_t *p, const td_gates_t *g, const void *input,
                                            td_conv_run_t *run, uint32_t pix, int two)
{
    const uint32_t out_w = p->out_w, s = p->stride;
    const uint32_t rows = (uint32_t)p->kernel + ((out_w & 1u) ? s : 0u); /* run->ring_rows */
    const uint32_t step = s * (g->input_mask != NULL ? run->n_in : p->in_c);
    const uint32_t oy0 = pix / out_w, ox0 = pix - oy0 * out_w;
    uint32_t oy1 = oy0, ox1 = ox0;
    if (two && ++ox1 == out_w) {
        ox1 = 0;
        oy1++;
    }
    if (run->ring_next <= (int32_t)(oy1 * s + p->kernel) - 1 - (int32_t)p->pad) td_conv2d_ring_fill(p, input, run, oy1);
    const uint32_t s0 = oy0 * s % rows, s1 = oy1 * s % rows, e0 = ox0 * step, e1 = ox1 * step;
    const uint32_t o0 = s0 * run->ring_stride + e0, o1 = s1 * run->ring_stride + e1;
    uint32_t *dst = (uint32_t *)(void *)run->pair;
    /* an unmasked ring whose kernel rows are whole groups has, with an even channel count, every
     * source on a word (ring rows start on one): known when compiling; kernel rows that are not
     * whole groups (3x3 over 6 channels) pack back to back, td_ring_cols_rows */
    const int aligned = g->input_mask == NULL && (p->in_c & 1u) == 0 && ((uint32_t)p->kernel * p->in_c & 3u) == 0;
    if (aligned || ((run->kr & 3u) == 0 && ((o0 | o1) & 1u) == 0)) {
        td_ring_cols_aligned(dst, run->ring + o0, run->ring + o1, &run->copy);
    } else { /* kernel rows not whole groups, or an odd active count: a column not on a word */
        td_ring_cols_rows(dst, run->ring + o0, run->ring + o1, &run->copy);
    }
}

/* ------------------------------------------------------------------ few-channel stems */
/* Column j of the pair for output pixel pix of a conv with in_c < 4 (uint8 input): the k*k*in_c
 * elements one by one, loops unrolled for the layer's constant kernel and channel count. */
static inline void td_im2col_stem_col(const td_conv_params_t *p, const uint8_t *in, uint32_t pix, int16_t *col,
                                      const td_conv_run_t *run)
{
    const uint32_t k = p->kernel, c = p->in_c, n = k * k * c;
    const int32_t oy = (int32_t)(pix / p->out_w), ox = (int32_t)(pix % p->out_w);
    const int32_t iy0 = oy * p->stride - p->pad, ix0 = ox * p->stride - p->pad;
    const uint32_t kpad = (n + 3u) & ~3u;
    if (iy0 >= 0 && ix0 >= 0 && iy0 + (int32_t)k <= (int32_t)p->in_h && ix0 + (int32_t)k <= (int32_t)p->in_w) {
        const uint8_t *src = in + ((uint32_t)iy0 * p->in_w + (uint32_t)ix0) * c;
#pragma GCC unroll 64
        for (uint32_t e = 0; e < n; e++) {
            const uint32_t ky = e / (k * c), rest = e % (k * c);
            col[(e >> 2) * 8u + (e & 3u)] = src[ky * p->in_w * c + rest];
        }
#pragma GCC unroll 4
        for (uint32_t e = n; e < kpad; e++) col[(e >> 2) * 8u + (e & 3u)] = 0;
    } else {
        /* the border: the same unrolled loop, each element checked against the input */
        (void)run;
#pragma GCC unroll 64
        for (uint32_t e = 0; e < n; e++) {
            const int32_t iy = iy0 + (int32_t)(e / (k * c)), ix = ix0 + (int32_t)((e % (k * c)) / c);
            int32_t v = 0;
            if (iy >= 0 && ix >= 0 && iy < (int32_t)p->in_h && ix < (int32_t)p->in_w) {
                v = in[((uint32_t)iy * p->in_w + (uint32_t)ix) * c + e % c];
            }
            col[(e >> 2) * 8u + (e & 3u)] = (int16_t)v;
        }
#pragma GCC unroll 4
        for (uint32_t e = n; e < kpad; e++) col[(e >> 2) * 8u + (e & 3u)] = 0;
    }
}

/* ------------------------------------------------------------------ requantisation */
/* Output channel co of pixels i0 (and i0 + ostride when npix is 2; ostride is out_c, or the
 * active count for a compact output): accumulators a0, a1; gate is the channel's salience
 * (channel gate), the block's (read once per call) or 1. */
static TD_ALWAYS_INLINE void td_conv2d_store(const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
                                              const void *residual, void *output, uint32_t co, uint32_t i0,
                                              uint32_t ostride, int32_t gate, int32_t a0, int32_t a1, int npix)
{
    const int has_res = residual != NULL;
    const uint32_t i1 = i0 + ostride;
    const int32_t lo = q->out_min, hi = q->out_max;
    int32_t r0 = 0, r1 = 0, y0, y1 = 0;
    if (has_res) {
        if (p->res_type == TD_U8) {
            r0 = ((const uint8_t *)residual)[i0];
            if (npix == 2) r1 = ((const uint8_t *)residual)[i1];
        } else if (p->res_type == TD_S8) {
            r0 = ((const int8_t *)residual)[i0];
            if (npix == 2) r1 = ((const int8_t *)residual)[i1];
        } else {
            r0 = ((const int16_t *)residual)[i0];
            if (npix == 2) r1 = ((const int16_t *)residual)[i1];
        }
    }
    if (q->rq != NULL) {
        const int32_t *t = q->rq + (has_res ? 4u : 2u) * co;
        const int32_t gm = (g->channel_gate || g->block_gate) ? gate * t[0] : t[0];
        const int32_t rl = has_res ? t[1] : 0, rh = has_res ? t[2] : 0;
        if (q->rq_sh != 0) {
            /* one shift for the layer: ADD and USAT/SSAT with its shift */
            y0 = td_rq_round_sat(td_rq_hi(a0, gm, r0, rl, rh, has_res), q->rq_sh - 1, lo, hi);
            if (npix == 2) y1 = td_rq_round_sat(td_rq_hi(a1, gm, r1, rl, rh, has_res), q->rq_sh - 1, lo, hi);
        } else {
            const int32_t sh = has_res ? t[3] : t[1];
            y0 = td_rq_shift_sat(td_rq_hi(a0, gm, r0, rl, rh, has_res), sh, lo, hi);
            if (npix == 2) y1 = td_rq_shift_sat(td_rq_hi(a1, gm, r1, rl, rh, has_res), sh, lo, hi);
        }
    } else {
        const int32_t gm = gate * q->mult[co];
        const int64_t rm = has_res ? q->res_mult[co] : 0;
        y0 = td_rq_general(a0, gm, (int64_t)r0 * rm, q->shift[co], lo, hi);
        if (npix == 2) y1 = td_rq_general(a1, gm, (int64_t)r1 * rm, q->shift[co], lo, hi);
    }
    if (p->out_type == TD_U8) {
        ((uint8_t *)output)[i0] = (uint8_t)y0;
        if (npix == 2) ((uint8_t *)output)[i1] = (uint8_t)y1;
    } else if (p->out_type == TD_S8) {
        ((int8_t *)output)[i0] = (int8_t)y0;
        if (npix == 2) ((int8_t *)output)[i1] = (int8_t)y1;
    } else {
        ((int16_t *)output)[i0] = (int16_t)y0;
        if (npix == 2) ((int16_t *)output)[i1] = (int16_t)y1;
    }
}

/* A compiler barrier between two channels' requantisations: without it GCC hoists the second
 * channel's table loads above the first's arithmetic and spills registers to the stack (about 5
 * instructions more per output on the M4). */
#if defined(__GNUC__)
#define TD_RQ_BARRIER() __asm__ volatile("" ::: "memory")
#else
#define TD_RQ_BARRIER() ((void)0)
#endif

/* The group's accumulators (pair r: rows 2r, 2r+1 at pixels pix, pix+1) to outputs; bg: the
 * block gate's value (1 without one). */
static TD_ALWAYS_INLINE void td_conv2d_requant(const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
                                                int32_t bg, const void *residual, void *output,
                                                const td_conv_run_t *run, uint32_t g0, uint32_t gn, uint32_t pix,
                                                int npix)
{
    const td_rowpair_t *t = run->tab;
    const uint32_t os = p->out_c;
    if (g->channel_gate != NULL) {
        const uint8_t *cg = g->channel_gate;
        const uint16_t *idx = run->out_idx + g0;
        if (p->compact_out) {
            /* the j-th active channel at pix * n_out + j */
            const uint32_t n = run->n_out;
            uint32_t o = pix * n + g0;
            for (uint32_t r = 0; r + 1 < gn; r += 2, t++, idx += 2, o += 2) {
                const uint32_t c0 = idx[0], c1 = idx[1];
                td_conv2d_store(p, q, g, residual, output, c0, o, n, cg[c0], t->acc[0], t->acc[2], npix);
                TD_RQ_BARRIER();
                td_conv2d_store(p, q, g, residual, output, c1, o + 1, n, cg[c1], t->acc[1], t->acc[3], npix);
                TD_RQ_BARRIER();
            }
            if (gn & 1u) td_conv2d_store(p, q, g, residual, output, idx[0], o, n, cg[idx[0]], t->acc[0], t->acc[2], npix);
            return;
        }
        const uint32_t base = pix * os;
        for (uint32_t r = 0; r + 1 < gn; r += 2, t++, idx += 2) {
            const uint32_t c0 = idx[0], c1 = idx[1];
            td_conv2d_store(p, q, g, residual, output, c0, base + c0, os, cg[c0], t->acc[0], t->acc[2], npix);
            TD_RQ_BARRIER();
            td_conv2d_store(p, q, g, residual, output, c1, base + c1, os, cg[c1], t->acc[1], t->acc[3], npix);
            TD_RQ_BARRIER();
        }
        if (gn & 1u) {
            const uint32_t c0 = idx[0];
            td_conv2d_store(p, q, g, residual, output, c0, base + c0, os, cg[c0], t->acc[0], t->acc[2], npix);
        }
    } else {
        const uint32_t base = pix * os;
        uint32_t co = g0;
        for (uint32_t r = 0; r + 1 < gn; r += 2, t++, co += 2) {
            td_conv2d_store(p, q, g, residual, output, co, base + co, os, bg, t->acc[0], t->acc[2], npix);
            TD_RQ_BARRIER();
            td_conv2d_store(p, q, g, residual, output, co + 1, base + co + 1, os, bg, t->acc[1], t->acc[3], npix);
            TD_RQ_BARRIER();
        }
        if (gn & 1u) td_conv2d_store(p, q, g, residual, output, co, base + co, os, bg, t->acc[0], t->acc[2], npix);
    }
}

/* The column pair against every active row of the group: pairs in td_mm_rows, an odd count's
 * last row alone. */
static TD_ALWAYS_INLINE void td_conv2d_dot(td_conv_run_t *run, uint32_t gn, uint32_t groups4)
{
    const uint32_t n_full = gn / 2u;
    if (n_full) td_mm_rows(run->tab, n_full, run->pair, groups4, run->rows);
    if (gn & 1u) {
        td_rowpair_t *t = &run->tab[n_full];
        td_mm_row1(TD_ROW_PTR(run->rows, t->w0), t->b0, run->pair, groups4, t->acc);
    }
}

/* ------------------------------------------------------------------ 3x3 one-channel stems */
/* A 3x3 conv of a one-channel uint8 input (a grey-image stem) without gates or residual, with a
 * shared-shift high-word table: no im2col and no row-pair table. The weights are widened once per
 * call into the layer's scratch, 5 int16 pairs per output channel ((w0,w1) .. (w8,0)); per output
 * pixel the 9 taps are read straight from the input as 5 int16 pairs held in registers, and each
 * output channel is 5 SMLADs from its bias, then the requantisation. */
static TD_ALWAYS_INLINE uint32_t td_pair16(int32_t lo, int32_t hi)
{
    return (uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16);
}

static TD_ALWAYS_INLINE int32_t td_smlad2(uint32_t x, uint32_t w, int32_t acc)
{
#if TD_USE_DSP && defined(__ARM_FEATURE_DSP)
    int32_t r;
    __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(x), "r"(w), "r"(acc));
    return r;
#else
    return acc + (int32_t)(int16_t)(uint16_t)x * (int16_t)(uint16_t)w +
           (int32_t)(int16_t)(uint16_t)(x >> 16) * (int16_t)(uint16_t)(w >> 16);
#endif
}

/* Whether the layer takes td_conv2d_stem3 (compile-time constants in a generated layer); its
 * scratch (28 bytes per output channel) is in td_conv2d_scratch_size for every one-channel 3x3
 * conv. */
static TD_ALWAYS_INLINE int td_conv2d_is_stem3(const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
                                               const void *residual)
{
    return p->groups == 1 && p->in_c == 1 && p->kernel == 3 && p->in_type == TD_U8 && residual == NULL &&
           g->channel_gate == NULL && g->block_gate == NULL && g->input_mask == NULL && q->rq != NULL &&
           q->rq_sh != 0 && (p->out_c & 1u) == 0;
}

/* Every output channel of one pixel (taps x0..x4) from the widened weights wp, to element o0 on. */
static TD_ALWAYS_INLINE void td_stem3_channels(const td_conv_params_t *p, const td_quant_t *q, const uint32_t *wp,
                                               uint32_t x0, uint32_t x1, uint32_t x2, uint32_t x3, uint32_t x4,
                                               void *output, uint32_t o0)
{
    const uint32_t oc = p->out_c;
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__) && !defined(TD_PORTABLE) && !defined(TD_EMULATE_DSP) && \
    defined(__OPTIMIZE__)
    if (__builtin_constant_p(q->rq_sh) && q->rq_sh >= 1 && q->rq_sh <= 31 && p->out_type != TD_S16 &&
        ((p->out_type == TD_U8 && q->out_min == 0 && q->out_max == 255) ||
         (p->out_type == TD_S8 && q->out_min == -128 && q->out_max == 127))) {
        /* two channels per pass (out_c even), 14 instructions per output: the channel's record in
         * 3 LDRD and an LDR, 5 SMLAD, the high-word requantisation (11 registers: all the asm
         * can have here) */
        const uint32_t *w = wp;
        uint8_t *out = (uint8_t *)output + o0, *const end = out + oc;
        int32_t acc, a, b;
#define TD_STEM3_ASM(sat)                                                                                              \
    __asm__ volatile("1:\n\t"                                                                                          \
                     "ldrd %[acc], %[a], [%[w]], #8\n\t"                                                               \
                     "smlad %[acc], %[x0], %[a], %[acc]\n\t"                                                           \
                     "ldrd %[a], %[b], [%[w]], #8\n\t"                                                                 \
                     "smlad %[acc], %[x1], %[a], %[acc]\n\t"                                                           \
                     "smlad %[acc], %[x2], %[b], %[acc]\n\t"                                                           \
                     "ldrd %[a], %[b], [%[w]], #8\n\t"                                                                 \
                     "smlad %[acc], %[x3], %[a], %[acc]\n\t"                                                           \
                     "smlad %[acc], %[x4], %[b], %[acc]\n\t"                                                           \
                     "ldr %[a], [%[w]], #4\n\t"                                                                        \
                     "smull %[acc], %[a], %[acc], %[a]\n\t"                                                            \
                     "add %[a], %[a], %[rnd]\n\t"                                                                      \
                     sat " %[a], #8, %[a], asr %[sh1]\n\t"                                                             \
                     "strb %[a], [%[out]], #1\n\t"                                                                     \
                     "ldrd %[acc], %[a], [%[w]], #8\n\t"                                                               \
                     "smlad %[acc], %[x0], %[a], %[acc]\n\t"                                                           \
                     "ldrd %[a], %[b], [%[w]], #8\n\t"                                                                 \
                     "smlad %[acc], %[x1], %[a], %[acc]\n\t"                                                           \
                     "smlad %[acc], %[x2], %[b], %[acc]\n\t"                                                           \
                     "ldrd %[a], %[b], [%[w]], #8\n\t"                                                                 \
                     "smlad %[acc], %[x3], %[a], %[acc]\n\t"                                                           \
                     "smlad %[acc], %[x4], %[b], %[acc]\n\t"                                                           \
                     "ldr %[a], [%[w]], #4\n\t"                                                                        \
                     "smull %[acc], %[a], %[acc], %[a]\n\t"                                                            \
                     "add %[a], %[a], %[rnd]\n\t"                                                                      \
                     sat " %[a], #8, %[a], asr %[sh1]\n\t"                                                             \
                     "strb %[a], [%[out]], #1\n\t"                                                                     \
                     "cmp %[out], %[end]\n\t"                                                                          \
                     "bne 1b"                                                                                          \
                     : [w] "+&r"(w), [out] "+&r"(out), [acc] "=&r"(acc), [a] "=&r"(a), [b] "=&r"(b)                    \
                     : [x0] "r"(x0), [x1] "r"(x1), [x2] "r"(x2), [x3] "r"(x3), [x4] "r"(x4), [end] "r"(end),           \
                       [rnd] "i"(1 << (q->rq_sh - 1)), [sh1] "i"(q->rq_sh)                                             \
                     : "memory", "cc")
        if (p->out_type == TD_U8) {
            TD_STEM3_ASM("usat");
        } else {
            TD_STEM3_ASM("ssat");
        }
#undef TD_STEM3_ASM
        return;
    }
#endif
    const uint32_t *w = wp;
    for (uint32_t c = 0; c < oc; c++, w += 7) {
        int32_t acc = td_smlad2(x0, w[1], (int32_t)w[0]);
        acc = td_smlad2(x1, w[2], acc);
        acc = td_smlad2(x2, w[3], acc);
        acc = td_smlad2(x3, w[4], acc);
        acc = td_smlad2(x4, w[5], acc);
        const int32_t h = td_rq_hi(acc, (int32_t)w[6], 0, 0, 0, 0);
        const int32_t y = td_rq_round_sat(h, q->rq_sh - 1, q->out_min, q->out_max);
        const uint32_t i = o0 + c;
        if (p->out_type == TD_U8) {
            ((uint8_t *)output)[i] = (uint8_t)y;
        } else if (p->out_type == TD_S8) {
            ((int8_t *)output)[i] = (int8_t)y;
        } else {
            ((int16_t *)output)[i] = (int16_t)y;
        }
    }
}

static TD_ALWAYS_INLINE void td_conv2d_stem3(td_ctx_t *ctx, const td_conv_params_t *p, const td_quant_t *q,
                                             const uint8_t *in, void *output)
{
    const uint32_t oc = p->out_c, in_w = p->in_w, in_h = p->in_h, s = p->stride;
    const int32_t pad = p->pad;
    uint32_t *wp = (uint32_t *)(void *)ctx->scratch;
    for (uint32_t c = 0; c < oc; c++) {
        /* per channel {bias, (w0,w1), (w2,w3), (w4,w5), (w6,w7), (w8,0), mult'}; packed groups
         * [w0 w2 w1 w3]: element e sits at byte (e & ~3) | (e & 1) << 1 | (e >> 1) & 1 */
        const int8_t *row = p->weight + c * p->row_len;
        uint32_t *r = wp + 7u * c;
        r[0] = (uint32_t)q->bias[c];
        r[1] = td_pair16(row[0], row[2]);
        r[2] = td_pair16(row[1], row[3]);
        r[3] = td_pair16(row[4], row[6]);
        r[4] = td_pair16(row[5], row[7]);
        r[5] = td_pair16(row[8], 0);
        r[6] = (uint32_t)q->rq[2u * c];
    }
    ctx->macs += 9u * oc * p->out_h * p->out_w;
    uint32_t pix = 0;
    for (uint32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t iy0 = (int32_t)(oy * s) - pad;
        for (uint32_t ox = 0; ox < p->out_w; ox++, pix++) {
            const int32_t ix0 = (int32_t)(ox * s) - pad;
            uint32_t x0, x1, x2, x3, x4;
            if (iy0 >= 0 && ix0 >= 0 && iy0 + 3 <= (int32_t)in_h && ix0 + 3 <= (int32_t)in_w) {
                const uint8_t *r = in + (uint32_t)iy0 * in_w + (uint32_t)ix0;
                x0 = r[0] | ((uint32_t)r[1] << 16);
                x1 = r[2] | ((uint32_t)r[in_w] << 16);
                x2 = r[in_w + 1u] | ((uint32_t)r[in_w + 2u] << 16);
                x3 = r[2u * in_w] | ((uint32_t)r[2u * in_w + 1u] << 16);
                x4 = r[2u * in_w + 2u];
            } else {
                /* the border: taps outside the input read 0 */
                uint32_t t[9];
#pragma GCC unroll 3
                for (uint32_t ky = 0; ky < 3u; ky++) {
                    const int32_t iy = iy0 + (int32_t)ky;
                    const int row_in = iy >= 0 && iy < (int32_t)in_h;
#pragma GCC unroll 3
                    for (uint32_t kx = 0; kx < 3u; kx++) {
                        const int32_t ix = ix0 + (int32_t)kx;
                        t[3u * ky + kx] =
                            (row_in && ix >= 0 && ix < (int32_t)in_w) ? in[(uint32_t)iy * in_w + (uint32_t)ix] : 0u;
                    }
                }
                x0 = t[0] | (t[1] << 16);
                x1 = t[2] | (t[3] << 16);
                x2 = t[4] | (t[5] << 16);
                x3 = t[6] | (t[7] << 16);
                x4 = t[8];
            }
            td_stem3_channels(p, q, wp, x0, x1, x2, x3, x4, output, pix * oc);
        }
    }
}

/* ------------------------------------------------------------------ the layer */
static TD_ALWAYS_INLINE void td_conv2d(td_ctx_t *ctx, const td_conv_params_t *p, const td_quant_t *q, const td_gates_t *g,
                             const void *input, const void *residual, void *output)
{
    if (p->groups != 1) {
        td_conv2d_grouped(ctx, p, q, g, input, residual, output);
        return;
    }
    if (td_conv2d_is_stem3(p, q, g, residual)) {
        td_conv2d_stem3(ctx, p, q, (const uint8_t *)input, output);
        return;
    }
    td_conv_run_t run;
    td_conv2d_begin(ctx, p, q, g, residual, output, &run);
    const uint32_t hw = (uint32_t)p->out_h * p->out_w, groups4 = run.k4 / 4u;
    const int stem = p->in_c < 4 && p->in_type == TD_U8;
    const int simple = p->in_type != TD_S16 && g->input_mask == NULL;
    const int masked = g->input_mask != NULL && run.n_in != p->in_c; /* without a ring: int16 or no input */
    const int32_t bg = g->block_gate != NULL ? g->block_gate[0] : 1; /* read once: the conv never writes it */
    for (uint32_t g0 = 0; g0 < run.n_out; g0 += run.group) {
        const uint32_t gn = run.n_out - g0 < run.group ? run.n_out - g0 : run.group;
        (void)td_conv2d_rows(p, q, &run, g0, gn);
        run.ring_next = -(int32_t)p->pad;
        for (uint32_t pix = 0; pix < hw; pix += 2) {
            const int two = pix + 1 < hw;
            if (run.ring != NULL) {
                td_im2col_ring(p, g, input, &run, pix, two); /* the input rows through the ring */
            } else if (masked) {
                td_im2col_masked(p, input, pix, two, &run);
            } else if (stem) {
                td_im2col_stem_col(p, (const uint8_t *)input, pix, run.pair, &run);
                if (two) td_im2col_stem_col(p, (const uint8_t *)input, pix + 1, run.pair + 4, &run);
            } else if (simple && p->kernel == 1) {
                td_im2col_1x1(p, input, pix, two, &run);
            } else {
                td_im2col_kxk(p, input, pix, two, &run);
            }
            td_conv2d_dot(&run, gn, groups4);
            if (two) {
                td_conv2d_requant(p, q, g, bg, residual, output, &run, g0, gn, pix, 2);
            } else {
                td_conv2d_requant(p, q, g, bg, residual, output, &run, g0, gn, pix, 1);
            }
        }
    }
}

#ifdef __cplusplus
}
#endif

#endif /* TD_CONV2D_H */
