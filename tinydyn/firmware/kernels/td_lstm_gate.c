/* tinydyn kernels: lstm_gate (see td_lstm_gate.h). The matrix-vector products run on the
 * linear's 2x2 dot product (td_internal.h: portable and DSP paths, identical results), the
 * cell's element-wise steps in exact int32/int64 arithmetic. */
#include "td_lstm_gate.h"

#include <string.h>

#include "td_internal.h"

#define Z_MIN (-2048)
#define Z_MAX 2047

/* The scratch td_lstm_gate carves, in its order: the 4H pre-activations (int32), then a
 * column pair of row_x and one of row_h int16 elements (2 x row int16 each). */
uint32_t td_lstm_gate_scratch_size(const td_lstm_params_t *p)
{
    return 16u * p->hidden + 4u * p->row_x + 4u * p->row_h;
}

static inline int32_t rshift_round(int32_t v, unsigned s) { return (v + (1 << (s - 1u))) >> s; }

/* act(T, z): the table interpolated at a Q.8 point, z clamped to [-2048, 2047]. */
static inline int32_t lut_act(const int16_t *t, int32_t z)
{
    const int32_t u = (z < Z_MIN ? Z_MIN : (z > Z_MAX ? Z_MAX : z)) - Z_MIN;
    const int32_t k = u >> 5, r = u & 31;
    return t[k] + rshift_round((t[k + 1] - t[k]) * r, 5u);
}

/* Both columns of a pair hold the same vector (n elements, zero-padded to row). */
static void widen(int16_t *pair, const void *v, uint8_t type, uint16_t n, uint16_t row)
{
    td_pair_zero(pair, 0, 0, row);
    for (uint16_t j = 0; j < n; j++) pair_put(pair, 0, j, load_elem(v, type, j));
    for (uint32_t grp = 0; grp < row / 4u; grp++) memcpy(pair + 8 * grp + 4, pair + 8 * grp, 8);
}

/* rows r..r+1 (or r alone) of w against a widened vector, on top of acc0/acc1 */
static void rows2(const int8_t *w, uint16_t row, uint16_t r, int both, const int16_t *pair, int32_t *a0, int32_t *a1)
{
    int32_t acc[4] = {*a0, both ? *a1 : 0, 0, 0};
    td_mm_2x2(w + (uint32_t)r * row, w + (uint32_t)(both ? r + 1 : r) * row, pair, row, acc);
    *a0 = acc[0];
    if (both) *a1 = acc[1];
}

static int64_t round_shift64(int64_t v, uint8_t s) { return (v + ((int64_t)1 << (s - 1u))) >> s; }

void td_lstm_gate(td_ctx_t *ctx, const td_lstm_params_t *p, const void *x, const int16_t *h, const int16_t *c,
                  uint8_t *salience, int16_t *h_out, int16_t *c_out)
{
    const uint16_t hid = p->hidden, rows = (uint16_t)(4u * hid);
    uint8_t *s = ctx->scratch;
    int32_t *z = (int32_t *)(void *)s;
    s += 16u * hid;
    int16_t *pair_x = (int16_t *)(void *)s;
    s += 4u * p->row_x;
    int16_t *pair_h = (int16_t *)(void *)s;
    ctx->macs += p->macs;

    /* pre-activations: z = clamp(round_shift(acc_x*mult_x + acc_h*mult_h, shift)) */
    widen(pair_x, x, p->in_type, p->in_d, p->row_x);
    const int state = h != NULL && p->w_h != NULL;
    if (state) widen(pair_h, h, TD_S16, hid, p->row_h);
    for (uint16_t r = 0; r < rows; r = (uint16_t)(r + 2)) {
        const int both = r + 1 < rows;
        int32_t ax0 = p->bias[r], ax1 = both ? p->bias[r + 1] : 0, ah0 = 0, ah1 = 0;
        rows2(p->w_x, p->row_x, r, both, pair_x, &ax0, &ax1);
        if (state) rows2(p->w_h, p->row_h, r, both, pair_h, &ah0, &ah1);
        for (int j = 0; j < 1 + both; j++) {
            const uint16_t q = (uint16_t)(r + j);
            int64_t v = (int64_t)(j ? ax1 : ax0) * p->mult_x[q];
            if (state) v += (int64_t)(j ? ah1 : ah0) * p->mult_h[q];
            const int64_t w = round_shift64(v, p->shift[q]);
            z[q] = w < Z_MIN ? Z_MIN : (w > Z_MAX ? Z_MAX : (int32_t)w);
        }
    }
    /* the cell: c' = clamp(round_shift(f*c*16 + i*g, 19)), h' = round_shift(o*tanh(c'), 15) */
    for (uint16_t j = 0; j < hid; j++) {
        const int32_t gi = lut_act(p->sigmoid_lut, z[j]);
        const int32_t gf = lut_act(p->sigmoid_lut, z[hid + j]);
        const int32_t gg = lut_act(p->tanh_lut, z[2u * hid + j]);
        const int32_t go = lut_act(p->sigmoid_lut, z[3u * hid + j]);
        const int64_t cprev = c != NULL ? c[j] : 0;
        const int64_t cv = round_shift64((int64_t)gf * cprev * 16 + (int64_t)gi * gg, 19u);
        const int32_t cn = cv < -32768 ? -32768 : (cv > 32767 ? 32767 : (int32_t)cv);
        c_out[j] = (int16_t)cn;
        h_out[j] = (int16_t)rshift_round(go * lut_act(p->tanh_lut, rshift_round(cn, 3u)), 15u);
    }
    /* the saliences: clamp(round_shift((sal_bias + sal_weight . h') * sal_mult, sal_shift), 0, 255) */
    widen(pair_h, h_out, TD_S16, hid, p->row_h);
    for (uint16_t r = 0; r < p->saliences; r = (uint16_t)(r + 2)) {
        const int both = r + 1 < p->saliences;
        int32_t a0 = p->sal_bias[r], a1 = both ? p->sal_bias[r + 1] : 0;
        rows2(p->sal_weight, p->row_h, r, both, pair_h, &a0, &a1);
        for (int j = 0; j < 1 + both; j++) {
            const uint16_t q = (uint16_t)(r + j);
            const int64_t v = round_shift64((int64_t)(j ? a1 : a0) * p->sal_mult[q], p->sal_shift[q]);
            salience[q] = (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
        }
    }
}
