/* tinydyn kernels: maxpool and avgpool (see td_pool.h), direct loops. */
#include "td_pool.h"

#include "td_internal.h"

uint32_t td_maxpool_scratch_size(const td_pool_params_t *p)
{
    (void)p;
    return 0;
}

uint32_t td_avgpool_scratch_size(const td_pool_params_t *p)
{
    (void)p;
    return 0;
}

/* ------------------------------------------------------------------ pooling */
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
