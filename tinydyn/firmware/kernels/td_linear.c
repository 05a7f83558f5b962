/* tinydyn kernels: linear (see td_linear.h), the input vector widened once into a column
 * pair and multiplied two weight rows at a time by the 2x2 dot product (td_internal.h). */
#include "td_linear.h"

#include <string.h>

#include "td_internal.h"

/* The scratch td_linear carves, in its order: the active output and input channel lists,
 * then a column pair (2 x row_len int16). */
uint32_t td_linear_scratch_size(const td_linear_params_t *p)
{
    return TD_ALIGN4(2u * p->out_c) + TD_ALIGN4(2u * p->in_c) + 4u * p->row_len;
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
        td_write_skipped(q, g->channel_gate, p->out_c, 1, residual, p->res_type, p->out_type, output);
    }
    /* masked inputs read as zero in the widened column: they add nothing, and are not
     * counted; the vector is tiny next to the convolutions */
    td_pair_zero(pair, 0, 0, p->row_len);
    for (uint16_t j = 0; j < n_in; j++) pair_put(pair, 0, in_idx[j], load_elem(input, p->in_type, in_idx[j]));
    memcpy(pair + 4, pair, 8); /* both columns the same vector: the 2x2 kernel's second column */
    for (uint32_t grp = 1; grp < p->row_len / 4u; grp++) memcpy(pair + 8 * grp + 4, pair + 8 * grp, 8);
    const int32_t block_gate = g->block_gate ? g->block_gate[0] : 1;
    for (uint16_t r = 0; r < n_out; r = (uint16_t)(r + 2)) {
        const int both = r + 1 < n_out;
        const uint16_t co0 = out_idx[r], co1 = both ? out_idx[r + 1] : co0;
        int32_t acc[4] = {q->bias[co0], q->bias[co1], 0, 0};
        td_mm_2x2(p->weight + (uint32_t)co0 * p->row_len, p->weight + (uint32_t)co1 * p->row_len, pair, p->row_len, acc);
        for (int j = 0; j < 1 + both; j++) {
            const uint16_t co = j ? co1 : co0;
            const int32_t gate = g->channel_gate ? g->channel_gate[co] : block_gate;
            store_elem(output, p->out_type, co,
                       requant(acc[j], gate * q->mult[co], res_term(q, residual, p->res_type, co, co), q->shift[co],
                               q->out_min, q->out_max));
        }
    }
}
