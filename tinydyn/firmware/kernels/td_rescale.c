/* tinydyn kernels: rescale (see td_rescale.h). */
#include "td_rescale.h"

#include "td_internal.h"

uint32_t td_rescale_scratch_size(uint16_t c, uint32_t hw)
{
    (void)c;
    (void)hw;
    return 0;
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
