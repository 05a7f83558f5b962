/* tinydyn kernels: concat (see td_concat.h). Activations are HWC, so a channel join is a
 * strided copy, one memcpy per pixel and input (docs/ARITHMETIC.md, "concat"). */
#include "td_concat.h"

#include <string.h>

uint32_t td_concat_scratch_size(void) { return 0; }

void td_concat(td_ctx_t *ctx, uint8_t n, const uint16_t *part_bytes, uint32_t hw, const void *const *inputs,
               void *output)
{
    (void)ctx;
    uint8_t *out = (uint8_t *)output;
    uint32_t row = 0;
    for (uint8_t i = 0; i < n; i++) row += part_bytes[i];
    uint32_t start = 0;
    for (uint8_t i = 0; i < n; i++) {
        const uint8_t *in = (const uint8_t *)inputs[i];
        const uint32_t len = part_bytes[i];
        if (hw == 1u) {
            memcpy(out + start, in, len);
        } else {
            for (uint32_t px = 0; px < hw; px++) memcpy(out + px * row + start, in + px * len, len);
        }
        start += len;
    }
}
