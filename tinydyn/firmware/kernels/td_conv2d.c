/* tinydyn kernels: conv2d (see td_conv2d.h). Ungrouped convolutions run as im2col over a
 * column pair and the 2x2 dot product (td_internal.h); grouped ones as direct loops. */
#include "td_conv2d.h"

#include <string.h>

#include "td_internal.h"

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

static inline int32_t gate_of(const td_gates_t *g, uint16_t c)
{
    if (g->channel_gate) return g->channel_gate[c];
    if (g->block_gate) return g->block_gate[0];
    return 1;
}

/* Packed position of element k of a weight row: groups of 4 are stored [w0 w2 w1 w3]. */
static inline uint32_t packed_pos(uint32_t k) { return (k & ~3u) | ((k & 1u) << 1) | ((k >> 1) & 1u); }

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
            td_pair_zero(pair, j, k, (uint32_t)(kernel * n_in));
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
                td_pair_zero(pair, j, k, n_in);
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
    td_pair_zero(pair, j, k, k4 - k);
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

/* The scratch td_conv2d carves, in its order: the active output and input channel lists;
 * then, grouped, one flag per input channel; ungrouped, the channel table, a column pair
 * (2 x row_len int16) and, with an input mask, row_group compacted weight rows (all the
 * active ones when row_group is 0) of at most row_len bytes each. */
uint32_t td_conv2d_scratch_size(const td_conv_params_t *p, const td_gates_t *g)
{
    const uint32_t lists = TD_ALIGN4(2u * p->out_c) + TD_ALIGN4(2u * p->in_c);
    if (p->groups != 1) return lists + TD_ALIGN4(p->in_c);
    const uint32_t rows = g->input_mask == NULL ? 0u : (p->row_group != 0 ? p->row_group : p->out_c);
    return lists + (uint32_t)sizeof(td_chq_t) * p->out_c + 4u * p->row_len + rows * p->row_len;
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
        td_write_skipped(q, g->channel_gate, p->out_c, hw, residual, p->res_type, p->out_type, output);
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
                td_mm_2x2(w0, w1, pair, k4, acc);
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
