/* tinydyn kernels: rescale, the general form (see td_rescale.h). */
#include "td_rescale.h"

#include "td_internal.h"

uint32_t td_rescale_scratch_size(const td_rescale_params_t *p)
{
    (void)p;
    return 0;
}

void td_rescale_general(const td_rescale_params_t *p, const td_quant_t *q, const void *input, void *output)
{
    const uint16_t c = p->c;
    for (uint32_t px = 0; px < p->hw; px++) {
        for (uint16_t ch = 0; ch < c; ch++) {
            const uint32_t i = px * c + ch;
            store_elem(output, p->out_type, i,
                       requant(0, 0, res_term(q, input, p->in_type, i, ch), q->shift[ch], q->out_min, q->out_max));
        }
    }
}
