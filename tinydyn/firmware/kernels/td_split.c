/* tinydyn kernels: split (see td_split.h). In HWC a channel slice is strided: it is copied
 * into its own buffer, one memcpy per pixel (docs/ARITHMETIC.md, "split", says why). */
#include "td_split.h"

#include <string.h>

uint32_t td_split_scratch_size(void) { return 0; }

void td_split(td_ctx_t *ctx, uint32_t hw, uint16_t in_bytes, uint16_t offset_bytes, uint16_t count_bytes,
              const void *input, void *output)
{
    (void)ctx;
    const uint8_t *in = (const uint8_t *)input + offset_bytes;
    uint8_t *out = (uint8_t *)output;
    if (count_bytes == in_bytes || hw == 1u) {
        memcpy(out, in, (size_t)hw * count_bytes);
        return;
    }
    for (uint32_t px = 0; px < hw; px++) memcpy(out + px * count_bytes, in + px * in_bytes, count_bytes);
}
